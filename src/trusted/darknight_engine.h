// DarKnight's linear layers: encode the inputs of each virtual batch with fresh secrets,
// let the untrusted accelerator apply W to the mixtures, decode with the epilogue fused in;
// in training, the blinded backward pass of section 3.2 as well.
#pragma once

#include <array>
#include <functional>
#include <map>
#include <memory>
#include <vector>

#include "accel/arena.h"
#include "accel/backend.h"
#include "trusted/codec.h"
#include "trusted/integrity.h"
#include "trusted/runtime.h"
#include "trusted/secrets.h"
#include "trusted/training_codec.h"

namespace darknight::trusted {

/// How the trusted side obtains a virtual batch's weight gradient (docs/SECURITY.md):
/// `trusted`, the paper's: the accelerator returns every Eq_j and the trusted side sums
/// gamma_j Eq_j; `folded`: gamma_j is folded into the deltas, and the accelerator's
/// ordinary backward-weights returns the sum, which stays on the accelerator.
enum class GradDecode { trusted, folded };

class DarKnightEngine final : public TrainEngine {
 public:
  /// `backend` is the untrusted accelerator; `rng` the trusted generator. With
  /// `precompute_bytes` > 0 inference secrets are drawn ahead on a background thread,
  /// holding at most that many bytes of noise.
  DarKnightEngine(accel::Backend& backend, const CodecOptions& opts, Csprng& rng,
                  int64_t precompute_bytes = 0, GradDecode grad_decode = GradDecode::trusted);
  ~DarKnightEngine() override;

  /// Checks every linear operation's results (trusted/integrity.h; in training with the
  /// folded gradient decode), drawing
  /// the check vectors from `rng` (a stream of its own). The codec options must have
  /// redundancy 1 for `redundant`. Call before load().
  void set_integrity(IntegrityMode mode, Csprng* rng);
  /// From now on, every check is reported to `observer` (null: none); measurement runs
  /// (measure/fault_audit.h). Not owned.
  void set_check_observer(CheckObserver* observer) { observer_ = observer; }
  /// Overlaps the trusted side's work with the accelerator's in inference without checks:
  /// a layer's virtual batches go in chunks, and chunk c + 1 is encoded and chunk c - 1
  /// decoded while the accelerator runs chunk c. Default: on for an asynchronous backend
  /// (a GPU). The mixtures are the same in distribution, not bit for bit (secrets are drawn
  /// chunk by chunk). Call before begin_pass().
  void set_overlap(bool on) { overlap_ = on; }
  bool overlap() const { return overlap_; }
  const IntegrityCounters& integrity() const { return counters_; }
  void reset_integrity() { counters_ = {}; }

  std::string name() const override { return "darknight"; }
  void load(nn::Graph& g) override;
  int granularity() const override { return encoder_.options().k; }
  Scratch scratch_bytes(const nn::Node& node, int64_t in_numel, int64_t items,
                        int k) const override;
  int64_t resident_bytes() const override;
  void begin_pass(const nn::Graph& g, int64_t items) override;
  Tensor forward(const nn::Node& node, Tensor& src, bool consume, RunStats& stats) override;

  Tensor forward_train(const nn::Node& node, Tensor& src, RunStats& stats) override;
  Tensor backward(const nn::Node& node, const Tensor& delta, bool input_grad,
                  RunStats& stats) override;
  int64_t backward_scratch_bytes(const nn::Node& node, int64_t in_numel, int64_t items,
                                 int k) const override;
  void step(const SgdParams& p) override;
  void end_step() override { kept_.clear(); }
  Tensor read_weights(int index) override;
  Tensor read_momentum(int index) override;
  void write_momentum(int index, const Tensor& momentum) override;
  Tensor64 read_grad(int index) override;

