// What the engines that keep a model's linear layers on an accelerator share (DarKnight's and
// the plain and tee baselines): the weights there, each node's linear operations on it, the
// accelerator buffers those use, SGD steps and reading the weights back.
#pragma once

#include <span>
#include <vector>

#include "accel/arena.h"
#include "accel/backend.h"
#include "trusted/runtime.h"

namespace darknight::trusted {

/// The accelerator buffers an engine reuses from call to call (one arena slot each).
enum class Buf {
  inputs,        ///< a layer's inputs (darknight: their mixtures)
  outputs,       ///< the layer's outputs
  deltas,        ///< backward: the deltas (darknight: their mixtures)
  input_grads,   ///< backward-data's result
  weight_grad,   ///< backward-weights' result
  weight_grads,  ///< the paper's gradient decode: a virtual batch's Eq_j, one per mixture
  deltas2,       ///< the redundant check: the deltas' second mixing
  weight_grad2,  ///< the redundant check: the weight gradient from them
};

class AcceleratorEngine : public TrainEngine {
 public:
  /// Moves the model's linear weights to the accelerator (the host loads them: not metered).
  void load(nn::Graph& g) override;
  void step(const SgdParams& p) override;
  Tensor read_weights(int index) override;
  Tensor read_momentum(int index) override;
  void write_momentum(int index, const Tensor& momentum) override;
  Tensor64 read_grad(int index) override;

 protected:
  /// Buffers hold elements of `dtype`.
  AcceleratorEngine(accel::Backend& backend, DType dtype)
      : be_(backend), buffers_(backend, dtype), layer_inputs_(backend, dtype) {}

  /// Buffer `b` of `shape`; valid until the next buffer() of `b`.
  accel::Buffer& buffer(Buf b, const Shape& shape) {
    return buffers_.get(static_cast<int>(b), shape);
  }
  /// The inputs of linear layer `index` (its weights index), kept on the accelerator from
  /// its forward pass for its backward pass: a buffer of `shape`, or the one last given.
  accel::Buffer& layer_input(int index, const Shape& shape) {
    return layer_inputs_.get(index, shape);
  }
  accel::Buffer& layer_input(int index) { return layer_inputs_.current(index); }
  accel::Weights& weights(int index) { return *weights_[static_cast<size_t>(index)]; }
  std::span<const accel::WeightsPtr> all_weights() const { return weights_; }

  /// The node's linear operation (no epilogue) on `in`, submitted: into Buf::outputs after
  /// labelling the layer (Backend::set_layer), or into `out`.
  const accel::Buffer& linear_forward(const nn::Node& node, const accel::Buffer& in);
  void linear_forward(const nn::Node& node, const accel::Buffer& in, accel::Buffer& out);
  /// dL/d(input) from the deltas `d`, into `dx`; submitted.
  void linear_backward_data(const nn::Node& node, const accel::Buffer& d, accel::Buffer& dx);
  /// dL/dW from the inputs `x` and deltas `d`, into `grad`; submitted.
  void linear_backward_weights(const nn::Node& node, const accel::Buffer& x, const accel::Buffer& d,
                               accel::Buffer& grad);
  static Shape weight_shape(const nn::Node& node);
  /// The outputs' shape for inputs of shape `in` (with their batch).
  static Shape output_shape(const nn::Node& node, const Shape& in);

  accel::Backend& be_;

 private:
  std::vector<accel::WeightsPtr> weights_;
  accel::BufferArena buffers_;       // by Buf
  accel::BufferArena layer_inputs_;  // by weights index
};

}  // namespace darknight::trusted
