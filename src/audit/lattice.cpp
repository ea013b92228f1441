#include "audit/lattice.h"

#include <fplll.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>
#include <utility>
#include <vector>

namespace darknight::audit {
namespace {

using I128 = __int128;

int64_t mulmod(int64_t a, int64_t b, int64_t p) {
  return static_cast<int64_t>(I128(a) * b % p);
}

/// The inverse of a (0 < a < p) mod p by the extended Euclidean algorithm; 0 when
/// gcd(a, p) != 1 (p not prime).
int64_t invmod(int64_t a, int64_t p) {
  int64_t r0 = p, r1 = a, t0 = 0, t1 = 1;
  while (r1 != 0) {
    const int64_t q = r0 / r1;
    r0 = std::exchange(r1, r0 - q * r1);
    t0 = std::exchange(t1, t0 - q * t1);
  }
  if (r0 != 1) return 0;
  return t0 < 0 ? t0 + p : t0;
}

/// A row-major m x n matrix over F_p, entries in [0, p).
struct FieldRows {
  int m = 0, n = 0;
  std::vector<int64_t> v;
  int64_t* row(int i) { return v.data() + static_cast<size_t>(i) * n; }
};

/// Checks that every value is an integer in (-p, p) and reduces it into [0, p).
Result<FieldRows> to_field(const Eigen::MatrixXd& rows, int64_t p) {
  FieldRows f{static_cast<int>(rows.rows()), static_cast<int>(rows.cols()), {}};
  f.v.resize(static_cast<size_t>(rows.size()));
  const double bound = static_cast<double>(p);
  for (int i = 0; i < f.m; ++i) {
    for (int j = 0; j < f.n; ++j) {
      const double x = rows(i, j);
      if (!std::isfinite(x) || x != std::round(x)) {
        return Status::error(fmt::format(
            "lattice: value {} at ({}, {}) is not an integer (field elements expected)", x, i, j));
      }
      if (!(std::abs(x) < bound)) {
        return Status::error(
            fmt::format("lattice: value {} at ({}, {}) is outside (-p, p), p = {}", x, i, j, p));
      }
      const auto k = static_cast<int64_t>(x);
      f.row(i)[j] = k < 0 ? k + p : k;
    }
  }
  return f;
}

/// Gauss-Jordan elimination mod p with pivots chosen only among the window's columns:
/// afterwards the first (returned) r' rows of `f` have the identity at the pivot columns and
/// span the same F_p space as the input rows on the window; the other rows are zero there.
/// Returns the pivot columns' window indices.
std::vector<int> eliminate_on_window(FieldRows& f, const std::vector<int>& window, int64_t p) {
  std::vector<int> pivots;
  for (int w = 0; w < static_cast<int>(window.size()) && static_cast<int>(pivots.size()) < f.m;
       ++w) {
    const int col = window[w];
    const int r = static_cast<int>(pivots.size());
    int sel = r;
    while (sel < f.m && f.row(sel)[col] == 0) ++sel;
    if (sel == f.m) continue;
    std::swap_ranges(f.row(sel), f.row(sel) + f.n, f.row(r));
    const int64_t inv = invmod(f.row(r)[col], p);
    DK_CHECK(inv != 0, "lattice: p = {} is not prime", p);
    for (int j = 0; j < f.n; ++j) f.row(r)[j] = mulmod(f.row(r)[j], inv, p);
    for (int i = 0; i < f.m; ++i) {
      const int64_t c = f.row(i)[col];
      if (i == r || c == 0) continue;
      for (int j = 0; j < f.n; ++j) {
        const int64_t d = f.row(i)[j] - mulmod(c, f.row(r)[j], p);
        f.row(i)[j] = d < 0 ? d + p : d;
      }
    }
    pivots.push_back(w);
  }
  return pivots;
}

/// The lattice {c^T E_window : c integer} + p Z^window, one basis vector per row: the
/// eliminated rows on the window, and p e_j for each non-pivot window column j.
fplll::ZZ_mat<mpz_t> window_basis(FieldRows& e, const std::vector<int>& window,
                                  const std::vector<int>& pivots, int64_t p) {
  const int n = static_cast<int>(window.size());
  fplll::ZZ_mat<mpz_t> b(n, n);
  const int rank = static_cast<int>(pivots.size());
  for (int i = 0; i < rank; ++i) {
    for (int w = 0; w < n; ++w) b(i, w) = static_cast<long>(e.row(i)[window[w]]);
  }
  std::vector<bool> is_pivot(n, false);
  for (int w : pivots) is_pivot[w] = true;
  int next = rank;
  for (int w = 0; w < n; ++w) {
    if (!is_pivot[w]) b(next++, w) = static_cast<long>(p);
  }
  return b;
}

/// The reduced basis' row indices, shortest (Euclidean) first.
std::vector<int> shortest_first(const fplll::ZZ_mat<mpz_t>& b) {
  std::vector<double> norm2(b.get_rows(), 0.0);
  for (int i = 0; i < b.get_rows(); ++i) {
    for (int j = 0; j < b.get_cols(); ++j) {
      const double x = b(i, j).get_d();
      norm2[i] += x * x;
    }
  }
  std::vector<int> order(b.get_rows());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int c) { return norm2[a] < norm2[c]; });
  return order;
}

}  // namespace

