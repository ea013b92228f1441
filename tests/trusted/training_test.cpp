// Private training: the codec's identity, gradients against plain and against finite
// differences, one SGD step against PyTorch, and the trusted memory budget.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>
#include <random>

#include "accel/backend.h"
#include "baselines/engines.h"
#include "nn/backward.h"
#include "nn/kernels.h"
#include "nn/onnx_import.h"
#include "nn/zoo.h"
#include "onnx/onnx_io.h"
#include "support/random.h"
#include "registry/registry.h"
#include "trusted/darknight_engine.h"
#include "trusted/trainer.h"

namespace darknight::trusted {
namespace {

using darknight::testing::random_tensor;

TEST(TrainingMixing, IdentityHoldsToDoublePrecision) {
  Csprng rng(3);
  for (int extra : {0, 1})
    for (int k : {1, 2, 3, 4, 8, 16}) {
      for (int rep = 0; rep < 5; ++rep) {
        SCOPED_TRACE(fmt::format("k {} extra {}", k, extra));
        const auto tp = TrainingMixing::draw(k, rep % 2 ? 1.0 : 0.3, rng, extra);
        const TrainingMixing& t = *tp;
        const int n = t.mixtures();
        ASSERT_EQ(n, k + 1 + extra);
        for (int i = 0; i < k; ++i)
          for (int c = 0; c <= k; ++c)
            ASSERT_NEAR(t.identity(i, c), i == c ? 1.0 : 0.0, 1e-12);
        for (bool folded : {false, true}) {  // the decoding inverts the mixing of deltas
          const auto ap = t.delta_mixing(folded), pp = t.delta_unmixing(folded);
          const Coefficients &a = *ap, &p = *pp;
          for (int i = 0; i < k; ++i)
            for (int j = 0; j < k; ++j) {
              double s = 0;
              for (int r = 0; r < n; ++r) s += p(i, r) * a(r, j);
              ASSERT_NEAR(s, i == j ? 1.0 : 0.0, 1e-12);
            }
        }
        // The folded mixing's null vectors (unit, orthogonal to every column), and with the
        // redundant mixture a second folded mixing that gives the same gradient:
        // (second)^T B = [I | 0], and it differs from the first.
        const auto fp = t.delta_mixing(true);
        const Coefficients &f = *fp, &null = t.delta_null();
        ASSERT_EQ(null.rows(), 1 + extra);
        for (int v = 0; v < null.rows(); ++v) {
          double norm = 0;
          for (int j = 0; j < n; ++j) norm += null(v, j) * null(v, j);
          EXPECT_NEAR(norm, 1.0, 1e-12);
          for (int i = 0; i < k; ++i) {
            double s = 0;
            for (int j = 0; j < n; ++j) s += null(v, j) * f(j, i);
            ASSERT_NEAR(s, 0.0, 1e-12);
          }
        }
        if (extra) {
          const auto sp = t.second_delta_mixing();
          double differ = 0;
          for (int i = 0; i < k; ++i)
            for (int c = 0; c <= k; ++c) {
              double s = 0;
              for (int j = 0; j < n; ++j) s += (*sp)(j, i) * t.forward().a(j, c);
              ASSERT_NEAR(s, i == c ? 1.0 : 0.0, 1e-12);
            }
          for (int j = 0; j < n; ++j)
            for (int i = 0; i < k; ++i) differ = std::max(differ, std::abs((*sp)(j, i) - f(j, i)));
          EXPECT_GT(differ, 1e-3);
        } else {
          EXPECT_THROW(t.second_delta_mixing(), Error);
        }
        for (int j = 0; j < n; ++j) EXPECT_GE(std::abs(t.gamma(j)), 0.5);
      }
    }
}

/// A small model with every kind of layer training touches: conv, batch norm, ReLU, max
/// pool, grouped conv, clip, average pool, a residual add, global pooling, dense.
nn::Graph small_model(uint64_t seed) {
  nn::Graph g(Shape{3, 8, 8});
  auto conv = [&](int x, int64_t out, int64_t k, int64_t pad, int64_t groups, const char* name) {
    accel::ConvDesc d;
    d.in_channels = g.node(x).shape[0], d.out_channels = out, d.kernel_h = d.kernel_w = k;
    d.pad_top = d.pad_left = d.pad_bottom = d.pad_right = pad, d.groups = groups;
    Tensor w = random_tensor(d.weight_shape(), seed++, -0.4f, 0.4f);
    Tensor b = random_tensor(Shape{out}, seed++, -0.1f, 0.1f);
    return g.conv(x, d, std::move(w), std::move(b), name);
  };
  int x = conv(0, 4, 3, 1, 1, "conv1");
  nn::BatchNormParams bn;
  bn.gamma = random_tensor(Shape{4}, seed++, 0.5f, 1.5f);
  bn.beta = random_tensor(Shape{4}, seed++, -0.2f, 0.2f);
  bn.mean = Tensor(Shape{4}), bn.var = Tensor(Shape{4});
  bn.var.fill(1.0f);
  x = g.batch_norm(x, std::move(bn), "bn1");
  x = g.unary(nn::Op::relu, x, "relu1");
  x = g.pool(nn::Op::max_pool, x, nn::PoolDesc{2, 2, 2, 2}, "pool1");
  const int y = g.clip(conv(x, 4, 3, 1, 2, "conv2"), -0.3f, 0.3f, "clip");
  x = g.add_values(y, conv(x, 4, 1, 0, 1, "skip"), "add");
  x = g.pool(nn::Op::avg_pool, x, nn::PoolDesc{2, 2, 1, 1, 1, 1, 0, 0}, "avg");
  x = g.unary(nn::Op::flatten, x, "flatten");
  Tensor w = random_tensor(Shape{5, g.node(x).shape.numel()}, seed++, -0.3f, 0.3f);
  Tensor b = random_tensor(Shape{5}, seed++, -0.1f, 0.1f);
  g.dense(x, 5, std::move(w), std::move(b), "fc");
  return g;
}

struct Grads {
  std::vector<Tensor64> weights;
  std::vector<Tensor> params;
  double loss;
};

Grads gradients(TrainEngine& engine, const nn::Graph& model, const Tensor& x,
                const std::vector<int>& labels) {
  Trainer t(model.clone(), engine, {});
  Grads g;
  g.loss = t.accumulate(x, labels).loss;
  for (size_t i = 0; i < model.weight_shapes().size(); ++i)
    g.weights.push_back(engine.read_grad(static_cast<int>(i)));
  for (const TrustedParam& p : t.params()) g.params.push_back(p.grad.clone());
  return g;
}

template <typename A, typename B>
double rel_error(const A& a, const B& b) {
  double diff = 0, mag = 0;
  for (int64_t i = 0; i < a.numel(); ++i)
    diff = std::max(diff, std::abs(double(a[i]) - double(b[i]))),
    mag = std::max(mag, std::abs(double(b[i])));
  return diff / mag;
}

// darknight's decoded gradients (both gradient decodes) equal plain's: to 1e-9 in f64.
TEST(Training, DarKnightGradientsEqualPlain) {
  const nn::Graph model = small_model(11);
  const Tensor x = random_tensor(Shape{6, 3, 8, 8}, 12, 0, 1);  // virtual batches 4 + 2
  const std::vector<int> labels{0, 3, 1, 4, 2, 3};
  auto be = accel::make_backend("cpu");
  baselines::PlainEngine plain(*be, DType::f64);
  const Grads want = gradients(plain, model, x, labels);
  for (DType precision : {DType::f64, DType::f32}) {
    for (GradDecode mode : {GradDecode::trusted, GradDecode::folded}) {
      SCOPED_TRACE(fmt::format("{} {}", dtype_name(precision),
                               mode == GradDecode::folded ? "folded" : "trusted"));
      CodecOptions co;
      co.precision = precision;
      Csprng rng(5);
      DarKnightEngine dk(*be, co, rng, 0, mode);
      const Grads got = gradients(dk, model, x, labels);
      const double tol = precision == DType::f64 ? 1e-9 : 5e-3;
      EXPECT_NEAR(got.loss, want.loss, tol * std::abs(want.loss));
      double worst = 0;
      for (size_t i = 0; i < want.weights.size(); ++i) {
        const double e = rel_error(got.weights[i], want.weights[i]);
        worst = std::max(worst, e);
        EXPECT_LT(e, tol) << "weights " << i;
      }
      std::printf("gradients %s %s: largest relative error of a layer's weight gradient %.2e\n",
                  dtype_name(precision), mode == GradDecode::folded ? "folded" : "trusted", worst);
      // Relative to the largest trusted gradient: conv1's bias, right before a batch norm,
      // has a zero gradient in exact arithmetic, so its own scale is rounding noise.
      double scale = 0;
      for (const Tensor& p : want.params)
        for (int64_t e = 0; e < p.numel(); ++e) scale = std::max(scale, double(std::abs(p[e])));
      for (size_t i = 0; i < want.params.size(); ++i)
        for (int64_t e = 0; e < want.params[i].numel(); ++e)
          EXPECT_NEAR(got.params[i][e], want.params[i][e], tol * scale) << "param " << i;
    }
  }
}

/// A model without kinks (no ReLU, clip or max pool), so that central differences are
/// accurate: conv, batch norm in training mode, average pool, grouped conv, a residual add,
/// global pooling, dense.
nn::Graph smooth_model(uint64_t seed) {
  nn::Graph g(Shape{3, 8, 8});
  auto conv = [&](int x, int64_t out, int64_t k, int64_t pad, int64_t groups, const char* name) {
    accel::ConvDesc d;
    d.in_channels = g.node(x).shape[0], d.out_channels = out, d.kernel_h = d.kernel_w = k;
    d.pad_top = d.pad_left = d.pad_bottom = d.pad_right = pad, d.groups = groups;
    Tensor w = random_tensor(d.weight_shape(), seed++, -0.4f, 0.4f);
    Tensor b = random_tensor(Shape{out}, seed++, -0.1f, 0.1f);
    return g.conv(x, d, std::move(w), std::move(b), name);
  };
  int x = conv(0, 4, 3, 1, 1, "conv1");
  nn::BatchNormParams bn;
  bn.gamma = random_tensor(Shape{4}, seed++, 0.5f, 1.5f);
  bn.beta = random_tensor(Shape{4}, seed++, -0.2f, 0.2f);
  bn.mean = Tensor(Shape{4}), bn.var = Tensor(Shape{4});
  bn.var.fill(1.0f);
  x = g.batch_norm(x, std::move(bn), "bn1");
  x = g.pool(nn::Op::avg_pool, x, nn::PoolDesc{2, 2, 2, 2}, "pool1");
  x = g.add_values(conv(x, 4, 3, 1, 2, "conv2"), conv(x, 4, 1, 0, 1, "skip"), "add");
  x = g.unary(nn::Op::global_avg_pool, x, "gap");
  x = g.unary(nn::Op::flatten, x, "flatten");
  Tensor w = random_tensor(Shape{5, 4}, seed++, -0.8f, 0.8f);
  Tensor b = random_tensor(Shape{5}, seed++, -0.1f, 0.1f);
  g.dense(x, 5, std::move(w), std::move(b), "fc");
  return g;
}

// The backward pass is the loss's derivative: central differences on weights and trusted
// parameters through the plain engine (the trusted side computes in f32, so the step is
// 2^-8 and the tolerance 1e-3).
TEST(Training, GradientsMatchFiniteDifferences) {
  const nn::Graph model = smooth_model(21);
  const Tensor x = random_tensor(Shape{5, 3, 8, 8}, 22, 0, 1);
  const std::vector<int> labels{1, 0, 4, 2, 2};
  auto be = accel::make_backend("cpu");
  baselines::PlainEngine engine(*be, DType::f64);
  const Grads g = gradients(engine, model, x, labels);
  auto loss_with = [&](const std::function<void(nn::Graph&)>& edit) {
    nn::Graph m = model.clone();
    edit(m);
    baselines::PlainEngine e(*be, DType::f64);
    return gradients(e, m, x, labels).loss;
  };
  const float h = 1.0f / 256;  // a power of two: w +- h is exact in f32
  std::mt19937 rng(3);
  for (size_t wi = 0; wi < model.weight_shapes().size(); ++wi) {
    for (int rep = 0; rep < 3; ++rep) {
      const int64_t n = model.weight_shapes()[wi].numel();
      const int64_t e = std::uniform_int_distribution<int64_t>(0, n - 1)(rng);
      const double fd = (loss_with([&](nn::Graph& m) { m.weights()[wi][e] += h; }) -
                         loss_with([&](nn::Graph& m) { m.weights()[wi][e] -= h; })) /
                        (2 * h);
      EXPECT_NEAR(g.weights[wi][e], fd, 1e-3 * (1 + std::abs(fd)))
          << "weights " << wi << "[" << e << "]";
    }
  }
  // Trusted parameters, in the order Trainer::params() lists them.
  const char* names[] = {"conv1", "bn1", "bn1", "conv2", "skip", "fc"};
  for (size_t pi = 0; pi < 6; ++pi) {
    auto param = [&](nn::Graph& m) -> Tensor& {
      for (size_t i = 0; i < m.nodes().size(); ++i) {
        nn::Node& n = m.mutable_node(static_cast<int>(i));
        if (n.name != names[pi]) continue;
        if (n.op == nn::Op::batch_norm) return pi == 1 ? n.bn.gamma : n.bn.beta;
        return n.epilogue.shift;
      }
      throw Error("no such node");
    };
    const double fd = (loss_with([&](nn::Graph& m) { param(m)[1] += h; }) -
                       loss_with([&](nn::Graph& m) { param(m)[1] -= h; })) /
                      (2 * h);
    EXPECT_NEAR(g.params[pi][1], fd, 1e-3 * (1 + std::abs(fd))) << names[pi];
  }
}

// The piecewise-linear layers' backward, op by op: with inputs on a grid spaced far wider
// than the step, no difference crosses a kink, so they are exact up to rounding.
TEST(Training, NonLinearBackwardMatchesFiniteDifferences) {
  nn::Graph g(Shape{2, 6, 6});
  const int relu = g.unary(nn::Op::relu, 0, "relu");
  const int clip = g.clip(0, -0.25f, 0.35f, "clip");
  const int maxp = g.pool(nn::Op::max_pool, 0, nn::PoolDesc{3, 3, 2, 2, 1, 1, 1, 1}, "max");
  nn::PoolDesc avg{3, 2, 2, 1, 1, 0, 1, 1};
  avg.count_include_pad = true;
  const int avgp = g.pool(nn::Op::avg_pool, 0, avg, "avg");
  const int pad = g.pad(0, {1, 0, 2, 1}, 0.0f, "pad");
  const int gap = g.unary(nn::Op::global_avg_pool, 0, "gap");
  const int soft = g.unary(nn::Op::softmax, g.unary(nn::Op::flatten, 0, "flat"), "softmax");
  // Distinct values 0.05 apart, shuffled: no ties, no value within 0.01 of a clip bound.
  Tensor x(Shape{2, 2, 6, 6});
  std::vector<int> perm(static_cast<size_t>(x.numel()));
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), std::mt19937(4));
  for (int64_t i = 0; i < x.numel(); ++i)
    x[i] = -1.7f + 0.05f * perm[static_cast<size_t>(i)] + 0.012f;
  const float h = 1.0f / 512;
  for (int id : {relu, clip, maxp, avgp, pad, gap, soft}) {
    const nn::Node& n = g.node(id);
    SCOPED_TRACE(n.name);
    const nn::Node& in = n.op == nn::Op::softmax ? g.node(n.inputs[0]) : g.node(0);
    const Tensor xin = n.op == nn::Op::softmax ? nn::run_nonlinear(in, x.clone()) : x.clone();
    const Tensor y = nn::run_nonlinear(n, xin.clone());
    const Tensor r = random_tensor(y.shape(), 7, -1, 1);
    const Tensor dx = nn::nonlinear_backward(n, xin, y, r);
    auto loss = [&](const Tensor& xx) {
      const Tensor yy = nn::run_nonlinear(n, xx.clone());
      double s = 0;
      for (int64_t i = 0; i < yy.numel(); ++i) s += double(r[i]) * yy[i];
      return s;
    };
    for (int64_t i = 0; i < xin.numel(); i += 5) {
      Tensor up = xin.clone(), down = xin.clone();
      up[i] += h, down[i] -= h;
      const double fd = (loss(up) - loss(down)) / (2 * h);
      EXPECT_NEAR(dx[i], fd, 2e-3 * (1 + std::abs(fd))) << "x[" << i << "]";
    }
  }
}

