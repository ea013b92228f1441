// Checking the untrusted accelerator's results (paper section 3.3; docs/SECURITY.md
// "Integrity"). Two checks of each linear operation, both on the mixtures themselves:
//
//  - redundant: a (K+2)-th mixture; the outputs of a virtual batch must satisfy
//    sum_j c_j ybar_j = 0 for the null vector c of the mixing matrix. An accelerator that
//    sees the K+2 mixtures can compute c itself and hide any error E with E c = 0.
//    In training also backward-data, through the null vectors of the deltas' mixing
//    (RedundantDataCheck), and the weight gradient, computed twice (GradPairCheck).
//  - freivalds: with secret random vectors s over the output channels (kProjections of
//    them, Gaussian, drawn at load time and never sent anywhere), s^T (W xbar_j),
//    computed from the accelerator's output, must equal (s^T W) xbar_j, computed by the
//    trusted side from s^T W (derived from the weights as they pass through at load time)
//    and the mixture it sent. A wrong result passes only if its error is orthogonal to s.
//    In training also backward-data and the weight gradient, with vectors t over the input
//    channels, and each SGD step's result (TrainDigest).
//
// Both compare floating-point results, so each allows a tolerance: a bound on the
// accelerator's rounding error. For a dot product of n terms in unit roundoff u, the
// probabilistic bound of Higham and Mary (SIAM J. Sci. Comput. 41(5), 2019, Thm 2.4),
//   |error| <= lambda sqrt(n) u sum_k |w_k x_k|,  failing with probability at most
//   2 exp(-lambda^2 (1 - u)^2 / 2)  (lambda = 10: 4e-22),
// is far tighter than the worst case n u. Under the same model (independent, mean-zero
// roundings), a projection sum_o s_o error_o of independent outputs concentrates likewise
// (Azuma-Hoeffding), so with Cauchy-Schwarz, sum_k |w_ok x_k| <= ||W_o|| ||patch||:
//   freivalds, output position p of mixture j:
//     |s^T ybar_j[p] - (s^T W xbar_j)[p]|
//         <= lambda sqrt(n) u sqrt(sum_groups (sum_{o in group} s_o^2 ||W_o||^2)
//                                  ||xbar_j's patch of p in the group||^2)
//   redundant, output element (o, p) of virtual batch v (worst case over the patch):
//     |sum_j c_j ybar_j[o, p]| <= ||W_o||_1 ((lambda sqrt(n) u + m 2^-53) sum_j |c_j| max|xbar_j|
//                                            + m^2 2^-53 max_j max|xbar_j|)
// plus, for freivalds, 1e-12 of the magnitudes for the trusted side's own f64 sums; for
// redundant, m 2^-53 covers its sum over the m mixtures and m^2 2^-53 the null vector c,
// null to A only to double precision (the noise, the largest input, may have a small c_j).
// A correct result fails only with that probability; errors below the tolerance pass.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "accel/backend.h"
#include "nn/graph.h"
#include "protocol/blinded.h"
#include "protocol/linear.h"
#include "protocol/sgd.h"
#include "trusted/codec.h"
#include "trusted/random.h"
#include "trusted/training_codec.h"

