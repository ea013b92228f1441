#include "accel/host/host_memory.h"

#include <cstring>

namespace darknight::accel {

HostBuffer::HostBuffer(const Backend* owner, const Shape& shape, DType dtype)
    : Buffer(owner, shape, dtype), mem_(detail::aligned_alloc_bytes(bytes())) {
  if (bytes() > 0) std::memset(mem_.get(), 0, bytes());
}

HostBuffer::HostBuffer(const Backend* owner, HostBuffer& base, const Shape& shape)
    : Buffer(owner, shape, base.dtype()), view_(base.raw()) {}

BufferPtr host_view(const Backend* owner, Buffer& base, const Shape& shape) {
  return std::make_unique<HostBuffer>(owner, host(base), shape);
}

HostWeights::HostWeights(const Backend* owner, const Tensor& weights)
    : Weights(owner, weights.shape()), w_(weights.clone()) {}

const Tensor64& HostWeights::f64() const {
  if (w64_version_ != version()) {
    w64_ = w_.cast<double>();
    w64_version_ = version();
  }
  return w64_;
}

template <typename G>
void HostWeights::sgd(const G* grad, const SgdParams& p) {
  const bool first = momentum_.empty();
  if (p.momentum != 0 && first) momentum_ = Tensor(w_.shape());
  float* w = w_.data();
  float* v = momentum_.data();
  const int64_t n = w_.numel();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    double g = static_cast<double>(grad[i]) + p.weight_decay * w[i];
    if (p.momentum != 0) {
      const double vi = first ? g : p.momentum * v[i] + (1.0 - p.dampening) * g;
      v[i] = static_cast<float>(vi);
      g = p.nesterov ? g + p.momentum * vi : vi;
    }
    w[i] = static_cast<float>(w[i] - p.lr * g);
  }
  bump_version();
}
template void HostWeights::sgd<float>(const float*, const SgdParams&);
template void HostWeights::sgd<double>(const double*, const SgdParams&);

void host_upload(const void* src, Buffer& dst, size_t offset, size_t bytes) {
  if (bytes > 0) std::memcpy(static_cast<char*>(host(dst).raw()) + offset, src, bytes);
}

void host_download(const Buffer& src, size_t offset, size_t bytes, void* dst) {
  if (bytes > 0) std::memcpy(dst, static_cast<const char*>(host(src).raw()) + offset, bytes);
}

void host_sgd_step(Weights& w, const Buffer& grad, const SgdParams& p) {
  auto& hw = static_cast<HostWeights&>(w);
  if (grad.dtype() == DType::f32)
    hw.sgd(host(grad).as<float>(), p);
  else
    hw.sgd(host(grad).as<double>(), p);
}

}  // namespace darknight::accel
