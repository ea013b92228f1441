#include "nn/backward.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace darknight::nn {
namespace {

struct Planes {
  int64_t n, c, inner;
  explicit Planes(const Tensor& t)
      : n(t.shape()[0]),
        c(t.shape().rank() > 1 ? t.shape()[1] : 1),
        inner(t.numel() /
              std::max<int64_t>(1, t.shape()[0] * (t.shape().rank() > 1 ? t.shape()[1] : 1))) {}
};

}  // namespace

Tensor batch_norm_train(Node& n, const Tensor& x, BatchNormCache& cache) {
  const Planes p(x);
  const double count = static_cast<double>(p.n * p.inner);
  cache.xhat = Tensor::uninitialized(x.shape());
  cache.inv_std = Tensor(Shape{p.c});
  Tensor y = Tensor::uninitialized(x.shape());
  BatchNormParams& bn = n.bn;
#pragma omp parallel for schedule(static)
  for (int64_t k = 0; k < p.c; ++k) {
    double sum = 0, sq = 0;
    for (int64_t b = 0; b < p.n; ++b) {
      const float* q = x.data() + (b * p.c + k) * p.inner;
      for (int64_t i = 0; i < p.inner; ++i) sum += q[i];
    }
    const double mean = sum / count;
    for (int64_t b = 0; b < p.n; ++b) {
      const float* q = x.data() + (b * p.c + k) * p.inner;
      for (int64_t i = 0; i < p.inner; ++i) sq += (q[i] - mean) * (q[i] - mean);
    }
    const double var = sq / count;
    const double inv = 1.0 / std::sqrt(var + bn.eps);
    cache.inv_std[k] = static_cast<float>(inv);
    const double g = bn.gamma[k], be = bn.beta[k];
    for (int64_t b = 0; b < p.n; ++b) {
      const int64_t off = (b * p.c + k) * p.inner;
      for (int64_t i = 0; i < p.inner; ++i) {
        const double xh = (x[off + i] - mean) * inv;
        cache.xhat[off + i] = static_cast<float>(xh);
        y[off + i] = static_cast<float>(g * xh + be);
      }
    }
    const double unbiased = count > 1 ? sq / (count - 1) : var;
    bn.mean[k] = static_cast<float>((1 - bn.momentum) * bn.mean[k] + bn.momentum * mean);
    bn.var[k] = static_cast<float>((1 - bn.momentum) * bn.var[k] + bn.momentum * unbiased);
  }
  return y;
}

Tensor batch_norm_backward(const Node& n, const Tensor& dy, const BatchNormCache& cache,
                           Tensor& dgamma, Tensor& dbeta) {
  const Planes p(dy);
  const double count = static_cast<double>(p.n * p.inner);
  dgamma = Tensor(Shape{p.c});
  dbeta = Tensor(Shape{p.c});
  Tensor dx = Tensor::uninitialized(dy.shape());
#pragma omp parallel for schedule(static)
  for (int64_t k = 0; k < p.c; ++k) {
    double sdy = 0, sdyx = 0;
    for (int64_t b = 0; b < p.n; ++b) {
      const int64_t off = (b * p.c + k) * p.inner;
      for (int64_t i = 0; i < p.inner; ++i)
        sdy += dy[off + i], sdyx += double(dy[off + i]) * cache.xhat[off + i];
    }
    dgamma[k] = static_cast<float>(sdyx);
    dbeta[k] = static_cast<float>(sdy);
    const double scale = n.bn.gamma[k] * cache.inv_std[k];
    const double mdy = sdy / count, mdyx = sdyx / count;
    for (int64_t b = 0; b < p.n; ++b) {
      const int64_t off = (b * p.c + k) * p.inner;
      for (int64_t i = 0; i < p.inner; ++i)
        dx[off + i] = static_cast<float>(scale * (dy[off + i] - mdy - cache.xhat[off + i] * mdyx));
    }
  }
  return dx;
}

