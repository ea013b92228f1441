#include "accel/cpu/gemm_f64.h"

#include <cblas.h>

#include <algorithm>
#include <cstring>
#include <vector>

namespace darknight::accel::f64 {
namespace {

/// One (image, group) slice of a convolution, with output rows processed in chunks so the
/// im2col buffer stays small (at most kColElements doubles).
constexpr int64_t kColElements = int64_t{1} << 21;  // 16 MiB

struct ConvGeom {
  int64_t c, h, w, o, oh, ow, kh, kw, sh, sw, pt, pl, dh, dw, ig, og, k, groups;
  bool direct;  // 1x1, stride 1, no padding: the input already is the im2col matrix
  bool depthwise() const { return ig == 1 && og == 1; }
  ConvGeom(const ConvDesc& d, const Shape& src) {
    const Shape dst = d.dst_shape(src);
    c = src.c(), h = src.h(), w = src.w(), o = d.out_channels, oh = dst.h(), ow = dst.w();
    kh = d.kernel_h, kw = d.kernel_w, sh = d.stride_h, sw = d.stride_w;
    pt = d.pad_top, pl = d.pad_left, dh = d.dilation_h, dw = d.dilation_w;
    groups = d.groups, ig = c / groups, og = o / groups, k = ig * kh * kw;
    direct = kh == 1 && kw == 1 && sh == 1 && sw == 1 && pt == 0 && pl == 0 && d.pad_bottom == 0 &&
             d.pad_right == 0;
  }
  int64_t rows_per_chunk() const { return std::max<int64_t>(1, kColElements / (k * ow)); }
};

/// col[(ic*kh+ky)*kw+kx][(y-y0)*ow+x] = src[ic][y*sh-pt+ky*dh][x*sw-pl+kx*dw] (0 outside).
void im2col(const ConvGeom& g, const double* src, int64_t y0, int64_t y1, double* col) {
  const int64_t cols = (y1 - y0) * g.ow;
  for (int64_t ic = 0; ic < g.ig; ++ic)
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

/// The adjoint of im2col: diff_src += scatter(col).
void col2im(const ConvGeom& g, const double* col, int64_t y0, int64_t y1, double* diff_src) {
  const int64_t cols = (y1 - y0) * g.ow;
  for (int64_t ic = 0; ic < g.ig; ++ic)
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

/// Depthwise convolution (one input and one output channel per group): a GEMM per group
/// would be 1 x KH*KW x OH*OW, so the taps are looped directly. For each output row y and
/// tap (ky, kx), calls f(src0, dst0, count, tap): the multiply-adds
/// dst[dst0 + i] += src[src0 + i * sw] * w[tap] for i in [0, count) (indices in one plane).
template <typename F>
void depthwise_rows(const ConvGeom& g, F&& f) {
  for (int64_t kx = 0; kx < g.kw; ++kx) {
    // Output columns whose input column x*sw - pl + kx*dw lies inside [0, w).
    const int64_t off = kx * g.dw - g.pl;
    const int64_t x0 = off >= 0 ? 0 : (-off + g.sw - 1) / g.sw;
    const int64_t x1 = std::min(g.ow, (g.w - 1 - off) / g.sw + 1);
    if (g.w - 1 - off < 0 || x0 >= x1) continue;
    for (int64_t y = 0; y < g.oh; ++y)
      for (int64_t ky = 0; ky < g.kh; ++ky) {
        const int64_t iy = y * g.sh - g.pt + ky * g.dh;
        if (iy < 0 || iy >= g.h) continue;
        f(iy * g.w + x0 * g.sw + off, y * g.ow + x0, x1 - x0, ky * g.kw + kx);
      }
  }
}

/// Runs body(item) for item in [0, count): in parallel over items when there are enough of
/// them to keep every thread busy (each item then uses a single-threaded GEMM), else in
/// order with the GEMM itself multi-threaded.
template <typename F>
void for_items(int64_t count, int threads, F&& body) {
  if (count >= 2 * threads) {
#pragma omp parallel for schedule(dynamic) num_threads(threads)
    for (int64_t i = 0; i < count; ++i) body(i);
  } else {
    for (int64_t i = 0; i < count; ++i) body(i);
  }
}

}  // namespace

void conv_forward(const ConvDesc& d, const Shape& src_shape, const double* src, const double* w,
                  double* dst, int threads) {
  const ConvGeom g(d, src_shape);
  const int64_t ohw = g.oh * g.ow;
  for_items(src_shape.n() * g.groups, threads, [&](int64_t item) {
    const int64_t b = item / g.groups, grp = item % g.groups;
    const double* s = src + (b * g.c + grp * g.ig) * g.h * g.w;
    const double* wg = w + grp * g.og * g.k;
    double* out = dst + (b * g.o + grp * g.og) * ohw;
    if (g.depthwise()) {
      std::fill(out, out + ohw, 0.0);
      depthwise_rows(g, [&](int64_t s0, int64_t d0, int64_t cnt, int64_t t) {
        const double wt = wg[t];
        for (int64_t i = 0; i < cnt; ++i) out[d0 + i] += s[s0 + i * g.sw] * wt;
      });
      return;
    }
    if (g.direct) {
      cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, g.og, ohw, g.k, 1.0, wg, g.k, s, ohw,
                  0.0, out, ohw);
      return;
    }
    const int64_t step = g.rows_per_chunk();
    std::vector<double> col(static_cast<size_t>(g.k * std::min(step, g.oh) * g.ow));
    for (int64_t y0 = 0; y0 < g.oh; y0 += step) {
      const int64_t y1 = std::min(g.oh, y0 + step), cols = (y1 - y0) * g.ow;
      im2col(g, s, y0, y1, col.data());
      cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, g.og, cols, g.k, 1.0, wg, g.k,
                  col.data(), cols, 0.0, out + y0 * g.ow, ohw);
    }
  });
}

void conv_backward_data(const ConvDesc& d, const Shape& src_shape, const double* diff_dst,
                        const double* w, double* diff_src, int threads) {
  const ConvGeom g(d, src_shape);
  const int64_t ohw = g.oh * g.ow;
  for_items(src_shape.n() * g.groups, threads, [&](int64_t item) {
    const int64_t b = item / g.groups, grp = item % g.groups;
    double* ds = diff_src + (b * g.c + grp * g.ig) * g.h * g.w;
    const double* wg = w + grp * g.og * g.k;
    const double* dd = diff_dst + (b * g.o + grp * g.og) * ohw;
    if (g.depthwise()) {
      std::fill(ds, ds + g.h * g.w, 0.0);
      depthwise_rows(g, [&](int64_t s0, int64_t d0, int64_t cnt, int64_t t) {
        const double wt = wg[t];
        for (int64_t i = 0; i < cnt; ++i) ds[s0 + i * g.sw] += dd[d0 + i] * wt;
      });
      return;
    }
    if (g.direct) {
      cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, g.k, ohw, g.og, 1.0, wg, g.k, dd, ohw,
                  0.0, ds, ohw);
      return;
    }
    std::fill(ds, ds + g.ig * g.h * g.w, 0.0);
    const int64_t step = g.rows_per_chunk();
    std::vector<double> col(static_cast<size_t>(g.k * std::min(step, g.oh) * g.ow));
    for (int64_t y0 = 0; y0 < g.oh; y0 += step) {
      const int64_t y1 = std::min(g.oh, y0 + step), cols = (y1 - y0) * g.ow;
      cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, g.k, cols, g.og, 1.0, wg, g.k,
                  dd + y0 * g.ow, ohw, 0.0, col.data(), cols);
      col2im(g, col.data(), y0, y1, ds);
    }
  });
}

