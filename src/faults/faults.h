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

#include "accel/backend.h"
#include "protocol/tensor.h"

namespace darknight::accel {

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

/// What one faulted operation changed, over its whole output buffer, for a measurement
/// outside the trusted side (measure/fault_audit.h) to judge: the clean output (what the
/// accelerator computed before the fault), the error the fault added (output - clean), and
/// the worst-case rounding error of the fault-free computation, elementwise:
/// gamma_{n+1} sum_k |w_k x_k| with gamma_m = m u / (1 - m u) (Higham, "Accuracy and Stability
/// of Numerical Algorithms", 2nd ed., eq. 3.5), u the element type's unit roundoff, n the
/// element's number of terms; computed by rerunning the operation on |inputs| and on ones.
struct FaultRecord {
  int64_t seq = 0;  ///< which operation: FaultInjector::calls() just before it
  FaultKind kind;
  Tensor64 clean, error, bound;
};

/// Which linear operation an output came from.
enum class LinearOp { forward, backward_data, backward_weights };

/// Reruns a linear operation into `dst` with other operands: `a` its first input (src, or
/// diff_dst for backward-data), `w` its weights (null for backward-weights), `b` its second
/// input (backward-weights' diff_dst; else null).
using LinearRerun =
    std::function<void(const Buffer& a, const Weights* w, const Buffer* b, Buffer& dst)>;

class FaultInjector {
 public:
  /// `group`: the mixtures per virtual batch the adversary assumes (K + 1, or K + 2 with the
  /// redundant mixture); the protocol's parameters are public, so an attacker knows them.
  /// With `record`, keeps a FaultRecord of each fault until take() (for a trusted side that
  /// reads them); without, only counts.
  FaultInjector(FaultSpec spec, int group, bool record = true);

  /// Called by a FaultyBackend (faults/faulty_backend.h) after each linear operation of the
  /// backend it decorates, `be`, with its operands (as for
  /// LinearRerun) and a way to rerun it with others. May corrupt `dst`.
  void after(Backend& be, LinearOp op, const Buffer& a, const Weights* w, const Buffer* b,
             const LinearRerun& rerun, Buffer& dst);

  /// Linear operations seen (every call of after()).
  int64_t calls() const { return calls_; }
  /// Linear operations this kind of fault can hit (wrong-weights: those with weights).
  int64_t operations() const { return operations_; }
  int64_t injected() const { return injected_; }
  /// The records of the operations faulted since the last call.
  std::vector<FaultRecord> take() { return std::exchange(records_, {}); }

 private:
  struct DeviceIo;
  int64_t pick(int64_t n);
  /// bitflip, scale, drop: corrupts the output values y; false when it cannot (drop, 1 row).
  bool corrupt(const Shape& shape, DType dtype, std::vector<double>& y);
  /// The weights with one output channel perturbed by their RMS.
  WeightsPtr wrong_weights(Backend& be, const Weights& w);
  /// Adds an error the redundant check cannot see to y; false: no virtual batch leaves room.
  bool adversarial(const DeviceIo& io, LinearOp op, const Buffer& a, const Shape& shape,
                   std::vector<double>& y);
  FaultRecord record(const DeviceIo& io, int64_t seq, const Buffer& a, const Weights* w,
                     const Buffer* b, const LinearRerun& rerun, const Buffer& dst,
                     const std::vector<double>& before) const;

  FaultSpec spec_;
  int group_;
  bool record_;
  std::mt19937_64 gen_;
  int64_t calls_ = 0, operations_ = 0, injected_ = 0;
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