namespace {

/// Max pooling: each window's gradient goes to its largest input (the first, on ties).
void max_pool_backward(const PoolDesc& p, const Tensor& x, const Tensor& y, const Tensor& dy,
                       Tensor& dx) {
  // Planes are independent; within one, windows may overlap: scatter serially per plane.
  const int64_t h = x.shape()[2], w = x.shape()[3];
  const int64_t planes = x.shape()[0] * x.shape()[1], oh = y.shape()[2], ow = y.shape()[3];
#pragma omp parallel for schedule(static)
  for (int64_t pl = 0; pl < planes; ++pl)
    for (int64_t oy = 0; oy < oh; ++oy)
      for (int64_t ox = 0; ox < ow; ++ox) {
        const int64_t y0 = oy * p.stride_h - p.pad_top;
        const int64_t x0 = ox * p.stride_w - p.pad_left;
        int64_t best = -1;
        float m = -std::numeric_limits<float>::infinity();
        for (int64_t yy = std::max<int64_t>(y0, 0); yy < std::min(y0 + p.kernel_h, h); ++yy)
          for (int64_t xx = std::max<int64_t>(x0, 0); xx < std::min(x0 + p.kernel_w, w); ++xx)
            if (x[pl * h * w + yy * w + xx] > m || best < 0)
              m = x[pl * h * w + yy * w + xx], best = pl * h * w + yy * w + xx;
        if (best >= 0) dx[best] += dy[pl * oh * ow + oy * ow + ox];
      }
}

/// Average pooling: each window's gradient spread evenly over the inputs it averaged.
void avg_pool_backward(const PoolDesc& p, const Tensor& x, const Tensor& y, const Tensor& dy,
                       Tensor& dx) {
  const int64_t planes = x.shape()[0] * x.shape()[1];
  const int64_t h = x.shape()[2], w = x.shape()[3], oh = y.shape()[2], ow = y.shape()[3];
#pragma omp parallel for schedule(static)
  for (int64_t pl = 0; pl < planes; ++pl)
    for (int64_t oy = 0; oy < oh; ++oy)
      for (int64_t ox = 0; ox < ow; ++ox) {
        const int64_t y0 = oy * p.stride_h - p.pad_top, x0 = ox * p.stride_w - p.pad_left;
        const int64_t ya = std::max<int64_t>(y0, 0), yb = std::min(y0 + p.kernel_h, h);
        const int64_t xa = std::max<int64_t>(x0, 0), xb = std::min(x0 + p.kernel_w, w);
        const int64_t count = p.count_include_pad
                                  ? (std::min(y0 + p.kernel_h, h + p.pad_bottom) - y0) *
                                        (std::min(x0 + p.kernel_w, w + p.pad_right) - x0)
                                  : (yb - ya) * (xb - xa);
        const float g =
            dy[pl * oh * ow + oy * ow + ox] / static_cast<float>(std::max<int64_t>(count, 1));
        for (int64_t yy = ya; yy < yb; ++yy)
          for (int64_t xx = xa; xx < xb; ++xx) dx[pl * h * w + yy * w + xx] += g;
      }
}

/// Constant padding: the gradient of the inner (unpadded) rows.
void pad_backward(const std::array<int64_t, 4>& pads, const Tensor& x, const Tensor& y,
                  const Tensor& dy, Tensor& dx) {
  const int64_t planes = x.shape()[0] * x.shape()[1], h = x.shape()[2], w = x.shape()[3];
  const int64_t ow = y.shape()[3], oh = y.shape()[2];
  for (int64_t pl = 0; pl < planes; ++pl)
    for (int64_t r = 0; r < h; ++r)
      std::copy(dy.data() + (pl * oh + r + pads[0]) * ow + pads[1],
                dy.data() + (pl * oh + r + pads[0]) * ow + pads[1] + w,
                dx.data() + (pl * h + r) * w);
}

/// Softmax over each item: dx = y * (dy - <y, dy>).
void softmax_backward(const Tensor& y, const Tensor& dy, Tensor& dx) {
  const int64_t b = y.shape()[0], s = y.shape().item_numel();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < b; ++i) {
    double dot = 0;
    for (int64_t e = 0; e < s; ++e) dot += double(y[i * s + e]) * dy[i * s + e];
    for (int64_t e = 0; e < s; ++e)
      dx[i * s + e] = static_cast<float>(y[i * s + e] * (dy[i * s + e] - dot));
  }
}

/// A fixed per-channel affine map (no statistics): dx = scale * dy.
void channel_scale_backward(const Tensor& scale, const Tensor& dy, Tensor& dx) {
  const Planes p(dy);
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < p.n; ++b)
    for (int64_t k = 0; k < p.c; ++k)
      for (int64_t i = 0; i < p.inner; ++i) {
        const int64_t off = (b * p.c + k) * p.inner + i;
        dx[off] = dy[off] * (scale.empty() ? 1.0f : scale[k]);
      }
}

}  // namespace

