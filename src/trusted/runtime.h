// The trusted runtime: runs a model graph layer by layer. Linear layers go to a
// LinearEngine (DarKnight's codec + the accelerator, or a baseline); the non-linear layers
// run here. It tracks the trusted working set and keeps it under the enclave's budget by
// running the batch in chunks of virtual batches, each chunk through the whole network.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "nn/graph.h"
#include "protocol/memory_meter.h"

namespace darknight::trusted {

/// Seconds on a monotonic clock.
double now();
/// Runs OpenMP regions on `n` threads (0: unchanged) while it lives.
class ThreadScope {
 public:
  explicit ThreadScope(int n);
  ~ThreadScope();
  ThreadScope(const ThreadScope&) = delete;
  ThreadScope& operator=(const ThreadScope&) = delete;

 private:
  int previous_;
};
/// [n, item...].
Shape batched(int64_t n, const Shape& item);
/// [item...] of a batched shape [n, item...].
Shape item_of(const Shape& batch);

/// Wall time per kind of work, seconds.
struct OpTimes {
  double encode = 0, accelerator = 0, decode = 0, nonlinear = 0;
  /// The part of `accelerator` spent copying to and from it (0 where copies overlap other
  /// work, as in darknight's overlapped path).
  double transfer = 0;
  double total() const { return encode + accelerator + decode + nonlinear; }
};

struct RunStats {
  OpTimes times;           ///< forward passes
  OpTimes backward_times;  ///< backward passes (training)
  int64_t peak_trusted_bytes = 0;
  int64_t images = 0;
  int64_t chunk_images = 0;  ///< images per pass through the network
  int64_t accelerator_calls = 0;
  int64_t bytes_to_accelerator = 0;
  int64_t bytes_from_accelerator = 0;
};

/// Trusted bytes a linear layer needs besides its input and output activations: while the
/// input is still needed (encoding) and while the output is produced (decoding).
struct Scratch {
  int64_t before = 0;
  int64_t after = 0;
};

/// How a linear layer (conv/dense + its fused epilogue) is computed.
class LinearEngine {
 public:
  virtual ~LinearEngine() = default;
  virtual std::string name() const = 0;
  /// Takes the model's linear weights, moving them out of g.weights().
  virtual void load(nn::Graph& g) = 0;
  /// Inputs per virtual batch (1 when the engine does not mix).
  virtual int granularity() const { return 1; }
  /// Trusted bytes needed beyond the layer's activations to run `node` (inputs of
  /// `in_numel` elements each) on `items` inputs in virtual batches of `k`.
  virtual Scratch scratch_bytes(const nn::Node& node, int64_t in_numel, int64_t items,
                                int k) const = 0;
  /// Trusted bytes held for the engine's lifetime (tee: the weights).
  virtual int64_t resident_bytes() const { return 0; }
  /// Called before each pass through the network with `items` inputs.
  virtual void begin_pass(const nn::Graph&, int64_t /*items*/) {}
  /// epilogue(W x) for every item x of src: [m, in...] -> [m, out...]. With `consume` the
  /// engine may free `src` as soon as it no longer needs it.
  virtual Tensor forward(const nn::Node& node, Tensor& src, bool consume, RunStats& stats) = 0;
};

/// A linear-layer engine that can also train: it keeps what the backward pass needs
/// between a forward_train() and the matching backward(), and accumulates the weight
/// gradients where the weights are.
class TrainEngine : public LinearEngine {
 public:
  /// Like forward(), keeping the layer's inputs (on the accelerator) for backward().
  virtual Tensor forward_train(const nn::Node& node, Tensor& src, RunStats& stats) = 0;
  /// Given dL/d(linear result) [m, out...] of the last forward_train() of `node`, adds
  /// dL/dW to the layer's pending gradient and returns dL/d(input) (empty when
  /// `input_grad` is false).
  virtual Tensor backward(const nn::Node& node, const Tensor& delta, bool input_grad,
                          RunStats& stats) = 0;
  /// Trusted bytes needed besides the activations to train `node` on `items` inputs.
  virtual int64_t backward_scratch_bytes(const nn::Node& node, int64_t in_numel, int64_t items,
                                         int k) const = 0;
  /// One SGD step on every layer with the pending gradients, then clears them.
  virtual void step(const SgdParams& p) = 0;
  /// Forgets what the forward passes kept.
  virtual void end_step() = 0;
  /// The weights and SGD momentum of linear layer `index` (checkpoints), and restoring
  /// momentum.
  virtual Tensor read_weights(int index) = 0;
  virtual Tensor read_momentum(int index) = 0;
  virtual void write_momentum(int index, const Tensor& momentum) = 0;
  /// The pending gradient of linear layer `index` (tests and checks).
  virtual Tensor64 read_grad(int index) = 0;
};

struct RuntimeOptions {
  int64_t memory_budget = int64_t{128} << 20;  ///< SGX's EPC
  bool enforce_budget = true;  ///< darknight: split batches to fit; tee/plain: report only
  int threads = 0;             ///< threads of the trusted side; 0 = all cores
  /// Called after each chunk with (images done, images in the batch).
  std::function<void(int64_t, int64_t)> progress;
  /// Called with every linear layer's output for the chunk starting at `first` (for
  /// measuring per-layer error against a reference run).
  std::function<void(int node, int64_t first, const Tensor& value)> probe;
  /// Keep batch norms with statistics separate (for training; see nn::Graph::fuse).
  bool training = false;
};

class Runtime {
 public:
  /// Fuses the graph's epilogues and hands its weights to the engine.
  Runtime(nn::Graph graph, LinearEngine& engine, RuntimeOptions opts);

  /// Runs a batch [B, input...] and returns [B, output...].
  /// Throws Error before any work when a single virtual batch does not fit the budget.
  Tensor infer(const Tensor& batch);

  /// Images per pass for a batch of `batch` images (a multiple of the engine's K, or the
  /// whole batch); throws Error, naming the layer and the K that would fit, when even one
  /// virtual batch exceeds an enforced budget.
  int64_t plan(int64_t batch) const;
  /// Estimated peak trusted bytes to run `items` images in virtual batches of `k`, and the
  /// node where it peaks.
  std::pair<int64_t, int> estimate(int64_t items, int k) const;

  const RunStats& stats() const { return stats_; }
  const nn::Graph& graph() const { return graph_; }
  nn::Graph& mutable_graph() { return graph_; }
  RunStats& mutable_stats() { return stats_; }
  MemoryMeter& meter() { return meter_; }
  const std::vector<int>& last_uses() const { return last_use_; }
  void reset_stats() { stats_ = {}; }

 private:
  nn::Graph graph_;
  LinearEngine& engine_;
  RuntimeOptions opts_;
  std::vector<int> last_use_;
  MemoryMeter meter_;
  RunStats stats_;
};

}  // namespace darknight::trusted
