#include "trusted/integrity.h"

#include <sodium.h>

#include <fmt/format.h>

#include <cmath>

namespace darknight::trusted {

void IntegrityCounters::note_failure(const std::string& layer, const std::string& op,
                                     const std::string& check) {
  failed += 1;
  if (failed <= 3)
    fmt::print(stderr,
               "darknight: integrity: layer '{}': the accelerator's {} failed the {} check; "
               "not used, recomputing{}\n",
               layer, op, check,
               failed == 3 ? " (further failures are counted in the report)" : "");
}

Tensor64 apply_decode(const CoefficientList& d, const Tensor64& e, bool absolute) {
  int64_t mixtures = 0, items = 0;
  for (const auto& c : d) mixtures += c->cols(), items += c->rows();
  DK_CHECK(e.shape()[0] == mixtures, "decode: {} rows for {} mixtures", e.shape()[0], mixtures);
  const int64_t len = e.shape().item_numel();
  Tensor64 out(e.shape().with_batch(items));
  int64_t first = 0, item = 0;
  for (const auto& c : d) {
    for (int i = 0; i < c->rows(); ++i, ++item)
      for (int j = 0; j < c->cols(); ++j) {
        const double f = absolute ? std::abs((*c)(i, j)) : (*c)(i, j);
        for (int64_t q = 0; q < len; ++q) out[item * len + q] += f * e[(first + j) * len + q];
      }
    first += c->cols();
  }
  return out;
}

namespace {

constexpr double kLambda = 10;  // the rounding bounds' lambda (integrity.h)

double unit_roundoff(DType t) {
  return t == DType::f32 ? std::ldexp(1.0, -24) : std::ldexp(1.0, -53);
}

/// The redundant checks' tolerance factor (times the weights' L1 norm): the accelerator's
/// rounding bound `bound` plus that of the trusted side's own f64 sum of m terms, times
/// f = sum_j |c_j| max|input_j|; plus m^2 2^-53 cond max_j max|input_j| for the null
/// vector c itself, null only to double precision relative to a mixing of condition
/// number `cond` (it matters with f64 mixtures, when the largest input, the noise, has a
/// small c_j).
double redundant_factor(double bound, const std::vector<double>& c, const Tensor64& max_in,
                        int64_t first, double cond) {
  const double m = double(c.size()), eps = std::ldexp(1.0, -53);
  double f = 0, top = 0;
  for (size_t r = 0; r < c.size(); ++r) {
    f += std::abs(c[r]) * max_in[first + int64_t(r)];
    top = std::max(top, max_in[first + int64_t(r)]);
  }
  return (bound + m * eps) * f + m * m * eps * cond * top;
}

/// The redundant checks' test: whether sum_j c_j y_j is within factor * l1[channel] for
/// every element of the rows y ([n, len], elements e0.. of items whose channels have p
/// elements each).
template <typename T>
bool null_sums_pass(const std::vector<double>& c, const T* y, int64_t len, int64_t e0, int64_t p,
                    const std::vector<double>& l1, double factor) {
  const int64_t n = static_cast<int64_t>(c.size());
  bool ok = true;
#pragma omp parallel for schedule(static) reduction(&& : ok)
  for (int64_t i = 0; i < len; ++i) {
    double res = 0;
    for (int64_t r = 0; r < n; ++r) res += c[static_cast<size_t>(r)] * double(y[r * len + i]);
    ok = ok && std::abs(res) <= factor * l1[static_cast<size_t>((e0 + i) / p)];
  }
  return ok;  // false for NaN
}

/// Whether an error `e` on the outputs (items of `item` elements) moves sum_j c_j y_j over
/// mixtures first.. beyond the tolerance of null_sums_pass.
bool null_sums_moved(const std::vector<double>& c, const Tensor64& e, int64_t first, int64_t item,
                     int64_t p, const std::vector<double>& l1, double factor) {
  for (int64_t i = 0; i < item; ++i) {
    double eff = 0;
    for (size_t r = 0; r < c.size(); ++r) eff += c[r] * e[(first + int64_t(r)) * item + i];
    if (!(std::abs(eff) <= factor * l1[static_cast<size_t>(i / p)])) return true;
  }
  return false;
}

/// Advances (c, h, w) to the next element of a [C, H, W] item.
inline void next(int64_t& c, int64_t& h, int64_t& w, int64_t hs, int64_t ws) {
  if (++w == ws) {
    w = 0;
    if (++h == hs) h = 0, ++c;
  }
}

}  // namespace

std::string to_string(IntegrityMode m) {
  switch (m) {
    case IntegrityMode::none:
      return "none";
    case IntegrityMode::redundant:
      return "redundant";
    case IntegrityMode::freivalds:
      return "freivalds";
  }
  return "?";
}

IntegrityMode parse_integrity_mode(const std::string& s) {
  for (IntegrityMode m : {IntegrityMode::none, IntegrityMode::redundant, IntegrityMode::freivalds})
    if (to_string(m) == s) return m;
  throw Error(fmt::format("unknown integrity mode '{}' (none, redundant, freivalds)", s));
}

Geometry Geometry::of(const nn::Node& node, const Shape& in_item) {
  if (node.op == nn::Op::conv) return Geometry{ConvGeometry(node.conv, in_item)};
  Geometry g;
  g.c = in_item.numel();
  g.o = node.dense.out_features;
  return g;
}

WeightDigest::WeightDigest(const Tensor& w, int64_t groups, IntegrityMode mode, Csprng& rng) {
  crypto_generichash(hash_.data(), hash_.size(), reinterpret_cast<const unsigned char*>(w.data()),
                     w.bytes(), nullptr, 0);
  const int64_t o = w.shape()[0], per = w.numel() / o;  // per = I/g * KH * KW
  {
    const int64_t kk = w.shape().rank() == 4 ? w.shape()[2] * w.shape()[3] : 1, cg = per / kk;
    row_l1_.assign(static_cast<size_t>(o), 0.0);
    col_l1_.assign(static_cast<size_t>(cg * groups), 0.0);
    for (int64_t r = 0; r < o; ++r)
      for (int64_t e = 0; e < per; ++e) {
        const double a = std::abs(double(w[r * per + e]));
        row_l1_[static_cast<size_t>(r)] += a;
        col_l1_[static_cast<size_t>(r / (o / groups) * cg + e / kk)] += a;
      }
  }
  if (mode == IntegrityMode::freivalds) {
    s_.resize(static_cast<size_t>(kProjections * o));
    rng.gaussian(s_.data(), kProjections * o, 0.0, 1.0);
    const int64_t og = o / groups, cols = per * groups;
    u_.assign(static_cast<size_t>(kProjections * cols), 0.0);
    ws2_.assign(static_cast<size_t>(kProjections * groups), 0.0);
    for (int pr = 0; pr < kProjections; ++pr)
      for (int64_t r = 0; r < o; ++r) {
        const double sr = s_[pr * o + r];
        const int64_t base = pr * cols + (r / og) * per;  // the group's input channels
        double w2 = 0;
        for (int64_t e = 0; e < per; ++e) {
          u_[base + e] += sr * w[r * per + e];
          w2 += double(w[r * per + e]) * w[r * per + e];
        }
        ws2_[pr * groups + r / og] += sr * sr * w2;
      }
  }
}

WeightDigest::~WeightDigest() {
  for (auto* v : {&s_, &u_, &ws2_})
    if (!v->empty()) sodium_memzero(v->data(), v->size() * sizeof(double));
}

bool WeightDigest::matches(const Tensor& w) const {
  std::array<unsigned char, 32> h{};
  crypto_generichash(h.data(), h.size(), reinterpret_cast<const unsigned char*>(w.data()),
                     w.bytes(), nullptr, 0);
  return sodium_memcmp(h.data(), hash_.data(), h.size()) == 0;
}

int MixingView::virtual_batch_of(int64_t first) const {
  int64_t start = 0;
  for (size_t v = 0; v < size(); ++v) {
    if (start == first) return static_cast<int>(v);
    start += (*this)[v].mixtures();
  }
  throw Error(fmt::format("integrity: no virtual batch starts at mixture {}", first));
}

ForwardCheck::ForwardCheck(IntegrityMode mode, const ConvGeometry& g, const WeightDigest& digest,
                           MixingView secrets, int64_t mixtures, DType precision)
    : mode_(mode),
      g_(g),
      th_(g.taps(true, true)),
      tw_(g.taps(false, true)),
      d_(digest),
      secrets_(secrets),
      mixtures_(mixtures) {
  bound_ = kLambda * std::sqrt(static_cast<double>(g.fan_in())) * unit_roundoff(precision);
  const Shape cells{kProjections * mixtures * g.oh * g.ow};
  if (mode == IntegrityMode::freivalds) {
    ref_ = Tensor64(cells), got_ = Tensor64(cells), got_abs_ = Tensor64(cells);
    tol_ = Tensor64(cells);
    ref_sq_ = Tensor64(Shape{mixtures * g.groups * g.oh * g.ow});
  }
  max_in_ = Tensor64(Shape{mixtures});
}

template <typename T>
void ForwardCheck::on_input(const BlindedT<T>& rows, int64_t first, int64_t e0) {
  const int64_t n = rows.shape()[0], len = rows.shape()[1], p = g_.oh * g_.ow, hw = g_.h * g_.w;
  const T* x = rows.data();
  for (int64_t r = 0; r < n; ++r) {
    double m = max_in_[first + r];
    for (int64_t e = 0; e < len; ++e) m = std::max(m, std::abs(double(x[r * len + e])));
    max_in_[first + r] = m;
  }
  if (mode_ == IntegrityMode::redundant) return;
  // Scatter each input element into the output positions it reaches: (s^T W) xbar_j for
  // every projection s, and ||xbar_j's patch in group g||^2 (weighted by
  // sum_{o in g} s_o^2 ||W_o||^2 in passed()).
  const std::vector<double>& u = d_.u();
  const int64_t cols = g_.c * g_.kh * g_.kw, cg = g_.c / g_.groups;
  const int64_t stride = mixtures_ * p;  // between projections
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < n; ++r) {
    double* ref = ref_.data() + (first + r) * p;
    double* sq = ref_sq_.data() + (first + r) * g_.groups * p;
    int64_t c = e0 / hw, hh = e0 % hw / g_.w, ww = e0 % g_.w;
    for (int64_t i = 0; i < len; ++i) {
      const double v = x[r * len + i];
      if (v != 0) {
        const double v2 = v * v;
        double* sqg = sq + c / cg * p;
        const double* uc = u.data() + c * g_.kh * g_.kw;
        for (int64_t a = th_.start[hh]; a < th_.start[hh + 1]; ++a) {
          const auto [kh, oh] = th_.at[a];
          for (int64_t b = tw_.start[ww]; b < tw_.start[ww + 1]; ++b) {
            const auto [kw, ow] = tw_.at[b];
            const int64_t q = oh * g_.ow + ow, k = kh * g_.kw + kw;
            for (int pr = 0; pr < kProjections; ++pr) ref[pr * stride + q] += uc[pr * cols + k] * v;
            sqg[q] += v2;
          }
        }
      }
      next(c, hh, ww, g_.h, g_.w);
    }
  }
}

