// The Slalom baseline (baselines/slalom.h): decoded results equal the quantized computation
// exactly, sealed unblinding factors are authenticated, Freivalds' check in F_p catches a
// corrupted accelerator, and end to end the quantization costs little accuracy.
#include "baselines/slalom.h"
#include "registry/registry.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "accel/backend.h"
#include "baselines/engines.h"
#include "faults/faulty_backend.h"
#include "measure/fault_audit.h"
#include "nn/zoo.h"
#include "support/random.h"
#include "support/shapes.h"

namespace darknight::baselines {
namespace {

using darknight::testing::random_tensor;
using trusted::Runtime;
constexpr int64_t kP = 2147483647;

// --- an independent reference: the quantization rule and the integer layer --------------

/// The largest s with amax * 2^s <= qmax, by search.
int shift_of(double amax, int64_t qmax) {
  if (amax == 0) return 0;
  int s = 0;
  while (amax * std::pow(2.0, s) > double(qmax)) --s;
  while (amax * std::pow(2.0, s + 1) <= double(qmax)) ++s;
  return s;
}

std::vector<int64_t> quantize(const float* x, int64_t n, int64_t qmax, int* shift) {
  double amax = 0;
  for (int64_t i = 0; i < n; ++i) amax = std::max(amax, std::abs(double(x[i])));
  *shift = shift_of(amax, qmax);
  std::vector<int64_t> q(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    q[static_cast<size_t>(i)] = std::llrint(double(x[i]) * std::pow(2.0, *shift));
    EXPECT_LE(std::abs(q[static_cast<size_t>(i)]), qmax);
  }
  return q;
}

/// W x in int64 for one item (a dense layer is a 1x1 convolution of a [I, 1, 1] item).
std::vector<int64_t> int_layer(const Geometry& g, const std::vector<int64_t>& w,
                               const std::vector<int64_t>& x) {
  const int64_t cg = g.c / g.groups, og = g.o / g.groups;
  std::vector<int64_t> y(static_cast<size_t>(g.o * g.oh * g.ow), 0);
  for (int64_t o = 0; o < g.o; ++o)
    for (int64_t oy = 0; oy < g.oh; ++oy)
      for (int64_t ox = 0; ox < g.ow; ++ox) {
        int64_t acc = 0;
        for (int64_t c = 0; c < cg; ++c)
          for (int64_t a = 0; a < g.kh; ++a)
            for (int64_t b = 0; b < g.kw; ++b) {
              const int64_t iy = oy * g.sh - g.pt + a * g.dh, ix = ox * g.sw - g.pl + b * g.dw;
              if (iy < 0 || iy >= g.h || ix < 0 || ix >= g.w) continue;
              acc += w[static_cast<size_t>(((o * cg + c) * g.kh + a) * g.kw + b)] *
                     x[static_cast<size_t>(((o / og * cg + c) * g.h + iy) * g.w + ix)];
            }
        y[static_cast<size_t>((o * g.oh + oy) * g.ow + ox)] = acc;
      }
  return y;
}

/// A convolution with stride, dilation, asymmetric padding and groups; a depthwise one;
/// a dense layer. Inputs and weights of both signs.
nn::Graph layers() {
  nn::Graph g(Shape{4, 11, 9});
  const accel::ConvDesc d = darknight::testing::odd_conv_desc();
  int x = g.conv(0, d, random_tensor(d.weight_shape(), 5), random_tensor(Shape{6}, 6), "odd");
  accel::ConvDesc dw;
  dw.in_channels = dw.out_channels = dw.groups = 6;
  dw.kernel_h = dw.kernel_w = 3, dw.pad_top = dw.pad_left = dw.pad_bottom = dw.pad_right = 1;
  x = g.conv(x, dw, random_tensor(dw.weight_shape(), 8), Tensor(Shape{6}), "depthwise");
  accel::ConvDesc pw;
  pw.in_channels = 6, pw.out_channels = 7;
  x = g.conv(x, pw, random_tensor(pw.weight_shape(), 9), Tensor(Shape{7}), "pointwise");
  const int64_t n = g.node(x).shape.numel();
  g.dense(x, 5, random_tensor(Shape{5, n}, 7, -0.05f, 0.05f), Tensor(Shape{5}), "fc");
  return g;
}

struct Fixture {
  std::unique_ptr<accel::FaultyBackend> be =
      std::make_unique<accel::FaultyBackend>(accel::make_backend("cpu"));
  Csprng rng{21}, check_rng{22};
  nn::Graph g = layers();
  std::vector<Tensor> w;  // the float weights, kept for the reference
  std::unique_ptr<SlalomEngine> engine;
  std::unique_ptr<measure::FaultAudit> audit;