namespace darknight::trusted {

enum class IntegrityMode { none, redundant, freivalds };
/// The run cannot go on with this accelerator: it keeps failing checks, or the weights it
/// holds are not the verified ones. Training restores a checkpoint elsewhere, or stops.
class IntegrityStop : public Error {
 public:
  using Error::Error;
};
/// Freivalds projections per check. Several, because with a float tolerance one projection
/// of a large error can land below it by chance (measured with a single projection and a
/// looser tolerance: 1 in ~30 dropped mixtures of a dense layer passed); each costs 1/O of
/// the layer's multiply-adds.
constexpr int kProjections = 4;
std::string to_string(IntegrityMode m);
/// "none" | "redundant" | "freivalds"; throws Error otherwise.
IntegrityMode parse_integrity_mode(const std::string& s);

/// What a run's report says about integrity (docs/SECURITY.md "Integrity" defines each).
struct IntegrityCounters {
  // Counted by the engines.
  int64_t checks = 0;      ///< checks of the accelerator's linear operations
  int64_t failed = 0;      ///< checks that failed
  int64_t recomputed = 0;  ///< operations rerun on the accelerator after a failed check
  int64_t fallbacks = 0;   ///< operations computed in the trusted runtime instead
  // Counted outside the engines: by a measurement that injects faults in this process
  // (measure/fault_audit.h), or by the app, which knows where the accelerator runs.
  int64_t injected = 0;  ///< faults injected (measurement runs only)
  /// Injected faults whose effect on the checked quantity exceeds the check's tolerance
  /// (measured with the check's own secrets and tolerance).
  int64_t injected_above_tolerance = 0;
  /// Injected faults that change a decoded output by more than the fault-free computation's
  /// rounding bound, judged against the clean output, not by the check.
  int64_t changed_output = 0;
  int64_t detected = 0;  ///< injected faults in operations that failed a check
  int64_t missed = 0;    ///< faults that changed an output and passed the check
  /// The largest missed fault's effect on a decoded output, in units of the fault-free
  /// rounding bound (measure::FaultAudit::excess; infinite: an output that was exactly zero
  /// changed, or a non-finite error).
  double largest_missed_excess = 0;
  int64_t false_alarms = 0;  ///< failed checks of operations without an injected fault
  /// Failed checks of a remote worker's operations: whether the worker injected a fault
  /// there only it can say (its own count goes in the report as `worker_reported`).
  int64_t unattributed = 0;

  /// Counts a failed `check` of `layer`'s `op` and logs the first three failures on stderr.
  void note_failure(const std::string& layer, const std::string& op, const std::string& check);
};

/// One check of the accelerator's operations, as the engines report it to an observer
/// (measure/fault_audit.h, for measuring the checks). Valid during on_check() only: its
/// functions read the engine's secrets.
struct CheckEvent {
  const std::string& layer;
  const char* op;  ///< "forward", "backward-data" or "backward-weights"
  bool passed;
  /// The accelerator's operations the check covered, the last ones before it, in order
  /// (two for the redundant check's gradient pair, else one).
  int operations = 1;
  /// What an error `e` on operation i's output (its shape) does to the result the trusted
  /// side keeps: D e, with |D| e where `absolute` (D the linear decode: the unmixing of a
  /// virtual batch's outputs, identity for the folded gradient); nullopt where that output
  /// is not used (the gradient pair's second).
  std::function<std::optional<Tensor64>(int i, const Tensor64& e, bool absolute)> decode;
  /// Exact arithmetic modulo this (Slalom): an error changes the result unless it is a
  /// multiple of it. 0: floating point.
  double modulus = 0;
  /// The check's own view: whether errors on the operations' outputs (null: none) exceed
  /// its tolerance.
  std::function<bool(const std::vector<const Tensor64*>& errors)> above_tolerance;
};

class CheckObserver {
 public:
  virtual ~CheckObserver() = default;
  virtual void on_check(const CheckEvent& e) = 0;
};

/// D e per virtual batch (|D| e where `absolute`): `d` one matrix per virtual batch (rows:
/// its decoded items, columns: its mixtures), `e` [mixtures, ...] -> [items, ...].
Tensor64 apply_decode(const CoefficientList& d, const Tensor64& e, bool absolute);

/// A graph node's linear layer as the checks see it: its ConvGeometry (protocol/linear.h; a
/// dense layer is a 1x1 convolution of a [I, 1, 1] item), made from the node and its input
/// item (which protocol/ cannot name).
struct Geometry : ConvGeometry {
  static Geometry of(const nn::Node& node, const Shape& in_item);
};

/// What the trusted side keeps of a linear layer's weights to check results and to verify
/// weights read back: derived while the weights pass through at load time. Secret: wiped
/// when destroyed, neither copyable nor movable.
class WeightDigest {
 public:
  /// `w` as [O, I/groups, KH, KW] or [O, I]; draws s from `rng` (freivalds).
  WeightDigest(const Tensor& w, int64_t groups, IntegrityMode mode, Csprng& rng);
  WeightDigest(const WeightDigest&) = delete;
  WeightDigest& operator=(const WeightDigest&) = delete;
  WeightDigest(WeightDigest&&) = delete;
  WeightDigest& operator=(WeightDigest&&) = delete;
  ~WeightDigest();