void ForwardCheck::begin_outputs() {
  ok_ = true;
  std::fill(got_.data(), got_.data() + got_.numel(), 0.0);
  std::fill(got_abs_.data(), got_abs_.data() + got_abs_.numel(), 0.0);
}

template <typename T>
void ForwardCheck::on_output(const TensorT<T>& rows, int64_t first, int64_t e0) {
  const int64_t n = rows.shape()[0], len = rows.shape()[1], p = g_.oh * g_.ow;
  const T* y = rows.data();
  if (mode_ == IntegrityMode::freivalds) {
    const std::vector<double>& s = d_.s();
    const int64_t stride = mixtures_ * p;  // between projections
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < n; ++r) {
      double* got = got_.data() + (first + r) * p;
      double* gota = got_abs_.data() + (first + r) * p;
      int64_t o = e0 / p, q = e0 % p;
      for (int64_t i = 0; i < len; ++i) {
        const double y_i = y[r * len + i];
        for (int pr = 0; pr < kProjections; ++pr) {
          const double v = s[static_cast<size_t>(pr * g_.o + o)] * y_i;
          got[pr * stride + q] += v;
          gota[pr * stride + q] += std::abs(v);
        }
        if (++q == p) q = 0, ++o;
      }
    }
    return;
  }
  const Mixing& mx = secrets_[static_cast<size_t>(secrets_.virtual_batch_of(first))];
  DK_CHECK(n == mx.mixtures() && mx.extra() == 1, "integrity: {} outputs for a virtual batch of {}",
           n, mx.mixtures());
  std::vector<double> c(static_cast<size_t>(n));
  for (int64_t r = 0; r < n; ++r) c[static_cast<size_t>(r)] = mx.null(0, static_cast<int>(r));
  ok_ = null_sums_pass(c, y, len, e0, p, d_.row_l1(),
                       redundant_factor(bound_, c, max_in_, first, mx.condition_number())) &&
        ok_;
}