Result<Eigen::MatrixXd> lattice_short_vectors(const Eigen::MatrixXd& rows,
                                              const LatticeOptions& o) {
  DK_CHECK(o.p >= 3 && o.p < (int64_t{1} << 62), "lattice: p = {} must be in [3, 2^62)", o.p);
  DK_CHECK(o.window >= 1, "lattice: window = {} must be at least 1", o.window);
  DK_CHECK(o.bkz_block >= 0, "lattice: bkz_block = {} must be >= 0", o.bkz_block);
  const auto m = static_cast<int>(rows.rows());
  const auto n = static_cast<int>(rows.cols());
  if (m == 0) return Status::error("lattice: no rows");
  if (o.window > n) {
    return Status::error(
        fmt::format("lattice: window {} is wider than the rows ({} columns)", o.window, n));
  }
  if (o.window < m) {
    return Status::error(
        fmt::format("lattice: window {} is narrower than the number of rows {}", o.window, m));
  }
  auto field = to_field(rows, o.p);
  if (!field.ok()) return field.status();
  FieldRows& e = field.value();

  std::vector<int> window(o.window);  // evenly spaced over the columns
  for (int w = 0; w < o.window; ++w) window[w] = static_cast<int>(int64_t{w} * n / o.window);
  const std::vector<int> pivots = eliminate_on_window(e, window, o.p);

  fplll::ZZ_mat<mpz_t> b = window_basis(e, window, pivots, o.p);
  int status = fplll::lll_reduction(b);
  if (status == fplll::RED_SUCCESS && o.bkz_block >= 2) {
    status = fplll::bkz_reduction(b, std::min(o.bkz_block, o.window));
  }
  DK_ASSERT(status == fplll::RED_SUCCESS, "fplll reduction failed: {}",
            fplll::get_red_status_str(status));

  // A lattice vector v is c^T E_window + p z with c = v at the pivots (E has the identity
  // there, the p e_j none), so c^T E mod p extends it to every column.
  const int rank = static_cast<int>(pivots.size());
  const std::vector<int> order = shortest_first(b);
  Eigen::MatrixXd out = Eigen::MatrixXd::Zero(m, n);
  std::vector<int64_t> acc(n);
  // Reduced vectors that are multiples of p at every pivot (c = 0 mod p) are 0 on the whole
  // rows: skipped (under one-time pads the shortest vectors are often of that kind).
  int k = 0;
  for (size_t v = 0; v < order.size() && k < std::min(m, rank); ++v) {
    std::fill(acc.begin(), acc.end(), 0);
    bool any = false;
    for (int i = 0; i < rank; ++i) {
      const auto c = static_cast<int64_t>(mpz_fdiv_ui(b(order[v], pivots[i]).get_data(), o.p));
      if (c == 0) continue;
      any = true;
      for (int j = 0; j < n; ++j) acc[j] = (acc[j] + mulmod(c, e.row(i)[j], o.p)) % o.p;
    }
    if (!any) continue;
    for (int j = 0; j < n; ++j) {
      out(k, j) = static_cast<double>(acc[j] > o.p / 2 ? acc[j] - o.p : acc[j]);
    }
    ++k;
  }
  return out;
}

}  // namespace darknight::audit
