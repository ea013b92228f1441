// DarKnight's linear layers: encode the inputs of each virtual batch with fresh secrets,
// let the untrusted accelerator apply W to the mixtures, decode with the epilogue fused in;
// in training, the blinded backward pass of section 3.2 as well.
#pragma once

#include <functional>
#include <map>
#include <memory>

#include "accel/backend.h"
#include "trusted/accelerator_engine.h"
#include "trusted/check_books.h"
#include "trusted/codec.h"
#include "trusted/darknight_memory.h"
#include "trusted/integrity.h"
#include "trusted/runtime.h"
#include "trusted/secrets.h"
#include "trusted/training_codec.h"
#include "trusted/transfer.h"
#include "trusted/weight_verifier.h"

namespace darknight::trusted {

class DarKnightEngine final : public AcceleratorEngine {
 public:
  /// `backend` is the untrusted accelerator; `rng` the trusted generator. With
  /// `precompute_bytes` > 0 inference secrets are drawn ahead on a background thread,
  /// holding at most that many bytes of noise.
  DarKnightEngine(accel::Backend& backend, const CodecOptions& opts, Csprng& rng,
                  int64_t precompute_bytes = 0, GradDecode grad_decode = GradDecode::trusted);
  ~DarKnightEngine() override;

  /// Checks every linear operation's results (trusted/integrity.h; in training with the
  /// folded gradient decode), drawing the check vectors from `rng` (a stream of its own).
  /// The codec options must have redundancy 1 for `redundant`. Call before load().
  void set_integrity(IntegrityMode mode, Csprng* rng);
  /// From now on, every check is reported to `observer` (null: none); measurement runs
  /// (measure/fault_audit.h). Not owned.
  void set_check_observer(CheckObserver* observer) { books_.set_observer(observer); }
  /// Overlaps the trusted side's work with the accelerator's in inference without checks:
  /// a layer's virtual batches go in chunks, and chunk c + 1 is encoded and chunk c - 1
  /// decoded while the accelerator runs chunk c. Default: on for an asynchronous backend
  /// (a GPU). The mixtures are the same in distribution, not bit for bit (secrets are drawn
  /// chunk by chunk). Call before begin_pass().
  void set_overlap(bool on) { settings_.overlap = on; }
  bool overlap() const { return settings_.overlap; }
  const IntegrityCounters& integrity() const { return books_.counters(); }
  void reset_integrity() { books_.reset(); }

  std::string name() const override { return "darknight"; }
  void load(nn::Graph& g) override;
  int granularity() const override { return settings_.codec.k; }
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

 private:
  /// What a layer's last forward_train() kept for its backward pass.
  struct Kept {
    TrainingMixingList secrets;
    Shape in_shape;                               ///< of the mixtures on the accelerator
    std::unique_ptr<WeightGradCheck> grad_check;  ///< with freivalds
    std::unique_ptr<GradPairCheck> pair_check;    ///< with redundant
  };
  /// Seconds of one layer's forward pass, as RunStats::times counts them.
  struct PassTimes {
    double encode = 0;        ///< encoding, uploads included
    double up = 0, down = 0;  ///< uploads, downloads
    double accelerator = 0;   ///< the linear operations
    double decode = 0;        ///< downloads, decoding and checks (and a fallback)
    void add_to(OpTimes& t) const;
  };
  /// One backward() call (darknight_backward.cpp).
  template <typename T>
  class Backward;

  template <typename T>
  Tensor forward_t(const nn::Node& node, Tensor& src, bool consume, RunStats& stats);
  /// forward_t's overlapped path (set_overlap).
  template <typename T>
  void forward_overlapped(const nn::Node& node, const Tensor& src, Tensor& dst, RunStats& stats);
  template <typename T>
  Tensor forward_train_t(const nn::Node& node, Tensor& src, RunStats& stats);
  /// Runs the node's linear op on the mixtures `in` and has `decode` decode its outputs
  /// (fetched as it asks), checked by `check` (null: none) against `secrets`; one attempt
  /// of CheckBooks::recompute_then_fallback: whether it passed.
  template <typename T>
  bool forward_attempt(const nn::Node& node, const accel::Buffer& in, ForwardCheck* check,
                       MixingView secrets, const std::function<void(const OutputFetch<T>&)>& decode,
                       PassTimes& times, RunStats& stats);
  /// After failed checks in inference: the layer computed in the trusted runtime with
  /// weights read back and verified against their digest.
  void fallback(const nn::Node& node, const Tensor& src, Tensor& dst);

  DarKnightSettings settings_;
  std::unique_ptr<PooledSource> pool_;
  Encoder encoder_;
  TrainingEncoder train_encoder_;
  Transfer transfer_;
  CheckBooks books_;
  WeightVerifier verifier_;
  std::map<int, Kept> kept_;
};

}  // namespace darknight::trusted
