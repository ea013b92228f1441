// The Slalom baseline (Tramer and Boneh, ICLR 2019), inference only: each input is blinded
// on its own with a uniformly random mask in a prime field, and the unblinding factors are
// precomputed offline and kept outside the trusted runtime, encrypted and authenticated.
//
// Per input x and linear layer (weights W, fan-in L), in F_p with p = 2^31 - 1:
//   offline  r uniform in F_p^n (ChaCha20 under the trusted mask key, nonce = (input, layer));
//            u = W_q r mod p, sealed (XChaCha20-Poly1305, trusted key, input and layer as
//            associated data) and stored in untrusted memory
//   online   x_q = round(x 2^sx), |x_q| <= 255       (8-bit activations, per input)
//            xbar = x_q + r mod p, centred in [-(p-1)/2, (p-1)/2]          -> accelerator
//            ybar = W_q xbar, exact in f64 (integers below 2^53)           <- accelerator
//            W_q x_q = ybar - u mod p, centred; y = (W_q x_q) 2^-(sx+sw); bias, activation
// with W_q = round(W 2^sw), |W_q| <= 127 (8-bit weights, per layer). Decoding is exact when
// L 127 255 <= (p-1)/2, i.e. L <= kMaxFanIn = 33155; the accelerator's f64 sums stay exact
// when L 127 (p-1)/2 < 2^53 (L <= 66052). Models with a larger fan-in are refused at load.
//
// With freivalds, every result is checked in F_p with a secret s drawn at load time:
// s^T ybar = (s^T W_q) xbar mod p at every output position; a wrong result passes with
// probability at most 1/p. A failed check means a recomputation, then the layer computed
// exactly in the trusted runtime. See docs/SECURITY.md ("slalom").
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "accel/arena.h"
#include "accel/backend.h"
#include "protocol/blinded.h"
#include "protocol/error.h"
#include "protocol/memory_meter.h"
#include "trusted/integrity.h"
#include "trusted/random.h"
#include "trusted/runtime.h"

namespace darknight::baselines {

// Slalom runs on the trusted runtime's parts (its generator, engine interface, integrity
// counters); it is a baseline, so it lives here, above them.
using trusted::batched;
using trusted::CheckEvent;
using trusted::CheckObserver;
using trusted::Csprng;
using trusted::Geometry;
using trusted::IntegrityCounters;
using trusted::IntegrityMode;
using trusted::LinearEngine;
using trusted::now;
using trusted::RunStats;
using trusted::Scratch;

namespace slalom {
inline constexpr int64_t kPrime = 2147483647;   ///< p = 2^31 - 1
inline constexpr int64_t kActivationMax = 255;  ///< |x_q|: 8-bit activations
inline constexpr int64_t kWeightMax = 127;      ///< |W_q|: signed 8-bit weights
/// The largest fan-in whose results decode exactly: L 127 255 <= (p - 1) / 2.
inline constexpr int64_t kMaxFanIn = (kPrime - 1) / 2 / (kActivationMax * kWeightMax);
static_assert(kMaxFanIn * kWeightMax * ((kPrime - 1) / 2) < (int64_t{1} << 53),
              "the accelerator's f64 sums must stay exact");

/// The largest s with amax 2^s <= qmax (0 when amax is 0): the fixed-point shift.
int fixed_point_shift(double amax, int64_t qmax);
/// x in F_p (0 <= x < p) as the centred integer in [-(p-1)/2, (p-1)/2].
inline int64_t centred(int64_t x) {
  return x > (kPrime - 1) / 2 ? x - kPrime : x;
}
/// x mod p in [0, p) for |x| < 2^62, by Mersenne reduction (2^31 = 1 mod p).
inline int64_t mod_p(int64_t x) {
  uint64_t a = static_cast<uint64_t>(x < 0 ? -x : x);
  a = (a & kPrime) + (a >> 31);  // < 2^32 + 2^31
  a = (a & kPrime) + (a >> 31);  // < 2^31 + 3
  if (a >= static_cast<uint64_t>(kPrime)) a -= kPrime;
  return x < 0 && a != 0 ? kPrime - static_cast<int64_t>(a) : static_cast<int64_t>(a);
}
/// n values uniform in F_p drawn from `rng` (31-bit words, p itself redrawn).
void uniform(Csprng& rng, uint32_t* out, int64_t n);
/// Whether the accelerator's result `yb` of one item (layer `g`) satisfies Freivalds'
/// equation s^T ybar = v xbar mod p at every output position, with v = s^T W_q as
/// [C, KH, KW] kernels; false too when a value is not an integer of the possible range.
bool freivalds(const ConvGeometry& g, const std::vector<uint32_t>& s,
               const std::vector<uint32_t>& v, const double* xb, const double* yb);
}  // namespace slalom

/// A buffer of the trusted runtime's, its elements left unset: secret storage
/// (protocol/storage.h) charged to its memory meter, wiped when freed.
template <typename T>
class TrustedBuffer : public SecretBuffer<T> {
 public:
  explicit TrustedBuffer(int64_t n)
      : SecretBuffer<T>(SecretBuffer<T>::uninitialized(n, Metered::yes)) {}
};

/// Slalom's masks and blinding: the only Slalom code that makes accelerator data. Holds the
/// mask key (drawn from the trusted generator), wiped when destroyed; neither copyable nor
/// movable.
class SlalomEncoder : private BlindingFactory {
 public:
  explicit SlalomEncoder(Csprng& rng);
  ~SlalomEncoder();
  SlalomEncoder(const SlalomEncoder&) = delete;
  SlalomEncoder& operator=(const SlalomEncoder&) = delete;