  /// The projections s ([kProjections, O]); s^T W as [kProjections, C, KH, KW] kernels
  /// (C = all input channels); sum_{o in group} s_o^2 ||W_o||^2 as [kProjections, groups].
  const std::vector<double>& s() const { return s_; }
  const std::vector<double>& u() const { return u_; }
  const std::vector<double>& ws2() const { return ws2_; }
  /// ||W_o||_1 per output channel, and per input channel c the sum of |W| over the output
  /// channels and kernel taps that read it (every mode).
  const std::vector<double>& row_l1() const { return row_l1_; }
  const std::vector<double>& col_l1() const { return col_l1_; }
  /// Whether `w` is the tensor this digest was made from (BLAKE2b-256 of its bytes).
  bool matches(const Tensor& w) const;

 private:
  std::vector<double> s_, u_, ws2_, row_l1_, col_l1_;
  std::array<unsigned char, 32> hash_{};
};

/// The forward mixings of a call's virtual batches, from inference's or training's secrets.
class MixingView {
 public:
  MixingView(const MixingList& l) : inference_(&l) {}  // NOLINT: implicit by design
  MixingView(const TrainingMixingList& l) : training_(&l) {}  // NOLINT
  size_t size() const { return inference_ ? inference_->size() : training_->size(); }
  const Mixing& operator[](size_t v) const {
    return inference_ ? *(*inference_)[v] : (*training_)[v]->forward();
  }
  /// The virtual batch whose mixtures start at mixture `first`.
  int virtual_batch_of(int64_t first) const;

 private:
  const MixingList* inference_ = nullptr;
  const TrainingMixingList* training_ = nullptr;
};

/// Checks one linear operation's outputs: sees the mixtures as they are sent
/// (on_input) and the outputs as they come back (on_output), then says whether every
/// check passed.
class ForwardCheck {
 public:
  /// `secrets` (filled by the encoder before the first on_output) gives the virtual
  /// batches; `precision` the accelerator's element type.
  ForwardCheck(IntegrityMode mode, const ConvGeometry& g, const WeightDigest& digest,
               MixingView secrets, int64_t mixtures, DType precision);

  template <typename T>
  void on_input(const BlindedT<T>& rows, int64_t first, int64_t e0);
  /// Starts checking a (re)computed set of outputs.
  void begin_outputs();
  template <typename T>
  void on_output(const TensorT<T>& rows, int64_t first, int64_t e0);
  /// After every output came back: whether all checks passed.
  bool passed();
  /// Whether an error `e` added to the outputs (all mixtures) would exceed the tolerance of
  /// the quantity this check tests (for the measurement's bookkeeping).
  bool above_tolerance(const Tensor64& e) const;

 private:
  IntegrityMode mode_;
  ConvGeometry g_;
  ConvGeometry::Taps th_, tw_;
  const WeightDigest& d_;
  MixingView secrets_;
  int64_t mixtures_;
  double bound_;  ///< lambda sqrt(n) u
  bool ok_ = true;
  // freivalds, per projection, mixture and output position: (s^T W) xbar, s^T ybar,
  // |s|^T |ybar| and the tolerance; per mixture, group and position the squared patch
  // norms. Held as tensors so that the trusted memory meter counts them.
  Tensor64 ref_, ref_sq_, got_, got_abs_, tol_;
  // max |xbar_j| per mixture.
  Tensor64 max_in_;
};

/// In training (freivalds, folded gradient decode): what the trusted side keeps of a
/// linear layer's weights, renewed after every step from the weights and momentum read
/// back, once they are verified against the projections tracked through the step. Secret:
/// wiped when destroyed, neither copyable nor movable.
struct TrainDigest {
  TrainDigest() = default;
  TrainDigest(const TrainDigest&) = delete;
  TrainDigest& operator=(const TrainDigest&) = delete;
  TrainDigest(TrainDigest&&) = delete;
  TrainDigest& operator=(TrainDigest&&) = delete;
  ~TrainDigest();

