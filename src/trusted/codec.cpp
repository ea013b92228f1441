#include "trusted/codec.h"

#include "trusted/secrets.h"

#include <sodium.h>

#include <Eigen/Dense>
#include <algorithm>

namespace darknight::trusted {
namespace {
constexpr int64_t kTile = 2048;  // elements per tile in encode/decode loops
}

void CodecOptions::validate() const {
  DK_CHECK(k >= 1 && k <= 16, "virtual batch size K must be in 1..16, got {}", k);
  DK_CHECK(noise.std >= 0, "noise standard deviation must be >= 0, got {}", noise.std);
  DK_CHECK(mixing_scale > 0, "mixing scale must be > 0, got {}", mixing_scale);
}

Mixing::Mixing(int k, std::vector<double> a) : k_(k), a_(std::move(a)) {
  using Mat = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const int n = k + 1;
  Eigen::Map<const Mat> A(a_.data(), n, n);
  Eigen::JacobiSVD<Mat> svd(A);
  const auto& s = svd.singularValues();
  DK_CHECK(s(n - 1) > 1e-12 * s(0), "mixing matrix is singular (condition number {})",
           s(0) / s(n - 1));
  cond_ = s(0) / s(n - 1);
  inv_.resize(static_cast<size_t>(n * n));
  Eigen::Map<Mat>(inv_.data(), n, n) = A.fullPivLu().inverse();
}

Mixing::~Mixing() {
  if (!a_.empty()) sodium_memzero(a_.data(), a_.size() * sizeof(double));
  if (!inv_.empty()) sodium_memzero(inv_.data(), inv_.size() * sizeof(double));
}

Mixing Mixing::draw(int k, double scale, Csprng& rng) {
  using Mat = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const int n = k + 1;
  Mat g(n, n);
  rng.gaussian(g.data(), n * n, 0.0, 1.0);
  Eigen::HouseholderQR<Mat> qr(g);
  Mat q = qr.householderQ();
  const Mat r = qr.matrixQR().triangularView<Eigen::Upper>();
  for (int j = 0; j < n; ++j)
    if (r(j, j) < 0) q.col(j) *= -1.0;  // Haar measure (Mezzadri 2007)
  std::vector<double> a(static_cast<size_t>(n * n));
  Eigen::Map<Mat>(a.data(), n, n) = scale * q;
  sodium_memzero(g.data(), sizeof(double) * static_cast<size_t>(n * n));
  return Mixing(k, std::move(a));
}

Mixing Mixing::from_matrix(int k, std::vector<double> a) {
  DK_CHECK(static_cast<int>(a.size()) == (k + 1) * (k + 1), "mixing matrix needs {} entries",
           (k + 1) * (k + 1));
  return Mixing(k, std::move(a));
}

std::vector<int> split_virtual_batches(int64_t items, int k) {
  std::vector<int> sizes(static_cast<size_t>(items / k), k);
  if (items % k) sizes.push_back(static_cast<int>(items % k));
  return sizes;
}

int64_t mixture_count(const std::vector<int>& sizes) {
  int64_t n = 0;
  for (int s : sizes) n += s + 1;
  return n;
}

Encoder::Encoder(const CodecOptions& opts, Csprng& rng)
    : opts_(opts),
      owned_(std::make_unique<DirectSource>(rng, opts.noise, opts.mixing_scale)),
      source_(owned_.get()) {
  opts_.validate();
}

Encoder::Encoder(const CodecOptions& opts, SecretSource& secrets) : opts_(opts), source_(&secrets) {
  opts_.validate();
}

Encoder::~Encoder() = default;

template <typename T>
BlindedT<T> Encoder::encode(const Tensor& src, std::vector<Mixing>& secrets) {
  const int64_t m = src.shape()[0], s = src.shape().item_numel();
  const std::vector<int> sizes = split_virtual_batches(m, opts_.k);
  TensorT<T> out(src.shape().with_batch(mixture_count(sizes)));
  int64_t item = 0, mix = 0;
  for (int kv : sizes) {
    Draw draw = source_->next(kv, s, dtype_of<T>());
    secrets.push_back(std::move(draw.mixing));
    const Mixing& a = secrets.back();
    const float* x = src.data() + item * s;
    T* xbar = out.data() + mix * s;
    const T* r;
    if constexpr (std::is_same_v<T, float>)
      r = draw.noise32.data();
    else
      r = draw.noise64.data();
    const int n = kv + 1;
#pragma omp parallel
    {
      double acc[kTile];
#pragma omp for schedule(static)
      for (int64_t t0 = 0; t0 < s; t0 += kTile) {
        const int64_t len = std::min(s, t0 + kTile) - t0;
        for (int j = 0; j < n; ++j) {
          const double ar = a.a(j, kv);
          for (int64_t e = 0; e < len; ++e) acc[e] = ar * static_cast<double>(r[t0 + e]);
          for (int i = 0; i < kv; ++i) {
            const double aji = a.a(j, i);
            const float* xi = x + i * s + t0;
            for (int64_t e = 0; e < len; ++e) acc[e] += aji * static_cast<double>(xi[e]);
          }
          T* o = xbar + j * s + t0;
          for (int64_t e = 0; e < len; ++e) o[e] = static_cast<T>(acc[e]);
        }
      }
      sodium_memzero(acc, sizeof acc);
    }
    item += kv;
    mix += n;
  }
  return BlindedT<T>(BlindingKey{}, std::move(out));
}

template <typename T>
void Encoder::decode(const TensorT<T>& mixed, const std::vector<Mixing>& secrets, Tensor& dst,
                     const RowEpilogue& epilogue) {
  const int64_t s = mixed.shape().item_numel();
  int64_t total_k = 0, total_mix = 0;
  for (const Mixing& a : secrets) total_k += a.k(), total_mix += a.n();
  DK_CHECK(mixed.shape()[0] == total_mix, "decode: {} mixtures for {} expected", mixed.shape()[0],
           total_mix);
  DK_CHECK(dst.shape()[0] == total_k && dst.shape().item_numel() == s,
           "decode: destination {} for {} items of {} elements", dst.shape().str(), total_k, s);
  int64_t item = 0, mix = 0;
  for (const Mixing& a : secrets) {
    const int kv = a.k(), n = a.n();
    const T* ybar = mixed.data() + mix * s;
    float* y = dst.data() + item * s;
#pragma omp parallel
    {
      double acc[kTile];
#pragma omp for schedule(static)
      for (int64_t t0 = 0; t0 < s; t0 += kTile) {
        const int64_t len = std::min(s, t0 + kTile) - t0;
        for (int i = 0; i < kv; ++i) {
          for (int64_t e = 0; e < len; ++e) acc[e] = 0.0;
          for (int j = 0; j < n; ++j) {
            const double bij = a.inv(i, j);
            const T* yj = ybar + j * s + t0;
            for (int64_t e = 0; e < len; ++e) acc[e] += bij * static_cast<double>(yj[e]);
          }
          float* o = y + i * s;
          for (int64_t e = 0; e < len; ++e) o[t0 + e] = static_cast<float>(acc[e]);
          if (epilogue) epilogue(o, t0, t0 + len);
        }
      }
      sodium_memzero(acc, sizeof acc);
    }
    item += kv;
    mix += n;
  }
}

template BlindedT<float> Encoder::encode<float>(const Tensor&, std::vector<Mixing>&);
template BlindedT<double> Encoder::encode<double>(const Tensor&, std::vector<Mixing>&);
template void Encoder::decode<float>(const TensorT<float>&, const std::vector<Mixing>&, Tensor&,
                                     const RowEpilogue&);
template void Encoder::decode<double>(const TensorT<double>&, const std::vector<Mixing>&, Tensor&,
                                      const RowEpilogue&);

}  // namespace darknight::trusted
