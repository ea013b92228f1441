// Buffers and weights in host memory, shared by the host backends (ref, cpu).
#pragma once

#include <memory>

#include "accel/backend.h"

namespace darknight::accel {

class HostBuffer final : public Buffer {
 public:
  /// Zero-filled.
  HostBuffer(const Backend* owner, const Shape& shape, DType dtype);
  /// A view of `base`'s elements [offset, offset + shape.numel()).
  HostBuffer(const Backend* owner, HostBuffer& base, const Shape& shape, int64_t offset);

  template <typename T>
  T* as() {
    DK_ASSERT(dtype() == dtype_of<T>(), "buffer is {}", dtype_name(dtype()));
    return static_cast<T*>(raw());
  }
  template <typename T>
  const T* as() const {
    return const_cast<HostBuffer*>(this)->as<T>();
  }
  void* raw() { return view_ ? view_ : mem_.get(); }
  const void* raw() const { return view_ ? view_ : mem_.get(); }

 private:
  std::unique_ptr<void, detail::AlignedFree> mem_;
  void* view_ = nullptr;
};

class HostWeights : public Weights {
 public:
  HostWeights(const Backend* owner, const Tensor& weights);

  const Tensor& f32() const { return w_; }
  /// The weights converted to f64, kept until the next update.
  const Tensor64& f64() const;
  /// Adds scale * grad[i] to the pending gradient.
  template <typename G>
  void accumulate(const G* grad, int64_t offset, int64_t count, double scale);
  /// One SGD step (torch.optim.SGD semantics) with the pending gradient, then cleared.
  void sgd(const SgdParams& p);
  const Tensor& momentum() const { return momentum_; }
  Tensor64 grad() const { return grad_.empty() ? Tensor64(w_.shape()) : grad_.clone(); }
  void set_momentum(const Tensor& m) { momentum_ = m.clone(); }

 private:
  Tensor w_;
  Tensor momentum_;
  Tensor64 grad_;
  mutable Tensor64 w64_;
  mutable uint64_t w64_version_ = ~uint64_t{0};
};

inline HostBuffer& host(Buffer& b) {
  return static_cast<HostBuffer&>(b);
}
inline const HostBuffer& host(const Buffer& b) {
  return static_cast<const HostBuffer&>(b);
}

/// Copies for the host backends' upload/download/read_weights/sgd_step entry points.
void host_upload(const void* src, Buffer& dst, size_t offset, size_t bytes);
void host_download(const Buffer& src, size_t offset, size_t bytes, void* dst);
void host_accumulate_grad(Weights& w, const Buffer& grad, double scale);
BufferPtr host_view(const Backend* owner, Buffer& base, const Shape& shape, int64_t offset);

}  // namespace darknight::accel