void conv_backward_weights(const ConvDesc& d, const Shape& src_shape, const double* src,
                           const double* diff_dst, double* diff_w, int64_t parts, int threads) {
  const ConvGeom g(d, src_shape);
  const int64_t n = src_shape.n(), per_part = n / parts, ohw = g.oh * g.ow;
  const int64_t wn = g.o * g.k;
  std::fill(diff_w, diff_w + parts * wn, 0.0);
  // Items that write disjoint gradient slices: (part, group). Images of a part in order.
  for_items(parts * g.groups, threads, [&](int64_t item) {
    const int64_t p = item / g.groups, grp = item % g.groups;
    double* dw = diff_w + p * wn + grp * g.og * g.k;
    const int64_t step = g.rows_per_chunk();
    std::vector<double> col(g.direct ? 0 : static_cast<size_t>(g.k * std::min(step, g.oh) * g.ow));
    for (int64_t b = p * per_part; b < (p + 1) * per_part; ++b) {
      const double* s = src + (b * g.c + grp * g.ig) * g.h * g.w;
      const double* dd = diff_dst + (b * g.o + grp * g.og) * ohw;
      if (g.depthwise()) {
        depthwise_rows(g, [&](int64_t s0, int64_t d0, int64_t cnt, int64_t t) {
          double acc = 0;
          for (int64_t i = 0; i < cnt; ++i) acc += s[s0 + i * g.sw] * dd[d0 + i];
          dw[t] += acc;
        });
        continue;
      }
      if (g.direct) {
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, g.og, g.k, ohw, 1.0, dd, ohw, s, ohw,
                    1.0, dw, g.k);
        continue;
      }
      for (int64_t y0 = 0; y0 < g.oh; y0 += step) {
        const int64_t y1 = std::min(g.oh, y0 + step), cols = (y1 - y0) * g.ow;
        im2col(g, s, y0, y1, col.data());
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, g.og, g.k, cols, 1.0, dd + y0 * g.ow,
                    ohw, col.data(), cols, 1.0, dw, g.k);
      }
    }
  });
}

void dense_forward(int64_t n, int64_t in, int64_t out, const double* src, const double* w,
                   double* dst) {
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, out, in, 1.0, src, in, w, in, 0.0, dst,
              out);
}

void dense_backward_data(int64_t n, int64_t in, int64_t out, const double* diff_dst,
                         const double* w, double* diff_src) {
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, in, out, 1.0, diff_dst, out, w, in, 0.0,
              diff_src, in);
}

void dense_backward_weights(int64_t n, int64_t in, int64_t out, const double* src,
                            const double* diff_dst, double* diff_w, int64_t parts) {
  const int64_t per_part = n / parts;
  for (int64_t p = 0; p < parts; ++p)
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out, in, per_part, 1.0,
                diff_dst + p * per_part * out, out, src + p * per_part * in, in, 0.0,
                diff_w + p * out * in, in);
}

}  // namespace darknight::accel::f64
