// Backward ops against finite differences of the forward op, in f64, on every backend.
//
// With L(x, w) = <R, forward(x, w)>, backward_data(R, w) must be dL/dx and
// backward_weights(x, R) must be dL/dw. L is linear in each argument, so a central
// difference is exact up to rounding: we compare with tolerance 1e-9 * (1 + |L|-scale),
// where a wrong tap, stride or padding shows up as an O(1) error.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "accel/backend.h"
#include "baselines/plain_io.h"
#include "registry/registry.h"
#include "support/available.h"
#include "support/random.h"

namespace darknight::accel {
namespace {

using baselines::PlainIo;

/// Values on a 1/1024 grid in [-1, 1], so x +- 0.5 stays exact in f32 and f64.
Tensor grid_tensor(const Shape& s, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> d(-1024, 1024);
  Tensor t(s);
  for (int64_t i = 0; i < t.numel(); ++i) t[i] = static_cast<float>(d(rng)) / 1024.0f;
  return t;
}

double dot(const Tensor& a, const Tensor& b) {
  long double s = 0;
  for (int64_t i = 0; i < a.numel(); ++i) s += static_cast<long double>(a[i]) * b[i];
  return static_cast<double>(s);
}

/// forward, backward-data and backward-weights of one linear layer, on one backend in f64.
struct Layer {
  virtual ~Layer() = default;
  virtual Tensor forward(Backend& be, const Tensor& x, const Tensor& w) = 0;
  virtual Tensor backward_data(Backend& be, const Tensor& dy, const Tensor& w) = 0;
  virtual Tensor backward_weights(Backend& be, const Tensor& x, const Tensor& dy) = 0;
  virtual Shape src() const = 0;
  virtual Shape dst() const = 0;
  virtual Shape weights() const = 0;
};

struct ConvLayer : Layer {
  ConvDesc d;
  Shape s;
  ConvLayer(ConvDesc desc, Shape src) : d(desc), s(src) {}
  Tensor forward(Backend& be, const Tensor& x, const Tensor& w) override {
    PlainIo io(be, DType::f64);
    auto wt = be.create_weights(w);
    auto xb = io.put(x);
    auto y = io.make(dst());
    be.conv2d_forward(d, *xb, *wt, *y);
    return io.get(*y);
  }
  Tensor backward_data(Backend& be, const Tensor& dy, const Tensor& w) override {
    PlainIo io(be, DType::f64);
    auto wt = be.create_weights(w);
    auto dyb = io.put(dy);
    auto dx = io.make(s);
    be.conv2d_backward_data(d, *dyb, *wt, *dx);
    return io.get(*dx);
  }
  Tensor backward_weights(Backend& be, const Tensor& x, const Tensor& dy) override {
    PlainIo io(be, DType::f64);
    auto xb = io.put(x), dyb = io.put(dy);
    auto dw = io.make(weights());
    be.conv2d_backward_weights(d, *xb, *dyb, *dw);
    return io.get(*dw);
  }
  Shape src() const override { return s; }
  Shape dst() const override { return d.dst_shape(s); }
  Shape weights() const override { return d.weight_shape(); }
};

struct DenseLayer : Layer {
  DenseDesc d;
  int64_t n;
  DenseLayer(DenseDesc desc, int64_t batch) : d(desc), n(batch) {}
  Tensor forward(Backend& be, const Tensor& x, const Tensor& w) override {
    PlainIo io(be, DType::f64);
    auto wt = be.create_weights(w);
    auto xb = io.put(x);
    auto y = io.make(dst());
    be.dense_forward(d, *xb, *wt, *y);
    return io.get(*y);
  }
  Tensor backward_data(Backend& be, const Tensor& dy, const Tensor& w) override {
    PlainIo io(be, DType::f64);
    auto wt = be.create_weights(w);
    auto dyb = io.put(dy);
    auto dx = io.make(src());
    be.dense_backward_data(d, *dyb, *wt, *dx);
    return io.get(*dx);
  }
  Tensor backward_weights(Backend& be, const Tensor& x, const Tensor& dy) override {
    PlainIo io(be, DType::f64);
    auto xb = io.put(x), dyb = io.put(dy);
    auto dw = io.make(weights());
    be.dense_backward_weights(d, *xb, *dyb, *dw);
    return io.get(*dw);
  }
  Shape src() const override { return Shape{n, d.in_features}; }
  Shape dst() const override { return Shape{n, d.out_features}; }
  Shape weights() const override { return d.weight_shape(); }
};

void check_layer(Backend& be, Layer& layer, uint64_t seed) {
  const Tensor x = grid_tensor(layer.src(), seed);
  const Tensor w = grid_tensor(layer.weights(), seed + 1);
  const Tensor r = grid_tensor(layer.dst(), seed + 2);
  const Tensor dx = layer.backward_data(be, r, w);
  const Tensor dw = layer.backward_weights(be, x, r);
  std::mt19937_64 rng(seed + 3);
  constexpr float h = 0.5f;
  for (int k = 0; k < 12; ++k) {
    const int64_t i = std::uniform_int_distribution<int64_t>(0, x.numel() - 1)(rng);
    Tensor xp = x.clone(), xm = x.clone();
    xp[i] += h, xm[i] -= h;
    const double fd =
        (dot(r, layer.forward(be, xp, w)) - dot(r, layer.forward(be, xm, w))) / (2 * h);
    EXPECT_NEAR(dx[i], fd, 1e-9 * (1 + std::abs(fd))) << "dL/dx[" << i << "]";
  }
  for (int k = 0; k < 12; ++k) {
    const int64_t i = std::uniform_int_distribution<int64_t>(0, w.numel() - 1)(rng);
    Tensor wp = w.clone(), wm = w.clone();
    wp[i] += h, wm[i] -= h;
    const double fd =
        (dot(r, layer.forward(be, x, wp)) - dot(r, layer.forward(be, x, wm))) / (2 * h);
    EXPECT_NEAR(dw[i], fd, 1e-9 * (1 + std::abs(fd))) << "dL/dw[" << i << "]";
  }
}

class GradCheck : public ::testing::TestWithParam<std::string> {};

TEST_P(GradCheck, ConvBackwardIsTheForwardsDerivative) {
  DK_SKIP_IF_UNAVAILABLE(GetParam());
  auto be = make_backend(GetParam());
  struct Case {
    ConvDesc d;
    Shape src;
  };
  ConvDesc strided{3, 4, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 1};
  ConvDesc asym{2, 3, 3, 2, 2, 1, 0, 1, 2, 0, 1, 1, 1};
  ConvDesc dilated{4, 4, 3, 3, 1, 1, 2, 2, 2, 2, 2, 2, 2};
  ConvDesc depthwise{6, 6, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 6};
  const Case cases[] = {{strided, Shape{2, 3, 7, 6}},
                        {asym, Shape{3, 2, 6, 5}},
                        {dilated, Shape{1, 4, 8, 9}},
                        {depthwise, Shape{2, 6, 7, 7}}};
  uint64_t seed = 100;
  for (const auto& c : cases) {
    SCOPED_TRACE(c.d.str());
    ConvLayer l(c.d, c.src);
    check_layer(*be, l, seed += 10);
  }
}

TEST_P(GradCheck, DenseBackwardIsTheForwardsDerivative) {
  DK_SKIP_IF_UNAVAILABLE(GetParam());
  auto be = make_backend(GetParam());
  DenseLayer l(DenseDesc{37, 11}, 5);
  check_layer(*be, l, 7);
}

INSTANTIATE_TEST_SUITE_P(AllBackends, GradCheck, ::testing::ValuesIn(backend_names()),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace darknight::accel
