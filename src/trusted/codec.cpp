#include "trusted/codec.h"

#include "trusted/secret_eigen.h"
#include "trusted/secrets.h"

#include <sodium.h>

#include <algorithm>
#include <cmath>

namespace darknight::trusted {
namespace {

constexpr int64_t kBlock = 256;  // elements per accumulator block (in L1)

// The codec's inner loops, compiled twice (AVX2 + FMA, and the x86-64 baseline) and
// chosen at run time.

/// o[e] = coef[kv] r[e] (when r) + sum_i coef[i] x[i * stride + e], in the mixtures' type T
/// (measured on MobileNet-224: accumulating in f64 here made encoding slower and the
/// results no more accurate).
template <typename T>
__attribute__((target_clones("avx2", "default"))) void mix_tile(const double* coef, int kv,
                                                                const float* x, int64_t stride,
                                                                const T* r, T* o, int64_t len) {
  T acc[kBlock];
  for (int64_t b = 0; b < len; b += kBlock) {
    const int64_t bl = std::min(kBlock, len - b);
    if (r) {
      const T cr = static_cast<T>(coef[kv]);
      for (int64_t e = 0; e < bl; ++e) acc[e] = cr * r[b + e];
    } else {
      for (int64_t e = 0; e < bl; ++e) acc[e] = T(0);
    }
    for (int i = 0; i < kv; ++i) {
      const float* xi = x + i * stride + b;
      const T c = static_cast<T>(coef[i]);
      for (int64_t e = 0; e < bl; ++e) acc[e] += c * static_cast<T>(xi[e]);
    }
    for (int64_t e = 0; e < bl; ++e) o[b + e] = static_cast<T>(acc[e]);
  }
  sodium_memzero(acc, sizeof acc);
}

/// o[e] = sum_j coef[j] y[j * stride + e], accumulated in f64.
template <typename T>
__attribute__((target_clones("avx2", "default"))) void unmix_tile(const double* coef, int n,
                                                                  const T* y, int64_t stride,
                                                                  float* o, int64_t len) {
  double acc[kBlock];
  for (int64_t b = 0; b < len; b += kBlock) {
    const int64_t bl = std::min(kBlock, len - b);
    for (int64_t e = 0; e < bl; ++e) acc[e] = 0.0;
    for (int j = 0; j < n; ++j) {
      const T* yj = y + j * stride + b;
      const double c = coef[j];
      for (int64_t e = 0; e < bl; ++e) acc[e] += c * static_cast<double>(yj[e]);
    }
    for (int64_t e = 0; e < bl; ++e) o[b + e] = static_cast<float>(acc[e]);
  }
  sodium_memzero(acc, sizeof acc);
}

}  // namespace

void CodecOptions::validate() const {
  DK_CHECK(k >= 1 && k <= 16, "virtual batch size K must be in 1..16, got {}", k);
  DK_CHECK(noise.std >= 0, "noise standard deviation must be >= 0, got {}", noise.std);
  // Noise below the element type's rounding of the mean or of unit-scale inputs vanishes
  // from the mixtures: each is then a noise-free mixture (K = 1: a scaled copy) of inputs.
  const double unit = precision == DType::f32 ? 0x1p-24 : 0x1p-53;
  DK_CHECK(insecure || noise.std > 4 * unit * std::max(1.0, std::abs(noise.mean)),
           "noise standard deviation {} (mean {}) leaves the mixtures noise-free: with K = 1 "
           "each is a scaled copy of its input. Use a larger --noise-std, or --insecure to "
           "allow it (tests of the audit only)",
           noise.std, noise.mean);
  DK_CHECK(mixing_scale > 0, "mixing scale must be > 0, got {}", mixing_scale);
  DK_CHECK(stream_tile > 0, "stream tile must be positive, got {}", stream_tile);
  DK_CHECK(redundancy == 0 || redundancy == 1, "redundant mixtures must be 0 or 1, got {}",
           redundancy);
}

Mixing::Mixing(int k, int extra, SecretBuffer<double> a)
    : k_(k),
      extra_(extra),
      a_(std::move(a)),
      inv_(int64_t{k + 1} * (k + 1 + extra), Metered::no),
      null_(int64_t{extra} * (k + 1 + extra), Metered::no) {
  const int n = k + 1, m = k + 1 + extra;
  const SecretSvd svd(Eigen::Map<const Mat>(a_.data(), m, n),
                      Eigen::ComputeFullU | Eigen::ComputeThinV);
  const auto& s = svd.singularValues();
  DK_CHECK(s(n - 1) > 1e-12 * s(0), "mixing matrix is singular (condition number {})",
           s(0) / s(n - 1));
  cond_ = s(0) / s(n - 1);
  // inv = V S^-1 U[:, 0..n]^T, with V S^-1 evaluated first, as Eigen would.
  const auto vs = svd.matrixV() * s.cwiseInverse().asDiagonal();
  SecretMatrix<decltype(vs)::PlainObject> v_over_s(n, n);
  v_over_s = vs;
  assign_via_secret(Eigen::Map<Mat>(inv_.data(), n, m),
                    v_over_s * svd.matrixU().leftCols(n).transpose());
  Eigen::Map<Mat>(null_.data(), extra, m) = svd.matrixU().rightCols(extra).transpose();
}

std::unique_ptr<Coefficients> Mixing::mixing() const {
  auto c = std::make_unique<Coefficients>(mixtures(), n());
  for (int j = 0; j < mixtures(); ++j)
    for (int i = 0; i < n(); ++i) (*c)(j, i) = a(j, i);
  return c;
}

std::unique_ptr<Coefficients> Mixing::unmixing() const {
  auto c = std::make_unique<Coefficients>(k(), mixtures());
  for (int i = 0; i < k(); ++i)
    for (int j = 0; j < mixtures(); ++j) (*c)(i, j) = inv(i, j);
  return c;
}

std::unique_ptr<Mixing> Mixing::draw(int k, double scale, Csprng& rng, int extra) {
  DK_CHECK(extra >= 0 && extra <= 1, "redundant mixtures must be 0 or 1, got {}", extra);
  const int n = k + 1, m = k + 1 + extra;
  SecretMatrix<> g(m, m);
  rng.gaussian(g.data(), m * m, 0.0, 1.0);
  const SecretQr qr(g);
  SecretMatrix<> q(m, m);
  SecretMatrix<Eigen::VectorXd> workspace(m, 1);
  qr.householderQ().evalTo(q.map(), workspace.map());
  for (int j = 0; j < m; ++j)
    if (qr.matrixQR()(j, j) < 0) q.col(j) *= -1.0;  // Haar measure (Mezzadri 2007)
  SecretBuffer<double> a(int64_t{m} * n, Metered::no);
  Eigen::Map<Mat>(a.data(), m, n) = scale * q.leftCols(n);
  return std::unique_ptr<Mixing>(new Mixing(k, extra, std::move(a)));
}

std::unique_ptr<Mixing> Mixing::from_matrix(int k, std::vector<double> a, int extra) {
  DK_CHECK(static_cast<int>(a.size()) == (k + 1 + extra) * (k + 1),
           "mixing matrix needs {} entries", (k + 1 + extra) * (k + 1));
  SecretBuffer<double> secret(static_cast<int64_t>(a.size()), Metered::no);
  std::copy(a.begin(), a.end(), secret.data());
  darknight::detail::secure_zero(a.data(), a.size() * sizeof(double));
  return std::unique_ptr<Mixing>(new Mixing(k, extra, std::move(secret)));
}

std::vector<int> split_virtual_batches(int64_t items, int k) {
  std::vector<int> sizes(static_cast<size_t>(items / k), k);
  if (items % k) sizes.push_back(static_cast<int>(items % k));
  return sizes;
}

int64_t mixture_count(const std::vector<int>& sizes, int extra) {
  int64_t n = 0;
  for (int s : sizes) n += s + 1 + extra;
  return n;
}

Encoder::Encoder(const CodecOptions& opts, Csprng& rng)
    : opts_(opts),
      owned_(std::make_unique<DirectSource>(rng, opts.noise, opts.mixing_scale, opts.redundancy)),
      source_(owned_.get()) {
  opts_.validate();
}

Encoder::Encoder(const CodecOptions& opts, SecretSource& secrets) : opts_(opts), source_(&secrets) {
  opts_.validate();
}

Encoder::~Encoder() = default;

std::vector<int64_t> stream_pieces(int64_t numel, int64_t tile) {
  std::vector<int64_t> pieces;
  for (int64_t e = 0; e < numel; e += tile) pieces.push_back(std::min(tile, numel - e));
  return pieces;
}

template <typename T>
void Encoder::mix(const Tensor& src, const CoefficientList& c, bool noise,
                  const MixtureSink<T>& sink, int64_t first_item) {
  const int64_t s = src.shape().item_numel();
  int64_t item = first_item, mix = 0;
  for (const auto& cp : c) {
    const Coefficients& cv = *cp;
    const int kv = cv.cols() - (noise ? 1 : 0), n = cv.rows();
    DK_CHECK(item + kv <= src.shape()[0], "mix: {} inputs for {} items", item + kv, src.shape()[0]);
    const float* x = src.data() + item * s;
    int64_t e0 = 0;
    for (int64_t len : stream_pieces(s, opts_.stream_tile)) {
      auto noise_piece = TensorT<T>::uninitialized(Shape{noise ? len : 0});
      if (noise) source_->next_noise(noise_piece);
      auto rows = TensorT<T>::uninitialized(Shape{n, len});
      const T* r = noise_piece.data();
      T* out = rows.data();
#pragma omp parallel for collapse(2) schedule(static)
      for (int j = 0; j < n; ++j)
        for (int64_t t0 = 0; t0 < len; t0 += kTile) {
          const int64_t tl = std::min(len, t0 + kTile) - t0;
          mix_tile(cv.row(j), kv, x + e0 + t0, s, noise ? r + t0 : nullptr, out + j * len + t0, tl);
        }
      sink(make_blinded(std::move(rows)), mix, e0);
      e0 += len;
    }
    item += kv;
    mix += n;
  }
}

template <typename T>
void Encoder::unmix(Tensor& dst, const CoefficientList& d, const OutputFetch<T>& fetch,
                    const RowEpilogue& epilogue, std::optional<int64_t> first_item,
                    const T* outputs) const {
  const int64_t s = dst.shape().item_numel();
  int64_t total = 0;
  for (const auto& dv : d) total += dv->rows();
  DK_CHECK(first_item ? *first_item >= 0 && *first_item + total <= dst.shape()[0]
                      : dst.shape()[0] == total,
           "decode: destination {} for {} items from item {}", dst.shape().str(), total,
           first_item.value_or(0));
  int64_t item = first_item.value_or(0), mix = 0;
  for (const auto& dp : d) {
    const Coefficients& dv = *dp;
    const int kv = dv.rows(), n = dv.cols();
    float* y = dst.data() + item * s;
    int64_t e0 = 0;
    for (int64_t len : stream_pieces(s, opts_.stream_tile)) {
      TensorT<T> rows;
      if (!outputs) {
        rows = TensorT<T>::uninitialized(Shape{n, len});
        fetch(rows, mix, e0);
      }
      const T* ybar = outputs ? outputs + mix * s + e0 : rows.data();
      const int64_t stride = outputs ? s : len;
#pragma omp parallel for collapse(2) schedule(static)
      for (int i = 0; i < kv; ++i)
        for (int64_t t0 = 0; t0 < len; t0 += kTile) {
          const int64_t tl = std::min(len, t0 + kTile) - t0;
          unmix_tile(dv.row(i), n, ybar + t0, stride, y + i * s + e0 + t0, tl);
          if (epilogue) epilogue(y + i * s, e0 + t0, e0 + t0 + tl);
        }
      e0 += len;
    }
    item += kv;
    mix += n;
  }
}

template <typename T>
void Encoder::encode(const Tensor& src, MixingList& secrets, const MixtureSink<T>& sink) {
  encode<T>(src, secrets, sink, 0, src.shape()[0]);
}

template <typename T>
void Encoder::encode(const Tensor& src, MixingList& secrets, const MixtureSink<T>& sink,
                     int64_t first_item, int64_t items) {
  DK_CHECK(first_item >= 0 && items >= 0 && first_item + items <= src.shape()[0] &&
               (items % opts_.k == 0 || first_item + items == src.shape()[0]),
           "encode: items [{}, {}) of {} (K = {})", first_item, first_item + items,
           src.shape()[0], opts_.k);
  CoefficientList c;
  for (int kv : split_virtual_batches(items, opts_.k)) {
    secrets.push_back(source_->next_mixing(kv));
    c.push_back(secrets.back()->mixing());
  }
  mix<T>(src, c, true, sink, first_item);
}

template <typename T>
BlindedT<T> Encoder::encode(const Tensor& src, MixingList& secrets) {
  const int64_t s = src.shape().item_numel();
  TensorT<T> out(src.shape().with_batch(
      mixture_count(split_virtual_batches(src.shape()[0], opts_.k), opts_.redundancy)));
  encode<T>(src, secrets, [&](const BlindedT<T>& rows, int64_t first, int64_t e0) {
    const int64_t n = rows.shape()[0], len = rows.shape()[1];
    for (int64_t r = 0; r < n; ++r)
      std::copy(rows.data() + r * len, rows.data() + (r + 1) * len,
                out.data() + (first + r) * s + e0);
  });
  return make_blinded(std::move(out));
}

template <typename T>
void Encoder::decode(const MixingList& secrets, Tensor& dst, const OutputFetch<T>& fetch,
                     const RowEpilogue& epilogue) const {
  CoefficientList d;
  for (const auto& a : secrets) d.push_back(a->unmixing());
  unmix<T>(dst, d, fetch, epilogue);
}

template <typename T>
void Encoder::decode(const TensorT<T>& mixed, const MixingList& secrets, Tensor& dst,
                     const RowEpilogue& epilogue) const {
  const int64_t s = mixed.shape().item_numel();
  int64_t total_mix = 0;
  for (const auto& a : secrets) total_mix += a->mixtures();
  DK_CHECK(mixed.shape()[0] == total_mix, "decode: {} mixtures for {} expected", mixed.shape()[0],
           total_mix);
  DK_CHECK(dst.shape().item_numel() == s, "decode: destination {} for items of {} elements",
           dst.shape().str(), s);
  CoefficientList d;
  for (const auto& a : secrets) d.push_back(a->unmixing());
  unmix<T>(dst, d, {}, epilogue, {}, mixed.data());
}

template <typename T>
void Encoder::decode(std::span<const T> outputs, const MixingList& secrets, Tensor& dst,
                     const RowEpilogue& epilogue, int64_t first_item) const {
  int64_t total_mix = 0;
  for (const auto& a : secrets) total_mix += a->mixtures();
  DK_CHECK(static_cast<int64_t>(outputs.size()) >= total_mix * dst.shape().item_numel(),
           "decode: {} output elements for {} mixtures of {}", outputs.size(), total_mix,
           dst.shape().item_numel());
  CoefficientList d;
  for (const auto& a : secrets) d.push_back(a->unmixing());
  unmix<T>(dst, d, {}, epilogue, first_item, outputs.data());
}

#define DK_INSTANTIATE(T)                                                                 \
  template void Encoder::mix<T>(const Tensor&, const CoefficientList&, bool,              \
                                const MixtureSink<T>&, int64_t);                          \
  template void Encoder::unmix<T>(Tensor&, const CoefficientList&, const OutputFetch<T>&, \
                                  const RowEpilogue&, std::optional<int64_t>, const T*)   \
      const;                                                                              \
  template void Encoder::decode<T>(std::span<const T>, const MixingList&, Tensor&,        \
                                   const RowEpilogue&, int64_t) const;                    \
  template void Encoder::encode<T>(const Tensor&, MixingList&, const MixtureSink<T>&);    \
  template void Encoder::encode<T>(const Tensor&, MixingList&, const MixtureSink<T>&,     \
                                   int64_t, int64_t);                                     \
  template BlindedT<T> Encoder::encode<T>(const Tensor&, MixingList&);                    \
  template void Encoder::decode<T>(const MixingList&, Tensor&, const OutputFetch<T>&,     \
                                   const RowEpilogue&) const;                             \
  template void Encoder::decode<T>(const TensorT<T>&, const MixingList&, Tensor&,         \
                                   const RowEpilogue&) const;
DK_INSTANTIATE(float)
DK_INSTANTIATE(double)

}  // namespace darknight::trusted
