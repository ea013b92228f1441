#include "faults/faults.h"

#include <Eigen/Dense>
#include <bit>
#include <cmath>
#include <cstring>

#include "accel/backend.h"

namespace darknight::accel {

std::string to_string(FaultKind k) {
  switch (k) {
    case FaultKind::bitflip:
      return "bitflip";
    case FaultKind::scale:
      return "scale";
    case FaultKind::wrong_weights:
      return "wrong-weights";
    case FaultKind::drop:
      return "drop";
    case FaultKind::adversarial:
      return "adversarial";
  }
  return "?";
}

FaultSpec FaultSpec::parse(const std::string& text) {
  FaultSpec s;
  const auto c1 = text.find(':');
  const std::string kinds = "bitflip, scale, wrong-weights, drop, adversarial";
  DK_CHECK(c1 != std::string::npos, "fault spec '{}': expected KIND:RATE[:SEED], KIND one of {}",
           text, kinds);
  const std::string kind = text.substr(0, c1);
  bool known = false;
  for (FaultKind k : {FaultKind::bitflip, FaultKind::scale, FaultKind::wrong_weights,
                      FaultKind::drop, FaultKind::adversarial})
    if (to_string(k) == kind) s.kind = k, known = true;
  DK_CHECK(known, "fault spec '{}': unknown kind '{}' (one of {})", text, kind, kinds);
  const auto c2 = text.find(':', c1 + 1);
  const std::string rate =
      text.substr(c1 + 1, c2 == std::string::npos ? std::string::npos : c2 - c1 - 1);
  try {
    size_t used = 0;
    s.rate = std::stod(rate, &used);
    DK_CHECK(used == rate.size(), "trailing characters");
    if (c2 != std::string::npos) {
      const std::string seed = text.substr(c2 + 1);
      s.seed = std::stoull(seed, &used);
      DK_CHECK(used == seed.size(), "trailing characters");
    }
  } catch (const std::exception&) {
    throw Error(fmt::format("fault spec '{}': RATE must be a number and SEED an integer", text));
  }
  DK_CHECK(s.rate >= 0 && s.rate <= 1, "fault spec '{}': RATE must be in [0, 1]", text);
  return s;
}

FaultInjector::FaultInjector(FaultSpec spec, int group, bool record)
    : spec_(spec),
      group_(group),
      record_(record),
      gen_(spec.seed ? *spec.seed : std::random_device{}()) {
  DK_CHECK(group >= 2, "fault injector: {} mixtures per virtual batch", group);
}

namespace {

/// Unit vectors spanning the (numerical) null space of the rows' span: c with
/// sum_j c_j row_j = 0, the right singular vectors of [row_j]^T with singular values below
/// 3e-5 of the largest (an SVD of the rows, not an eigensolver on their Gram matrix, whose
/// squared condition number would leave the null vectors too inexact to pass f64 checks).
Eigen::MatrixXd null_space(const std::vector<double>& x, int64_t first, int rows, int64_t len) {
  const Eigen::Map<const Eigen::MatrixXd> xt(x.data() + first * len, len, rows);
  Eigen::JacobiSVD<Eigen::MatrixXd> svd(xt, Eigen::ComputeThinV);
  const auto& sv = svd.singularValues();                           // descending
  if (!(sv(0) > 0)) return Eigen::MatrixXd::Identity(rows, rows);  // all rows zero
  int rank = 0;
  while (rank < rows && sv(rank) >= 3e-5 * sv(0)) ++rank;
  return svd.matrixV().rightCols(rows - rank);
}

}  // namespace

/// The injector's reads and writes of the accelerator's buffers, as doubles.
struct FaultInjector::DeviceIo {
  Backend& be;

