// FastICA (Hyvarinen and Oja 2000), the source-separation attack of `darknight audit`.
#pragma once

#include <Eigen/Dense>
#include <cstdint>

namespace darknight::audit {

/// scikit-learn's FastICA defaults: centring, PCA whitening to `n` components, the logcosh
/// contrast (g = tanh), symmetric (parallel) decorrelation, tolerance 1e-4, at most 200
/// iterations, a Gaussian initial matrix from `seed`.
struct IcaOptions {
  int max_iter = 200;
  double tol = 1e-4;
  uint64_t seed = 0;
};

/// Fits FastICA to `x` (one row per mixture, one column per sample) and returns the
/// unmixing matrix W (n x x.rows()) such that W (x - row means) are the `n` estimated
/// sources (unit variance on `x`, population variance: divided by the number of samples).
/// Whitening is PCA: the top `n` eigenvectors of the covariance of the centred rows.
/// `n` may be less than the rank of `x`; directions of variance below 1e-12 of the largest
/// are never whitened, so when fewer than `n` directions remain, W has only that many rows
/// (none when `x` has no variance at all). Non-convergence within `max_iter` is not an
/// error: the last iterate is returned. Deterministic for a given `seed`. Throws
/// darknight::Error when `x` has no rows, fewer than 2 columns, or a value that
/// is not finite, or when n < 1.
Eigen::MatrixXd fastica_unmixing(const Eigen::MatrixXd& x, int n, const IcaOptions& o = {});

}  // namespace darknight::audit