bool ForwardCheck::passed() {
  if (mode_ != IntegrityMode::freivalds) return ok_;
  const int64_t p = g_.oh * g_.ow;
  const std::vector<double>& ws2 = d_.ws2();
  for (int pr = 0; pr < kProjections; ++pr)
    for (int64_t j = 0; j < mixtures_; ++j)
      for (int64_t q = 0; q < p; ++q) {
        double sq = 0;
        for (int64_t grp = 0; grp < g_.groups; ++grp)
          sq += ws2[static_cast<size_t>(pr * g_.groups + grp)] *
                ref_sq_[(j * g_.groups + grp) * p + q];
        const int64_t at = (pr * mixtures_ + j) * p + q;
        tol_[at] = bound_ * std::sqrt(sq) + 1e-12 * got_abs_[at];
        if (!(std::abs(got_[at] - ref_[at]) <= tol_[at])) ok_ = false;
      }
  return ok_;
}

bool ForwardCheck::above_tolerance(const Tensor64& e) const {
  const int64_t p = g_.oh * g_.ow, item = g_.o * p;
  DK_CHECK(e.numel() == mixtures_ * item, "integrity: error of {} values for {} outputs", e.numel(),
           mixtures_ * item);
  if (mode_ == IntegrityMode::freivalds) {
    const std::vector<double>& s = d_.s();
    for (int pr = 0; pr < kProjections; ++pr)
      for (int64_t j = 0; j < mixtures_; ++j)
        for (int64_t q = 0; q < p; ++q) {
          double eff = 0;
          for (int64_t o = 0; o < g_.o; ++o) eff += s[pr * g_.o + o] * e[j * item + o * p + q];
          if (!(std::abs(eff) <= tol_[(pr * mixtures_ + j) * p + q])) return true;
        }
    return false;
  }
  int64_t first = 0;
  for (size_t v = 0; v < secrets_.size(); ++v) {
    const Mixing& mx = secrets_[v];
    std::vector<double> c(static_cast<size_t>(mx.mixtures()));
    for (int r = 0; r < mx.mixtures(); ++r) c[static_cast<size_t>(r)] = mx.null(0, r);
    if (null_sums_moved(c, e, first, item, p, d_.row_l1(),
                        redundant_factor(bound_, c, max_in_, first, mx.condition_number())))
      return true;
    first += mx.mixtures();
  }
  return false;
}

