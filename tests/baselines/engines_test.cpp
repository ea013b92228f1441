// The plain and tee baselines (baselines/engines.h) against a direct computation on the
// host, in f64 with loops written out here: forward with the fused epilogue, the backward
// pass (input and weight gradients), SGD, momentum, and what the engines count and charge.
#include "baselines/engines.h"

#include <gtest/gtest.h>

#include <cmath>

#include "nn/zoo.h"
#include "registry/registry.h"
#include "support/random.h"

namespace darknight::baselines {
namespace {

using testing::abs_tensor;
using testing::random_tensor;

/// Calls f(input index, output index, weight index) for every product of the conv of an
/// input of shape `in`: y[n, o, oy, ox] += w[o, i, ky, kx] * x[n, g * I/G + i, oy * s - pad
/// + ky * d, ...] (elements in the padding are skipped).
template <typename F>
void for_each_product(const accel::ConvDesc& c, const Shape& in, F&& f) {
  const Shape out = c.dst_shape(in);
  const int64_t ipg = c.in_channels / c.groups, opg = c.out_channels / c.groups;
  for (int64_t n = 0; n < out[0]; ++n)
    for (int64_t o = 0; o < out[1]; ++o)
      for (int64_t oy = 0; oy < out[2]; ++oy)
        for (int64_t ox = 0; ox < out[3]; ++ox)
          for (int64_t i = 0; i < ipg; ++i)
            for (int64_t ky = 0; ky < c.kernel_h; ++ky)
              for (int64_t kx = 0; kx < c.kernel_w; ++kx) {
                const int64_t iy = oy * c.stride_h - c.pad_top + ky * c.dilation_h;
                const int64_t ix = ox * c.stride_w - c.pad_left + kx * c.dilation_w;
                if (iy < 0 || iy >= in[2] || ix < 0 || ix >= in[3]) continue;
                const int64_t ci = o / opg * ipg + i;
                f(((n * in[1] + ci) * in[2] + iy) * in[3] + ix,
                  ((n * out[1] + o) * out[2] + oy) * out[3] + ox,
                  ((o * ipg + i) * c.kernel_h + ky) * c.kernel_w + kx);
              }
}

/// The conv's output for input x.
std::vector<double> host_conv(const accel::ConvDesc& c, const Tensor& x, const Tensor& w) {
  std::vector<double> y(static_cast<size_t>(c.dst_shape(x.shape()).numel()), 0.0);
  for_each_product(c, x.shape(), [&](int64_t xi, int64_t yi, int64_t wi) {
    y[static_cast<size_t>(yi)] += double(w[wi]) * x[xi];
  });
  return y;
}

/// dL/dx of the conv (input shape `in`) for output gradient dy.
std::vector<double> host_conv_data_grad(const accel::ConvDesc& c, const Shape& in, const Tensor& dy,
                                        const Tensor& w) {
  std::vector<double> dx(static_cast<size_t>(in.numel()), 0.0);
  for_each_product(c, in, [&](int64_t xi, int64_t yi, int64_t wi) {
    dx[static_cast<size_t>(xi)] += double(w[wi]) * dy[yi];
  });
  return dx;
}

/// dL/dW of the conv for input x and output gradient dy.
std::vector<double> host_conv_grad(const accel::ConvDesc& c, const Tensor& x, const Tensor& dy) {
  std::vector<double> g(static_cast<size_t>(c.weight_shape().numel()), 0.0);
  for_each_product(c, x.shape(), [&](int64_t xi, int64_t yi, int64_t wi) {
    g[static_cast<size_t>(wi)] += double(x[xi]) * dy[yi];
  });
  return g;
}

/// act(scale[c] * z + shift[c]) with c = (element / inner) % channels, in f64.
void host_epilogue(const nn::Epilogue& e, std::vector<double>& z, int64_t channels) {
  for (size_t k = 0; k < z.size(); ++k) {
    const int64_t c = static_cast<int64_t>(k) / e.inner % channels;
    double v = (e.scale.empty() ? 1.0 : e.scale[c]) * z[k] + (e.shift.empty() ? 0.0 : e.shift[c]);
    if (e.act == nn::Act::relu) v = std::max(v, 0.0);
    if (e.act == nn::Act::clip) v = std::min(std::max(v, double(e.lo)), double(e.hi));
    z[k] = v;
  }
}

template <typename T>
double max_error(const T& got, const std::vector<double>& want) {
  double err = 0;
  for (size_t i = 0; i < want.size(); ++i)
    err = std::max(err, std::abs(double(got[static_cast<int64_t>(i)]) - want[i]));
  return err;
}

/// The largest of `v`'s magnitudes: computed on |x| and |w|, a bound on every sum's terms,
/// which rounding errors scale with.
double largest(const std::vector<double>& v) {
  double m = 0;
  for (double x : v) m = std::max(m, std::abs(x));
  return m;
}

/// A conv layer (grouped, strided, dilated, padded unevenly) with scale, shift and ReLU,
/// followed by a dense layer with a bias and a clip.
nn::Graph two_layers() {
  nn::Graph g(Shape{4, 9, 9});
  accel::ConvDesc c;
  c.in_channels = 4, c.out_channels = 6, c.groups = 2, c.kernel_h = 3, c.kernel_w = 2;
  c.stride_h = 2, c.stride_w = 1, c.dilation_h = 1, c.dilation_w = 2;
  c.pad_top = 1, c.pad_left = 2, c.pad_bottom = 0, c.pad_right = 1;
  const int conv =
      g.conv(0, c, random_tensor(c.weight_shape(), 1), random_tensor(Shape{6}, 2), "conv");
  g.mutable_node(conv).epilogue.scale = random_tensor(Shape{6}, 3, 0.5f, 2.0f);
  g.mutable_node(conv).epilogue.act = nn::Act::relu;
  const int64_t features = g.node(conv).shape.numel();
  const int fc =
      g.dense(conv, 5, random_tensor(Shape{5, features}, 4), random_tensor(Shape{5}, 5), "fc");
  nn::Epilogue& e = g.mutable_node(fc).epilogue;
  e.act = nn::Act::clip, e.lo = -0.5f, e.hi = 0.5f;
  return g;
}

struct Case {
  std::string engine;  // plain or tee
  std::string backend;
  DType dtype;
};

class Engines : public ::testing::TestWithParam<Case> {
 protected:
  std::unique_ptr<PlainEngine> make() {
    const Case& c = GetParam();
    if (c.engine == "tee") return std::make_unique<TeeEngine>(c.dtype);
    be_ = accel::make_backend(c.backend);
    return std::make_unique<PlainEngine>(*be_, c.dtype);
  }
  /// f32 results: about 1e-6 relative error; the f64 dtype rounds only its input and output.
  double tolerance() const { return GetParam().dtype == DType::f64 ? 1e-6 : 2e-5; }
  std::unique_ptr<accel::Backend> be_;
};

TEST_P(Engines, ForwardEqualsTheHostComputation) {
  nn::Graph g = two_layers(), ref = g.clone();
  auto engine = make();
  engine->load(g);
  EXPECT_TRUE(g.weights()[0].empty());  // load() takes the weights
  const nn::Node &conv = ref.node(1), &fc = ref.node(2);
  Tensor x = random_tensor(Shape{3, 4, 9, 9}, 6);
  trusted::RunStats stats;
  Tensor y = engine->forward(conv, x, false, stats);
  // H: (9 + 1 + 0 - 3) / 2 + 1; W: (9 + 2 + 1 - 3) / 1 + 1 (dilation 2: 3 wide).
  ASSERT_EQ(y.shape(), (Shape{3, 6, 4, 10}));
  std::vector<double> want = host_conv(conv.conv, x, ref.weights()[0]);
  host_epilogue(conv.epilogue, want, 6);
  // Epilogue scales are at most 2.
  const double conv_bound =
      2 * largest(host_conv(conv.conv, abs_tensor(x), abs_tensor(ref.weights()[0])));
  EXPECT_LE(max_error(y, want), tolerance() * conv_bound);
  EXPECT_EQ(stats.accelerator_calls, 1);
  EXPECT_EQ(stats.bytes_to_accelerator,
            x.numel() * static_cast<int64_t>(dtype_size(GetParam().dtype)));

  Tensor z = engine->forward(fc, y, true, stats);
  ASSERT_EQ(z.shape(), (Shape{3, 5}));
  std::vector<double> want_fc(15, 0.0), bound_fc(15, 0.0);
  const Tensor& w = ref.weights()[1];
  const int64_t f = w.shape()[1];
  for (int64_t n = 0; n < 3; ++n)
    for (int64_t o = 0; o < 5; ++o)
      for (int64_t i = 0; i < f; ++i) {
        want_fc[static_cast<size_t>(n * 5 + o)] += double(w[o * f + i]) * y[n * f + i];
        bound_fc[static_cast<size_t>(n * 5 + o)] += std::abs(double(w[o * f + i]) * y[n * f + i]);
      }
  host_epilogue(fc.epilogue, want_fc, 5);
  EXPECT_LE(max_error(z, want_fc), tolerance() * largest(bound_fc));
  EXPECT_EQ(stats.accelerator_calls, 2);
}

TEST_P(Engines, BackwardAndSgdEqualTheHostComputation) {
  nn::Graph g = two_layers(), ref = g.clone();
  auto engine = make();
  engine->load(g);
  const nn::Node& conv = ref.node(1);
  const Tensor& w0 = ref.weights()[0];
  Tensor x = random_tensor(Shape{2, 4, 9, 9}, 7);
  trusted::RunStats stats;
  const Tensor y = engine->forward_train(conv, x, stats);
  const Tensor dy = random_tensor(y.shape(), 8);
  const Tensor dx = engine->backward(conv, dy, /*input_grad=*/true, stats);
  ASSERT_EQ(dx.shape(), x.shape());
  EXPECT_LE(max_error(dx, host_conv_data_grad(conv.conv, x.shape(), dy, w0)),
            tolerance() *
                largest(host_conv_data_grad(conv.conv, x.shape(), abs_tensor(dy), abs_tensor(w0))));
  const std::vector<double> grad = host_conv_grad(conv.conv, x, dy);
  const double grad_bound = largest(host_conv_grad(conv.conv, abs_tensor(x), abs_tensor(dy)));
  EXPECT_LE(max_error(engine->read_grad(0), grad), tolerance() * grad_bound);
  EXPECT_TRUE(engine->backward(conv, dy, /*input_grad=*/false, stats).empty());  // adds again

  // SGD with momentum 0.9 and weight decay: v = g on the first step, w -= lr * v.
  const SgdParams p{.lr = 0.1, .momentum = 0.9, .weight_decay = 0.01};
  engine->step(p);
  std::vector<double> v(grad.size()), want(grad.size());
  for (size_t i = 0; i < grad.size(); ++i) {
    v[i] = 2 * grad[i] + p.weight_decay * w0[static_cast<int64_t>(i)];
    want[i] = w0[static_cast<int64_t>(i)] - p.lr * v[i];
  }
  EXPECT_LE(max_error(engine->read_momentum(0), v), tolerance() * 2 * grad_bound);
  EXPECT_LE(max_error(engine->read_weights(0), want), tolerance() * (1 + grad_bound));
  // The step cleared the gradient; a written momentum is the one the next step uses.
  EXPECT_EQ(max_error(engine->read_grad(0), std::vector<double>(grad.size(), 0.0)), 0.0);
  Tensor m(w0.shape());
  m.fill(1.0f);
  engine->write_momentum(0, m);
  engine->step(SgdParams{.lr = 0.1, .momentum = 0.5});  // zero gradient: v = 0.5 * 1
  for (double& wi : want) wi -= 0.1 * 0.5;
  EXPECT_LE(max_error(engine->read_weights(0), want), tolerance() * (1 + grad_bound));
}

INSTANTIATE_TEST_SUITE_P(Baselines, Engines,
                         ::testing::Values(Case{"plain", "ref", DType::f32},
                                           Case{"plain", "cpu", DType::f32},
                                           Case{"plain", "cpu", DType::f64},
                                           Case{"tee", "", DType::f32},
                                           Case{"tee", "", DType::f64}),
                         [](const auto& info) {
                           return info.param.engine + (info.param.backend.empty() ? "" : "_") +
                                  info.param.backend + "_" + dtype_name(info.param.dtype);
                         });

TEST(TeeEngine, ChargesItsWeightsToTheTrustedMeter) {
  nn::Graph g = nn::build_model("fmnist-cnn", {.input_size = 28});
  const int64_t bytes = g.weight_bytes();
  MemoryMeter meter;
  {
    const MeterScope scope(&meter);
    TeeEngine tee;
    tee.load(g);
    EXPECT_EQ(tee.resident_bytes(), bytes);
    EXPECT_GE(meter.live_bytes(), bytes);
    EXPECT_EQ(tee.name(), "tee");
  }
  EXPECT_EQ(meter.live_bytes(), 0);
  // The plain engine's weights are the accelerator's: nothing charged, nothing resident.
  MemoryMeter plain_meter;
  const MeterScope scope(&plain_meter);
  auto be = accel::make_backend("ref");
  PlainEngine plain(*be);
  nn::Graph h = nn::build_model("fmnist-cnn", {.input_size = 28});
  const int64_t before = plain_meter.live_bytes();
  plain.load(h);
  EXPECT_EQ(plain.resident_bytes(), 0);
  EXPECT_LT(plain_meter.live_bytes(), before);  // the graph's weights were freed, not charged
}

// Whole models: plain on the CPU backend and tee give the same outputs.
TEST(Engines, PlainAndTeeAgreeOnAModel) {
  const Tensor x = random_tensor(Shape{4, 1, 28, 28}, 9, 0.0f, 1.0f);
  auto run = [&](trusted::LinearEngine& e) {
    trusted::RuntimeOptions ro;
    ro.enforce_budget = false;
    trusted::Runtime rt(nn::build_model("fmnist-cnn", {.input_size = 28, .seed = 3}), e, ro);
    return rt.infer(x);
  };
  auto be = accel::make_backend("cpu");
  PlainEngine plain(*be);
  TeeEngine tee;
  const Tensor a = run(plain), b = run(tee);
  ASSERT_EQ(a.shape(), b.shape());
  for (int64_t i = 0; i < a.numel(); ++i) EXPECT_NEAR(a[i], b[i], 1e-4 * (1 + std::abs(b[i])));
}

}  // namespace
}  // namespace darknight::baselines