  std::unique_ptr<WeightDigest> fwd;  ///< s, s^T W (also the tracked projection of W), norms
  std::unique_ptr<WeightDigest> momentum;  ///< the momentum's hash (none before the first step)
  /// Projections over the input channels: t [kProjections, C], W t as
  /// [kProjections, O, KH, KW], and sum_{c in group} t_c^2 ||W_{:,c}||^2 [kProjections, groups].
  std::vector<double> t, wt, wt2;
  std::vector<double> sv;  ///< s^T momentum, [kProjections, C, KH, KW]
  std::vector<double> sg;  ///< s^T (pending gradient), accumulated through the step
  bool first = true;       ///< no momentum yet
  /// From the weights `w` ([O, I/groups, KH, KW] or [O, I]) and momentum `v` (empty before
  /// the first step); draws s and t from `rng`.
  static std::unique_ptr<TrainDigest> make(const Tensor& w, const Tensor& v, int64_t groups,
                                           Csprng& rng);
  /// Whether `w` and `v`, read back after one SGD step with `p`, are what the tracked
  /// projections predict: s^T W' = s^T W - lr s^T step, with the step mirrored from the
  /// verified gradient, momentum and weight decay (trusted/sgd.h). Tolerance: one f32
  /// rounding of W' and of the momentum, lambda u sqrt(sum_o s_o^2 W'_o^2), plus f64 slack.
  bool verify_step(const Tensor& w, const Tensor& v, const SgdParams& p) const;
};

/// Freivalds' check of a backward-data operation, dX_j = W^T dbar_j, with t:
/// t^T dX_j[q] against the transposed convolution of dbar_j with W t; tolerance as for the
/// forward check, with the roles of input and output channels swapped.
class BackwardDataCheck {
 public:
  BackwardDataCheck(const ConvGeometry& g, const TrainDigest& d, int64_t mixtures, DType precision);
  template <typename T>
  void on_input(const BlindedT<T>& rows, int64_t first, int64_t e0);  ///< delta mixtures
  void begin_outputs();
  template <typename T>
  void on_output(const TensorT<T>& rows, int64_t first, int64_t e0);  ///< dX mixtures
  bool passed();
  bool above_tolerance(const Tensor64& e) const;

 private:
  ConvGeometry g_;
  ConvGeometry::Taps th_, tw_;
  const TrainDigest& d_;
  int64_t mixtures_;
  double bound_;
  Tensor64 ref_, ref_sq_, got_, got_abs_, tol_;  // [kProjections, mixtures, H * W]
};

/// Freivalds' check of a pass's weight gradient G = sum_j dbar_j (x) xbar_j, with t:
/// G t [O, KH, KW] against sum_j dbar_j (x) (t^T xbar_j), from the mixtures as they were
/// sent (t^T xbar_j, [groups, H, W] per mixture, is kept from the forward pass). Tolerance
/// lambda sqrt(n) u ||dbar_o|| sqrt(sum_{c in group} t_c^2 ||xbar_c||^2), n = mixtures * OH * OW.
class WeightGradCheck {
 public:
  WeightGradCheck(const ConvGeometry& g, const TrainDigest& d, int64_t mixtures, DType precision);
  template <typename T>
  void on_forward_input(const BlindedT<T>& rows, int64_t first, int64_t e0);
  template <typename T>
  void on_delta(const BlindedT<T>& rows, int64_t first, int64_t e0);
  /// Checks the gradient ([O, I/groups, KH, KW]) piece by piece: output channels o0..o1,
  /// `rows` holding theirs, in any order of pieces that covers them all; then finish()
  /// says whether all passed and, when they did, adds s^T grad to the digest's tracked
  /// gradient projection.
  void check_rows(const double* rows, int64_t o0, int64_t o1, const TrainDigest& d);
  bool finish(TrainDigest& d);
  bool above_tolerance(const Tensor64& e) const;