  std::vector<double> read(const Buffer& b) const {
    const int64_t n = b.shape().numel();
    std::vector<double> v(static_cast<size_t>(n));
    if (b.dtype() == DType::f32) {
      std::vector<float> t(static_cast<size_t>(n));
      RawTransfer::download(be, b, 0, b.bytes(), t.data());
      be.wait();
      std::copy(t.begin(), t.end(), v.begin());
    } else {
      RawTransfer::download(be, b, 0, b.bytes(), v.data());
      be.wait();
    }
    return v;
  }
  void write(const std::vector<double>& v, Buffer& dst) const {
    if (dst.dtype() == DType::f32) {
      std::vector<float> t(v.begin(), v.end());
      RawTransfer::upload(be, t.data(), dst, 0, dst.bytes());
    } else {
      RawTransfer::upload(be, v.data(), dst, 0, dst.bytes());
    }
    be.wait();
  }
  /// A new buffer shaped like `like`, holding v.
  BufferPtr put(const std::vector<double>& v, const Buffer& like) const {
    BufferPtr out = be.alloc(like.shape(), like.dtype());
    write(v, *out);
    return out;
  }
};

void FaultInjector::after(Backend& be, LinearOp op, const Buffer& a, const Weights* w,
                          const Buffer* b, const LinearRerun& rerun, Buffer& dst) {
  const int64_t seq = calls_++;
  if (spec_.kind == FaultKind::wrong_weights && !w) return;  // backward-weights uses none
  ++operations_;
  // The redundant check computes each weight gradient twice, from two delta mixings (the
  // same shapes, another delta buffer, right after the first): the adversary gives the
  // second the first's error, so that the two agree.
  const bool adversarial_bw =
      spec_.kind == FaultKind::adversarial && op == LinearOp::backward_weights;
  const bool second = adversarial_bw && pair_.open && pair_.src != b && pair_.shape == dst.shape();
  if (second) {
    pair_.open = false;
    if (pair_.error.empty()) return;
  } else {
    pair_ = {};
    if (adversarial_bw) pair_.open = true, pair_.src = b, pair_.shape = dst.shape();
    if (std::uniform_real_distribution<double>(0.0, 1.0)(gen_) >= spec_.rate) return;
  }
  be.wait();
  const DeviceIo io{be};
  const std::vector<double> before = io.read(dst);
  std::vector<double> y = before;
  if (second) {
    for (size_t e = 0; e < y.size(); ++e) y[e] += pair_.error[e];
  } else if (spec_.kind == FaultKind::wrong_weights) {
    rerun(a, wrong_weights(be, *w).get(), b, dst);
    be.wait();
    y = io.read(dst);
  } else if (spec_.kind == FaultKind::adversarial) {
    if (!adversarial(io, op, a, dst.shape(), y)) return;
    if (adversarial_bw)
      for (size_t e = 0; e < y.size(); ++e) pair_.error.push_back(y[e] - before[e]);
  } else if (!corrupt(dst.shape(), dst.dtype(), y)) {
    return;
  }
  if (spec_.kind != FaultKind::wrong_weights) io.write(y, dst);
  ++injected_;
  if (record_) records_.push_back(record(io, seq, a, w, b, rerun, dst, before));
}

int64_t FaultInjector::pick(int64_t n) {
  return std::uniform_int_distribution<int64_t>(0, n - 1)(gen_);
}

bool FaultInjector::corrupt(const Shape& shape, DType dtype, std::vector<double>& y) {
  const int64_t numel = shape.numel(), rows = shape[0], len = numel / rows;
  std::uniform_real_distribution<double> uni(0.0, 1.0);
  switch (spec_.kind) {
    case FaultKind::bitflip: {
      const int64_t e = pick(numel);
      if (dtype == DType::f32) {
        auto bits = std::bit_cast<uint32_t>(static_cast<float>(y[e]));
        bits ^= uint32_t{1} << pick(32);
        y[e] = std::bit_cast<float>(bits);
      } else {
        auto bits = std::bit_cast<uint64_t>(y[e]);
        bits ^= uint64_t{1} << pick(64);
        y[e] = std::bit_cast<double>(bits);
      }
      return true;
    }
    case FaultKind::scale: {
      const int64_t r = pick(rows);
      const double f = 1.0 + (uni(gen_) < 0.5 ? -1 : 1) * (0.1 + 0.9 * uni(gen_));
      for (int64_t e = 0; e < len; ++e) y[r * len + e] *= f;
      return true;
    }
    case FaultKind::drop: {
      if (rows < 2) return false;
      const int64_t r = pick(rows);
      const int64_t other = (r + 1 + pick(rows - 1)) % rows;
      const std::vector<double> before = y;
      std::copy(before.begin() + other * len, before.begin() + (other + 1) * len,
                y.begin() + r * len);
      return true;
    }
    default:
      DK_ASSERT(false, "fault kind {} is not a corruption of the output", to_string(spec_.kind));
  }
  return false;
}

WeightsPtr FaultInjector::wrong_weights(Backend& be, const Weights& w) {
  std::normal_distribution<double> normal(0.0, 1.0);
  Tensor wt = be.read_weights(w);
  const int64_t o = pick(wt.shape()[0]), per = wt.numel() / wt.shape()[0];
  double ss = 0;
  for (int64_t e = 0; e < wt.numel(); ++e) ss += double(wt[e]) * wt[e];
  const double rms = std::sqrt(ss / static_cast<double>(wt.numel()));
  for (int64_t e = 0; e < per; ++e) wt[o * per + e] += static_cast<float>(rms * normal(gen_));
  return be.create_weights(wt);
}

// An error the redundant check cannot see: per virtual batch, E = u e^T with u orthogonal to
// the null vectors of its input rows (found from the rows themselves). Without redundancy (no
// null vectors), the same e added to every output row.
bool FaultInjector::adversarial(const DeviceIo& io, LinearOp op, const Buffer& a,
                                const Shape& shape, std::vector<double>& y) {
  std::normal_distribution<double> normal(0.0, 1.0);
  const int64_t numel = shape.numel(), rows = shape[0], len = numel / rows;
  double ss = 0;
  for (double v : y) ss += v * v;
  std::vector<double> e(static_cast<size_t>(len));
  const double sd = 0.1 * std::sqrt(ss / static_cast<double>(numel));
  for (double& v : e) v = sd * normal(gen_);
  std::vector<double> coef(static_cast<size_t>(rows), 1.0);
  if (op != LinearOp::backward_weights && a.shape()[0] == rows) {
    const std::vector<double> x = io.read(a);
    // A virtual batch whose inputs leave room: all-zero inputs (every vector null) admit
    // no hidden error, so the adversary tries the next one, and abstains if none does.
    const int64_t groups = (rows + group_ - 1) / group_, g0 = pick(groups);
    bool placed = false;
    for (int64_t t = 0; t < groups && !placed; ++t) {
      const int64_t first = (g0 + t) % groups * group_;
      const int n = static_cast<int>(std::min<int64_t>(group_, rows - first));
      const Eigen::MatrixXd c = null_space(x, first, n, a.shape().numel() / rows);
      if (c.cols() == n) continue;
      placed = true;
      if (c.cols() == 0) break;  // no redundancy: the consistent perturbation
      Eigen::VectorXd u(n);
      for (int j = 0; j < n; ++j) u(j) = normal(gen_);
      u -= c * (c.transpose() * u);
      u /= u.norm();
      std::fill(coef.begin(), coef.end(), 0.0);
      for (int j = 0; j < n; ++j) coef[static_cast<size_t>(first + j)] = u(j);
    }
    if (!placed) return false;
  }
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k < len; ++k) y[r * len + k] += coef[r] * e[k];
  return true;
}

