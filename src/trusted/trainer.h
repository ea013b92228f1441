// Training in the trusted runtime: forward passes that keep what the backward pass needs,
// the loss (labels never leave the trusted side), the backward pass through the
// non-linear layers here and the linear ones through a TrainEngine, and SGD: on the
// accelerator for the linear layers' weights, here for biases and batch-norm parameters.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "protocol/sgd.h"
#include "trusted/runtime.h"

namespace darknight::trusted {

struct StepStats {
  double loss = 0;  ///< mean over the batch
  int64_t correct = 0;
  int64_t count = 0;
};

/// A trainable parameter of the trusted side, with its gradient and SGD momentum.
struct TrustedParam {
  std::string name;
  Tensor* value;
  Tensor grad;
  Tensor momentum;
};

class Trainer {
 public:
  /// Takes the model (its linear weights go to the engine) and the runtime options: the
  /// enclave budget bounds the trusted working set of a training pass.
  Trainer(nn::Graph graph, TrainEngine& engine, RuntimeOptions opts);

  /// One SGD step on a batch [B, ...] with its labels: accumulate() then apply().
  StepStats step(const Tensor& images, const std::vector<int>& labels, const SgdParams& p);
  /// The gradient of the batch's mean cross-entropy, summed over however many passes the
  /// budget needs: on the accelerator for the weights, in params() for the rest.
  StepStats accumulate(const Tensor& images, const std::vector<int>& labels);
  /// One SGD step with the accumulated gradients, which it then clears.
  void apply(const SgdParams& p);
  /// Outputs in evaluation mode (batch norms use their running statistics).
  Tensor predict(const Tensor& images);

  /// Images per forward+backward pass for a batch of `batch`; throws Error when a
  /// virtual batch does not fit the budget, or when batch norms need a whole batch that
  /// does not.
  int64_t plan(int64_t batch) const;
  /// Estimated peak trusted bytes of a training pass of `items` images.
  int64_t estimate(int64_t items) const;

  nn::Graph& graph() { return runtime_.mutable_graph(); }
  std::vector<TrustedParam>& params() { return params_; }
  const RunStats& stats() const { return runtime_.stats(); }
  void reset_stats() { runtime_.reset_stats(); }
  TrainEngine& engine() { return engine_; }

 private:
  /// Forward and backward of one pass; returns the loss summed over its examples.
  StepStats pass(const Tensor& images, const std::vector<int>& labels, int64_t batch);

  static RuntimeOptions for_training(RuntimeOptions o) {
    o.training = true;
    return o;
  }

  TrainEngine& engine_;
  RuntimeOptions opts_;
  Runtime runtime_;
  std::vector<TrustedParam> params_;
  std::map<const Tensor*, size_t> param_of_;
  bool has_batch_norm_ = false;
  int logits_node_ = 0;  ///< the output, or the softmax's input when the model ends in one
};

}  // namespace darknight::trusted