// One SGD step (lr 0.05, momentum 0.9, weight decay 1e-3) of a model exported by PyTorch
// 1.13, on the fixture batch: the loss, and the outputs after the step, equal PyTorch's.
TEST(Training, OneStepMatchesPyTorch) {
  const std::string dir = std::string(DK_FIXTURES) + "/onnx/";
  const Tensor x = onnx_io::load_tensor(dir + "train_cnn_input.pb").value();
  const auto label_proto = onnx_io::load_tensor_proto(dir + "train_cnn_labels.pb").value();
  const auto labels64 = onnx_io::to_int64s(label_proto).value();
  const std::vector<int> labels(labels64.begin(), labels64.end());
  const float want_loss = onnx_io::load_tensor(dir + "train_cnn_loss.pb").value()[0];
  const Tensor want = onnx_io::load_tensor(dir + "train_cnn_after_step.pb").value();
  auto be = accel::make_backend("cpu");
  for (const std::string mode : {"plain", "darknight"}) {
    SCOPED_TRACE(mode);
    Csprng rng(9);
    CodecOptions co;
    std::unique_ptr<TrainEngine> engine;
    if (mode == "plain")
      engine = std::make_unique<baselines::PlainEngine>(*be);
    else
      engine = std::make_unique<DarKnightEngine>(*be, co, rng);
    Trainer t(nn::import_onnx(dir + "train_cnn.onnx").value(), *engine, {});
    const StepStats s =
        t.step(x, labels, SgdParams{.lr = 0.05, .momentum = 0.9, .weight_decay = 1e-3});
    EXPECT_NEAR(s.loss, want_loss, mode == "plain" ? 1e-5 : 1e-3);
    const Tensor got = t.predict(x);
    EXPECT_LT(rel_error(got, want), mode == "plain" ? 1e-5 : 1e-3);
  }
}