  /// The mask r in F_p^n of (input, layer): the ChaCha20 keystream under the mask key with
  /// nonce (input, layer), as 31-bit words, the value p redrawn from blocks after the
  /// stream. Uniform, fresh for every input and layer, the same values on every call (the
  /// offline and online phases regenerate it) and on any thread count.
  void masks(int64_t input, int layer, uint32_t* r, int64_t n) const;
  /// x_q + r mod p, centred, for x_q = round(x * scale) of an item of `shape` ([1, ...]).
  Blinded64 blind(const float* x, double scale, const uint32_t* r, const Shape& shape) const;

 private:
  unsigned char key_[32];
};

/// Untrusted storage of the sealed unblinding factors: ciphertexts in ordinary host memory,
/// outside the trusted memory meter. The sealing key is the trusted runtime's (wiped when
/// destroyed). Each entry is u as 32-bit words in pieces of 2^16, each sealed as
/// nonce || XChaCha20-Poly1305(piece) with (input, layer, length, piece) as associated
/// data, so entries and pieces cannot be altered, swapped or truncated unnoticed.
class UnblindingStore {
 public:
  explicit UnblindingStore(Csprng& rng);
  ~UnblindingStore();
  UnblindingStore(const UnblindingStore&) = delete;
  UnblindingStore& operator=(const UnblindingStore&) = delete;

  /// Seals u (n words) for (input, layer). Thread-safe.
  void seal(int64_t input, int layer, const uint32_t* u, int64_t n);
  /// Decrypts and authenticates (input, layer)'s factors into u (n words), and forgets them
  /// (each is used once). An error when missing or when authentication fails.
  Status open(int64_t input, int layer, uint32_t* u, int64_t n);
  /// Forgets every entry of inputs before `input`.
  void drop_before(int64_t input);
  /// The stored ciphertext, as the untrusted host holds it (tests alter it); null if none.
  std::vector<unsigned char>* find(int64_t input, int layer);
  int64_t bytes() const { return bytes_; }
  int64_t peak_bytes() const { return peak_bytes_; }

 private:
  unsigned char key_[32];
  std::mutex mu_;
  std::map<std::pair<int64_t, int>, std::vector<unsigned char>> sealed_;
  int64_t bytes_ = 0, peak_bytes_ = 0;
};

/// Slalom's linear layers (one input at a time, as Slalom does). Call precompute(n) (the
/// offline phase) before running n more inputs.
class SlalomEngine final : public LinearEngine {
 public:
  /// `backend` is the untrusted accelerator (f64 buffers); `rng` the trusted generator
  /// (the mask and sealing keys).
  SlalomEngine(accel::Backend& backend, Csprng& rng);
  ~SlalomEngine() override;

