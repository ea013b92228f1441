// Fault injection on the untrusted side (docs/SECURITY.md "Integrity"): a backend given a
// FaultInjector corrupts the outputs of a fraction of its linear operations, the way a
// faulty or cheating accelerator would. For measuring the integrity checks only.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "protocol/tensor.h"

namespace darknight::accel {

class Backend;
class Buffer;
class Weights;

enum class FaultKind { bitflip, scale, wrong_weights, drop, adversarial };
std::string to_string(FaultKind k);

/// `KIND:RATE[:SEED]`: which fault, the fraction of linear operations hit, and the
/// injector's own random stream (drawn from the OS when no seed is given).
struct FaultSpec {
  FaultKind kind = FaultKind::bitflip;
  double rate = 0.0;
  std::optional<uint64_t> seed;
  /// Throws Error naming the kinds on a malformed spec.
  static FaultSpec parse(const std::string& text);
};

/// What one faulted operation changed: the error added to its output (output - correct
/// output, elementwise, over the whole output buffer), for the measurement's bookkeeping.
struct FaultRecord {
  FaultKind kind;
  Tensor64 error;
};

/// Which linear operation an output came from.
enum class LinearOp { forward, backward_data, backward_weights };

class FaultInjector {
 public:
  /// `group`: the mixtures per virtual batch the adversary assumes (K + 1, or K + 2 with the
  /// redundant mixture); the protocol's parameters are public, so an attacker knows them.
  /// With `record`, keeps a FaultRecord of each fault until take() (for a trusted side that
  /// reads them); without, only counts.
  FaultInjector(FaultSpec spec, int group, bool record = true);

  /// Called by the backend after each linear operation, with its input rows `src` (the
  /// mixtures), the weights it used (null for backward-weights) and a way to rerun it with
  /// other weights. May corrupt `dst`.
  void after(Backend& be, LinearOp op, const Buffer& src, const Weights* w,
             const std::function<void(const Weights&)>& rerun, Buffer& dst);

  int64_t operations() const { return operations_; }
  int64_t injected() const { return injected_; }
  /// The records of the operations faulted since the last call.
  std::vector<FaultRecord> take() { return std::exchange(records_, {}); }

 private:
  FaultSpec spec_;
  int group_;
  bool record_;
  std::mt19937_64 gen_;
  int64_t operations_ = 0, injected_ = 0;
  std::vector<FaultRecord> records_;
  /// The last backward-weights operation (adversarial): a redundant pair's first.
  struct Pair {
    bool open = false;
    const Buffer* src = nullptr;
    Shape shape;
    std::vector<double> error;  ///< what it added (empty: not faulted)
  } pair_;
};

}  // namespace darknight::accel