TrainDigest::~TrainDigest() {
  for (auto* v : {&t, &wt, &wt2, &sv, &sg})
    if (!v->empty()) sodium_memzero(v->data(), v->size() * sizeof(double));
}

std::unique_ptr<TrainDigest> TrainDigest::make(const Tensor& w, const Tensor& v, int64_t groups,
                                               Csprng& rng) {
  auto made = std::make_unique<TrainDigest>();
  TrainDigest& d = *made;
  d.fwd = std::make_unique<WeightDigest>(w, groups, IntegrityMode::freivalds, rng);
  if (!v.empty()) d.momentum = std::make_unique<WeightDigest>(v, groups, IntegrityMode::none, rng);
  const int64_t o = w.shape()[0], per = w.numel() / o, og = o / groups;
  const int64_t kk = w.shape().rank() == 4 ? w.shape()[2] * w.shape()[3] : 1, cg = per / kk;
  const int64_t c = cg * groups, cols = per * groups;
  d.t.resize(static_cast<size_t>(kProjections * c));
  rng.gaussian(d.t.data(), kProjections * c, 0.0, 1.0);
  d.wt.assign(static_cast<size_t>(kProjections * o * kk), 0.0);
  d.wt2.assign(static_cast<size_t>(kProjections * groups), 0.0);
  d.sv.assign(static_cast<size_t>(kProjections * cols), 0.0);
  d.sg.assign(d.sv.size(), 0.0);
  d.first = v.empty();
  for (int pr = 0; pr < kProjections; ++pr)
    for (int64_t r = 0; r < o; ++r) {
      const int64_t grp = r / og;
      const double* t = d.t.data() + pr * c + grp * cg;
      const double s = d.fwd->s()[static_cast<size_t>(pr * o + r)];
      for (int64_t ci = 0; ci < cg; ++ci)
        for (int64_t k = 0; k < kk; ++k) {
          const double x = w[(r * cg + ci) * kk + k];
          d.wt[(pr * o + r) * kk + k] += x * t[ci];
          d.wt2[pr * groups + grp] += t[ci] * t[ci] * x * x;
          if (!v.empty())
            d.sv[pr * cols + grp * per + ci * kk + k] += s * v[(r * cg + ci) * kk + k];
        }
    }
  return made;
}

bool TrainDigest::verify_step(const Tensor& w, const Tensor& v, const SgdParams& p) const {
  const int64_t o = w.shape()[0], per = w.numel() / o;
  const int64_t groups = static_cast<int64_t>(fwd->u().size()) / kProjections / per,
                og = o / groups;
  const int64_t cols = per * groups;
  const bool momentum = p.momentum != 0;
  if (momentum && v.empty()) return false;
  const double u = std::ldexp(1.0, -24);
  for (int pr = 0; pr < kProjections; ++pr)
    for (int64_t col = 0; col < cols; ++col) {
      const int64_t grp = col / per, e = col % per;
      const size_t at = static_cast<size_t>(pr * cols + col);
      // The step, mirrored on the projections (protocol/sgd.h).
      const double g = sg[at] + p.weight_decay * fwd->u()[at];
      double vn = g, step = g;
      if (momentum) {
        vn = first ? g : p.momentum * sv[at] + (1.0 - p.dampening) * g;
        step = p.nesterov ? g + p.momentum * vn : vn;
      }
      const double expect_w = fwd->u()[at] - p.lr * step;
      double got_w = 0, w2 = 0, wabs = 0, got_v = 0, v2 = 0, vabs = 0;
      for (int64_t r = grp * og; r < (grp + 1) * og; ++r) {
        const double s = fwd->s()[static_cast<size_t>(pr * o + r)];
        const double wi = w[r * per + e];
        got_w += s * wi, w2 += s * s * wi * wi, wabs += std::abs(s * wi);
        if (momentum) {
          const double vi = v[r * per + e];
          got_v += s * vi, v2 += s * s * vi * vi, vabs += std::abs(s * vi);
        }
      }
      if (!(std::abs(got_w - expect_w) <= kLambda * u * std::sqrt(w2) + 1e-11 * wabs)) return false;
      if (momentum && !(std::abs(got_v - vn) <= kLambda * u * std::sqrt(v2) + 1e-11 * vabs))
        return false;
    }
  return true;
}