 private:
  ConvGeometry g_;
  ConvGeometry::Taps th_, tw_;
  int64_t mixtures_;
  double u_;
  const std::vector<double>& t_;
  Tensor64 tx_, tx_sq_, ref_, d_sq_, tol_;
  std::vector<double> sg_;  ///< s^T grad of the rows checked so far
  bool ok_ = true;
};

/// The redundant check of a backward-data operation in training, dX_j = W^T dbar_j: for
/// each null vector d of a virtual batch's folded delta mixing (two with the redundant
/// mixture), sum_j d_j dX_j = 0 elementwise, within |W|_c ((lambda sqrt(n) u + m 2^-53)
/// sum_j |d_j| max|dbar_j| + m^2 2^-53 cond max_j max|dbar_j|) (n = the output channels
/// and taps reaching an input channel c, |W|_c their weights' L1 norm,
/// WeightDigest::col_l1; m mixtures; cond that of the deltas' mixing).
class RedundantDataCheck {
 public:
  RedundantDataCheck(const ConvGeometry& g, const WeightDigest& d,
                     const TrainingMixingList& secrets, int64_t mixtures, DType precision);
  template <typename T>
  void on_input(const BlindedT<T>& rows, int64_t first, int64_t e0);  ///< delta mixtures
  void begin_outputs() { ok_ = true; }
  template <typename T>
  void on_output(const TensorT<T>& rows, int64_t first, int64_t e0);  ///< dX, one virtual batch
  bool passed() const { return ok_; }
  bool above_tolerance(const Tensor64& e) const;

 private:
  ConvGeometry g_;
  const WeightDigest& d_;
  const TrainingMixingList& secrets_;
  double bound_;
  bool ok_ = true;
  Tensor64 max_in_;  ///< max |dbar_j| per mixture
};

/// The redundant check of a pass's weight gradient: the accelerator computes it twice, from
/// the two folded delta mixings (TrainingMixing::second_delta_mixing), which agree in exact
/// arithmetic; G1 and G2 must agree elementwise within
/// ((lambda sqrt(n) + 2) u + m^2 2^-53) ||xbar_c|| (||dbar1_o|| + ||dbar2_o||),
/// n = mixtures * OH * OW (the norms over every mixture and position; 2 u covers the
/// mixtures' own rounding, m^2 2^-53 the null vector's, m = `per_batch` mixtures).
class GradPairCheck {
 public:
  GradPairCheck(const ConvGeometry& g, int64_t mixtures, int per_batch, DType precision);
  template <typename T>
  void on_forward_input(const BlindedT<T>& rows, int64_t first, int64_t e0);
  /// Delta mixtures of the first (`which` = 0) or second mixing.
  template <typename T>
  void on_delta(const BlindedT<T>& rows, int64_t first, int64_t e0, int which);
  /// Checks G1 and G2 (their elements e0.. e0 + len) piece by piece, the pieces after
  /// begin() covering them all; passed() says whether every piece agreed.
  void begin() { ok_ = true; }
  void check_piece(const double* g1, const double* g2, int64_t e0, int64_t len);
  bool passed() const { return ok_; }
  /// `e`: the error on G1 minus that on G2.
  bool above_tolerance(const Tensor64& e) const;

 private:
  /// The tolerance of output channel o and input channel ci of its group.
  double tolerance(int64_t o, int64_t ci) const;
  ConvGeometry g_;
  double bound_;
  bool ok_ = true;
  Tensor64 x_sq_, d_sq_;  // [C], [2, O]
};

/// W x for plaintext items, computed in the trusted runtime (f64 accumulation): the
/// fallback when the accelerator keeps failing checks. `w` must be verified first.
Tensor trusted_linear(const ConvGeometry& g, const Tensor& w, const Tensor& src);

}  // namespace darknight::trusted
