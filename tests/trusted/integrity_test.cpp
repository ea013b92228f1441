// Integrity checks of the accelerator's results (trusted/integrity.h): correct results
// pass, injected faults above the tolerance are caught and never used, and the redundant
// mixture's known blind spots are real.
#include "registry/registry.h"
#include "trusted/integrity.h"

#include <gtest/gtest.h>

#include "accel/backend.h"
#include "faults/faulty_backend.h"
#include "baselines/engines.h"
#include "baselines/plain_io.h"
#include "measure/fault_audit.h"
#include "nn/zoo.h"
#include "support/random.h"
#include "support/shapes.h"
#include "trusted/darknight_engine.h"
#include "trusted/trainer.h"

namespace darknight::trusted {
namespace {

using accel::FaultKind;
using darknight::testing::random_tensor;

nn::Graph model(const std::string& name, int64_t size) {
  nn::ModelOptions o;
  o.input_size = size;
  o.seed = 1;
  return nn::build_model(name, o);
}

/// A convolution with every geometric option: stride, dilation, asymmetric padding, groups.
nn::Graph odd_conv() {
  nn::Graph g(Shape{4, 11, 9});
  const accel::ConvDesc d = darknight::testing::odd_conv_desc();
  const int c = g.conv(0, d, random_tensor(d.weight_shape(), 5), random_tensor(Shape{6}, 6), "odd");
  g.dense(c, 5, random_tensor(Shape{5, g.node(c).shape.numel()}, 7), Tensor(Shape{5}), "fc");
  return g;
}

/// The engine's counters with the faults judged by a FaultAudit (as the apps do).
IntegrityCounters measured(const IntegrityCounters& engine, const measure::FaultAudit* audit) {
  IntegrityCounters c = engine;
  if (audit)
    audit->fill(c);
  else
    c.false_alarms = c.failed;
  return c;
}

struct Result {
  Tensor out;
  IntegrityCounters counters;
  int64_t injected = 0;
};

Result run(nn::Graph g, const Tensor& x, IntegrityMode mode, DType precision = DType::f32,
           std::optional<accel::FaultSpec> faults = std::nullopt) {
  auto be = std::make_unique<accel::FaultyBackend>(accel::make_backend("cpu"));
  CodecOptions co;
  co.k = 3;
  co.precision = precision;
  co.redundancy = mode == IntegrityMode::redundant ? 1 : 0;
  Csprng rng(11), check_rng(12);
  std::unique_ptr<accel::FaultInjector> inj;
  if (faults) inj = std::make_unique<accel::FaultInjector>(*faults, co.k + 1 + co.redundancy);
  std::unique_ptr<measure::FaultAudit> audit;
  if (inj && mode != IntegrityMode::none) audit = std::make_unique<measure::FaultAudit>(*inj);
  DarKnightEngine engine(*be, co, rng);
  engine.set_integrity(mode, &check_rng);
  engine.set_check_observer(audit.get());
  be->set_injector(inj.get());
  Runtime rt(std::move(g), engine, {});
  Result r;
  r.out = rt.infer(x);
  r.counters = measured(engine.integrity(), audit.get());
  r.injected = inj ? inj->injected() : 0;
  return r;
}

double max_rel_diff(const Tensor& a, const Tensor& b) {
  double diff = 0, mag = 0;
  for (int64_t i = 0; i < a.numel(); ++i)
    diff = std::max(diff, double(std::abs(a[i] - b[i]))),
    mag = std::max(mag, double(std::abs(b[i])));
  return diff / mag;
}

TEST(Integrity, RedundantMixingHasANullVector) {
  Csprng rng(3);
  for (int k : {1, 3, 8}) {
    const auto drawn = Mixing::draw(k, 0.5, rng, 1);
    const Mixing& m = *drawn;
    ASSERT_EQ(m.mixtures(), k + 2);
    for (int i = 0; i < m.n(); ++i) {
      double c = 0;
      for (int j = 0; j < m.mixtures(); ++j) c += m.null(0, j) * m.a(j, i);
      EXPECT_NEAR(c, 0.0, 1e-12);
      for (int l = 0; l < m.n(); ++l) {
        double p = 0;  // pinv(A) A = I
        for (int j = 0; j < m.mixtures(); ++j) p += m.inv(i, j) * m.a(j, l);
        EXPECT_NEAR(p, i == l ? 1.0 : 0.0, 1e-12);
      }
    }
    EXPECT_NEAR(m.condition_number(), 1.0, 1e-9);
  }
}

// No false alarms on correct results, for every layer shape the zoo has (depthwise and
// strided in MobileNet, 1x1 shortcuts in ResNet), an odd geometry, and both precisions;
// and the checked run computes what the unchecked one does.
TEST(Integrity, CorrectResultsPassEveryCheck) {
  struct Case {
    std::string name;
    nn::Graph (*make)();
    Shape input;
  };
  const std::vector<Case> cases = {
      {"fmnist-cnn", [] { return model("fmnist-cnn", 28); }, Shape{7, 1, 28, 28}},
      {"mobilenet", [] { return model("mobilenet", 32); }, Shape{4, 3, 32, 32}},
      {"resnet18", [] { return model("resnet18", 32); }, Shape{4, 3, 32, 32}},
      {"odd-conv", odd_conv, Shape{7, 4, 11, 9}}};
  for (const Case& c : cases)
    for (IntegrityMode mode : {IntegrityMode::redundant, IntegrityMode::freivalds})
      for (DType p : {DType::f32, DType::f64}) {
        SCOPED_TRACE(c.name + " " + to_string(mode) + (p == DType::f32 ? " f32" : " f64"));
        const Tensor x = random_tensor(c.input, 4, 0, 1);
        const Result none = run(c.make(), x, IntegrityMode::none, p);
        const Result checked = run(c.make(), x, mode, p);
        EXPECT_GT(checked.counters.checks, 0);
        EXPECT_EQ(checked.counters.false_alarms, 0);
        EXPECT_EQ(checked.counters.recomputed, 0);
        if (mode == IntegrityMode::freivalds) {
          // Same secrets (the check vectors have their own generator): the same outputs.
          for (int64_t i = 0; i < x.numel() && i < none.out.numel(); ++i)
            ASSERT_EQ(none.out[i], checked.out[i]);
        }
      }
}

// Faults of every kind at a high rate: Freivalds catches every one above its tolerance,
// the recomputed (or trusted) results replace them, and the output is the fault-free one.
TEST(Integrity, FreivaldsCatchesEveryKindOfFault) {
  for (auto [name, size] : {std::pair<std::string, int64_t>{"fmnist-cnn", 28}, {"odd-conv", 0}}) {
    const Shape in = size ? Shape{9, 1, 28, 28} : Shape{9, 4, 11, 9};
    auto make = [&] { return size ? model(name, size) : odd_conv(); };
    const Tensor x = random_tensor(in, 8, 0, 1);
    const Result clean = run(make(), x, IntegrityMode::freivalds);
    for (FaultKind kind : {FaultKind::bitflip, FaultKind::scale, FaultKind::wrong_weights,
                           FaultKind::drop, FaultKind::adversarial}) {
      SCOPED_TRACE(name + " " + accel::to_string(kind));
      int64_t injected = 0, detected = 0, changed = 0;
      for (uint64_t seed = 1; seed <= 6; ++seed) {
        const Result r =
            run(make(), x, IntegrityMode::freivalds, DType::f32, accel::FaultSpec{kind, 0.7, seed});
        const IntegrityCounters& c = r.counters;
        EXPECT_EQ(c.injected, r.injected);
        EXPECT_EQ(c.detected, c.injected_above_tolerance);
        EXPECT_EQ(c.false_alarms, 0);
        EXPECT_EQ(c.recomputed + c.fallbacks, c.detected);
        if (kind != FaultKind::bitflip) {
          EXPECT_EQ(c.detected, c.injected);
          EXPECT_EQ(c.missed, 0);
        } else {
          // A flipped low mantissa bit can move an output a little beyond the fault-free
          // rounding bound (the oracle's) yet stay within the check's float tolerance.
          EXPECT_LT(r.counters.largest_missed_excess, 10);
        }
        // Results computed in the trusted runtime are exact; the clean run has the f32
        // decode error (docs/accuracy.md).
        EXPECT_LT(max_rel_diff(r.out, clean.out), 1e-3);
        injected += c.injected, detected += c.detected, changed += c.changed_output;
      }
      EXPECT_GT(injected, 5);
      EXPECT_GT(changed, 5);
      if (kind != FaultKind::bitflip) {
        EXPECT_EQ(detected, injected);
      }
    }
  }
}

// The paper's redundant mixture catches faults that are not aimed at it, and cannot see an
// error chosen to fit its null vector, nor a consistently wrong weight tensor.
TEST(Integrity, RedundantMixtureHasBlindSpots) {
  const Tensor x = random_tensor(Shape{9, 1, 28, 28}, 9, 0, 1);
  for (FaultKind kind : {FaultKind::drop, FaultKind::scale}) {
    const Result r = run(model("fmnist-cnn", 28), x, IntegrityMode::redundant, DType::f32,
                         accel::FaultSpec{kind, 0.9, 3});
    EXPECT_GT(r.counters.injected, 3);
    EXPECT_EQ(r.counters.detected, r.counters.injected_above_tolerance);
    EXPECT_GE(r.counters.detected, r.counters.injected - 1) << accel::to_string(kind);
    EXPECT_EQ(r.counters.missed, 0) << accel::to_string(kind);
  }
  for (FaultKind kind : {FaultKind::adversarial, FaultKind::wrong_weights}) {
    const Result r = run(model("fmnist-cnn", 28), x, IntegrityMode::redundant, DType::f32,
                         accel::FaultSpec{kind, 0.9, 3});
    EXPECT_GT(r.counters.injected, 3);
    EXPECT_EQ(r.counters.detected, 0) << accel::to_string(kind);
    // Yet they change the outputs (judged against the clean ones), by far more than rounding.
    EXPECT_EQ(r.counters.changed_output, r.counters.injected);
    EXPECT_EQ(r.counters.missed, r.counters.changed_output);
    EXPECT_GT(r.counters.largest_missed_excess, 1e3);
  }
}

// Without checks nothing is caught: the injected faults do reach the outputs (so the
// tests above could fail).
TEST(Integrity, UncheckedFaultsReachTheOutput) {
  const Tensor x = random_tensor(Shape{9, 1, 28, 28}, 10, 0, 1);
  const Result clean = run(model("fmnist-cnn", 28), x, IntegrityMode::none);
  const Result bad = run(model("fmnist-cnn", 28), x, IntegrityMode::none, DType::f32,
                         accel::FaultSpec{FaultKind::adversarial, 1.0, 1});
  EXPECT_GT(bad.injected, 0);
  EXPECT_GT(max_rel_diff(bad.out, clean.out), 1e-2);
}

// The oracle that judges faults (FaultRecord, used by measure::FaultAudit): the clean output
// it records is within its rounding bound of the exact (f64) result, for each kind of linear
// operation, and the bound is far below the outputs' size (a changed exponent exceeds it).
TEST(Integrity, FaultRecordsBoundTheCleanRoundingError) {
  const accel::ConvDesc d = darknight::testing::odd_conv_desc();
  const Tensor x = random_tensor(Shape{5, 4, 11, 9}, 50), w = random_tensor(d.weight_shape(), 51);
  const Tensor dy = random_tensor(d.dst_shape(x.shape()), 52);
  auto exact_be = accel::make_backend("ref");
  baselines::PlainIo exact(*exact_be, DType::f64);
  auto we = exact_be->create_weights(w);
  auto xe = exact.put(x), dye = exact.put(dy);
  auto ye = exact.make(dy.shape()), dxe = exact.make(x.shape()), dwe = exact.make(w.shape());
  exact_be->conv2d_forward(d, *xe, *we, *ye);
  exact_be->conv2d_backward_data(d, *dye, *we, *dxe);
  exact_be->conv2d_backward_weights(d, *xe, *dye, *dwe);
  auto be = std::make_unique<accel::FaultyBackend>(accel::make_backend("cpu"));
  baselines::PlainIo io(*be, DType::f32);
  accel::FaultInjector inj(accel::FaultSpec{FaultKind::scale, 1.0, 3}, 4);
  be->set_injector(&inj);
  auto wb = be->create_weights(w);
  auto xb = io.put(x), dyb = io.put(dy);
  auto y = io.make(dy.shape()), dx = io.make(x.shape()), dw = io.make(w.shape());
  be->conv2d_forward(d, *xb, *wb, *y);
  be->conv2d_backward_data(d, *dyb, *wb, *dx);
  be->conv2d_backward_weights(d, *xb, *dyb, *dw);
  const std::vector<accel::FaultRecord> records = inj.take();
  ASSERT_EQ(records.size(), 3u);
  const Tensor refs[] = {exact.get(*ye), exact.get(*dxe), exact.get(*dwe)};
  for (int op = 0; op < 3; ++op) {
    SCOPED_TRACE(op);
    const accel::FaultRecord& r = records[static_cast<size_t>(op)];
    EXPECT_EQ(r.seq, op);
    const Tensor& ref = refs[op];
    ASSERT_EQ(r.clean.numel(), ref.numel());
    double largest = 0, largest_bound = 0;
    for (int64_t e = 0; e < ref.numel(); ++e) {
      EXPECT_LE(std::abs(r.clean[e] - ref[e]), r.bound[e]) << e;
      largest = std::max(largest, double(std::abs(ref[e])));
      largest_bound = std::max(largest_bound, r.bound[e]);
    }
    EXPECT_GT(largest_bound, 0);
    EXPECT_LT(largest_bound, 1e-4 * largest);
  }
}

TEST(Integrity, TrustedFallbackComputesTheLayer) {
  nn::Graph g = odd_conv();
  const nn::Node& conv = g.node(1);
  const Tensor x = random_tensor(Shape{3, 4, 11, 9}, 12);
  auto be = accel::make_backend("ref");
  const Geometry geo = Geometry::of(conv, Shape{4, 11, 9});
  const Tensor w = g.weights()[static_cast<size_t>(conv.weights)].clone();
  const Tensor y = trusted_linear(geo, w, x);
  // The ref backend's f64 result of the same convolution.
  baselines::PlainIo io(*be, DType::f64);
  auto wb = be->create_weights(w);
  auto xb = io.put(x);
  auto yb = io.make(conv.conv.dst_shape(x.shape()));
  be->conv2d_forward(conv.conv, *xb, *wb, *yb);
  const Tensor ref = io.get(*yb);
  ASSERT_EQ(ref.numel(), y.numel());
  for (int64_t i = 0; i < y.numel(); ++i) EXPECT_NEAR(y[i], ref[i], 1e-5);
  Csprng rng(1);
  const WeightDigest d(w, conv.conv.groups, IntegrityMode::freivalds, rng);
  EXPECT_TRUE(d.matches(w));
  Tensor w2 = w.clone();
  w2[3] = std::nextafter(w2[3], 10.0f);
  EXPECT_FALSE(d.matches(w2));
}

struct TrainResult {
  std::vector<Tensor> weights;
  IntegrityCounters counters;
};

/// Whether two runs' weights differ in any bit.
bool differ(const TrainResult& a, const TrainResult& b) {
  for (size_t i = 0; i < a.weights.size(); ++i)
    for (int64_t e = 0; e < a.weights[i].numel(); ++e)
      if (a.weights[i][e] != b.weights[i][e]) return true;
  return false;
}

/// Three SGD steps of the Fashion-MNIST CNN in darknight mode (folded gradient decode).
TrainResult train(IntegrityMode mode, std::optional<accel::FaultSpec> faults = std::nullopt,
                  DType precision = DType::f32) {
  auto be = std::make_unique<accel::FaultyBackend>(accel::make_backend("cpu"));
  CodecOptions co;
  co.k = 3;
  co.precision = precision;
  co.redundancy = mode == IntegrityMode::redundant ? 1 : 0;
  co.stream_tile = 4096;  // several pieces per layer (mixtures and checked gradients)
  Csprng rng(21), check_rng(22);
  std::unique_ptr<accel::FaultInjector> inj;
  if (faults) inj = std::make_unique<accel::FaultInjector>(*faults, co.k + 1 + co.redundancy);
  std::unique_ptr<measure::FaultAudit> audit;
  if (inj && mode != IntegrityMode::none) audit = std::make_unique<measure::FaultAudit>(*inj);
  DarKnightEngine engine(*be, co, rng, 0, GradDecode::folded);
  engine.set_integrity(mode, &check_rng);
  engine.set_check_observer(audit.get());
  be->set_injector(inj.get());
  Trainer t(model("fmnist-cnn", 28), engine, {});
  const SgdParams p{.lr = 0.05, .momentum = 0.9, .weight_decay = 1e-3};
  for (uint64_t step = 0; step < 3; ++step) {
    const Tensor x = random_tensor(Shape{10, 1, 28, 28}, 30 + step, 0, 1);
    std::vector<int> labels;
    for (int i = 0; i < 10; ++i) labels.push_back(static_cast<int>((i * 7 + step) % 10));
    t.step(x, labels, p);
  }
  TrainResult r;
  for (int i = 0; i < 4; ++i) r.weights.push_back(engine.read_weights(i));
  r.counters = measured(engine.integrity(), audit.get());
  return r;
}

// Checked training computes exactly what unchecked training does; faults of every kind
// above the tolerance are caught in the forward, backward-data and weight-gradient
// operations and never applied, and the step verification passes throughout.
TEST(Integrity, FreivaldsInTraining) {
  const TrainResult plain = train(IntegrityMode::none);
  const TrainResult checked = train(IntegrityMode::freivalds);
  EXPECT_GT(checked.counters.checks, 3 * (4 + 3 + 4) - 1);
  EXPECT_EQ(checked.counters.false_alarms, 0);
  for (size_t i = 0; i < plain.weights.size(); ++i)
    for (int64_t e = 0; e < plain.weights[i].numel(); ++e)
      ASSERT_EQ(plain.weights[i][e], checked.weights[i][e]);
  for (FaultKind kind :
       {FaultKind::scale, FaultKind::wrong_weights, FaultKind::drop, FaultKind::adversarial}) {
    SCOPED_TRACE(accel::to_string(kind));
    const TrainResult r = train(IntegrityMode::freivalds, accel::FaultSpec{kind, 0.3, 5});
    EXPECT_GT(r.counters.injected, 3);
    EXPECT_GT(r.counters.changed_output, 3);
    EXPECT_EQ(r.counters.missed, 0);
    EXPECT_EQ(r.counters.detected, r.counters.injected_above_tolerance);
    EXPECT_EQ(r.counters.false_alarms, 0);
    // Faults below the tolerance (the weight gradient's is the loosest) may nudge the
    // weights; nothing above it reaches them.
    for (size_t i = 0; i < plain.weights.size(); ++i) {
      double diff = 0, mag = 0;
      for (int64_t e = 0; e < plain.weights[i].numel(); ++e)
        diff = std::max(diff, double(std::abs(r.weights[i][e] - plain.weights[i][e]))),
        mag = std::max(mag, double(std::abs(plain.weights[i][e])));
      EXPECT_LT(diff / mag, 1e-3) << "layer " << i;
    }
  }
}

// With f64 mixtures the tolerance is 2^29 times tighter than with f32: what passes it is
// too small to change a weight's f32 value, so faulted training ends with exactly the
// clean run's weights (the same seeds blind both runs alike).
TEST(Integrity, FaultedF64TrainingEndsWithTheCleanWeights) {
  const TrainResult clean = train(IntegrityMode::freivalds, std::nullopt, DType::f64);
  EXPECT_EQ(clean.counters.false_alarms, 0);
  for (FaultKind kind : {FaultKind::bitflip, FaultKind::scale, FaultKind::wrong_weights,
                         FaultKind::drop, FaultKind::adversarial}) {
    SCOPED_TRACE(accel::to_string(kind));
    const TrainResult r = train(IntegrityMode::freivalds, accel::FaultSpec{kind, 0.3, 5}, DType::f64);
    EXPECT_GT(r.counters.injected, 3);
    EXPECT_GT(r.counters.changed_output, 3);
    // Bit flips beyond the f64 rounding bound but within the check's slack for its own f64
    // sums get through: below f32 resolution, they leave the weights as they were (below).
    if (kind != FaultKind::bitflip) {
      EXPECT_EQ(r.counters.missed, 0);
    }
    EXPECT_EQ(r.counters.detected, r.counters.injected_above_tolerance);
    EXPECT_EQ(r.counters.false_alarms, 0);
    for (size_t i = 0; i < clean.weights.size(); ++i)
      for (int64_t e = 0; e < clean.weights[i].numel(); ++e)
        ASSERT_EQ(r.weights[i][e], clean.weights[i][e]) << "layer " << i << " element " << e;
  }
  // Unchecked, the same faults do reach the weights.
  EXPECT_TRUE(differ(
      clean, train(IntegrityMode::none, accel::FaultSpec{FaultKind::scale, 0.3, 5}, DType::f64)));
}

// The paper's redundant mixture extended to training (forward, backward-data through the
// null vectors of the deltas' mixing, the weight gradient computed twice): bit flips,
// scaled and dropped mixtures above its tolerance are caught and never applied (f64: the
// clean run's weights exactly); adversarial errors (E c = 0, and the same error in both
// gradients) and wrong weights (consistent mixtures) pass it and reach the weights.
TEST(Integrity, RedundantInTraining) {
  const TrainResult clean = train(IntegrityMode::redundant, std::nullopt, DType::f64);
  EXPECT_GT(clean.counters.checks, 3 * (4 + 3 + 4) - 1);
  EXPECT_EQ(clean.counters.false_alarms, 0);
  for (FaultKind kind : {FaultKind::bitflip, FaultKind::scale, FaultKind::drop}) {
    SCOPED_TRACE(accel::to_string(kind));
    const TrainResult r = train(IntegrityMode::redundant, accel::FaultSpec{kind, 0.3, 5}, DType::f64);
    EXPECT_GT(r.counters.injected, 3);
    EXPECT_GT(r.counters.detected, 0);
    EXPECT_EQ(r.counters.detected, r.counters.injected_above_tolerance);
    EXPECT_EQ(r.counters.false_alarms, 0);
    EXPECT_EQ(r.counters.missed, 0);
    EXPECT_FALSE(differ(r, clean));
  }
  for (FaultKind kind : {FaultKind::wrong_weights, FaultKind::adversarial}) {
    SCOPED_TRACE(accel::to_string(kind));
    const TrainResult r = train(IntegrityMode::redundant, accel::FaultSpec{kind, 0.3, 5}, DType::f64);
    EXPECT_GT(r.counters.injected, 3);
    EXPECT_EQ(r.counters.detected, 0);
    EXPECT_EQ(r.counters.injected_above_tolerance, 0);
    EXPECT_GT(r.counters.changed_output, 3);
    EXPECT_EQ(r.counters.missed, r.counters.changed_output);
    EXPECT_TRUE(differ(r, clean));
  }
}

// The step verification: the weights and momentum after an SGD step must match the
// projections mirrored from the verified gradient; a small change to one weight fails.
TEST(Integrity, StepVerificationCatchesAWrongUpdate) {
  const Tensor w0 = random_tensor(Shape{6, 4, 3, 3}, 40);
  const Tensor g = random_tensor(Shape{6, 4, 3, 3}, 41, -0.1f, 0.1f);
  Csprng rng(2);
  const auto made = TrainDigest::make(w0, Tensor(), 2, rng);
  TrainDigest& d = *made;
  // What WeightGradCheck::finish adds for a verified gradient.
  const int64_t per = w0.numel() / 6, og = 3;
  for (int pr = 0; pr < kProjections; ++pr)
    for (int64_t o = 0; o < 6; ++o)
      for (int64_t e = 0; e < per; ++e)
        d.sg[pr * per * 2 + o / og * per + e] += d.fwd->s()[pr * 6 + o] * g[o * per + e];
  const SgdParams p{.lr = 0.1, .momentum = 0.9, .weight_decay = 1e-2};
  Tensor w = w0.clone(), v(w0.shape());
  const Tensor64 g64 = g.cast<double>();
  sgd_update(w.data(), v.data(), g64.data(), w.numel(), p, true);
  EXPECT_TRUE(d.verify_step(w, v, p));
  Tensor bad = w.clone();
  bad[17] += 1e-3f * std::abs(bad[17]) + 1e-6f;
  EXPECT_FALSE(d.verify_step(bad, v, p));
  Tensor bad_v = v.clone();
  bad_v[5] *= 1.01f;
  EXPECT_FALSE(d.verify_step(w, bad_v, p));
}

TEST(Integrity, FaultSpecParsing) {
  const accel::FaultSpec s = accel::FaultSpec::parse("wrong-weights:0.25:7");
  EXPECT_EQ(s.kind, FaultKind::wrong_weights);
  EXPECT_DOUBLE_EQ(s.rate, 0.25);
  EXPECT_EQ(s.seed, 7u);
  EXPECT_FALSE(accel::FaultSpec::parse("drop:1").seed.has_value());
  for (const char* bad : {"drop", "melt:0.1", "drop:x", "drop:1.5", "drop:0.1:z", "drop:0.1x"})
    EXPECT_THROW(accel::FaultSpec::parse(bad), Error) << bad;
}

}  // namespace
}  // namespace darknight::trusted