  explicit Fixture(IntegrityMode mode = IntegrityMode::none,
                   accel::FaultInjector* ledger = nullptr) {
    for (const Tensor& t : g.weights()) w.push_back(t.clone());
    engine = std::make_unique<SlalomEngine>(*be, rng);
    engine->set_integrity(mode, &check_rng);
    if (ledger) {
      audit = std::make_unique<measure::FaultAudit>(*ledger);
      engine->set_check_observer(audit.get());
    }
    engine->load(g);
  }
  /// Checks that every layer's decoded result for input `input` equals the integer layer.
  void expect_exact(int64_t input, RunStats& stats) {
    for (const nn::Node& n : g.nodes()) {
      if (!n.is_linear()) continue;
      const Shape item = g.node(n.inputs[0]).shape;
      const Tensor x =
          random_tensor(batched(1, item), 100 + uint64_t(input) * 10 + n.weights, -3.0f, 5.0f);
      const SlalomEngine::Decoded d = engine->run_item(n, x.data(), input, stats);
      int sx = 0, sw = 0;
      const Tensor& wt = w[static_cast<size_t>(n.weights)];
      const auto wq = quantize(wt.data(), wt.numel(), 127, &sw);
      const auto xq = quantize(x.data(), x.numel(), 255, &sx);
      const auto expect = int_layer(Geometry::of(n, item), wq, xq);
      EXPECT_EQ(d.shift, sx + sw) << n.name;
      EXPECT_EQ(engine->weight_shift(n.weights), sw) << n.name;
      ASSERT_EQ(d.values.numel(), static_cast<int64_t>(expect.size())) << n.name;
      int64_t wrong = 0, largest = 0;
      for (int64_t e = 0; e < d.values.numel(); ++e) {
        wrong += d.values[e] != double(expect[static_cast<size_t>(e)]);
        largest = std::max(largest, std::abs(expect[static_cast<size_t>(e)]));
      }
      EXPECT_EQ(wrong, 0) << n.name << ": decoded values differ from the integer layer";
      EXPECT_GT(largest, 1000) << n.name << ": a trivial test";
    }
  }
};

TEST(Slalom, DecodedResultsEqualTheQuantizedLayerExactly) {
  Fixture s;
  s.engine->precompute(3);
  EXPECT_EQ(s.engine->available(), 3);
  EXPECT_GT(s.engine->store().bytes(), 0);
  s.engine->begin_pass(s.g, 3);
  RunStats stats;
  for (int64_t input = 0; input < 3; ++input) s.expect_exact(input, stats);
  EXPECT_EQ(stats.accelerator_calls, 3 * 4);
  EXPECT_EQ(s.engine->store().bytes(), 0) << "every factor is used once and forgotten";
}

TEST(Slalom, FieldReduction) {
  std::mt19937_64 gen(1);
  std::vector<int64_t> xs{0,
                          1,
                          -1,
                          kP,
                          -kP,
                          kP - 1,
                          1 - kP,
                          kP + 1,
                          2 * kP,
                          -2 * kP,
                          (int64_t{1} << 62) - 1,
                          1 - (int64_t{1} << 62)};
  for (int i = 0; i < 100000; ++i)
    xs.push_back(static_cast<int64_t>(gen() >> (2 + i % 40)) * (i % 2 ? 1 : -1));
  for (int64_t x : xs) ASSERT_EQ(slalom::mod_p(x), (x % kP + kP) % kP) << x;
  EXPECT_EQ(slalom::centred(kP - 1), -1);
  EXPECT_EQ(slalom::centred((kP - 1) / 2), (kP - 1) / 2);
}

TEST(Slalom, MasksAreUniformFreshAndReproducible) {
  Csprng rng(5);
  SlalomEncoder enc(rng);
  const int64_t n = 1 << 17;
  std::vector<uint32_t> a(n), b(n), c(n), d(n);
  enc.masks(7, 2, a.data(), n);
  enc.masks(7, 2, b.data(), n);
  enc.masks(8, 2, c.data(), n);
  enc.masks(7, 3, d.data(), n);
  EXPECT_EQ(a, b) << "the offline and online phases regenerate the same mask";
  int64_t same_c = 0, same_d = 0;
  double mean = 0;
  for (int64_t i = 0; i < n; ++i) {
    ASSERT_LT(a[i], uint32_t(kP));
    same_c += a[i] == c[i], same_d += a[i] == d[i];
    mean += double(a[i]) / double(kP) / double(n);
  }
  EXPECT_LE(same_c + same_d, 1) << "masks of other inputs and layers are unrelated";
  EXPECT_NEAR(mean, 0.5, 0.005);
  // The blinded values are centred field elements: x + r mod p.
  const Tensor x = random_tensor(Shape{1, 1000}, 3, -1, 1);
  const Blinded64 xb = enc.blind(x.data(), 128.0, a.data(), x.shape());
  for (int64_t i = 0; i < 1000; ++i) {
    const int64_t v = int64_t(xb.data()[i]);
    ASSERT_LE(std::abs(v), (kP - 1) / 2);
    EXPECT_EQ(((v - std::llrint(x[i] * 128.0) - int64_t(a[i])) % kP + kP) % kP, 0);
  }
}

TEST(Slalom, ATamperedOrSwappedUnblindingFactorIsRefused) {
  Fixture s;
  s.engine->precompute(4);
  s.engine->begin_pass(s.g, 4);
  const nn::Node* first = nullptr;
  for (const nn::Node& n : s.g.nodes())
    if (n.is_linear() && !first) first = &n;
  const Tensor x = random_tensor(batched(1, s.g.input_shape()), 1);
  RunStats stats;
  // One bit of the ciphertext flipped in untrusted storage.
  std::vector<unsigned char>* c = s.engine->store().find(0, first->weights);
  ASSERT_NE(c, nullptr);
  (*c)[c->size() / 2] ^= 0x10;
  try {
    s.engine->run_item(*first, x.data(), 0, stats);
    FAIL() << "a tampered ciphertext was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("fail authentication"), std::string::npos) << e.what();
  }
  // A ciphertext of the wrong length (another layer's) or another input's, of the same
  // layer: the associated data binds each to its input and layer.
  std::swap(*s.engine->store().find(1, first->weights), *s.engine->store().find(1, 1));
  EXPECT_THROW(s.engine->run_item(*first, x.data(), 1, stats), Error);
  std::swap(*s.engine->store().find(2, first->weights), *s.engine->store().find(3, first->weights));
  try {
    s.engine->run_item(*first, x.data(), 2, stats);
    FAIL() << "another input's ciphertext was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("fail authentication"), std::string::npos) << e.what();
  }
  // None left: the run stops instead of reusing a mask.
  EXPECT_THROW(s.engine->begin_pass(s.g, 1), Error);
}

TEST(Slalom, FreivaldsEquationInTheField) {
  // One layer's correct result passes; an error of one unit fails; an error of p, which
  // decoding removes, passes; a non-integer fails.
  nn::Graph g = layers();
  const nn::Node& n = g.node(1);
  const Geometry geo = Geometry::of(n, g.input_shape());
  const Tensor& wt = g.weights()[0];
  int sw = 0;
  const auto wq = quantize(wt.data(), wt.numel(), 127, &sw);
  Csprng rng(9);
  std::vector<uint32_t> s(static_cast<size_t>(geo.o)),
      xr(static_cast<size_t>(g.input_shape().numel()));
  slalom::uniform(rng, s.data(), geo.o);
  slalom::uniform(rng, xr.data(), static_cast<int64_t>(xr.size()));
  std::vector<int64_t> xc(xr.size());
  std::vector<double> xb(xr.size());
  for (size_t i = 0; i < xr.size(); ++i) xc[i] = slalom::centred(xr[i]), xb[i] = double(xc[i]);
  const auto y = int_layer(geo, wq, xc);
  // v = s^T W_q per input channel and tap.
  const int64_t cg = geo.c / geo.groups, og = geo.o / geo.groups, taps = geo.kh * geo.kw;
  std::vector<int64_t> acc(static_cast<size_t>(geo.c * taps), 0);
  for (int64_t o = 0; o < geo.o; ++o)
    for (int64_t e = 0; e < cg * taps; ++e)
      acc[static_cast<size_t>(o / og * cg * taps + e)] +=
          int64_t(s[static_cast<size_t>(o)]) * wq[static_cast<size_t>(o * cg * taps + e)];
  std::vector<uint32_t> v(acc.size());
  for (size_t i = 0; i < acc.size(); ++i) v[i] = uint32_t(slalom::mod_p(acc[i]));
  std::vector<double> yb(y.begin(), y.end());
  EXPECT_TRUE(slalom::freivalds(geo, s, v, xb.data(), yb.data()));
  for (double delta : {1.0, -7.0, 0.5}) {
    auto bad = yb;
    bad[bad.size() / 3] += delta;
    EXPECT_FALSE(slalom::freivalds(geo, s, v, xb.data(), bad.data())) << delta;
  }
  auto shifted = yb;
  shifted[4] += double(kP);
  EXPECT_TRUE(slalom::freivalds(geo, s, v, xb.data(), shifted.data()));
  auto nan = yb;
  nan[0] = std::nan("");
  EXPECT_FALSE(slalom::freivalds(geo, s, v, xb.data(), nan.data()));
}

TEST(Slalom, FreivaldsCatchesACorruptedAcceleratorAndResultsStayExact) {
  for (const char* spec : {"bitflip:1:3", "scale:1:4", "wrong-weights:0.5:5"}) {
    accel::FaultInjector faults(accel::FaultSpec::parse(spec), 2, true);
    Fixture s(IntegrityMode::freivalds, &faults);
    s.be->set_injector(&faults);
    s.engine->precompute(4);
    s.engine->begin_pass(s.g, 4);
    RunStats stats;
    for (int64_t input = 0; input < 4; ++input) s.expect_exact(input, stats);
    IntegrityCounters c = s.engine->integrity();
    s.audit->fill(c);
    EXPECT_GT(c.injected, 0) << spec;
    EXPECT_GT(c.changed_output, 0) << spec;
    EXPECT_EQ(c.missed, 0) << spec;
    EXPECT_GT(c.detected, 0) << spec;
    EXPECT_EQ(c.detected, c.injected_above_tolerance) << spec;
    EXPECT_EQ(c.false_alarms, 0) << spec;
    EXPECT_GT(c.recomputed, 0) << spec;
    if (std::string(spec).starts_with("bitflip:1")) {
      EXPECT_GT(c.fallbacks, 0) << spec;
    }
    EXPECT_EQ(c.checks, stats.accelerator_calls) << spec;
  }
  // Without faults: no false alarm.
  Fixture clean(IntegrityMode::freivalds);
  clean.engine->precompute(2);
  clean.engine->begin_pass(clean.g, 2);
  RunStats stats;
  for (int64_t input = 0; input < 2; ++input) clean.expect_exact(input, stats);
  EXPECT_EQ(clean.engine->integrity().failed, 0);
}

TEST(Slalom, AFanInAboveTheBitBudgetIsRefused) {
  nn::Graph g(Shape{slalom::kMaxFanIn + 1});
  g.dense(0, 2, Tensor(Shape{2, slalom::kMaxFanIn + 1}), Tensor(Shape{2}), "wide");
  auto be = accel::make_backend("cpu");
  Csprng rng(1);
  SlalomEngine e(*be, rng);
  try {
    e.load(g);
    FAIL() << "a fan-in over the bit budget was accepted";
  } catch (const Error& err) {
    EXPECT_NE(std::string(err.what()).find("fan-in 33156"), std::string::npos) << err.what();
  }
  EXPECT_EQ(slalom::kMaxFanIn, 33155);
}

TEST(Slalom, EndToEndCloseToFloat) {
  // fmnist-cnn with random weights on synthetic images: slalom's 8-bit arithmetic against
  // unprotected float inference.
  nn::ModelOptions o;
  o.input_size = 28;
  const Tensor x = random_tensor(Shape{24, 1, 28, 28}, 4, 0.0f, 1.0f);
  auto be = accel::make_backend("cpu");
  baselines::PlainEngine plain(*be);
  Runtime prt(nn::build_model("fmnist-cnn", o), plain, {});
  const Tensor ref = prt.infer(x);
  Csprng rng(2);
  SlalomEngine engine(*be, rng);
  Runtime rt(nn::build_model("fmnist-cnn", o), engine, {});
  EXPECT_THROW(rt.infer(x), Error) << "no unblinding factors precomputed";
  engine.precompute(24);
  const Tensor out = rt.infer(x);
  double diff = 0, mag = 0;
  int agree = 0;
  for (int64_t i = 0; i < 24; ++i) {
    int a = 0, b = 0;
    for (int c = 0; c < 10; ++c) {
      diff = std::max(diff, double(std::abs(out[i * 10 + c] - ref[i * 10 + c])));
      mag = std::max(mag, double(std::abs(ref[i * 10 + c])));
      if (out[i * 10 + c] > out[i * 10 + a]) a = c;
      if (ref[i * 10 + c] > ref[i * 10 + b]) b = c;
    }
    agree += a == b;
  }
  EXPECT_LT(diff / mag, 0.05);
  EXPECT_GE(agree, 22);
  EXPECT_EQ(rt.stats().accelerator_calls, 24 * 4) << "one input at a time";
  EXPECT_GT(rt.stats().peak_trusted_bytes, 0);
  EXPECT_GT(engine.offline_seconds(), 0);
}

}  // namespace
}  // namespace darknight::baselines
