// Every linear op on every backend, in f32 and f64, against the reference backend in f64.
//
// Tolerance, per output element i: |got_i - oracle_i| <= 2 (n + 2) u mag_i, where n is the
// op's dot-product length (fan-in for forward, O/g*KH*KW for backward-data, the summed
// batch*OH*OW for backward-weights), u the unit roundoff of the backend's element type
// (2^-24 for f32, 2^-53 for f64) and mag_i the same op applied to |inputs|. That is the
// classical worst-case bound for a floating-point dot product in any summation order, so a
// correct backend can never exceed it, and an indexing or layout bug (errors of order mag)
// always does.
#include <gtest/gtest-spi.h>
#include <gtest/gtest.h>

#include <cmath>

#include "accel/backend.h"
#include "backends/ref/ref_backend.h"
#include "baselines/plain_io.h"
#include "registry/registry.h"
#include "support/random.h"
#include "support/worker.h"

namespace darknight::accel {
namespace {

using baselines::PlainIo;
using darknight::testing::abs_tensor;
using darknight::testing::random_tensor;

struct ConvCase {
  const char* name;
  int64_t n, c, h, w, o, kh, kw, sh, sw, pt, pl, pb, pr, dh, dw, g;
  ConvDesc desc() const {
    ConvDesc d;
    d.in_channels = c, d.out_channels = o, d.kernel_h = kh, d.kernel_w = kw;
    d.stride_h = sh, d.stride_w = sw, d.pad_top = pt, d.pad_left = pl, d.pad_bottom = pb;
    d.pad_right = pr, d.dilation_h = dh, d.dilation_w = dw, d.groups = g;
    return d;
  }
  Shape src() const { return Shape{n, c, h, w}; }
};

// clang-format off
const ConvCase kConvCases[] = {
    // name            n   c   h   w   o kh kw sh sw pt pl pb pr dh dw  g
    {"basic3x3",       2,  3,  7,  9,  5, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1},
    {"stride2_odd",    3,  4, 11,  8,  6, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 1},
    {"asym_pad",       1,  2,  6,  7,  3, 3, 2, 2, 1, 1, 0, 2, 1, 1, 1, 1},
    {"dilation2",      2,  3,  9,  9,  4, 3, 3, 1, 1, 2, 2, 2, 2, 2, 2, 1},
    {"groups3",        5,  6,  5,  5,  9, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 3},
    {"depthwise_s2",   9,  8,  6,  6,  8, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 8},
    {"pointwise",      4, 16,  5,  5, 12, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1},
    {"pointwise_s2",   7,  5,  7,  6,  3, 1, 1, 2, 2, 0, 0, 0, 0, 1, 1, 1},
    {"vgg_like",       1, 64,  8,  8, 32, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1},
    {"rgb_7x7_s2",     6,  3, 15, 13, 16, 7, 7, 2, 2, 3, 3, 3, 3, 1, 1, 1},
    {"no_pad_5x5",     8,  4,  9, 10,  2, 5, 5, 1, 1, 0, 0, 0, 0, 1, 1, 1},
};
// clang-format on

struct DenseCase {
  const char* name;
  int64_t n, in, out;
};
const DenseCase kDenseCases[] = {
    {"tiny", 1, 7, 3},
    {"classifier", 4, 64, 10},
    {"odd", 9, 300, 17},
    {"wide", 5, 2048, 33},
};

double unit_roundoff(DType t) {
  return t == DType::f32 ? std::ldexp(1.0, -24) : std::ldexp(1.0, -53);
}

/// Checks got against the oracle with the bound in the file comment.
void expect_within_bound(const Tensor& got, const Tensor& oracle, const Tensor& mag, int64_t terms,
                         DType dtype, const std::string& what) {
  ASSERT_EQ(got.shape(), oracle.shape()) << what;
  const double k = 2.0 * static_cast<double>(terms + 2) * unit_roundoff(dtype);
  int bad = 0;
  double worst = 0;
  for (int64_t i = 0; i < got.numel(); ++i) {
    const double err = std::abs(static_cast<double>(got[i]) - oracle[i]);
    const double tol = k * mag[i] + 1e-30;
    worst = std::max(worst, err / tol);
    if (err > tol && bad++ < 5)
      ADD_FAILURE() << what << ": element " << i << " is " << got[i] << ", oracle " << oracle[i]
                    << " (|err| " << err << " > bound " << tol << ")";
  }
  EXPECT_EQ(bad, 0) << what << ": worst error/bound " << worst;
}

enum class Op { forward, backward_data, backward_weights };
const char* op_name(Op op) {
  return op == Op::forward         ? "forward"
         : op == Op::backward_data ? "backward_data"
                                   : "backward_weights";
}

/// Runs one conv op on `be` in `dtype`. a, b: (src, weights) | (diff_dst, weights) |
/// (src, diff_dst).
Tensor run_conv(Backend& be, DType dtype, Op op, const ConvDesc& d, const Shape& src,
                const Tensor& a, const Tensor& b, int64_t parts) {
  PlainIo io(be, dtype);
  switch (op) {
    case Op::forward: {
      auto w = be.create_weights(b);
      auto s = io.put(a);
      auto y = io.make(d.dst_shape(src));
      be.conv2d_forward(d, *s, *w, *y);
      return io.get(*y);
    }
    case Op::backward_data: {
      auto w = be.create_weights(b);
      auto dy = io.put(a);
      auto dx = io.make(src);
      be.conv2d_backward_data(d, *dy, *w, *dx);
      return io.get(*dx);
    }
    case Op::backward_weights: {
      auto s = io.put(a);
      auto dy = io.put(b);
      const Shape ws = d.weight_shape();
      auto dw = io.make(parts == 1 ? ws : Shape{parts, ws[0], ws[1], ws[2], ws[3]});
      be.conv2d_backward_weights(d, *s, *dy, *dw);
      return io.get(*dw);
    }
  }
  return {};
}

Tensor run_dense(Backend& be, DType dtype, Op op, const DenseDesc& d, const Shape& src,
                 const Tensor& a, const Tensor& b, int64_t parts) {
  PlainIo io(be, dtype);
  switch (op) {
    case Op::forward: {
      auto w = be.create_weights(b);
      auto s = io.put(a);
      auto y = io.make(d.dst_shape(src));
      be.dense_forward(d, *s, *w, *y);
      return io.get(*y);
    }
    case Op::backward_data: {
      auto w = be.create_weights(b);
      auto dy = io.put(a);
      auto dx = io.make(src);
      be.dense_backward_data(d, *dy, *w, *dx);
      return io.get(*dx);
    }
    case Op::backward_weights: {
      auto s = io.put(a);
      auto dy = io.put(b);
      auto dw =
          io.make(parts == 1 ? d.weight_shape() : Shape{parts, d.out_features, d.in_features});
      be.dense_backward_weights(d, *s, *dy, *dw);
      return io.get(*dw);
    }
  }
  return {};
}

using Param = std::tuple<std::string, DType, Op>;
std::string param_name(const ::testing::TestParamInfo<Param>& info) {
  return std::get<0>(info.param) + "_" + dtype_name(std::get<1>(info.param)) + "_" +
         op_name(std::get<2>(info.param));
}

class Conv : public ::testing::TestWithParam<Param> {};

TEST_P(Conv, MatchesReferenceOnEveryShape) {
  const auto [backend, dtype, op] = GetParam();
  DK_SKIP_IF_UNAVAILABLE(backend);
  auto be = darknight::testing::make_test_backend(backend);
  RefBackend oracle_be;
  uint64_t seed = darknight::testing::kTestSeed;
  for (const ConvCase& c : kConvCases) {
    SCOPED_TRACE(c.name);
    const ConvDesc d = c.desc();
    const Shape src = c.src(), dst = d.dst_shape(src), ws = d.weight_shape();
    const int64_t n = src.n();
    // Backward-weights is checked summed over the batch and split into per-item parts.
    for (int64_t parts :
         op == Op::backward_weights ? std::vector<int64_t>{1, n} : std::vector<int64_t>{1}) {
      const Tensor a = random_tensor(op == Op::backward_data ? dst : src, ++seed);
      const Tensor b = random_tensor(op == Op::backward_weights ? dst : ws, ++seed);
      const Tensor got = run_conv(*be, dtype, op, d, src, a, b, parts);
      const Tensor oracle = run_conv(oracle_be, DType::f64, op, d, src, a, b, parts);
      const Tensor mag =
          run_conv(oracle_be, DType::f64, op, d, src, abs_tensor(a), abs_tensor(b), parts);
      const int64_t terms = op == Op::forward         ? d.fan_in()
                            : op == Op::backward_data ? c.o / c.g * c.kh * c.kw
                                                      : n / parts * dst.h() * dst.w();
      expect_within_bound(got, oracle, mag, terms, dtype,
                          fmt::format("{} {} parts={}", c.name, op_name(op), parts));
    }
  }
}

class Dense : public ::testing::TestWithParam<Param> {};

TEST_P(Dense, MatchesReferenceOnEveryShape) {
  const auto [backend, dtype, op] = GetParam();
  DK_SKIP_IF_UNAVAILABLE(backend);
  auto be = darknight::testing::make_test_backend(backend);
  RefBackend oracle_be;
  uint64_t seed = darknight::testing::kTestSeed + 1000;
  for (const DenseCase& c : kDenseCases) {
    SCOPED_TRACE(c.name);
    const DenseDesc d{c.in, c.out};
    // src given as NCHW-like [N, in] or [N, in/..., ...] is flattened: use [N, in] here and
    // a rank-4 src in the Flatten test below.
    const Shape src{c.n, c.in}, dst{c.n, c.out};
    for (int64_t parts :
         op == Op::backward_weights ? std::vector<int64_t>{1, c.n} : std::vector<int64_t>{1}) {
      const Tensor a = random_tensor(op == Op::backward_data ? dst : src, ++seed);
      const Tensor b = random_tensor(op == Op::backward_weights ? dst : d.weight_shape(), ++seed);
      const Tensor got = run_dense(*be, dtype, op, d, src, a, b, parts);
      const Tensor oracle = run_dense(oracle_be, DType::f64, op, d, src, a, b, parts);
      const Tensor mag =
          run_dense(oracle_be, DType::f64, op, d, src, abs_tensor(a), abs_tensor(b), parts);
      const int64_t terms = op == Op::forward         ? c.in
                            : op == Op::backward_data ? c.out
                                                      : c.n / parts;
      expect_within_bound(got, oracle, mag, terms, dtype,
                          fmt::format("{} {} parts={}", c.name, op_name(op), parts));
    }
  }
}

// "remote": the CPU backend in a worker, through the wire protocol (accel/remote).
std::vector<std::string> tested_backends() {
  std::vector<std::string> names = backend_names();
  names.push_back("remote");
  return names;
}

const auto kAllParams = ::testing::Combine(
    ::testing::ValuesIn(tested_backends()), ::testing::Values(DType::f32, DType::f64),
    ::testing::Values(Op::forward, Op::backward_data, Op::backward_weights));
INSTANTIATE_TEST_SUITE_P(AllBackends, Conv, kAllParams, param_name);
INSTANTIATE_TEST_SUITE_P(AllBackends, Dense, kAllParams, param_name);

// The bound catches wrong results much smaller than any indexing or layout mistake.
TEST(ConsistencyBound, CatchesAWrongResult) {
  RefBackend ref;
  const ConvCase& c = kConvCases[0];
  const ConvDesc d = c.desc();
  const Tensor x = random_tensor(c.src(), 1), w = random_tensor(d.weight_shape(), 2);
  Tensor got = run_conv(ref, DType::f32, Op::forward, d, c.src(), x, w, 1);
  const Tensor oracle = run_conv(ref, DType::f64, Op::forward, d, c.src(), x, w, 1);
  const Tensor mag =
      run_conv(ref, DType::f64, Op::forward, d, c.src(), abs_tensor(x), abs_tensor(w), 1);
  got[7] += 1e-3f;  // far below one tap's size (|x w| ~ 0.25), far above the bound
  ::testing::TestPartResultArray failures;
  {
    ::testing::ScopedFakeTestPartResultReporter reporter(
        ::testing::ScopedFakeTestPartResultReporter::INTERCEPT_ONLY_CURRENT_THREAD, &failures);
    expect_within_bound(got, oracle, mag, d.fan_in(), DType::f32, "tampered");
  }
  EXPECT_GE(failures.size(), 1);
}

// A dense layer flattens an NCHW src ([N, C, H, W] -> [N, C*H*W]) exactly as a [N, C*H*W]
// src, on every backend.
TEST(DenseFlatten, Rank4SourceEqualsFlatSource) {
  for (const auto& name : backend_names()) {
    if (!unavailable_reason(name).empty()) continue;
    auto be = make_backend(name);
    PlainIo io(*be, DType::f32);
    const Tensor x = random_tensor(Shape{3, 4, 5, 6}, 11);
    const Tensor w = random_tensor(Shape{7, 120}, 12);
    auto wts = be->create_weights(w);
    Tensor flat = x.clone();
    flat.reshape(Shape{3, 120});
    auto a = io.put(x), b = io.put(flat);
    auto ya = io.make(Shape{3, 7}), yb = io.make(Shape{3, 7});
    const DenseDesc d{120, 7};
    be->dense_forward(d, *a, *wts, *ya);
    be->dense_forward(d, *b, *wts, *yb);
    const Tensor ra = io.get(*ya), rb = io.get(*yb);
    for (int64_t i = 0; i < ra.numel(); ++i) EXPECT_EQ(ra[i], rb[i]) << name;
  }
}

}  // namespace
}  // namespace darknight::accel
