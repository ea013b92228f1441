#include "nn/kernels.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace darknight::nn {

void relu(Tensor& x) {
  float* p = x.data();
  const int64_t n = x.numel();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) p[i] = std::max(p[i], 0.0f);
}

void clip(Tensor& x, float lo, float hi) {
  float* p = x.data();
  const int64_t n = x.numel();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) p[i] = std::min(std::max(p[i], lo), hi);
}

void channel_affine(Tensor& x, const Tensor& scale, const Tensor& shift) {
  const int64_t n = x.shape()[0], c = x.shape().rank() > 1 ? x.shape()[1] : 1;
  const int64_t inner = x.numel() / std::max<int64_t>(1, n * c);
  float* p = x.data();
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < n; ++b)
    for (int64_t k = 0; k < c; ++k) {
      float* q = p + (b * c + k) * inner;
      const float s = scale.empty() ? 1.0f : scale[k], t = shift.empty() ? 0.0f : shift[k];
      for (int64_t i = 0; i < inner; ++i) q[i] = s * q[i] + t;
    }
}

void apply_epilogue(const Epilogue& e, Tensor& x) {
  if (e.empty()) return;
  const int64_t n = x.shape()[0], s = x.shape().item_numel();
  float* p = x.data();
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < n; ++b) e.apply(p + b * s, 0, s);
}

namespace {

template <typename F>
Tensor pool_impl(const Tensor& x, const PoolDesc& p, F&& reduce) {
  const Shape item{x.shape()[1], x.shape()[2], x.shape()[3]};
  const Shape o = p.dst_shape(item);
  const int64_t n = x.shape()[0], c = item[0], h = item[1], w = item[2], oh = o[1], ow = o[2];
  auto y = Tensor::uninitialized(Shape{n, c, oh, ow});
  const float* src = x.data();
  float* dst = y.data();
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < n; ++b)
    for (int64_t k = 0; k < c; ++k) {
      const float* plane = src + (b * c + k) * h * w;
      float* out = dst + (b * c + k) * oh * ow;
      for (int64_t oy = 0; oy < oh; ++oy)
        for (int64_t ox = 0; ox < ow; ++ox) {
          const int64_t y0 = oy * p.stride_h - p.pad_top, x0 = ox * p.stride_w - p.pad_left;
          out[oy * ow + ox] = reduce(plane, y0, x0, h, w);
        }
    }
  return y;
}

}  // namespace

Tensor max_pool(const Tensor& x, const PoolDesc& p) {
  return pool_impl(x, p, [&](const float* plane, int64_t y0, int64_t x0, int64_t h, int64_t w) {
    float m = -std::numeric_limits<float>::infinity();
    for (int64_t y = std::max<int64_t>(y0, 0); y < std::min(y0 + p.kernel_h, h); ++y)
      for (int64_t xx = std::max<int64_t>(x0, 0); xx < std::min(x0 + p.kernel_w, w); ++xx)
        m = std::max(m, plane[y * w + xx]);
    return m;
  });
}

Tensor avg_pool(const Tensor& x, const PoolDesc& p) {
  return pool_impl(x, p, [&](const float* plane, int64_t y0, int64_t x0, int64_t h, int64_t w) {
    double s = 0;
    const int64_t ya = std::max<int64_t>(y0, 0), yb = std::min(y0 + p.kernel_h, h);
    const int64_t xa = std::max<int64_t>(x0, 0), xb = std::min(x0 + p.kernel_w, w);
    for (int64_t y = ya; y < yb; ++y)
      for (int64_t xx = xa; xx < xb; ++xx) s += plane[y * w + xx];
    int64_t count;
    if (p.count_include_pad) {
      // The window clipped to the padded input (PyTorch/ONNX).
      const int64_t yc = std::min(y0 + p.kernel_h, h + p.pad_bottom) - y0;
      const int64_t xc = std::min(x0 + p.kernel_w, w + p.pad_right) - x0;
      count = yc * xc;
    } else {
      count = (yb - ya) * (xb - xa);
    }
    return static_cast<float>(s / static_cast<double>(std::max<int64_t>(count, 1)));
  });
}

Tensor global_avg_pool(const Tensor& x) {
  const int64_t n = x.shape()[0], c = x.shape()[1], hw = x.shape()[2] * x.shape()[3];
  auto y = Tensor::uninitialized(Shape{n, c, 1, 1});
  const float* src = x.data();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n * c; ++i) {
    double s = 0;
    for (int64_t j = 0; j < hw; ++j) s += src[i * hw + j];
    y[i] = static_cast<float>(s / static_cast<double>(hw));
  }
  return y;
}

Tensor pad(const Tensor& x, const std::array<int64_t, 4>& p, float value) {
  const int64_t n = x.shape()[0], c = x.shape()[1], h = x.shape()[2], w = x.shape()[3];
  const int64_t oh = h + p[0] + p[2], ow = w + p[1] + p[3];
  auto y = Tensor::uninitialized(Shape{n, c, oh, ow});
  y.fill(value);
  const float* src = x.data();
  float* dst = y.data();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n * c; ++i)
    for (int64_t r = 0; r < h; ++r)
      std::copy(src + (i * h + r) * w, src + (i * h + r + 1) * w,
                dst + (i * oh + r + p[0]) * ow + p[1]);
  return y;
}

Tensor softmax(const Tensor& x) {
  Tensor y = x.clone();
  const int64_t n = x.shape()[0], s = x.shape().item_numel();
  float* p = y.data();
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < n; ++b) {
    float* r = p + b * s;
    const float m = *std::max_element(r, r + s);
    double sum = 0;
    for (int64_t i = 0; i < s; ++i) sum += (r[i] = std::exp(r[i] - m));
    for (int64_t i = 0; i < s; ++i) r[i] = static_cast<float>(r[i] / sum);
  }
  return y;
}

Tensor run_nonlinear(const Node& n, Tensor a, const Tensor* b) {
  auto batched = [&](Tensor t) {
    std::vector<int64_t> dims{a.shape()[0]};
    for (int64_t d : n.shape.dims()) dims.push_back(d);
    t.reshape(Shape(std::span<const int64_t>(dims)));
    return t;
  };
  switch (n.op) {
    case Op::relu:
      relu(a);
      return a;
    case Op::clip:
      clip(a, n.lo, n.hi);
      return a;
    case Op::batch_norm:
      channel_affine(a, n.scale, n.shift);
      return a;
    case Op::max_pool:
      return max_pool(a, n.pool);
    case Op::avg_pool:
      return avg_pool(a, n.pool);
    case Op::global_avg_pool:
      return global_avg_pool(a);
    case Op::pad:
      return pad(a, n.pads, n.pad_value);
    case Op::softmax:
      return softmax(a);
    case Op::flatten:
    case Op::reshape:
    case Op::identity:
      return batched(std::move(a));
    case Op::add: {
      DK_ASSERT(b != nullptr && b->numel() == a.numel(), "add of mismatched values");
      float* p = a.data();
      const float* q = b->data();
      const int64_t cnt = a.numel();
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < cnt; ++i) p[i] += q[i];
      return a;
    }
    case Op::input:
    case Op::conv:
    case Op::dense:
      break;
  }
  DK_ASSERT(false, "run_nonlinear called on {}", op_name(n.op));
  return {};
}

}  // namespace darknight::nn