  /// none or freivalds (drawing s from `rng`). Call before load().
  void set_integrity(IntegrityMode mode, Csprng* rng);
  /// From now on, every check is reported to `observer` (null: none); measurement runs
  /// (measure/fault_audit.h). Not owned.
  void set_check_observer(CheckObserver* observer) { observer_ = observer; }
  const IntegrityCounters& integrity() const { return counters_; }
  void reset_integrity() { counters_ = {}; }

  std::string name() const override { return "slalom"; }
  /// Quantizes the weights (refusing a layer whose fan-in exceeds slalom::kMaxFanIn) and
  /// hands them to the accelerator; keeps a host copy for the offline phase.
  void load(nn::Graph& g) override;
  Scratch scratch_bytes(const nn::Node& node, int64_t in_numel, int64_t items,
                        int k) const override;
  void begin_pass(const nn::Graph& g, int64_t items) override;
  Tensor forward(const nn::Node& node, Tensor& src, bool consume, RunStats& stats) override;

  /// The offline phase: masks and sealed unblinding factors of every layer for the next
  /// `inputs` inputs, computed in the trusted runtime.
  void precompute(int64_t inputs);
  /// Inputs precomputed and not yet run.
  int64_t available() const { return next_precompute_ - next_input_; }
  double offline_seconds() const { return offline_seconds_; }
  UnblindingStore& store() { return store_; }

  /// One input's linear layer, exactly: W_q x_q as integers (in f64) and the shift sx + sw
  /// with W x ~ W_q x_q 2^-shift. `input` is its index among the inputs run so far.
  struct Decoded {
    Tensor64 values;
    int shift = 0;
  };
  Decoded run_item(const nn::Node& node, const float* x, int64_t input, RunStats& stats);
  /// The shift sw of linear layer `index`'s weights.
  int weight_shift(int index) const { return layers_.at(static_cast<size_t>(index)).shift_w; }

 private:
  struct Layer {
    std::string name;
    Shape in_item;  ///< the layer's input item
    ConvGeometry geo;
    int shift_w = 0;
    Tensor wq;                   ///< W_q (host copy, for the offline phase and the fallback)
    accel::WeightsPtr weights;   ///< W_q on the accelerator
    std::vector<uint32_t> s, v;  ///< freivalds: secret s [O] and s^T W_q mod p [C, KH, KW]
    int64_t in_numel() const { return geo.in_numel(); }
    int64_t out_numel() const { return geo.out_numel(); }
  };
  // run_item's steps, for linear layer `layer` (its weights index).
  /// Quantizes input x (8-bit magnitude, scale 2^shift_x) and blinds it with its mask.
  Blinded64 encode(const Layer& l, int layer, const float* x, int64_t input, int& shift_x) const;
  /// ybar = W_q xbar on the accelerator, into yb; with freivalds, checked and recomputed
  /// once. False when it failed twice. `checking`: the seconds spent checking.
  bool accelerate(const nn::Node& node, const Layer& l, const Blinded64& xb, Tensor64& yb,
                  double& checking, RunStats& stats);
  /// W_q x_q = ybar - u mod p, centred, into `values` (out_numel).
  void unblind(const Layer& l, int layer, int64_t input, const Tensor64& yb, double* values);
  void account(const Layer& l, bool passed);

  accel::Backend& be_;
  SlalomEncoder encoder_;
  UnblindingStore store_;
  accel::BufferArena buffers_;  // 0: the blinded input, 1: the output
  std::vector<Layer> layers_;   // per weights index
  int64_t next_precompute_ = 0, next_input_ = 0, pass_first_ = 0;
  double offline_seconds_ = 0;

  IntegrityMode integrity_ = IntegrityMode::none;
  Csprng* check_rng_ = nullptr;
  CheckObserver* observer_ = nullptr;
  IntegrityCounters counters_;
};

}  // namespace darknight::baselines
