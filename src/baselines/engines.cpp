#include "baselines/engines.h"

#include <chrono>

#include "baselines/unprotected.h"
#include "nn/kernels.h"

namespace darknight::baselines {
namespace {
double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
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
  return {items * in_numel * 4, 0};  // the copy handed to the accelerator
}

Tensor PlainEngine::forward(const nn::Node& node, Tensor& src, bool, trusted::RunStats& stats) {
  const double t0 = now();
  auto buffer = [&](const Shape& s, int slot) -> accel::Buffer& { return buffers_.get(slot, s); };
  const Shape in_shape = src.shape();
  {
    const Blinded plaintext = Unprotected::expose(src.clone());
    be_.upload(plaintext, buffer(in_shape, 0));
    be_.wait();
  }
  accel::Buffer& in = buffer(in_shape, 0);
  const accel::Weights& w = *weights_[static_cast<size_t>(node.weights)];
  accel::Buffer* out;
  if (node.op == nn::Op::conv) {
    out = &buffer(node.conv.dst_shape(in_shape), 1);
    be_.conv2d_forward(node.conv, in, w, *out);
  } else {
    out = &buffer(node.dense.dst_shape(in_shape), 1);
    be_.dense_forward(node.dense, in, w, *out);
  }
  std::vector<int64_t> dims{in_shape[0]};
  for (int64_t d : node.shape.dims()) dims.push_back(d);
  Tensor flat = Tensor::uninitialized(out->shape());
  be_.download(*out, flat);
  be_.wait();
  stats.accelerator_calls += 1;
  stats.bytes_to_accelerator += static_cast<int64_t>(src.bytes());
  stats.bytes_from_accelerator += static_cast<int64_t>(flat.bytes());
  flat.reshape(Shape(std::span<const int64_t>(dims)));
  const double t1 = now();
  stats.times.accelerator += t1 - t0;
  nn::apply_epilogue(node.epilogue, flat);
  stats.times.decode += now() - t1;  // the epilogue, the counterpart of decoding
  return flat;
}

TeeEngine::TeeEngine()
    : detail::OwnedBackend{accel::make_backend("cpu", accel::BackendOptions{.threads = 1})},
      PlainEngine(*owned) {}

void TeeEngine::load(nn::Graph& g) {
  weight_bytes_ = g.weight_bytes();
  charge_ = std::make_unique<MeterCharge>(current_meter(), weight_bytes_);
  PlainEngine::load(g);
}

}  // namespace darknight::baselines