BackwardDataCheck::BackwardDataCheck(const ConvGeometry& g, const TrainDigest& d, int64_t mixtures,
                                     DType precision)
    : g_(g), th_(g.taps(true, false)), tw_(g.taps(false, false)), d_(d), mixtures_(mixtures) {
  bound_ = kLambda * std::sqrt(double(g.o / g.groups * g.kh * g.kw)) * unit_roundoff(precision);
  const Shape cells{kProjections * mixtures * g.h * g.w};
  ref_ = Tensor64(cells), ref_sq_ = Tensor64(cells), got_ = Tensor64(cells);
  got_abs_ = Tensor64(cells), tol_ = Tensor64(cells);
}

template <typename T>
void BackwardDataCheck::on_input(const BlindedT<T>& rows, int64_t first, int64_t e0) {
  const int64_t n = rows.shape()[0], len = rows.shape()[1], p = g_.oh * g_.ow, hw = g_.h * g_.w;
  const int64_t kk = g_.kh * g_.kw, og = g_.o / g_.groups;
  const T* x = rows.data();
#pragma omp parallel for collapse(2) schedule(static)
  for (int pr = 0; pr < kProjections; ++pr)
    for (int64_t r = 0; r < n; ++r) {
      double* ref = ref_.data() + (pr * mixtures_ + first + r) * hw;
      double* ref2 = ref_sq_.data() + (pr * mixtures_ + first + r) * hw;
      int64_t o = e0 / p, oh = e0 % p / g_.ow, ow = e0 % g_.ow;
      for (int64_t i = 0; i < len; ++i) {
        const double v = x[r * len + i];
        if (v != 0) {
          const double* wt = d_.wt.data() + (pr * g_.o + o) * kk;
          const double v2 = d_.wt2[static_cast<size_t>(pr * g_.groups + o / og)] * v * v;
          for (int64_t a = th_.start[oh]; a < th_.start[oh + 1]; ++a) {
            const auto [kh, ih] = th_.at[a];
            for (int64_t b = tw_.start[ow]; b < tw_.start[ow + 1]; ++b) {
              const auto [kw, iw] = tw_.at[b];
              ref[ih * g_.w + iw] += wt[kh * g_.kw + kw] * v;
              ref2[ih * g_.w + iw] += v2;
            }
          }
        }
        next(o, oh, ow, g_.oh, g_.ow);
      }
    }
}

void BackwardDataCheck::begin_outputs() {
  std::fill(got_.data(), got_.data() + got_.numel(), 0.0);
  std::fill(got_abs_.data(), got_abs_.data() + got_abs_.numel(), 0.0);
}

template <typename T>
void BackwardDataCheck::on_output(const TensorT<T>& rows, int64_t first, int64_t e0) {
  const int64_t n = rows.shape()[0], len = rows.shape()[1], hw = g_.h * g_.w;
  const T* y = rows.data();
#pragma omp parallel for collapse(2) schedule(static)
  for (int pr = 0; pr < kProjections; ++pr)
    for (int64_t r = 0; r < n; ++r) {
      double* got = got_.data() + (pr * mixtures_ + first + r) * hw;
      double* gota = got_abs_.data() + (pr * mixtures_ + first + r) * hw;
      const double* t = d_.t.data() + pr * g_.c;
      int64_t c = e0 / hw, q = e0 % hw;
      for (int64_t i = 0; i < len; ++i) {
        const double v = t[c] * double(y[r * len + i]);
        got[q] += v, gota[q] += std::abs(v);
        if (++q == hw) q = 0, ++c;
      }
    }
}

bool BackwardDataCheck::passed() {
  bool ok = true;
  for (int64_t q = 0; q < ref_.numel(); ++q) {
    tol_[q] = bound_ * std::sqrt(ref_sq_[q]) + 1e-12 * got_abs_[q];
    if (!(std::abs(got_[q] - ref_[q]) <= tol_[q])) ok = false;
  }
  return ok;
}

