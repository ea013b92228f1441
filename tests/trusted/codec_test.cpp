// The inference codec against exact math, and its randomness.
#include "trusted/codec.h"
#include "registry/registry.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <set>

#include "accel/backend.h"
#include "baselines/plain_io.h"
#include "support/random.h"

namespace darknight::trusted {
namespace {

using darknight::testing::random_tensor;

TEST(Csprng, SeededIsReproducibleAndSeedsDiffer) {
  Csprng a(7), b(7), c(8);
  std::vector<uint64_t> va, vb, vc;
  for (int i = 0; i < 4; ++i)
    va.push_back(a.next_u64()), vb.push_back(b.next_u64()), vc.push_back(c.next_u64());
  EXPECT_EQ(va, vb);
  EXPECT_NE(va, vc);
  EXPECT_NE(va[0], va[1]);  // fresh nonce per request
}

TEST(Csprng, OsKeyedGeneratorsDiffer) {
  Csprng a, b;
  EXPECT_NE(a.next_u64(), b.next_u64());
}

// Checkpoints of seeded runs: a generator moved to a saved position draws what the
// original drew after it; an OS-keyed one cannot be moved (it would repeat keystream).
TEST(Csprng, SeekRepeatsASeededStreamOnly) {
  Csprng a(7);
  a.next_u64();
  std::vector<float> g(40000);
  a.gaussian(g.data(), static_cast<int64_t>(g.size()), 0, 1);  // several nonces
  const uint64_t at = a.position();
  EXPECT_EQ(at, 1u + 3u);
  const uint64_t next = a.next_u64();
  a.gaussian(g.data(), static_cast<int64_t>(g.size()), 0, 1);
  Csprng b(7);
  b.seek(at);
  EXPECT_EQ(b.next_u64(), next);
  std::vector<float> h(g.size());
  b.gaussian(h.data(), static_cast<int64_t>(h.size()), 0, 1);
  EXPECT_EQ(g, h);
  EXPECT_EQ(b.position(), a.position());
  Csprng os;
  EXPECT_THROW(os.seek(0), Error);
}

TEST(Csprng, GaussianMomentsAndThreadIndependence) {
  const int64_t n = 1 << 20;
  std::vector<float> x(n);
  Csprng rng(3);
  rng.gaussian(x.data(), n, 5.0, 2.0);
  double m = 0, v = 0, k4 = 0;
  for (float e : x) m += e;
  m /= n;
  for (float e : x) v += (e - m) * (e - m), k4 += std::pow((e - m) / 2.0, 4);
  v /= n;
  k4 /= n;
  // Standard errors: mean 2/sqrt(n) = 0.002, variance ~ 4 sqrt(2/n) = 0.0055; 5 sigma bounds.
  EXPECT_NEAR(m, 5.0, 0.01);
  EXPECT_NEAR(v, 4.0, 0.03);
  EXPECT_NEAR(k4, 3.0, 0.05);  // Gaussian kurtosis
  // The same seed gives the same samples on 1 thread and on all threads.
  const int threads = omp_get_max_threads();
  std::vector<double> one(100001), all(100001);
  omp_set_num_threads(1);
  Csprng(11).gaussian(one.data(), 100001, 0, 1);
  omp_set_num_threads(threads);
  Csprng(11).gaussian(all.data(), 100001, 0, 1);
  EXPECT_EQ(one, all);
}

// Every 32-bit word gives a finite sample, the extremes included (a float rounding of
// 2^31 + 1 once gave log(0) and NaNs in 1 of ~10^7 samples).
TEST(Csprng, BoxMullerIsFiniteForEveryWord) {
  std::vector<uint32_t> words;
  for (uint32_t w = 0; w < 256; ++w)
    for (uint32_t base : {0u, 0x7fffff00u, 0x80000000u, 0xffffff00u}) words.push_back(base + w);
  std::vector<float> f(words.size());
  std::vector<double> d(words.size());
  detail::box_muller(words.data(), f.data(), static_cast<int64_t>(words.size()));
  detail::box_muller(words.data(), d.data(), static_cast<int64_t>(words.size()));
  for (size_t i = 0; i < words.size(); ++i) {
    ASSERT_TRUE(std::isfinite(f[i])) << std::hex << words[i];
    ASSERT_TRUE(std::isfinite(d[i])) << std::hex << words[i];
    EXPECT_LT(std::abs(f[i]), 6.0f);  // sqrt(-2 ln 2^-24) = 5.77
  }
}

TEST(Mixing, OrthogonalScaledWellConditionedAndInverse) {
  Csprng rng(1);
  for (int k : {1, 2, 4, 8, 16}) {
    for (double scale : {1.0, 0.25}) {
      const auto drawn = Mixing::draw(k, scale, rng);
      const Mixing& a = *drawn;
      const int n = k + 1;
      EXPECT_NEAR(a.condition_number(), 1.0, 1e-9);
      for (int i = 0; i < n; ++i)
        for (int j = 0; j < n; ++j) {
          double aat = 0, ainv = 0;
          for (int l = 0; l < n; ++l) aat += a.a(i, l) * a.a(j, l), ainv += a.a(i, l) * a.inv(l, j);
          EXPECT_NEAR(aat, i == j ? scale * scale : 0.0, 1e-12);
          EXPECT_NEAR(ainv, i == j ? 1.0 : 0.0, 1e-12);
        }
    }
  }
  EXPECT_THROW(Mixing::from_matrix(1, {1, 2, 2, 4}), Error);  // singular
}

TEST(Mixing, FreshEveryDraw) {
  Csprng rng(1);
  std::set<double> first_entries;
  for (int i = 0; i < 50; ++i) first_entries.insert(Mixing::draw(4, 1.0, rng)->a(0, 0));
  EXPECT_EQ(first_entries.size(), 50u);
}

TEST(VirtualBatches, SplitWithPartialLast) {
  EXPECT_EQ(split_virtual_batches(8, 4), (std::vector<int>{4, 4}));
  EXPECT_EQ(split_virtual_batches(7, 4), (std::vector<int>{4, 3}));
  EXPECT_EQ(split_virtual_batches(3, 4), (std::vector<int>{3}));
  EXPECT_EQ(mixture_count({4, 3}), 9);
}

/// Runs W on blinded mixtures on the reference accelerator.
template <typename T>
TensorT<T> accelerate(accel::Backend& be, const accel::ConvDesc& d, const Tensor& w,
                      const BlindedT<T>& mixtures) {
  auto wts = be.create_weights(w);
  auto src = be.alloc(mixtures.shape(), dtype_of<T>());
  be.upload(mixtures, *src);
  auto dst = be.alloc(d.dst_shape(mixtures.shape()), dtype_of<T>());
  be.conv2d_forward(d, *src, *wts, *dst);
  TensorT<T> out(dst->shape());
  be.download(*dst, out);
  be.wait();
  return out;
}

// decode(W encode(x)) = W x, against W x computed in f64 on plaintext. The error bound is
// relative to the mixtures' magnitude, which the noise dominates: the accelerator and the
// mixtures round at that scale, and decoding cancels the noise but not its rounding.
template <typename T>
double round_trip_error(const CodecOptions& opts, const Tensor& x) {
  auto be = accel::make_backend("ref");
  const accel::ConvDesc d{3, 4, 3, 3, 1, 1, 1, 1, 1, 1};
  const Tensor w = random_tensor(d.weight_shape(), 2, -0.3f, 0.3f);
  Csprng rng(5);
  Encoder enc(opts, rng);
  MixingList secrets;
  const BlindedT<T> mixtures = enc.encode<T>(x, secrets);
  const TensorT<T> ybar = accelerate(*be, d, w, mixtures);
  Tensor y(d.dst_shape(x.shape()));
  enc.decode(ybar, secrets, y);

  baselines::PlainIo io(*be, DType::f64);
  auto wts = be->create_weights(w);
  auto xs = io.put(x);
  auto ys = io.make(d.dst_shape(x.shape()));
  be->conv2d_forward(d, *xs, *wts, *ys);
  const Tensor exact = io.get(*ys);
  double err = 0;
  for (int64_t i = 0; i < y.numel(); ++i) err = std::max(err, double(std::abs(y[i] - exact[i])));
  return err;
}

TEST(Encoder, RoundTripMatchesExactProduct) {
  const Tensor x = random_tensor(Shape{7, 3, 6, 5}, 1, 0.0f, 1.0f);  // virtual batches 4 + 3
  CodecOptions opts;
  opts.noise = {10.0, 100.0};
  opts.precision = DType::f64;
  // Outputs are sums of 27 products of |w| <= 0.3 with noise ~ 100: magnitude ~ 1e3.
  EXPECT_LT(round_trip_error<double>(opts, x), 1e3 * 1e-12);
  opts.precision = DType::f32;
  const double e32 = round_trip_error<float>(opts, x);
  EXPECT_LT(e32, 1e3 * 1e-5);
  EXPECT_GT(e32, 0.0);  // f32 mixtures do round
  // Streamed in pieces of 7 elements (items of 90 and 120 elements): the same accuracy.
  opts.stream_tile = 7;
  EXPECT_LT(round_trip_error<float>(opts, x), 1e3 * 1e-5);
  opts.precision = DType::f64;
  EXPECT_LT(round_trip_error<double>(opts, x), 1e3 * 1e-12);
  // Without noise the error is at the data's scale only.
  opts.noise = {0.0, 0.0};
  opts.precision = DType::f32;
  opts.insecure = true;
  EXPECT_LT(round_trip_error<float>(opts, x), 1e-5);
}

// Noise that leaves the mixtures noise-free (a scaled copy of the input when K = 1) is
// refused unless asked for, in both element types.
TEST(Encoder, RefusesNoiseFreeBlindingUnlessInsecure) {
  CodecOptions opts;
  opts.k = 1;
  Csprng rng(3);
  auto allowed = [&](DType p, NoiseSpec n, bool insecure) {
    opts.precision = p, opts.noise = n, opts.insecure = insecure;
    try {
      Encoder enc(opts, rng);
      return true;
    } catch (const Error&) {
      return false;
    }
  };
  for (DType p : {DType::f32, DType::f64})
    for (NoiseSpec n : {NoiseSpec{0.0, 0.0}, NoiseSpec{5.0, 0.0}, NoiseSpec{0.0, 1e-30}}) {
      EXPECT_FALSE(allowed(p, n, false)) << n.mean << " " << n.std;
      EXPECT_TRUE(allowed(p, n, true));
    }
  // N(1e4, 1e-5^2) rounds to the mean in f32, not in f64.
  EXPECT_FALSE(allowed(DType::f32, {1e4, 1e-5}, false));
  EXPECT_TRUE(allowed(DType::f64, {1e4, 1e-5}, false));
  EXPECT_TRUE(allowed(DType::f32, {1e4, 63.2}, false));  // the paper's settings pass
}

TEST(Encoder, MixturesShapeSecretsAndNoPlaintext) {
  const Tensor x = random_tensor(Shape{7, 2, 4, 4}, 3, 0.0f, 1.0f);
  CodecOptions opts;
  Csprng rng(9);
  Encoder enc(opts, rng);
  MixingList secrets;
  const Blinded m1 = enc.encode<float>(x, secrets);
  EXPECT_EQ(m1.shape(), (Shape{9, 2, 4, 4}));
  ASSERT_EQ(secrets.size(), 2u);
  EXPECT_EQ(secrets[0]->k(), 4);
  EXPECT_EQ(secrets[1]->k(), 3);
  // No mixture is (close to) a scaled copy of an input: |correlation| stays small.
  const int64_t s = 32;
  for (int64_t j = 0; j < 9; ++j)
    for (int64_t i = 0; i < 7; ++i) {
      double sx = 0, sy = 0, sxx = 0, syy = 0, sxy = 0;
      for (int64_t e = 0; e < s; ++e) {
        const double a = x[i * s + e], b = m1.data()[j * s + e];
        sx += a, sy += b, sxx += a * a, syy += b * b, sxy += a * b;
      }
      const double cov = sxy / s - sx / s * sy / s;
      const double corr =
          cov / std::sqrt((sxx / s - sx * sx / s / s) * (syy / s - sy * sy / s / s));
      EXPECT_LT(std::abs(corr), 0.8) << "mixture " << j << " input " << i;
    }
  // A second encoding of the same inputs uses fresh coefficients and noise.
  MixingList secrets2;
  const Blinded m2 = enc.encode<float>(x, secrets2);
  int same = 0;
  for (int64_t e = 0; e < m1.numel(); ++e) same += m1.data()[e] == m2.data()[e];
  EXPECT_EQ(same, 0);
  EXPECT_NE(secrets[0]->a(0, 0), secrets2[0]->a(0, 0));
}

TEST(Encoder, DecodeAppliesEpilogueAndChecksShapes) {
  const Tensor x = random_tensor(Shape{4, 3}, 3);
  CodecOptions opts;
  opts.k = 2;
  opts.precision = DType::f64;
  Csprng rng(2);
  Encoder enc(opts, rng);
  MixingList secrets;
  const Blinded64 m = enc.encode<double>(x, secrets);
  Tensor64 same(m.shape(), m.span());  // identity "accelerator"
  Tensor y(Shape{4, 3});
  enc.decode(same, secrets, y, [](float* row, int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) row[i] = std::max(row[i], 0.0f);
  });
  for (int64_t i = 0; i < 12; ++i) EXPECT_NEAR(y[i], std::max(x[i], 0.0f), 1e-9);
  Tensor wrong(Shape{3, 3});
  EXPECT_THROW(enc.decode(same, secrets, wrong), Error);
  opts.k = 17;
  EXPECT_THROW(Encoder(opts, rng), Error);
}

}  // namespace
}  // namespace darknight::trusted
