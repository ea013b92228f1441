#include "audit/fastica.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <numbers>
#include <random>

#include "protocol/error.h"

namespace darknight::audit {
namespace {

using Eigen::MatrixXd;
using Eigen::VectorXd;

constexpr int kSamples = 5000;

MatrixXd gaussian(Eigen::Index rows, Eigen::Index cols, std::mt19937_64& rng) {
  std::normal_distribution<double> normal;
  MatrixXd m(rows, cols);
  for (Eigen::Index i = 0; i < rows; ++i) {
    for (Eigen::Index j = 0; j < cols; ++j) m(i, j) = normal(rng);
  }
  return m;
}

/// A Haar-random orthogonal matrix (QR of a Gaussian matrix, signs fixed by R's diagonal).
MatrixXd random_rotation(Eigen::Index d, std::mt19937_64& rng) {
  const Eigen::HouseholderQR<MatrixXd> qr(gaussian(d, d, rng));
  const MatrixXd q = qr.householderQ();
  const VectorXd sign = qr.matrixQR().diagonal().array().sign();
  return q * sign.asDiagonal();
}

/// A well-conditioned mixing matrix: U diag(1, 1.5, ..) V^T (condition number (d + 1) / 2).
MatrixXd mixing(Eigen::Index d, std::mt19937_64& rng) {
  const VectorXd scales = VectorXd::LinSpaced(d, 1.0, 1.0 + 0.5 * static_cast<double>(d - 1));
  return random_rotation(d, rng) * scales.asDiagonal() * random_rotation(d, rng);
}

/// Four independent non-Gaussian sources (uniform, Laplace, random signs, a sine) and, when
/// `with_gaussian`, a fifth Gaussian one; one row each.
MatrixXd non_gaussian_sources(bool with_gaussian, std::mt19937_64& rng) {
  MatrixXd s(with_gaussian ? 5 : 4, kSamples);
  std::uniform_real_distribution<double> uniform(-1.0, 1.0);
  std::exponential_distribution<double> exponential(1.0);
  std::bernoulli_distribution coin(0.5);
  std::normal_distribution<double> normal;
  for (int j = 0; j < kSamples; ++j) {
    s(0, j) = uniform(rng);
    s(1, j) = coin(rng) ? exponential(rng) : -exponential(rng);  // Laplace
    s(2, j) = coin(rng) ? 1.0 : -1.0;
    s(3, j) = std::sin(2.0 * std::numbers::pi * j / 97.0 + 0.3);
    if (with_gaussian) s(4, j) = normal(rng);
  }
  return s;
}

MatrixXd centred(const MatrixXd& x) {
  return x.colwise() - x.rowwise().mean();
}

/// For each row of `sources`, its best |Pearson correlation| with any row of `recovered`.
VectorXd best_abs_corr(const MatrixXd& sources, const MatrixXd& recovered) {
  const auto unit_rows = [](const MatrixXd& y) -> MatrixXd {
    const MatrixXd c = centred(y);
    const VectorXd inverse_norms = c.rowwise().norm().cwiseInverse();
    return inverse_norms.asDiagonal() * c;
  };
  return (unit_rows(sources) * unit_rows(recovered).transpose()).cwiseAbs().rowwise().maxCoeff();
}

/// Population variance of each row.
VectorXd row_variances(const MatrixXd& y) {
  return centred(y).rowwise().squaredNorm() / static_cast<double>(y.cols());
}

TEST(FastIca, RecoversPlantedNonGaussianSources) {
  std::mt19937_64 rng(17);
  const MatrixXd s = non_gaussian_sources(/*with_gaussian=*/true, rng);
  const MatrixXd x = mixing(5, rng) * s + VectorXd::LinSpaced(5, -3.0, 5.0).replicate(1, kSamples);
  const MatrixXd w = fastica_unmixing(x, 5);
  ASSERT_EQ(w.rows(), 5);
  ASSERT_EQ(w.cols(), 5);
  const MatrixXd y = w * centred(x);
  for (Eigen::Index k = 0; k < y.rows(); ++k) EXPECT_NEAR(row_variances(y)(k), 1.0, 1e-9);
  const VectorXd best = best_abs_corr(s, y);
  std::printf("planted: best |corr| per source %.4f %.4f %.4f %.4f (Gaussian %.4f)\n", best(0),
              best(1), best(2), best(3), best(4));
  for (int i = 0; i < 4; ++i) EXPECT_GE(best(i), 0.98) << "non-Gaussian source " << i;
  // Deterministic for a seed.
  EXPECT_EQ(fastica_unmixing(x, 5), w);
}

// Control: Gaussian sources have no preferred axes, so whatever rotation FastICA settles on
// is unrelated to the sources and its match can be no better than a random rotation's. The
// fair bound is therefore the random rotation's own score, computed here by the same code:
// the mean best |corr| of Haar-random rotations of the whitened sources (about 0.74 in five
// dimensions, far below the planted test's 0.98). Averaged over several draws of the data
// (each ICA run on its own is one noisy draw), FastICA's score must stay within 0.1 of it,
// and no source may be matched at 0.98 (a random unit vector in R^5 reaches that with
// probability about 0.003 per source).
TEST(FastIca, GaussianControlIsAtChance) {
  constexpr int kTrials = 6;
  constexpr int kRotations = 50;
  double ica = 0.0;
  double chance = 0.0;
  int matched = 0;
  for (int t = 0; t < kTrials; ++t) {
    std::mt19937_64 rng(100 + t);
    const MatrixXd s = gaussian(5, kSamples, rng);
    const MatrixXd x = mixing(5, rng) * s;
    const VectorXd best =
        best_abs_corr(s, fastica_unmixing(x, 5, {.seed = uint64_t(t)}) * centred(x));
    ica += best.mean() / kTrials;
    matched += static_cast<int>((best.array() >= 0.98).count());
    const MatrixXd z = (centred(s).array().colwise() / row_variances(s).array().sqrt()).matrix();
    for (int r = 0; r < kRotations; ++r) {
      chance += best_abs_corr(s, random_rotation(5, rng) * z).mean() / (kTrials * kRotations);
    }
  }
  std::printf("gaussian control: ica mean best |corr| %.3f, random rotation %.3f\n", ica, chance);
  EXPECT_LT(chance, 0.85);
  EXPECT_LT(ica, chance + 0.1);
  EXPECT_EQ(matched, 0);
}

TEST(FastIca, RankDeficientInputWhitensOnlyItsRank) {
  std::mt19937_64 rng(5);
  const MatrixXd s = non_gaussian_sources(/*with_gaussian=*/false, rng);  // 4 sources
  const MatrixXd x = gaussian(5, 4, rng) * s;                             // rank 4 in R^5
  const MatrixXd w = fastica_unmixing(x, 4);
  ASSERT_EQ(w.rows(), 4);
  ASSERT_EQ(w.cols(), 5);
  ASSERT_TRUE(w.allFinite());
  const MatrixXd y = w * centred(x);
  for (Eigen::Index k = 0; k < 4; ++k) EXPECT_NEAR(row_variances(y)(k), 1.0, 1e-6);
  EXPECT_GE(best_abs_corr(s, y).minCoeff(), 0.98);
  // Asking for more components than the rank gives only as many as the rank.
  const MatrixXd w5 = fastica_unmixing(x, 5);
  EXPECT_EQ(w5.rows(), 4);
  EXPECT_TRUE(w5.allFinite());
  // Fewer components than the rank: the top-variance directions, still unit variance.
  const MatrixXd w2 = fastica_unmixing(x, 2);
  ASSERT_EQ(w2.rows(), 2);
  for (Eigen::Index k = 0; k < 2; ++k) EXPECT_NEAR(row_variances(w2 * centred(x))(k), 1.0, 1e-6);
}

TEST(FastIca, RejectsBadArguments) {
  std::mt19937_64 rng(1);
  const MatrixXd x = gaussian(3, 100, rng);
  EXPECT_THROW(fastica_unmixing(x, 0), Error);
  EXPECT_THROW(fastica_unmixing(x, -1), Error);
  EXPECT_THROW(fastica_unmixing(gaussian(3, 1, rng), 2), Error);
  EXPECT_THROW(fastica_unmixing(MatrixXd(0, 10), 1), Error);
  MatrixXd with_nan = x;
  with_nan(1, 7) = std::nan("");
  EXPECT_THROW(fastica_unmixing(with_nan, 2), Error);
  // Rows without variance have nothing to whiten: no components.
  EXPECT_EQ(fastica_unmixing(MatrixXd::Ones(3, 10), 2).rows(), 0);
}

}  // namespace
}  // namespace darknight::audit