bool BackwardDataCheck::above_tolerance(const Tensor64& e) const {
  const int64_t hw = g_.h * g_.w, item = g_.c * hw;
  for (int pr = 0; pr < kProjections; ++pr)
    for (int64_t j = 0; j < mixtures_; ++j)
      for (int64_t q = 0; q < hw; ++q) {
        double eff = 0;
        for (int64_t c = 0; c < g_.c; ++c) eff += d_.t[pr * g_.c + c] * e[j * item + c * hw + q];
        if (!(std::abs(eff) <= tol_[(pr * mixtures_ + j) * hw + q])) return true;
      }
  return false;
}

WeightGradCheck::WeightGradCheck(const ConvGeometry& g, const TrainDigest& d, int64_t mixtures,
                                 DType precision)
    : g_(g),
      th_(g.taps(true, false)),
      tw_(g.taps(false, false)),
      mixtures_(mixtures),
      u_(unit_roundoff(precision)),
      t_(d.t) {
  tx_ = Tensor64(Shape{kProjections * mixtures * g.groups * g.h * g.w});
  tx_sq_ = Tensor64(Shape{kProjections * g.groups});
  ref_ = Tensor64(Shape{kProjections * g.o * g.kh * g.kw});
  d_sq_ = Tensor64(Shape{g.o});
  tol_ = Tensor64(ref_.shape());
}

template <typename T>
void WeightGradCheck::on_forward_input(const BlindedT<T>& rows, int64_t first, int64_t e0) {
  const int64_t n = rows.shape()[0], len = rows.shape()[1], hw = g_.h * g_.w;
  const int64_t cg = g_.c / g_.groups;
  const T* x = rows.data();
#pragma omp parallel for schedule(static)
  for (int pr = 0; pr < kProjections; ++pr)
    for (int64_t r = 0; r < n; ++r) {
      double* tx = tx_.data() + (pr * mixtures_ + first + r) * g_.groups * hw;
      double* sq = tx_sq_.data() + pr * g_.groups;
      int64_t c = e0 / hw, q = e0 % hw;
      for (int64_t i = 0; i < len; ++i) {
        const double t = t_[static_cast<size_t>(pr * g_.c + c)], v = x[r * len + i];
        tx[c / cg * hw + q] += t * v;
        sq[c / cg] += t * t * v * v;
        if (++q == hw) q = 0, ++c;
      }
    }
}

template <typename T>
void WeightGradCheck::on_delta(const BlindedT<T>& rows, int64_t first, int64_t e0) {
  const int64_t n = rows.shape()[0], len = rows.shape()[1], p = g_.oh * g_.ow, hw = g_.h * g_.w;
  const int64_t kk = g_.kh * g_.kw, og = g_.o / g_.groups;
  const T* x = rows.data();
  for (int64_t r = 0; r < n; ++r)
    for (int64_t i = 0, o = e0 / p, q = e0 % p; i < len; ++i) {
      const double v = x[r * len + i];
      d_sq_[o] += v * v;
      if (++q == p) q = 0, ++o;
    }
#pragma omp parallel for schedule(static)
  for (int pr = 0; pr < kProjections; ++pr)
    for (int64_t r = 0; r < n; ++r) {
      const double* tx = tx_.data() + (pr * mixtures_ + first + r) * g_.groups * hw;
      int64_t o = e0 / p, oh = e0 % p / g_.ow, ow = e0 % g_.ow;
      for (int64_t i = 0; i < len; ++i) {
        const double v = x[r * len + i];
        if (v != 0) {
          const double* txg = tx + o / og * hw;
          double* ref = ref_.data() + (pr * g_.o + o) * kk;
          for (int64_t a = th_.start[oh]; a < th_.start[oh + 1]; ++a) {
            const auto [kh, ih] = th_.at[a];
            for (int64_t b = tw_.start[ow]; b < tw_.start[ow + 1]; ++b) {
              const auto [kw, iw] = tw_.at[b];
              ref[kh * g_.kw + kw] += v * txg[ih * g_.w + iw];
            }
          }
        }
        next(o, oh, ow, g_.oh, g_.ow);
      }
    }
}

