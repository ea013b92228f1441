// Labels from the last layer's delta mixtures (softmax - onehot), an attack of `darknight
// audit`.
#pragma once

#include <Eigen/Dense>
#include <utility>
#include <vector>

namespace darknight::audit {

/// For each class c, how far the row span of `deltas` (rows: noise-free mixtures of K
/// last-layer deltas `s * (softmax - onehot(label))`, any scale s > 0; columns: classes) is
/// from holding a vector of that form with its label at c: the relative residual of a
/// non-negative least-squares fit (entry c fixed at -1, the others >= 0) projected off the
/// span. Classes whose label some delta carries fit exactly (residual at rounding level).
/// Returns (class, residual) for every class, smallest residual first.
///
/// The span is that of the singular vectors above 1e-6 of the largest singular value (float32
/// rounding of the rows stays far below). The residual is relative to |P e_c| (P: the
/// projection off the span), the residual of w = 0, so it lies in [0, 1]; when |P e_c| is
/// under 1e-6, e_c is in the span, -e_c itself has the form, and the residual is 0. Any span
/// vector with a delta's sign pattern fits exactly, so a mixture of several deltas can make
/// a class that no example has fit too (an ambiguity of the data; never with one delta).
/// Cost: one SVD, then per class a Lawson-Hanson NNLS in rank-K form (O(C K^2) a step):
/// C = 1000, K = 4 takes about 0.2 s. Throws darknight::Error on a non-finite entry.
std::vector<std::pair<int, double>> rank_label_classes(const Eigen::MatrixXd& deltas);

/// The residual below which a class counts as fitting (the batch's label set): more than a
/// decade below the smallest residual of a class no delta carries in the planted tests, and
/// far above float32 rounding (tests/audit/labels_test.cpp).
inline constexpr double kLabelFit = 1e-4;

/// Non-negative least squares (Lawson and Hanson): argmin ||a w - b|| subject to w >= 0.
/// Throws darknight::Error when a.rows() != b.size().
Eigen::VectorXd nnls(const Eigen::MatrixXd& a, const Eigen::VectorXd& b);

}  // namespace darknight::audit
