#include "baselines/engines.h"

#include "nn/kernels.h"
#include "registry/registry.h"

namespace darknight::baselines {

using trusted::batched;
using trusted::Buf;
using trusted::now;

trusted::Scratch PlainEngine::scratch_bytes(const nn::Node&, int64_t in_numel, int64_t items,
                                            int) const {
  return {items * in_numel * static_cast<int64_t>(dtype_size(dtype_)), 0};  // the upload copy
}

int64_t PlainEngine::backward_scratch_bytes(const nn::Node& node, int64_t in_numel, int64_t items,
                                            int) const {
  return items * std::max(in_numel, node.shape.numel()) * static_cast<int64_t>(dtype_size(dtype_));
}

void PlainEngine::put(const Tensor& src, accel::Buffer& dst) {
  io_.put(src, dst);
  io_.sync();
}

Tensor PlainEngine::get(const accel::Buffer& src, const Shape& shape) {
  Tensor t = io_.get(src);
  t.reshape(shape);
  return t;
}

Tensor PlainEngine::forward_into(const nn::Node& node, const Tensor& src, accel::Buffer& in,
                                 trusted::RunStats& stats) {
  const double t0 = now();
  put(src, in);
  const double ta = now();
  const accel::Buffer& out = linear_forward(node, in);
  be_.wait();
  const double tb = now();
  Tensor y = get(out, batched(src.shape()[0], node.shape));
  stats.accelerator_calls += 1;
  stats.bytes_to_accelerator += src.numel() * static_cast<int64_t>(dtype_size(dtype_));
  stats.bytes_from_accelerator += y.numel() * static_cast<int64_t>(dtype_size(dtype_));
  const double t1 = now();
  stats.times.accelerator += t1 - t0;
  stats.times.transfer += (ta - t0) + (t1 - tb);
  nn::apply_epilogue(node.epilogue, y);
  stats.times.decode += now() - t1;  // the epilogue, the counterpart of decoding
  return y;
}

Tensor PlainEngine::forward(const nn::Node& node, Tensor& src, bool, trusted::RunStats& stats) {
  return forward_into(node, src, buffer(Buf::inputs, src.shape()), stats);
}

Tensor PlainEngine::forward_train(const nn::Node& node, Tensor& src, trusted::RunStats& stats) {
  return forward_into(node, src, layer_input(node.weights, src.shape()), stats);
}

Tensor PlainEngine::backward(const nn::Node& node, const Tensor& delta, bool input_grad,
                             trusted::RunStats& stats) {
  const double t0 = now();
  be_.set_layer(node.weights);
  accel::Buffer& dd = buffer(Buf::deltas, delta.shape());
  put(delta, dd);
  stats.bytes_to_accelerator += delta.numel() * static_cast<int64_t>(dtype_size(dtype_));
  Tensor dx;
  accel::Buffer& x = layer_input(node.weights);  // the input forward_train() kept
  if (input_grad) {
    accel::Buffer& dxb = buffer(Buf::input_grads, x.shape());
    linear_backward_data(node, dd, dxb);
    dx = get(dxb, x.shape());
    stats.accelerator_calls += 1;
    stats.bytes_from_accelerator += dx.numel() * static_cast<int64_t>(dtype_size(dtype_));
  }
  accel::Buffer& g = buffer(Buf::weight_grad, weight_shape(node));
  linear_backward_weights(node, x, dd, g);
  be_.accumulate_grad(weights(node.weights), g);
  be_.wait();
  stats.accelerator_calls += 1;
  stats.backward_times.accelerator += now() - t0;
  return dx;
}

TeeEngine::TeeEngine(DType dtype)
    : detail::OwnedBackend{accel::make_backend("cpu", accel::BackendOptions{.threads = 1})},
      PlainEngine(*owned, dtype) {}

void TeeEngine::load(nn::Graph& g) {
  weight_bytes_ = g.weight_bytes();
  charge_ = std::make_unique<MeterCharge>(current_meter(), weight_bytes_);
  PlainEngine::load(g);
}

}  // namespace darknight::baselines