 private:
  template <typename T>
  Tensor forward_t(const nn::Node& node, Tensor& src, bool consume, RunStats& stats);
  /// forward_t's overlapped path (set_overlap).
  template <typename T>
  void forward_overlapped(const nn::Node& node, const Tensor& src, Tensor& dst, RunStats& stats);
  /// Virtual batches per chunk of the overlapped path for a layer of `items` inputs whose
  /// outputs have `out_numel` elements each; 0 when the layer is not overlapped.
  int64_t overlap_chunk(int64_t items, int64_t out_numel) const;
  template <typename T>
  Tensor forward_train_t(const nn::Node& node, Tensor& src, RunStats& stats);
  template <typename T>
  Tensor backward_t(const nn::Node& node, const Tensor& delta, bool input_grad, RunStats& stats);
  /// Sends pieces of mixtures to `dst` (items of `item` elements), timing the copies.
  template <typename T>
  MixtureSink<T> uploader(accel::Buffer& dst, int64_t item, double& seconds, RunStats& stats);
  /// Fetches pieces of outputs from `src`, timing the copies.
  template <typename T>
  OutputFetch<T> downloader(const accel::Buffer& src, int64_t item, double& seconds,
                            RunStats& stats);
  /// Runs the node's linear op on `in` into a buffer of the arena's slot 1.
  const accel::Buffer& apply(const nn::Node& node, const accel::Buffer& in);
  /// After a failed check: the layer computed in the trusted runtime with weights read back
  /// and verified against the load-time digest.
  void fallback(const nn::Node& node, const Tensor& src, Tensor& dst);
  /// Counts a check of `operations` accelerator operations (`op`: forward, backward-data,
  /// backward-weights), logs failures, and tells the observer (CheckEvent: `decode`,
  /// `above`).
  void account(const nn::Node& node, const char* op, bool passed, int operations,
               const decltype(CheckEvent::decode)& decode,
               const decltype(CheckEvent::above_tolerance)& above);
  /// account() of one operation whose output is decoded with `d` (see apply_decode).
  void account(const nn::Node& node, const char* op, bool passed,
               const std::function<CoefficientList()>& d,
               const std::function<bool(const Tensor64&)>& above);
  /// In training, after a failed check: counts a recomputation, or stops the run when
  /// `attempt` recomputations have all failed (8 per accelerator operation the check
  /// covers: `operations`).
  void recompute_or_stop(const nn::Node& node, int attempt, const char* op, int operations = 1);
  /// In training with checks: the per-layer digests, made from the weights (verified
  /// against the load-time hashes) and momentum on the accelerator.
  void ensure_train_digests();
  /// The digest of weights `index` as they are now (after training steps, the latest).
  const WeightDigest& digest(int index) const {
    return train_digests_.empty() ? *digests_[static_cast<size_t>(index)]
                                  : *train_digests_[static_cast<size_t>(index)]->fwd;
  }
  /// What a layer's last forward_train() kept for its backward pass.
  struct Kept {
    TrainingMixingList secrets;
    Shape in_shape;                               ///< of the mixtures on the accelerator
    std::unique_ptr<WeightGradCheck> grad_check;  ///< with freivalds
    std::unique_ptr<GradPairCheck> pair_check;    ///< with redundant
  };

  accel::Backend& be_;
  bool overlap_;
  std::unique_ptr<PooledSource> pool_;
  Encoder encoder_;
  TrainingEncoder train_encoder_;
  GradDecode grad_decode_;
  std::vector<accel::WeightsPtr> weights_;
  accel::BufferArena buffers_;       // 0: input mixtures, 1: outputs, 2-7: backward pass
  accel::BufferArena train_inputs_;  // per layer (weights index): its input mixtures
  // The overlapped path's two download areas, of one chunk each (trusted memory, counted in
  // scratch_bytes), grown when a layer needs more and kept: fresh ones for each chunk would
  // cost a page fault per 4 KiB.
  std::array<Tensor, 2> stage32_;
  std::array<Tensor64, 2> stage64_;
  /// Download area `i`, of at least `numel` elements.
  template <typename T>
  TensorT<T>& stage(int i, int64_t numel);
  std::map<int, Kept> kept_;

  IntegrityMode integrity_ = IntegrityMode::none;
  Csprng* check_rng_ = nullptr;
  CheckObserver* observer_ = nullptr;
  std::vector<std::unique_ptr<WeightDigest>> digests_;  // per weights index
  std::vector<std::unique_ptr<TrainDigest>> train_digests_;
  std::vector<int64_t> groups_;  // per weights index
  IntegrityCounters counters_;
};

}  // namespace darknight::trusted
