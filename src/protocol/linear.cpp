#include "protocol/linear.h"

#include <fmt/format.h>

#include <optional>

#include "protocol/checked.h"
#include "protocol/error.h"

namespace darknight {

// ---------------------------------------------------------------- descriptions

void ConvDesc::validate() const {
  DK_CHECK(in_channels > 0 && out_channels > 0, "conv {}: channels must be positive", str());
  DK_CHECK(kernel_h > 0 && kernel_w > 0, "conv {}: kernel must be positive", str());
  DK_CHECK(stride_h > 0 && stride_w > 0, "conv {}: stride must be positive", str());
  DK_CHECK(dilation_h > 0 && dilation_w > 0, "conv {}: dilation must be >= 1", str());
  DK_CHECK(pad_top >= 0 && pad_left >= 0 && pad_bottom >= 0 && pad_right >= 0,
           "conv {}: padding must be non-negative", str());
  DK_CHECK(groups > 0 && in_channels % groups == 0 && out_channels % groups == 0,
           "conv {}: groups must divide both channel counts", str());
}

Shape ConvDesc::weight_shape() const {
  return Shape{out_channels, in_channels / groups, kernel_h, kernel_w};
}

Shape ConvDesc::dst_shape(const Shape& src) const {
  validate();
  DK_CHECK(src.rank() == 4, "conv {}: src must be NCHW, got {}", str(), src.str());
  DK_CHECK(src.c() == in_channels, "conv {}: src {} has {} channels, expected {}", str(), src.str(),
           src.c(), in_channels);
  // The fields may come from a file or a message: overflow-checked (validate() made every
  // one positive, the pads non-negative).
  auto extent = [&](int64_t in, int64_t k, int64_t d, int64_t pb, int64_t pe, int64_t s) {
    std::optional<int64_t> eff = checked_mul(k - 1, d), padded = checked_add(in, pb);
    if (eff) eff = checked_add(*eff, int64_t{1});
    if (padded) padded = checked_add(*padded, pe);
    DK_CHECK(eff && padded, "conv {}: window or padding too large (overflow)", str());
    DK_CHECK(*padded >= *eff, "conv {}: kernel larger than padded input {}", str(), src.str());
    return (*padded - *eff) / s + 1;
  };
  return Shape{src.n(), out_channels,
               extent(src.h(), kernel_h, dilation_h, pad_top, pad_bottom, stride_h),
               extent(src.w(), kernel_w, dilation_w, pad_left, pad_right, stride_w)};
}

std::string ConvDesc::str() const {
  return fmt::format("{}->{} k{}x{} s{}x{} p{},{},{},{} d{}x{} g{}", in_channels, out_channels,
                     kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left, pad_bottom,
                     pad_right, dilation_h, dilation_w, groups);
}

void DenseDesc::validate() const {
  DK_CHECK(in_features > 0 && out_features > 0, "dense {}: features must be positive", str());
}

Shape DenseDesc::dst_shape(const Shape& src) const {
  validate();
  DK_CHECK(src.rank() >= 2, "dense {}: src must have a batch dimension, got {}", str(), src.str());
  DK_CHECK(src.item_numel() == in_features, "dense {}: src {} has {} features per item", str(),
           src.str(), src.item_numel());
  return Shape{src[0], out_features};
}

std::string DenseDesc::str() const {
  return fmt::format("{}->{}", in_features, out_features);
}

// ---------------------------------------------------------------- geometry

ConvGeometry::ConvGeometry(const ConvDesc& d, const Shape& src) {
  const Shape nchw = src.rank() == 3 ? Shape{1, src[0], src[1], src[2]} : src;
  const Shape dst = d.dst_shape(nchw);
  c = nchw.c(), h = nchw.h(), w = nchw.w();
  o = dst.c(), oh = dst.h(), ow = dst.w();
  kh = d.kernel_h, kw = d.kernel_w, sh = d.stride_h, sw = d.stride_w;
  dh = d.dilation_h, dw = d.dilation_w;
  pt = d.pad_top, pl = d.pad_left, pb = d.pad_bottom, pr = d.pad_right;
  groups = d.groups;
}

ConvGeometry::ConvGeometry(const DenseDesc& d) : c(d.in_features), o(d.out_features) {}

ConvGeometry::Taps ConvGeometry::taps(bool rows, bool from_input) const {
  const int64_t in = rows ? h : w, out = rows ? oh : ow, k = rows ? kh : kw;
  const int64_t stride = rows ? sh : sw, pad = rows ? pt : pl, dil = rows ? dh : dw;
  Taps t;
  t.start.push_back(0);
  for (int64_t i = 0; i < (from_input ? in : out); ++i) {
    for (int64_t kk = 0; kk < k; ++kk) {
      if (from_input) {
        const int64_t n = i + pad - kk * dil;
        if (n >= 0 && n % stride == 0 && n / stride < out) t.at.push_back({kk, n / stride});
      } else {
        const int64_t r = i * stride - pad + kk * dil;
        if (r >= 0 && r < in) t.at.push_back({kk, r});
      }
    }
    t.start.push_back(static_cast<int64_t>(t.at.size()));
  }
  return t;
}

void im2col(const ConvGeometry& g, const double* src, int64_t y0, int64_t y1, double* col,
            bool parallel) {
  const int64_t cols = (y1 - y0) * g.ow, ig = g.ig();
#pragma omp parallel for collapse(3) schedule(static) if (parallel)
  for (int64_t ic = 0; ic < ig; ++ic)
    for (int64_t ky = 0; ky < g.kh; ++ky)
      for (int64_t kx = 0; kx < g.kw; ++kx) {
        double* row = col + ((ic * g.kh + ky) * g.kw + kx) * cols;
        for (int64_t y = y0; y < y1; ++y) {
          const int64_t iy = y * g.sh - g.pt + ky * g.dh;
          double* out = row + (y - y0) * g.ow;
          if (iy < 0 || iy >= g.h) {
            std::fill(out, out + g.ow, 0.0);
            continue;
          }
          const double* in = src + (ic * g.h + iy) * g.w;
          for (int64_t x = 0; x < g.ow; ++x) {
            const int64_t ix = x * g.sw - g.pl + kx * g.dw;
            out[x] = (ix >= 0 && ix < g.w) ? in[ix] : 0.0;
          }
        }
      }
}

void col2im(const ConvGeometry& g, const double* col, int64_t y0, int64_t y1, double* diff_src) {
  const int64_t cols = (y1 - y0) * g.ow;
  for (int64_t ic = 0; ic < g.ig(); ++ic)
    for (int64_t ky = 0; ky < g.kh; ++ky)
      for (int64_t kx = 0; kx < g.kw; ++kx) {
        const double* row = col + ((ic * g.kh + ky) * g.kw + kx) * cols;
        for (int64_t y = y0; y < y1; ++y) {
          const int64_t iy = y * g.sh - g.pt + ky * g.dh;
          if (iy < 0 || iy >= g.h) continue;
          const double* in = row + (y - y0) * g.ow;
          double* out = diff_src + (ic * g.h + iy) * g.w;
          for (int64_t x = 0; x < g.ow; ++x) {
            const int64_t ix = x * g.sw - g.pl + kx * g.dw;
            if (ix >= 0 && ix < g.w) out[ix] += in[x];
          }
        }
      }
}

// ---------------------------------------------------------------- reference convolution

namespace reference {

template <typename T>
void conv_forward(const ConvGeometry& g, int64_t n, const T* src, const T* w, T* dst,
                  bool parallel) {
#pragma omp parallel for collapse(2) schedule(static) if (parallel)
  for (int64_t b = 0; b < n; ++b)
    for (int64_t oc = 0; oc < g.o; ++oc)
      for (int64_t y = 0; y < g.oh; ++y)
        for (int64_t x = 0; x < g.ow; ++x) {
          double acc = 0;
          g.for_taps(b, oc, y, x, [&](int64_t si, int64_t, int64_t wi) {
            acc += static_cast<double>(src[si]) * static_cast<double>(w[wi]);
          });
          dst[((b * g.o + oc) * g.oh + y) * g.ow + x] = static_cast<T>(acc);
        }
}

template <typename T>
void conv_backward_data(const ConvGeometry& g, int64_t n, const T* diff_dst, const T* w,
                        T* diff_src) {
  std::vector<double> acc(static_cast<size_t>(n * g.in_numel()), 0.0);
  for (int64_t b = 0; b < n; ++b)
    for (int64_t oc = 0; oc < g.o; ++oc)
      for (int64_t y = 0; y < g.oh; ++y)
        for (int64_t x = 0; x < g.ow; ++x)
          g.for_taps(b, oc, y, x, [&](int64_t si, int64_t di, int64_t wi) {
            acc[static_cast<size_t>(si)] +=
                static_cast<double>(diff_dst[di]) * static_cast<double>(w[wi]);
          });
  for (size_t i = 0; i < acc.size(); ++i) diff_src[i] = static_cast<T>(acc[i]);
}

template <typename T>
void conv_backward_weights(const ConvGeometry& g, int64_t n, int64_t parts, const T* src,
                           const T* diff_dst, T* diff_w) {
  const int64_t wn = g.o * g.fan_in(), per_part = n / parts;
  std::vector<double> acc(static_cast<size_t>(wn * parts), 0.0);
  for (int64_t b = 0; b < n; ++b) {
    double* a = acc.data() + (b / per_part) * wn;
    for (int64_t oc = 0; oc < g.o; ++oc)
      for (int64_t y = 0; y < g.oh; ++y)
        for (int64_t x = 0; x < g.ow; ++x)
          g.for_taps(b, oc, y, x, [&](int64_t si, int64_t di, int64_t wi) {
            a[wi] += static_cast<double>(src[si]) * static_cast<double>(diff_dst[di]);
          });
  }
  for (size_t i = 0; i < acc.size(); ++i) diff_w[i] = static_cast<T>(acc[i]);
}

#define DK_INSTANTIATE(T)                                                                    \
  template void conv_forward<T>(const ConvGeometry&, int64_t, const T*, const T*, T*, bool); \
  template void conv_backward_data<T>(const ConvGeometry&, int64_t, const T*, const T*, T*); \
  template void conv_backward_weights<T>(const ConvGeometry&, int64_t, int64_t, const T*,    \
                                         const T*, T*);
DK_INSTANTIATE(float)
DK_INSTANTIATE(double)
#undef DK_INSTANTIATE

}  // namespace reference
}  // namespace darknight
