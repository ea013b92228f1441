#include "backends/cpu/gemm_f64.h"

#include <cblas.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "protocol/linear.h"

namespace darknight::accel::f64 {
namespace {

/// Output rows are processed in chunks so the im2col buffer stays small (at most
/// kColElements doubles).
constexpr int64_t kColElements = int64_t{1} << 21;  // 16 MiB

int64_t rows_per_chunk(const ConvGeometry& g) {
  return std::max<int64_t>(1, kColElements / (g.fan_in() * g.ow));
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
  const ConvGeometry g(d, src_shape);
  const int64_t ig = g.ig(), og = g.og(), k = g.fan_in();
  const int64_t ohw = g.oh * g.ow;
  for_items(src_shape.n() * g.groups, threads, [&](int64_t item) {
    const int64_t b = item / g.groups, grp = item % g.groups;
    const double* s = src + (b * g.c + grp * ig) * g.h * g.w;
    const double* wg = w + grp * og * k;
    double* out = dst + (b * g.o + grp * og) * ohw;
    if (g.depthwise()) {
      std::fill(out, out + ohw, 0.0);
      g.for_tap_runs([&](int64_t s0, int64_t d0, int64_t cnt, int64_t t) {
        const double wt = wg[t];
        for (int64_t i = 0; i < cnt; ++i) out[d0 + i] += s[s0 + i * g.sw] * wt;
      });
      return;
    }
    if (g.pointwise()) {
      cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, og, ohw, k, 1.0, wg, k, s, ohw, 0.0,
                  out, ohw);
      return;
    }
    const int64_t step = rows_per_chunk(g);
    std::vector<double> col(static_cast<size_t>(k * std::min(step, g.oh) * g.ow));
    for (int64_t y0 = 0; y0 < g.oh; y0 += step) {
      const int64_t y1 = std::min(g.oh, y0 + step), cols = (y1 - y0) * g.ow;
      im2col(g, s, y0, y1, col.data());
      cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, og, cols, k, 1.0, wg, k, col.data(),
                  cols, 0.0, out + y0 * g.ow, ohw);
    }
  });
}

void conv_backward_data(const ConvDesc& d, const Shape& src_shape, const double* diff_dst,
                        const double* w, double* diff_src, int threads) {
  const ConvGeometry g(d, src_shape);
  const int64_t ig = g.ig(), og = g.og(), k = g.fan_in();
  const int64_t ohw = g.oh * g.ow;
  for_items(src_shape.n() * g.groups, threads, [&](int64_t item) {
    const int64_t b = item / g.groups, grp = item % g.groups;
    double* ds = diff_src + (b * g.c + grp * ig) * g.h * g.w;
    const double* wg = w + grp * og * k;
    const double* dd = diff_dst + (b * g.o + grp * og) * ohw;
    if (g.depthwise()) {
      std::fill(ds, ds + g.h * g.w, 0.0);
      g.for_tap_runs([&](int64_t s0, int64_t d0, int64_t cnt, int64_t t) {
        const double wt = wg[t];
        for (int64_t i = 0; i < cnt; ++i) ds[s0 + i * g.sw] += dd[d0 + i] * wt;
      });
      return;
    }
    if (g.pointwise()) {
      cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, k, ohw, og, 1.0, wg, k, dd, ohw, 0.0, ds,
                  ohw);
      return;
    }
    std::fill(ds, ds + ig * g.h * g.w, 0.0);
    const int64_t step = rows_per_chunk(g);
    std::vector<double> col(static_cast<size_t>(k * std::min(step, g.oh) * g.ow));
    for (int64_t y0 = 0; y0 < g.oh; y0 += step) {
      const int64_t y1 = std::min(g.oh, y0 + step), cols = (y1 - y0) * g.ow;
      cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, k, cols, og, 1.0, wg, k, dd + y0 * g.ow,
                  ohw, 0.0, col.data(), cols);
      col2im(g, col.data(), y0, y1, ds);
    }
  });
}

void conv_backward_weights(const ConvDesc& d, const Shape& src_shape, const double* src,
                           const double* diff_dst, double* diff_w, int64_t parts, int threads) {
  const ConvGeometry g(d, src_shape);
  const int64_t ig = g.ig(), og = g.og(), k = g.fan_in();
  const int64_t n = src_shape.n(), per_part = n / parts, ohw = g.oh * g.ow;
  const int64_t wn = g.o * k;
  std::fill(diff_w, diff_w + parts * wn, 0.0);
  // Items that write disjoint gradient slices: (part, group). Images of a part in order.
  for_items(parts * g.groups, threads, [&](int64_t item) {
    const int64_t p = item / g.groups, grp = item % g.groups;
    double* dw = diff_w + p * wn + grp * og * k;
    const int64_t step = rows_per_chunk(g);
    std::vector<double> col(g.pointwise() ? 0
                                          : static_cast<size_t>(k * std::min(step, g.oh) * g.ow));
    for (int64_t b = p * per_part; b < (p + 1) * per_part; ++b) {
      const double* s = src + (b * g.c + grp * ig) * g.h * g.w;
      const double* dd = diff_dst + (b * g.o + grp * og) * ohw;
      if (g.depthwise()) {
        g.for_tap_runs([&](int64_t s0, int64_t d0, int64_t cnt, int64_t t) {
          double acc = 0;
          for (int64_t i = 0; i < cnt; ++i) acc += s[s0 + i * g.sw] * dd[d0 + i];
          dw[t] += acc;
        });
        continue;
      }
      if (g.pointwise()) {
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, og, k, ohw, 1.0, dd, ohw, s, ohw, 1.0,
                    dw, k);
        continue;
      }
      for (int64_t y0 = 0; y0 < g.oh; y0 += step) {
        const int64_t y1 = std::min(g.oh, y0 + step), cols = (y1 - y0) * g.ow;
        im2col(g, s, y0, y1, col.data());
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, og, k, cols, 1.0, dd + y0 * g.ow, ohw,
                    col.data(), cols, 1.0, dw, k);
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
