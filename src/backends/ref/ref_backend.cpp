#include "backends/ref/ref_backend.h"

#include <type_traits>

#include "backends/host/host_memory.h"
#include "protocol/linear.h"

namespace darknight::accel {
namespace {

template <typename T>
const T* weights_as(const Weights& w) {
  const auto& hw = static_cast<const HostWeights&>(w);
  if constexpr (std::is_same_v<T, float>)
    return hw.f32().data();
  else
    return hw.f64().data();
}

// Every operation is the host reference convolution (protocol/linear.h); a dense layer is
// a 1x1 convolution of [I, 1, 1] items, with the same order of additions as its own loops.

template <typename T>
void forward(const ConvGeometry& g, const HostBuffer& src, const Weights& wt, HostBuffer& dst) {
  reference::conv_forward(g, src.shape()[0], src.as<T>(), weights_as<T>(wt), dst.as<T>());
}

template <typename T>
void backward_data(const ConvGeometry& g, const HostBuffer& diff_dst, const Weights& wt,
                   HostBuffer& diff_src) {
  reference::conv_backward_data(g, diff_src.shape()[0], diff_dst.as<T>(), weights_as<T>(wt),
                                diff_src.as<T>());
}

template <typename T>
void backward_weights(const ConvGeometry& g, const HostBuffer& src, const HostBuffer& diff_dst,
                      HostBuffer& diff_w, int64_t parts) {
  reference::conv_backward_weights(g, src.shape()[0], parts, src.as<T>(), diff_dst.as<T>(),
                                   diff_w.as<T>());
}

}  // namespace

BufferPtr RefBackend::do_view(Buffer& base, const Shape& shape, int64_t offset) {
  return host_view(this, base, shape, offset);
}

BufferPtr RefBackend::do_alloc(const Shape& shape, DType dtype) {
  return std::make_unique<HostBuffer>(this, shape, dtype);
}
void RefBackend::do_upload(const void* src, Buffer& dst, size_t offset, size_t bytes) {
  host_upload(src, dst, offset, bytes);
}
void RefBackend::do_download(const Buffer& src, size_t offset, size_t bytes, void* dst) {
  host_download(src, offset, bytes, dst);
}
WeightsPtr RefBackend::do_create_weights(const Tensor& weights) {
  return std::make_unique<HostWeights>(this, weights);
}
Tensor RefBackend::do_read_weights(const Weights& w) {
  return static_cast<const HostWeights&>(w).f32().clone();
}
void RefBackend::do_accumulate_grad(Weights& w, const Buffer& grad, double scale) {
  host_accumulate_grad(w, grad, scale);
}
void RefBackend::do_accumulate_grad_host(Weights& w, const double* piece, int64_t offset,
                                         int64_t count) {
  static_cast<HostWeights&>(w).accumulate(piece, offset, count, 1.0);
}
void RefBackend::do_sgd_step(Weights& w, const SgdParams& p) {
  static_cast<HostWeights&>(w).sgd(p);
}
Tensor64 RefBackend::do_read_grad(const Weights& w) {
  return static_cast<const HostWeights&>(w).grad();
}
Tensor RefBackend::do_read_momentum(const Weights& w) {
  return static_cast<const HostWeights&>(w).momentum().clone();
}
void RefBackend::do_write_momentum(Weights& w, const Tensor& momentum) {
  static_cast<HostWeights&>(w).set_momentum(momentum);
}

#define DK_DISPATCH(dtype, fn, ...) \
  ((dtype) == DType::f32 ? fn<float>(__VA_ARGS__) : fn<double>(__VA_ARGS__))

void RefBackend::do_conv2d_forward(const ConvDesc& d, const Buffer& src, const Weights& w,
                                   Buffer& dst) {
  DK_DISPATCH(src.dtype(), forward, ConvGeometry(d, src.shape()), host(src), w, host(dst));
}
void RefBackend::do_conv2d_backward_data(const ConvDesc& d, const Buffer& diff_dst,
                                         const Weights& w, Buffer& diff_src) {
  DK_DISPATCH(diff_src.dtype(), backward_data, ConvGeometry(d, diff_src.shape()), host(diff_dst), w,
              host(diff_src));
}
void RefBackend::do_conv2d_backward_weights(const ConvDesc& d, const Buffer& src,
                                            const Buffer& diff_dst, Buffer& diff_weights,
                                            int64_t parts) {
  DK_DISPATCH(src.dtype(), backward_weights, ConvGeometry(d, src.shape()), host(src),
              host(diff_dst), host(diff_weights), parts);
}
void RefBackend::do_dense_forward(const DenseDesc& d, const Buffer& src, const Weights& w,
                                  Buffer& dst) {
  DK_DISPATCH(src.dtype(), forward, ConvGeometry(d), host(src), w, host(dst));
}
void RefBackend::do_dense_backward_data(const DenseDesc& d, const Buffer& diff_dst,
                                        const Weights& w, Buffer& diff_src) {
  DK_DISPATCH(diff_src.dtype(), backward_data, ConvGeometry(d), host(diff_dst), w, host(diff_src));
}
void RefBackend::do_dense_backward_weights(const DenseDesc& d, const Buffer& src,
                                           const Buffer& diff_dst, Buffer& diff_weights,
                                           int64_t parts) {
  DK_DISPATCH(src.dtype(), backward_weights, ConvGeometry(d), host(src), host(diff_dst),
              host(diff_weights), parts);
}

}  // namespace darknight::accel