void WeightGradCheck::check_rows(const double* rows, int64_t o0, int64_t o1,
                                 const TrainDigest& d) {
  const int64_t kk = g_.kh * g_.kw, og = g_.o / g_.groups, cg = g_.c / g_.groups;
  const int64_t per = cg * kk, cols = per * g_.groups;
  const double bound = kLambda * std::sqrt(double(mixtures_ * g_.oh * g_.ow)) * u_;
  if (sg_.empty()) sg_.assign(static_cast<size_t>(kProjections * cols), 0.0);
  for (int pr = 0; pr < kProjections; ++pr)
    for (int64_t o = o0; o < o1; ++o) {
      const double* t = t_.data() + pr * g_.c + o / og * cg;
      const double* grad = rows + (o - o0) * per;
      for (int64_t k = 0; k < kk; ++k) {
        double got = 0, gabs = 0;
        for (int64_t ci = 0; ci < cg; ++ci) {
          const double v = grad[ci * kk + k] * t[ci];
          got += v, gabs += std::abs(v);
        }
        const int64_t at = (pr * g_.o + o) * kk + k;
        tol_[at] = bound * std::sqrt(d_sq_[o] * tx_sq_[pr * g_.groups + o / og]) + 1e-12 * gabs;
        if (!(std::abs(got - ref_[at]) <= tol_[at])) ok_ = false;
      }
      const double s = d.fwd->s()[static_cast<size_t>(pr * g_.o + o)];
      double* sg = sg_.data() + pr * cols + o / og * per;
      for (int64_t e = 0; e < per; ++e) sg[e] += s * grad[e];
    }
}

bool WeightGradCheck::finish(TrainDigest& d) {
  const bool ok = ok_;
  if (ok)
    for (size_t i = 0; i < sg_.size(); ++i) d.sg[i] += sg_[i];
  std::fill(sg_.begin(), sg_.end(), 0.0);
  ok_ = true;
  return ok;
}

bool WeightGradCheck::above_tolerance(const Tensor64& e) const {
  const int64_t kk = g_.kh * g_.kw, og = g_.o / g_.groups, cg = g_.c / g_.groups;
  for (int pr = 0; pr < kProjections; ++pr)
    for (int64_t o = 0; o < g_.o; ++o)
      for (int64_t k = 0; k < kk; ++k) {
        double eff = 0;
        for (int64_t ci = 0; ci < cg; ++ci)
          eff += e[(o * cg + ci) * kk + k] * t_[static_cast<size_t>(pr * g_.c + o / og * cg + ci)];
        if (!(std::abs(eff) <= tol_[(pr * g_.o + o) * kk + k])) return true;
      }
  return false;
}

RedundantDataCheck::RedundantDataCheck(const ConvGeometry& g, const WeightDigest& d,
                                       const TrainingMixingList& secrets, int64_t mixtures,
                                       DType precision)
    : g_(g), d_(d), secrets_(secrets), max_in_(Shape{mixtures}) {
  bound_ = kLambda * std::sqrt(double(g.o / g.groups * g.kh * g.kw)) * unit_roundoff(precision);
}

template <typename T>
void RedundantDataCheck::on_input(const BlindedT<T>& rows, int64_t first, int64_t) {
  const int64_t n = rows.shape()[0], len = rows.shape()[1];
  for (int64_t r = 0; r < n; ++r) {
    double m = max_in_[first + r];
    for (int64_t e = 0; e < len; ++e) m = std::max(m, std::abs(double(rows.data()[r * len + e])));
    max_in_[first + r] = m;
  }
}

template <typename T>
void RedundantDataCheck::on_output(const TensorT<T>& rows, int64_t first, int64_t e0) {
  const TrainingMixing& tm =
      *secrets_[static_cast<size_t>(MixingView(secrets_).virtual_batch_of(first))];
  const int64_t n = rows.shape()[0];
  DK_CHECK(n == tm.mixtures(), "integrity: {} outputs for a virtual batch of {}", n,
           tm.mixtures());
  const Coefficients& null = tm.delta_null();
  for (int v = 0; v < null.rows(); ++v) {
    const std::vector<double> c(null.row(v), null.row(v) + n);
    ok_ = null_sums_pass(c, rows.data(), rows.shape()[1], e0, g_.h * g_.w, d_.col_l1(),
                         redundant_factor(bound_, c, max_in_, first, tm.delta_condition())) &&
          ok_;
  }
}

bool RedundantDataCheck::above_tolerance(const Tensor64& e) const {
  const int64_t item = g_.c * g_.h * g_.w;
  int64_t first = 0;
  for (const auto& tm : secrets_) {
    const Coefficients& null = tm->delta_null();
    for (int v = 0; v < null.rows(); ++v) {
      const std::vector<double> c(null.row(v), null.row(v) + tm->mixtures());
      if (null_sums_moved(c, e, first, item, g_.h * g_.w, d_.col_l1(),
                          redundant_factor(bound_, c, max_in_, first, tm->delta_condition())))
        return true;
    }
    first += tm->mixtures();
  }
  return false;
}

GradPairCheck::GradPairCheck(const ConvGeometry& g, int64_t mixtures, int per_batch,
                             DType precision)
    : g_(g), x_sq_(Shape{g.c}), d_sq_(Shape{2, g.o}) {
  bound_ = (kLambda * std::sqrt(double(mixtures * g.oh * g.ow)) + 2) * unit_roundoff(precision) +
           double(per_batch * per_batch) * std::ldexp(1.0, -53);
}

