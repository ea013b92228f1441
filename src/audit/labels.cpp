#include "audit/labels.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "protocol/error.h"

namespace darknight::audit {
namespace {

using Eigen::Index;
using Eigen::MatrixXd;
using Eigen::VectorXd;

/// Singular values below this fraction of the largest are rounding, not span. Measured on
/// 10^4 float32-rounded mixtures per K of the test's planted deltas (K + 1 Gaussian
/// mixtures of K deltas, C = 10): the rounding direction stays under 3.5e-8 of the largest,
/// the K-th singular value above 1.0e-4 (K = 4) and 1.9e-5 (K = 8). 1e-6 lies between, with
/// room for the longer float32 sums of real captures.
constexpr double kRankTol = 1e-6;

/// Lawson and Hanson's active-set iteration (Solving Least Squares Problems, 1974, ch. 23)
/// for min ||a w - b|| over w >= 0, given two operations of the problem: `gradient(w)` =
/// a^T (b - a w), and `solve(passive)` = an unconstrained least-squares solution on the
/// passive columns (zero elsewhere). Stops when no inactive entry has a gradient above
/// `tol`, or when the least-squares step cannot raise the entry it adds (rounding).
template <typename Gradient, typename Solve>
VectorXd lawson_hanson(Index n, double tol, const Gradient& gradient, const Solve& solve) {
  VectorXd w = VectorXd::Zero(n);
  std::vector<bool> passive(n, false);
  VectorXd g = gradient(w);
  for (Index iter = 0; iter < 3 * n; ++iter) {
    Index add = -1;
    double best = tol;
    for (Index j = 0; j < n; ++j) {
      if (!passive[j] && g(j) > best) {
        best = g(j);
        add = j;
      }
    }
    if (add < 0) break;
    passive[add] = true;
    VectorXd z = solve(passive);
    if (z(add) <= 0) break;  // the gradient was rounding: w is as good as it gets
    // Step from w towards z until a passive weight reaches zero; drop it; solve again.
    for (;;) {
      double alpha = std::numeric_limits<double>::infinity();
      Index hit = -1;
      for (Index j = 0; j < n; ++j) {
        if (!passive[j] || z(j) > 0) continue;
        const double t = w(j) > z(j) ? w(j) / (w(j) - z(j)) : 0.0;
        if (t < alpha) {
          alpha = t;
          hit = j;
        }
      }
      if (hit < 0) break;
      w += alpha * (z - w);
      w(hit) = 0;
      for (Index j = 0; j < n; ++j) {
        if (passive[j] && w(j) <= 0) {
          passive[j] = false;
          w(j) = 0;
        }
      }
      z = solve(passive);
    }
    w = z;
    g = gradient(w);
  }
  return w;
}

std::vector<Index> indices_of(const std::vector<bool>& mask) {
  std::vector<Index> out;
  for (Index j = 0; j < static_cast<Index>(mask.size()); ++j) {
    if (mask[j]) out.push_back(j);
  }
  return out;
}

/// Orthonormal basis (columns) of the row span of `m`, singular values below kRankTol of the
/// largest dropped.
MatrixXd row_span(const MatrixXd& m) {
  if (m.rows() == 0 || m.cols() == 0) return MatrixXd(m.cols(), 0);
  Eigen::JacobiSVD<MatrixXd> svd(m, Eigen::ComputeThinV);
  const VectorXd& s = svd.singularValues();
  Index rank = 0;
  while (rank < s.size() && s(rank) > kRankTol * s(0)) ++rank;
  return svd.matrixV().leftCols(rank);
}

/// The relative residual of class c: min over w >= 0 of |P (-e_c + sum_{j != c} w_j e_j)|
/// over |P e_c|, P = I - Q Q^T. With Qc = Q less row c and q = row c, the problem's normal
/// matrix is a^T a = I - Qc Qc^T and a^T b = -Qc q^T, so a passive solve is a rank-r
/// (Woodbury) correction: O(|passive| r^2) instead of a QR of a C x |passive| matrix.
double class_residual(const MatrixXd& q, Index c) {
  const Index n_classes = q.rows();
  VectorXd pe = -q * q.row(c).transpose();  // P e_c
  pe(c) += 1;
  const double base = pe.norm();
  if (base <= kRankTol) return 0;  // e_c is in the span: -e_c itself fits (w = 0)
  MatrixXd qc(n_classes - 1, q.cols());
  qc << q.topRows(c), q.bottomRows(n_classes - 1 - c);
  const VectorXd h = -qc * q.row(c).transpose();
  const auto gradient = [&](const VectorXd& w) -> VectorXd {
    return h - w + qc * (qc.transpose() * w);
  };
  const auto solve = [&](const std::vector<bool>& passive) {
    const std::vector<Index> p = indices_of(passive);
    const MatrixXd u = qc(p, Eigen::all);
    const VectorXd hp = h(p);
    // (I - U U^T)^{-1} = I + U V diag(1 / (1 - l)) V^T U^T with U^T U = V diag(l) V^T;
    // l = 1 (a vector of the span supported on the passive set: I - U U^T is singular) is
    // dropped, which still solves the normal equations (consistent: h_P is orthogonal to
    // that vector).
    Eigen::SelfAdjointEigenSolver<MatrixXd> eig(u.transpose() * u);
    VectorXd d = eig.eigenvalues();
    for (double& l : d) l = 1 - l > 1e-10 ? 1 / (1 - l) : 0.0;
    VectorXd z = VectorXd::Zero(passive.size());
    z(p) = hp + u * (eig.eigenvectors() *
                     d.cwiseProduct(eig.eigenvectors().transpose() * (u.transpose() * hp)));
    return z;
  };
  const double tol = 10 * std::numeric_limits<double>::epsilon() * n_classes * base;
  const VectorXd w = lawson_hanson(n_classes - 1, tol, gradient, solve);
  VectorXd x(n_classes);
  x << w.head(c), -1.0, w.tail(n_classes - 1 - c);
  return (x - q * (q.transpose() * x)).norm() / base;
}

}  // namespace

Eigen::VectorXd nnls(const Eigen::MatrixXd& a, const Eigen::VectorXd& b) {
  DK_CHECK(a.rows() == b.size(), "nnls: a has {} rows, b has {} entries", a.rows(), b.size());
  const auto gradient = [&](const VectorXd& w) -> VectorXd { return a.transpose() * (b - a * w); };
  const auto solve = [&](const std::vector<bool>& passive) {
    const std::vector<Index> p = indices_of(passive);
    VectorXd z = VectorXd::Zero(a.cols());
    if (!p.empty()) z(p) = MatrixXd(a(Eigen::all, p)).colPivHouseholderQr().solve(b);
    return z;
  };
  const double col = a.cols() > 0 ? a.colwise().norm().maxCoeff() : 0.0;
  const double tol = 10 * std::numeric_limits<double>::epsilon() *
                     static_cast<double>(std::max(a.rows(), a.cols())) * col * b.norm();
  return lawson_hanson(a.cols(), tol, gradient, solve);
}

std::vector<std::pair<int, double>> rank_label_classes(const Eigen::MatrixXd& deltas) {
  DK_CHECK(deltas.allFinite(), "rank_label_classes: the deltas hold a non-finite value");
  const MatrixXd q = row_span(deltas);
  std::vector<std::pair<int, double>> out(deltas.cols());
#pragma omp parallel for schedule(dynamic) if (deltas.cols() >= 64)
  for (Index c = 0; c < deltas.cols(); ++c) out[c] = {static_cast<int>(c), class_residual(q, c)};
  std::stable_sort(out.begin(), out.end(),
                   [](const auto& x, const auto& y) { return x.second < y.second; });
  return out;
}

}  // namespace darknight::audit
