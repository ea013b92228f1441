#include "faults/faulty_backend.h"

namespace darknight::accel {

namespace {

/// This backend's buffers and weights: handles of the inner backend's.
class WrappedBuffer final : public Buffer {
 public:
  WrappedBuffer(const Backend* owner, BufferPtr inner)
      : Buffer(owner, inner->shape(), inner->dtype()), inner_(std::move(inner)) {}
  Buffer& inner() const { return *inner_; }

 private:
  BufferPtr inner_;
};

class WrappedWeights final : public Weights {
 public:
  WrappedWeights(const Backend* owner, WeightsPtr inner)
      : Weights(owner, inner->shape()), inner_(std::move(inner)) {}
  Weights& inner() const { return *inner_; }

 private:
  WeightsPtr inner_;
};

Buffer& in(const Buffer& b) {
  return static_cast<const WrappedBuffer&>(b).inner();
}
Weights& in(const Weights& w) {
  return static_cast<const WrappedWeights&>(w).inner();
}

}  // namespace

FaultyBackend::FaultyBackend(std::unique_ptr<Backend> inner)
    : owned_(std::move(inner)), inner_(*owned_) {}
FaultyBackend::FaultyBackend(Backend& inner) : inner_(inner) {}

BufferPtr FaultyBackend::do_alloc(const Shape& shape, DType dtype) {
  return std::make_unique<WrappedBuffer>(this, inner_.alloc(shape, dtype));
}
BufferPtr FaultyBackend::do_view(Buffer& base, const Shape& shape, int64_t offset) {
  return std::make_unique<WrappedBuffer>(this, inner_.view(in(base), shape, offset));
}
void FaultyBackend::do_upload(const void* src, Buffer& dst, size_t offset, size_t bytes) {
  RawTransfer::upload(inner_, src, in(dst), offset, bytes);
}
void FaultyBackend::do_download(const Buffer& src, size_t offset, size_t bytes, void* dst) {
  RawTransfer::download(inner_, in(src), offset, bytes, dst);
}

WeightsPtr FaultyBackend::do_create_weights(const Tensor& weights) {
  return std::make_unique<WrappedWeights>(this, inner_.create_weights(weights));
}
Tensor FaultyBackend::do_read_weights(const Weights& w) {
  return inner_.read_weights(in(w));
}
void FaultyBackend::do_accumulate_grad(Weights& w, const Buffer& grad, double scale) {
  inner_.accumulate_grad(in(w), in(grad), scale);
}
void FaultyBackend::do_accumulate_grad_host(Weights& w, const double* piece, int64_t offset,
                                            int64_t count) {
  RawTransfer::accumulate_grad(inner_, in(w), piece, offset, count);
}
void FaultyBackend::do_sgd_step(Weights& w, const SgdParams& p) {
  inner_.sgd_step(in(w), p);
}
Tensor FaultyBackend::do_read_momentum(const Weights& w) {
  return inner_.read_momentum(in(w));
}
void FaultyBackend::do_write_momentum(Weights& w, const Tensor& momentum) {
  inner_.write_momentum(in(w), momentum);
}
Tensor64 FaultyBackend::do_read_grad(const Weights& w) {
  return inner_.read_grad(in(w));
}

// Each linear operation runs on the inner backend; the injector may then corrupt its output,
// and reruns it with other operands (their magnitudes, other weights) through the same call.
void FaultyBackend::run(LinearOp kind, const Buffer& a, const Weights* w, const Buffer* b,
                        Buffer& dst, const LinearRerun& op) {
  Weights* wi = w ? &in(*w) : nullptr;
  const Buffer* bi = b ? &in(*b) : nullptr;
  op(in(a), wi, bi, in(dst));
  if (faults_) faults_->after(inner_, kind, in(a), wi, bi, op, in(dst));
}

void FaultyBackend::do_conv2d_forward(const ConvDesc& d, const Buffer& src, const Weights& w,
                                      Buffer& dst) {
  run(LinearOp::forward, src, &w, nullptr, dst,
      [&](auto& a, auto* x, auto*, auto& y) { inner_.conv2d_forward(d, a, *x, y); });
}
void FaultyBackend::do_conv2d_backward_data(const ConvDesc& d, const Buffer& diff_dst,
                                            const Weights& w, Buffer& diff_src) {
  run(LinearOp::backward_data, diff_dst, &w, nullptr, diff_src,
      [&](auto& a, auto* x, auto*, auto& y) { inner_.conv2d_backward_data(d, a, *x, y); });
}
void FaultyBackend::do_conv2d_backward_weights(const ConvDesc& d, const Buffer& src,
                                               const Buffer& diff_dst, Buffer& diff_weights,
                                               int64_t) {
  run(LinearOp::backward_weights, src, nullptr, &diff_dst, diff_weights,
      [&](auto& a, auto*, auto* b, auto& y) { inner_.conv2d_backward_weights(d, a, *b, y); });
}
void FaultyBackend::do_dense_forward(const DenseDesc& d, const Buffer& src, const Weights& w,
                                     Buffer& dst) {
  run(LinearOp::forward, src, &w, nullptr, dst,
      [&](auto& a, auto* x, auto*, auto& y) { inner_.dense_forward(d, a, *x, y); });
}
void FaultyBackend::do_dense_backward_data(const DenseDesc& d, const Buffer& diff_dst,
                                           const Weights& w, Buffer& diff_src) {
  run(LinearOp::backward_data, diff_dst, &w, nullptr, diff_src,
      [&](auto& a, auto* x, auto*, auto& y) { inner_.dense_backward_data(d, a, *x, y); });
}
void FaultyBackend::do_dense_backward_weights(const DenseDesc& d, const Buffer& src,
                                              const Buffer& diff_dst, Buffer& diff_weights,
                                              int64_t) {
  run(LinearOp::backward_weights, src, nullptr, &diff_dst, diff_weights,
      [&](auto& a, auto*, auto* b, auto& y) { inner_.dense_backward_weights(d, a, *b, y); });
}

}  // namespace darknight::accel
