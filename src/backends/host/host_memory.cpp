#include "backends/host/host_memory.h"

#include <cstring>

namespace darknight::accel {

HostBuffer::HostBuffer(const Backend* owner, const Shape& shape, DType dtype)
    : Buffer(owner, shape, dtype), mem_(detail::aligned_alloc_bytes(bytes())) {
  if (bytes() > 0) std::memset(mem_.get(), 0, bytes());
}

HostBuffer::HostBuffer(const Backend* owner, HostBuffer& base, const Shape& shape, int64_t offset)
    : Buffer(owner, shape, base.dtype()),
      view_(static_cast<char*>(base.raw()) +
            static_cast<size_t>(offset) * dtype_size(base.dtype())) {}

BufferPtr host_view(const Backend* owner, Buffer& base, const Shape& shape, int64_t offset) {
  return std::make_unique<HostBuffer>(owner, host(base), shape, offset);
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
void HostWeights::accumulate(const G* grad, int64_t offset, int64_t count, double scale) {
  if (grad_.empty()) grad_ = Tensor64(w_.shape());
  double* g = grad_.data() + offset;
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < count; ++i) g[i] += scale * static_cast<double>(grad[i]);
}
template void HostWeights::accumulate<float>(const float*, int64_t, int64_t, double);
template void HostWeights::accumulate<double>(const double*, int64_t, int64_t, double);

void HostWeights::sgd(const SgdParams& p) {
  if (grad_.empty()) grad_ = Tensor64(w_.shape());  // a step with no gradient still decays
  const bool first = momentum_.empty();
  if (p.momentum != 0 && first) momentum_ = Tensor(w_.shape());
  sgd_update(w_.data(), momentum_.data(), grad_.data(), w_.numel(), p, first);
  grad_.fill(0.0);
  bump_version();
}

void host_upload(const void* src, Buffer& dst, size_t offset, size_t bytes) {
  if (bytes > 0) std::memcpy(static_cast<char*>(host(dst).raw()) + offset, src, bytes);
}

void host_download(const Buffer& src, size_t offset, size_t bytes, void* dst) {
  if (bytes > 0) std::memcpy(dst, static_cast<const char*>(host(src).raw()) + offset, bytes);
}

void host_accumulate_grad(Weights& w, const Buffer& grad, double scale) {
  auto& hw = static_cast<HostWeights&>(w);
  const int64_t n = grad.shape().numel();
  if (grad.dtype() == DType::f32)
    hw.accumulate(host(grad).as<float>(), 0, n, scale);
  else
    hw.accumulate(host(grad).as<double>(), 0, n, scale);
}

}  // namespace darknight::accel