TEST(Training, BudgetSplitsPassesOrRefusesBatchNorm) {
  auto be = accel::make_backend("cpu");
  nn::ModelOptions o;
  o.input_size = 28;
  const Tensor x = random_tensor(Shape{16, 1, 28, 28}, 1, 0, 1);
  std::vector<int> labels(16);
  for (int i = 0; i < 16; ++i) labels[static_cast<size_t>(i)] = i % 10;
  CodecOptions co;
  co.precision = DType::f64;  // exact enough to compare passes with different noise
  Csprng rng(1);
  // Gradients over passes add up to the whole batch's.
  DarKnightEngine whole_engine(*be, co, rng);
  Trainer whole(nn::build_model("fmnist-cnn", o), whole_engine, {});
  EXPECT_EQ(whole.plan(16), 16);
  const double budget = whole.estimate(8);
  RuntimeOptions tight;
  tight.memory_budget = static_cast<int64_t>(budget);
  DarKnightEngine split_engine(*be, co, rng);
  Trainer split(nn::build_model("fmnist-cnn", o), split_engine, tight);
  EXPECT_EQ(split.plan(16), 8);
  whole.accumulate(x, labels);
  split.accumulate(x, labels);
  for (int i = 0; i < 4; ++i)
    EXPECT_LT(rel_error(split_engine.read_grad(i), whole_engine.read_grad(i)), 1e-9) << i;
  EXPECT_LE(split.stats().peak_trusted_bytes, tight.memory_budget);
  // A batch norm needs its whole batch at once.
  nn::ModelOptions v;
  DarKnightEngine bn_engine(*be, co, rng);
  RuntimeOptions small;
  small.memory_budget = 8 << 20;
  Trainer bn(nn::build_model("vgg16-bn", v), bn_engine, small);
  EXPECT_THROW(bn.plan(32), Error);
}

}  // namespace
}  // namespace darknight::trusted