Tensor nonlinear_backward(const Node& n, const Tensor& x, const Tensor& y, const Tensor& dy) {
  Tensor dx(x.shape());
  const int64_t total = dy.numel();
  switch (n.op) {
    case Op::relu:
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < total; ++i) dx[i] = y[i] > 0 ? dy[i] : 0.0f;
      return dx;
    case Op::clip:
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < total; ++i) dx[i] = (x[i] > n.lo && x[i] < n.hi) ? dy[i] : 0.0f;
      return dx;
    case Op::flatten:
    case Op::reshape:
    case Op::identity:
      std::copy(dy.data(), dy.data() + total, dx.data());
      return dx;
    case Op::max_pool:
      max_pool_backward(n.pool, x, y, dy, dx);
      return dx;
    case Op::avg_pool:
      avg_pool_backward(n.pool, x, y, dy, dx);
      return dx;
    case Op::global_avg_pool: {
      const int64_t planes = x.shape()[0] * x.shape()[1], hw = x.shape()[2] * x.shape()[3];
#pragma omp parallel for schedule(static)
      for (int64_t pl = 0; pl < planes; ++pl)
        for (int64_t i = 0; i < hw; ++i) dx[pl * hw + i] = dy[pl] / static_cast<float>(hw);
      return dx;
    }
    case Op::pad:
      pad_backward(n.pads, x, y, dy, dx);
      return dx;
    case Op::softmax:
      softmax_backward(y, dy, dx);
      return dx;
    case Op::batch_norm:
      channel_scale_backward(n.scale, dy, dx);
      return dx;
    case Op::input:
    case Op::conv:
    case Op::dense:
    case Op::add:
      break;
  }
  DK_ASSERT(false, "nonlinear_backward called on {}", op_name(n.op));
  return {};
}

void epilogue_backward(const Epilogue& e, const Tensor& y, Tensor& dy, Tensor& dbias) {
  DK_ASSERT(e.scale.empty(), "a training epilogue has no scale");
  const int64_t n = dy.shape()[0], s = dy.shape().item_numel(), c = s / e.inner;
  float* g = dy.data();
  const int64_t total = dy.numel();
  if (e.act == Act::relu) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < total; ++i) g[i] = y[i] > 0 ? g[i] : 0.0f;
  } else if (e.act == Act::clip) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < total; ++i) g[i] = (y[i] > e.lo && y[i] < e.hi) ? g[i] : 0.0f;
  }
  if (e.shift.empty()) return;
  if (dbias.numel() != c) dbias = Tensor(Shape{c});
#pragma omp parallel for schedule(static)
  for (int64_t k = 0; k < c; ++k) {
    double sum = 0;
    for (int64_t b = 0; b < n; ++b)
      for (int64_t i = 0; i < e.inner; ++i) sum += g[b * s + k * e.inner + i];
    dbias[k] += static_cast<float>(sum);
  }
}

double softmax_cross_entropy(const Tensor& logits, const std::vector<int>& labels, int64_t scale,
                             Tensor& dlogits, int64_t& correct) {
  const int64_t n = logits.shape()[0], c = logits.shape().item_numel();
  DK_CHECK(static_cast<int64_t>(labels.size()) == n, "{} labels for {} outputs", labels.size(), n);
  dlogits = Tensor::uninitialized(logits.shape());
  double loss = 0;
  correct = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int label = labels[static_cast<size_t>(i)];
    DK_CHECK(label >= 0 && label < c, "label {} of example {} is not in 0..{}", label, i, c - 1);
    const float* z = logits.data() + i * c;
    const int64_t top = std::max_element(z, z + c) - z;
    correct += top == label;
    const double m = z[top];
    double sum = 0;
    for (int64_t k = 0; k < c; ++k) sum += std::exp(double(z[k]) - m);
    loss += std::log(sum) + m - z[label];
    for (int64_t k = 0; k < c; ++k) {
      const double p = std::exp(double(z[k]) - m) / sum;
      dlogits[i * c + k] = static_cast<float>((p - (k == label ? 1.0 : 0.0)) / double(scale));
    }
  }
  return loss / double(n);
}

}  // namespace darknight::nn
