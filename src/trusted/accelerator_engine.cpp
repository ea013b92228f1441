#include "trusted/accelerator_engine.h"

namespace darknight::trusted {

void AcceleratorEngine::load(nn::Graph& g) {
  const MeterScope host(nullptr);  // loaded by the host, outside the enclave
  weights_.clear();
  for (Tensor& w : g.weights()) {
    weights_.push_back(be_.create_weights(w));
    w = Tensor();
  }
}

void AcceleratorEngine::step(const SgdParams& p) {
  for (auto& w : weights_) be_.sgd_step(*w, p);
  be_.wait();
}

Tensor AcceleratorEngine::read_weights(int index) {
  return be_.read_weights(*weights_.at(static_cast<size_t>(index)));
}
Tensor AcceleratorEngine::read_momentum(int index) {
  return be_.read_momentum(*weights_.at(static_cast<size_t>(index)));
}
void AcceleratorEngine::write_momentum(int index, const Tensor& momentum) {
  be_.write_momentum(*weights_.at(static_cast<size_t>(index)), momentum);
}
Tensor64 AcceleratorEngine::read_grad(int index) {
  return be_.read_grad(*weights_.at(static_cast<size_t>(index)));
}

const accel::Buffer& AcceleratorEngine::linear_forward(const nn::Node& node,
                                                       const accel::Buffer& in) {
  be_.set_layer(node.weights);
  accel::Buffer& out = buffer(Buf::outputs, output_shape(node, in.shape()));
  linear_forward(node, in, out);
  return out;
}

void AcceleratorEngine::linear_forward(const nn::Node& node, const accel::Buffer& in,
                                       accel::Buffer& out) {
  const accel::Weights& w = weights(node.weights);
  if (node.op == nn::Op::conv)
    be_.conv2d_forward(node.conv, in, w, out);
  else
    be_.dense_forward(node.dense, in, w, out);
}

void AcceleratorEngine::linear_backward_data(const nn::Node& node, const accel::Buffer& d,
                                             accel::Buffer& dx) {
  const accel::Weights& w = weights(node.weights);
  if (node.op == nn::Op::conv)
    be_.conv2d_backward_data(node.conv, d, w, dx);
  else
    be_.dense_backward_data(node.dense, d, w, dx);
}

void AcceleratorEngine::linear_backward_weights(const nn::Node& node, const accel::Buffer& x,
                                                const accel::Buffer& d, accel::Buffer& grad) {
  if (node.op == nn::Op::conv)
    be_.conv2d_backward_weights(node.conv, x, d, grad);
  else
    be_.dense_backward_weights(node.dense, x, d, grad);
}

Shape AcceleratorEngine::weight_shape(const nn::Node& node) {
  return node.op == nn::Op::conv ? node.conv.weight_shape() : node.dense.weight_shape();
}

Shape AcceleratorEngine::output_shape(const nn::Node& node, const Shape& in) {
  return node.op == nn::Op::conv ? node.conv.dst_shape(in) : node.dense.dst_shape(in);
}

}  // namespace darknight::trusted