// The fault-free computation's rounding bound: sum_k |w_k x_k| and the term counts n, from
// the operation rerun on the operands' magnitudes and on ones.
FaultRecord FaultInjector::record(const DeviceIo& io, int64_t seq, const Buffer& a,
                                  const Weights* w, const Buffer* b, const LinearRerun& rerun,
                                  const Buffer& dst, const std::vector<double>& before) const {
  const std::vector<double> y = io.read(dst);  // what reached the buffer (rounded to its type)
  auto operand = [&](const Buffer& x, bool ones) {
    std::vector<double> v = io.read(x);
    for (double& e : v) e = ones ? 1.0 : std::abs(e);
    return io.put(v, x);
  };
  auto magnitudes = [&](bool ones) {
    const BufferPtr a2 = operand(a, ones), b2 = b ? operand(*b, ones) : nullptr;
    WeightsPtr w2;
    if (w) {
      Tensor t = io.be.read_weights(*w);
      for (int64_t e = 0; e < t.numel(); ++e) t[e] = ones ? 1.0f : std::abs(t[e]);
      w2 = io.be.create_weights(t);
    }
    const BufferPtr out = io.be.alloc(dst.shape(), dst.dtype());
    rerun(*a2, w2.get(), b2.get(), *out);
    io.be.wait();
    return io.read(*out);
  };
  const std::vector<double> sum_abs = magnitudes(false), terms = magnitudes(true);
  const double u = dst.dtype() == DType::f32 ? 0x1p-24 : 0x1p-53;
  FaultRecord rec{seq, spec_.kind, Tensor64(dst.shape()), Tensor64(dst.shape()),
                  Tensor64(dst.shape())};
  for (size_t e = 0; e < y.size(); ++e) {
    const double m = terms[e] + 1;
    rec.clean[e] = before[e];
    rec.error[e] = y[e] - before[e];
    rec.bound[e] = m * u / (1 - m * u) * sum_abs[e];
  }
  return rec;
}

}  // namespace darknight::accel
