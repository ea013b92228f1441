#include "accel/ref/ref_backend.h"

#include <vector>

#include "accel/host/host_memory.h"

namespace darknight::accel {
namespace {

/// Geometry of one convolution call, in plain integers.
struct Geom {
  int64_t n, c, h, w, o, oh, ow, kh, kw, sh, sw, pt, pl, dh, dw, ig, og;
  Geom(const ConvDesc& d, const Shape& src) {
    const Shape dst = d.dst_shape(src);
    n = src.n(), c = src.c(), h = src.h(), w = src.w();
    o = d.out_channels, oh = dst.h(), ow = dst.w();
    kh = d.kernel_h, kw = d.kernel_w, sh = d.stride_h, sw = d.stride_w;
    pt = d.pad_top, pl = d.pad_left, dh = d.dilation_h, dw = d.dilation_w;
    ig = c / d.groups, og = o / d.groups;
  }
  int64_t src_at(int64_t b, int64_t ch, int64_t y, int64_t x) const {
    return ((b * c + ch) * h + y) * w + x;
  }
  int64_t dst_at(int64_t b, int64_t ch, int64_t y, int64_t x) const {
    return ((b * o + ch) * oh + y) * ow + x;
  }
  int64_t wei_at(int64_t oc, int64_t ic, int64_t y, int64_t x) const {
    return ((oc * ig + ic) * kh + y) * kw + x;
  }
};

/// Calls f(src_index, dst_index, weight_index) for every multiply-add of the convolution
/// that lands in output element (b, oc, y, x).
template <typename F>
inline void for_taps(const Geom& g, int64_t b, int64_t oc, int64_t y, int64_t x, F&& f) {
  const int64_t grp = oc / g.og;
  for (int64_t ic = 0; ic < g.ig; ++ic) {
    for (int64_t ky = 0; ky < g.kh; ++ky) {
      const int64_t iy = y * g.sh - g.pt + ky * g.dh;
      if (iy < 0 || iy >= g.h) continue;
      for (int64_t kx = 0; kx < g.kw; ++kx) {
        const int64_t ix = x * g.sw - g.pl + kx * g.dw;
        if (ix < 0 || ix >= g.w) continue;
        f(g.src_at(b, grp * g.ig + ic, iy, ix), g.dst_at(b, oc, y, x), g.wei_at(oc, ic, ky, kx));
      }
    }
  }
}

template <typename T>
const T* weights_as(const Weights& w) {
  const auto& hw = static_cast<const HostWeights&>(w);
  if constexpr (std::is_same_v<T, float>)
    return hw.f32().data();
  else
    return hw.f64().data();
}

template <typename T>
void conv_fwd(const ConvDesc& d, const HostBuffer& src, const Weights& wt, HostBuffer& dst) {
  const Geom g(d, src.shape());
  const T* s = src.as<T>();
  const T* w = weights_as<T>(wt);
  T* out = dst.as<T>();
  for (int64_t b = 0; b < g.n; ++b)
    for (int64_t oc = 0; oc < g.o; ++oc)
      for (int64_t y = 0; y < g.oh; ++y)
        for (int64_t x = 0; x < g.ow; ++x) {
          double acc = 0;
          for_taps(g, b, oc, y, x, [&](int64_t si, int64_t, int64_t wi) {
            acc += static_cast<double>(s[si]) * static_cast<double>(w[wi]);
          });
          out[g.dst_at(b, oc, y, x)] = static_cast<T>(acc);
        }
}

template <typename T>
void conv_bwd_data(const ConvDesc& d, const HostBuffer& diff_dst, const Weights& wt,
                   HostBuffer& diff_src) {
  const Geom g(d, diff_src.shape());
  const T* dd = diff_dst.as<T>();
  const T* w = weights_as<T>(wt);
  std::vector<double> acc(static_cast<size_t>(diff_src.shape().numel()), 0.0);
  for (int64_t b = 0; b < g.n; ++b)
    for (int64_t oc = 0; oc < g.o; ++oc)
      for (int64_t y = 0; y < g.oh; ++y)
        for (int64_t x = 0; x < g.ow; ++x)
          for_taps(g, b, oc, y, x, [&](int64_t si, int64_t di, int64_t wi) {
            acc[static_cast<size_t>(si)] +=
                static_cast<double>(dd[di]) * static_cast<double>(w[wi]);
          });
  T* out = diff_src.as<T>();
  for (size_t i = 0; i < acc.size(); ++i) out[i] = static_cast<T>(acc[i]);
}

template <typename T>
void conv_bwd_weights(const ConvDesc& d, const HostBuffer& src, const HostBuffer& diff_dst,
                      HostBuffer& diff_w, int64_t parts) {
  const Geom g(d, src.shape());
  const T* s = src.as<T>();
  const T* dd = diff_dst.as<T>();
  const int64_t wn = d.weight_shape().numel();
  const int64_t per_part = g.n / parts;
  std::vector<double> acc(static_cast<size_t>(wn * parts), 0.0);
  for (int64_t b = 0; b < g.n; ++b) {
    double* a = acc.data() + (b / per_part) * wn;
    for (int64_t oc = 0; oc < g.o; ++oc)
      for (int64_t y = 0; y < g.oh; ++y)
        for (int64_t x = 0; x < g.ow; ++x)
          for_taps(g, b, oc, y, x, [&](int64_t si, int64_t di, int64_t wi) {
            a[wi] += static_cast<double>(s[si]) * static_cast<double>(dd[di]);
          });
  }
  T* out = diff_w.as<T>();
  for (size_t i = 0; i < acc.size(); ++i) out[i] = static_cast<T>(acc[i]);
}

template <typename T>
void dense_fwd(const DenseDesc& d, const HostBuffer& src, const Weights& wt, HostBuffer& dst) {
  const int64_t n = src.shape()[0], in = d.in_features, o = d.out_features;
  const T* s = src.as<T>();
  const T* w = weights_as<T>(wt);
  T* out = dst.as<T>();
  for (int64_t b = 0; b < n; ++b)
    for (int64_t j = 0; j < o; ++j) {
      double acc = 0;
      for (int64_t i = 0; i < in; ++i)
        acc += static_cast<double>(s[b * in + i]) * static_cast<double>(w[j * in + i]);
      out[b * o + j] = static_cast<T>(acc);
    }
}

template <typename T>
void dense_bwd_data(const DenseDesc& d, const HostBuffer& diff_dst, const Weights& wt,
                    HostBuffer& diff_src) {
  const int64_t n = diff_src.shape()[0], in = d.in_features, o = d.out_features;
  const T* dd = diff_dst.as<T>();
  const T* w = weights_as<T>(wt);
  T* out = diff_src.as<T>();
  for (int64_t b = 0; b < n; ++b)
    for (int64_t i = 0; i < in; ++i) {
      double acc = 0;
      for (int64_t j = 0; j < o; ++j)
        acc += static_cast<double>(dd[b * o + j]) * static_cast<double>(w[j * in + i]);
      out[b * in + i] = static_cast<T>(acc);
    }
}

template <typename T>
void dense_bwd_weights(const DenseDesc& d, const HostBuffer& src, const HostBuffer& diff_dst,
                       HostBuffer& diff_w, int64_t parts) {
  const int64_t n = src.shape()[0], in = d.in_features, o = d.out_features;
  const int64_t per_part = n / parts;
  const T* s = src.as<T>();
  const T* dd = diff_dst.as<T>();
  T* out = diff_w.as<T>();
  for (int64_t p = 0; p < parts; ++p)
    for (int64_t j = 0; j < o; ++j)
      for (int64_t i = 0; i < in; ++i) {
        double acc = 0;
        for (int64_t b = p * per_part; b < (p + 1) * per_part; ++b)
          acc += static_cast<double>(dd[b * o + j]) * static_cast<double>(s[b * in + i]);
        out[(p * o + j) * in + i] = static_cast<T>(acc);
      }
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
  DK_DISPATCH(src.dtype(), conv_fwd, d, host(src), w, host(dst));
}
void RefBackend::do_conv2d_backward_data(const ConvDesc& d, const Buffer& diff_dst,
                                         const Weights& w, Buffer& diff_src) {
  DK_DISPATCH(diff_src.dtype(), conv_bwd_data, d, host(diff_dst), w, host(diff_src));
}
void RefBackend::do_conv2d_backward_weights(const ConvDesc& d, const Buffer& src,
                                            const Buffer& diff_dst, Buffer& diff_weights,
                                            int64_t parts) {
  DK_DISPATCH(src.dtype(), conv_bwd_weights, d, host(src), host(diff_dst), host(diff_weights),
              parts);
}
void RefBackend::do_dense_forward(const DenseDesc& d, const Buffer& src, const Weights& w,
                                  Buffer& dst) {
  DK_DISPATCH(src.dtype(), dense_fwd, d, host(src), w, host(dst));
}
void RefBackend::do_dense_backward_data(const DenseDesc& d, const Buffer& diff_dst,
                                        const Weights& w, Buffer& diff_src) {
  DK_DISPATCH(diff_src.dtype(), dense_bwd_data, d, host(diff_dst), w, host(diff_src));
}
void RefBackend::do_dense_backward_weights(const DenseDesc& d, const Buffer& src,
                                           const Buffer& diff_dst, Buffer& diff_weights,
                                           int64_t parts) {
  DK_DISPATCH(src.dtype(), dense_bwd_weights, d, host(src), host(diff_dst), host(diff_weights),
              parts);
}

}  // namespace darknight::accel
