#include "baselines/engines.h"

#include <chrono>

#include "baselines/unprotected.h"
#include "nn/kernels.h"

namespace darknight::baselines {
namespace {

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

Shape batched(int64_t m, const Shape& item) {
  std::vector<int64_t> dims{m};
  for (int64_t d : item.dims()) dims.push_back(d);
  return Shape(std::span<const int64_t>(dims));
}

}  // namespace

void PlainEngine::load(nn::Graph& g) {
  const MeterScope host(nullptr);
  weights_.clear();
  for (Tensor& w : g.weights()) {
    weights_.push_back(be_.create_weights(w));
    w = Tensor();
  }
}

trusted::Scratch PlainEngine::scratch_bytes(const nn::Node&, int64_t in_numel, int64_t items,
                                            int) const {
  return {items * in_numel * static_cast<int64_t>(dtype_size(dtype_)), 0};  // the upload copy
}

int64_t PlainEngine::backward_scratch_bytes(const nn::Node& node, int64_t in_numel, int64_t items,
                                            int) const {
  return items * std::max(in_numel, node.shape.numel()) * static_cast<int64_t>(dtype_size(dtype_));
}

void PlainEngine::put(const Tensor& src, accel::Buffer& dst) {
  if (dtype_ == DType::f32) {
    const Blinded plaintext = Unprotected::expose(src.clone());
    be_.upload(plaintext, dst);
    be_.wait();
  } else {
    const Blinded64 plaintext = Unprotected::expose(src.cast<double>());
    be_.upload(plaintext, dst);
    be_.wait();
  }
}

Tensor PlainEngine::get(const accel::Buffer& src, const Shape& shape) {
  if (dtype_ == DType::f32) {
    Tensor t = Tensor::uninitialized(src.shape());
    be_.download(src, t);
    be_.wait();
    t.reshape(shape);
    return t;
  }
  auto t = Tensor64::uninitialized(src.shape());
  be_.download(src, t);
  be_.wait();
  Tensor f = t.cast<float>();
  f.reshape(shape);
  return f;
}

const accel::Buffer& PlainEngine::apply(const nn::Node& node, const accel::Buffer& in) {
  const accel::Weights& w = *weights_[static_cast<size_t>(node.weights)];
  be_.set_layer(node.weights);
  if (node.op == nn::Op::conv) {
    accel::Buffer& out = buffers_.get(1, node.conv.dst_shape(in.shape()));
    be_.conv2d_forward(node.conv, in, w, out);
    return out;
  }
  accel::Buffer& out = buffers_.get(1, node.dense.dst_shape(in.shape()));
  be_.dense_forward(node.dense, in, w, out);
  return out;
}

Tensor PlainEngine::forward_into(const nn::Node& node, const Tensor& src, accel::Buffer& in,
                                 trusted::RunStats& stats) {
  const double t0 = now();
  put(src, in);
  const double ta = now();
  const accel::Buffer& out = apply(node, in);
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
  return forward_into(node, src, buffers_.get(0, src.shape()), stats);
}

Tensor PlainEngine::forward_train(const nn::Node& node, Tensor& src, trusted::RunStats& stats) {
  return forward_into(node, src, kept_.get(node.weights, src.shape()), stats);
}

Tensor PlainEngine::backward(const nn::Node& node, const Tensor& delta, bool input_grad,
                             trusted::RunStats& stats) {
  const double t0 = now();
  accel::Weights& w = *weights_[static_cast<size_t>(node.weights)];
  be_.set_layer(node.weights);
  accel::Buffer& dd = buffers_.get(2, delta.shape());
  put(delta, dd);
  stats.bytes_to_accelerator += delta.numel() * static_cast<int64_t>(dtype_size(dtype_));
  Tensor dx;
  accel::Buffer* x = &kept_.current(node.weights);  // the input forward_train() kept
  if (input_grad) {
    accel::Buffer& dxb = buffers_.get(3, x->shape());
    if (node.op == nn::Op::conv)
      be_.conv2d_backward_data(node.conv, dd, w, dxb);
    else
      be_.dense_backward_data(node.dense, dd, w, dxb);
    dx = get(dxb, x->shape());
    stats.accelerator_calls += 1;
    stats.bytes_from_accelerator += dx.numel() * static_cast<int64_t>(dtype_size(dtype_));
  }
  const Shape ws = node.op == nn::Op::conv ? node.conv.weight_shape() : node.dense.weight_shape();
  accel::Buffer& g = buffers_.get(4, ws);
  if (node.op == nn::Op::conv)
    be_.conv2d_backward_weights(node.conv, *x, dd, g);
  else
    be_.dense_backward_weights(node.dense, *x, dd, g);
  be_.accumulate_grad(w, g);
  be_.wait();
  stats.accelerator_calls += 1;
  stats.backward_times.accelerator += now() - t0;
  return dx;
}

void PlainEngine::step(const SgdParams& p) {
  for (auto& w : weights_) be_.sgd_step(*w, p);
  be_.wait();
}

Tensor PlainEngine::read_weights(int index) {
  return be_.read_weights(*weights_.at(static_cast<size_t>(index)));
}
Tensor64 PlainEngine::read_grad(int index) {
  return be_.read_grad(*weights_.at(static_cast<size_t>(index)));
}
Tensor PlainEngine::read_momentum(int index) {
  return be_.read_momentum(*weights_.at(static_cast<size_t>(index)));
}
void PlainEngine::write_momentum(int index, const Tensor& momentum) {
  be_.write_momentum(*weights_.at(static_cast<size_t>(index)), momentum);
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