template <typename T>
void GradPairCheck::on_forward_input(const BlindedT<T>& rows, int64_t, int64_t e0) {
  const int64_t n = rows.shape()[0], len = rows.shape()[1], hw = g_.h * g_.w;
  for (int64_t r = 0; r < n; ++r)
    for (int64_t i = 0; i < len; ++i) {
      const double v = rows.data()[r * len + i];
      x_sq_[(e0 + i) / hw] += v * v;
    }
}

template <typename T>
void GradPairCheck::on_delta(const BlindedT<T>& rows, int64_t, int64_t e0, int which) {
  const int64_t n = rows.shape()[0], len = rows.shape()[1], p = g_.oh * g_.ow;
  double* d = d_sq_.data() + which * g_.o;
  for (int64_t r = 0; r < n; ++r)
    for (int64_t i = 0; i < len; ++i) {
      const double v = rows.data()[r * len + i];
      d[(e0 + i) / p] += v * v;
    }
}

double GradPairCheck::tolerance(int64_t o, int64_t ci) const {
  const int64_t cg = g_.c / g_.groups, og = g_.o / g_.groups;
  return bound_ * std::sqrt(x_sq_[o / og * cg + ci]) *
         (std::sqrt(d_sq_[o]) + std::sqrt(d_sq_[g_.o + o]));
}

void GradPairCheck::check_piece(const double* g1, const double* g2, int64_t e0, int64_t len) {
  const int64_t cg = g_.c / g_.groups, kk = g_.kh * g_.kw;
  for (int64_t i = 0; i < len; ++i) {
    const int64_t oc = (e0 + i) / kk;  // [o, ci]
    // The difference is exact in f64 but for 2^-53 of it.
    if (!(std::abs(g1[i] - g2[i]) <= tolerance(oc / cg, oc % cg))) ok_ = false;
  }
}

bool GradPairCheck::above_tolerance(const Tensor64& e) const {
  const int64_t cg = g_.c / g_.groups, kk = g_.kh * g_.kw;
  for (int64_t i = 0; i < e.numel(); ++i)
    if (!(std::abs(e[i]) <= tolerance(i / kk / cg, i / kk % cg))) return true;
  return false;
}

Tensor trusted_linear(const ConvGeometry& g, const Tensor& w, const Tensor& src) {
  const int64_t m = src.shape()[0];
  DK_CHECK(src.shape().item_numel() == g.in_numel(), "trusted_linear: items of {} values for {}",
           src.shape().item_numel(), g.in_numel());
  Tensor out(Shape{m, g.out_numel()});
  reference::conv_forward(g, m, src.data(), w.data(), out.data(), /*parallel=*/true);
  return out;
}

template void BackwardDataCheck::on_input<float>(const BlindedT<float>&, int64_t, int64_t);
template void BackwardDataCheck::on_input<double>(const BlindedT<double>&, int64_t, int64_t);
template void BackwardDataCheck::on_output<float>(const TensorT<float>&, int64_t, int64_t);
template void BackwardDataCheck::on_output<double>(const TensorT<double>&, int64_t, int64_t);
template void WeightGradCheck::on_forward_input<float>(const BlindedT<float>&, int64_t, int64_t);
template void WeightGradCheck::on_forward_input<double>(const BlindedT<double>&, int64_t, int64_t);
template void WeightGradCheck::on_delta<float>(const BlindedT<float>&, int64_t, int64_t);
template void WeightGradCheck::on_delta<double>(const BlindedT<double>&, int64_t, int64_t);
template void RedundantDataCheck::on_input<float>(const BlindedT<float>&, int64_t, int64_t);
template void RedundantDataCheck::on_input<double>(const BlindedT<double>&, int64_t, int64_t);
template void RedundantDataCheck::on_output<float>(const TensorT<float>&, int64_t, int64_t);
template void RedundantDataCheck::on_output<double>(const TensorT<double>&, int64_t, int64_t);
template void GradPairCheck::on_forward_input<float>(const BlindedT<float>&, int64_t, int64_t);
template void GradPairCheck::on_forward_input<double>(const BlindedT<double>&, int64_t, int64_t);
template void GradPairCheck::on_delta<float>(const BlindedT<float>&, int64_t, int64_t, int);
template void GradPairCheck::on_delta<double>(const BlindedT<double>&, int64_t, int64_t, int);
template void ForwardCheck::on_input<float>(const BlindedT<float>&, int64_t, int64_t);
template void ForwardCheck::on_input<double>(const BlindedT<double>&, int64_t, int64_t);
template void ForwardCheck::on_output<float>(const TensorT<float>&, int64_t, int64_t);
template void ForwardCheck::on_output<double>(const TensorT<double>&, int64_t, int64_t);

}  // namespace darknight::trusted
