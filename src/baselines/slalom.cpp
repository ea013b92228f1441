#include "baselines/slalom.h"

#include <sodium.h>

#include <Eigen/Dense>
#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>

#include "protocol/linear.h"

namespace darknight::baselines {
namespace {
/// Loops over fewer elements run on one thread: a parallel region's start costs more.
constexpr int64_t kParallelWork = int64_t{1} << 15;
}  // namespace

namespace slalom {

int fixed_point_shift(double amax, int64_t qmax) {
  if (!(amax > 0)) return 0;
  int e = 0;
  std::frexp(static_cast<double>(qmax) / amax, &e);  // qmax / amax in [2^(e-1), 2^e)
  int s = e - 1;
  while (std::ldexp(amax, s) > static_cast<double>(qmax)) --s;
  while (std::ldexp(amax, s + 1) <= static_cast<double>(qmax)) ++s;
  return s;
}

void uniform(Csprng& rng, uint32_t* out, int64_t n) {
  rng.fill(out, static_cast<size_t>(n) * 4);
  for (int64_t i = 0; i < n; ++i) {
    out[i] &= kPrime;
    while (out[i] == kPrime) {
      rng.fill(&out[i], 4);
      out[i] &= kPrime;
    }
  }
}

namespace {
/// The largest |W_q xbar| of a correct result: fan-in * 127 * (p - 1) / 2 (below 2^53).
double result_bound(const ConvGeometry& g) {
  return static_cast<double>(g.fan_in()) * kWeightMax * ((kPrime - 1) / 2);
}
/// Whether y can be a correct result: an integer of the possible range.
bool valid(double y, double bound) {
  return std::abs(y) <= bound && static_cast<double>(static_cast<int64_t>(y)) == y;
}
}  // namespace

bool freivalds(const ConvGeometry& g, const std::vector<uint32_t>& s,
               const std::vector<uint32_t>& v, const double* xb, const double* yb) {
  using u128 = unsigned __int128;
  const int64_t positions = g.oh * g.ow, in = g.c * g.h * g.w, out = g.o * positions;
  const double bound = result_bound(g);
  // Both sides' operands as field elements, reduced once.
  TrustedBuffer<uint32_t> ym(out), xm(in);
  bool ok = true;
#pragma omp parallel for reduction(&& : ok) schedule(static) if (out >= kParallelWork)
  for (int64_t i = 0; i < out; ++i) {
    const bool fine = valid(yb[i], bound);
    ok = ok && fine;
    ym[i] = fine ? static_cast<uint32_t>(mod_p(int64_t(yb[i]))) : 0;
  }
  if (!ok) return false;
#pragma omp parallel for schedule(static) if (in >= kParallelWork)
  for (int64_t i = 0; i < in; ++i) xm[i] = static_cast<uint32_t>(mod_p(int64_t(xb[i])));
  // Per block of output positions: s^T ybar (output channels outermost, contiguous reads)
  // against (s^T W_q) xbar, a convolution with one output channel that reads every input
  // channel.
  ConvGeometry all = g;
  all.o = 1, all.groups = 1;
  constexpr int64_t kBlock = 256;
#pragma omp parallel for reduction(&& : ok) schedule(static) \
    if (positions * (g.o + g.fan_in()) >= kParallelWork)
  for (int64_t q0 = 0; q0 < positions; q0 += kBlock) {
    const int64_t q1 = std::min(positions, q0 + kBlock);
    u128 lhs[kBlock] = {};
    for (int64_t o = 0; o < g.o; ++o) {
      const uint64_t so = s[static_cast<size_t>(o)];
      const uint32_t* yo = ym.data() + o * positions;
      for (int64_t q = q0; q < q1; ++q) lhs[q - q0] += u128{so} * yo[q];
    }
    for (int64_t q = q0; q < q1; ++q) {
      u128 rhs = 0;
      all.for_taps(0, 0, q / g.ow, q % g.ow,
                   [&](int64_t si, int64_t, int64_t vi) { rhs += u128{v[vi]} * xm[si]; });
      ok = ok && lhs[q - q0] % kPrime == rhs % kPrime;
    }
  }
  return ok;
}

}  // namespace slalom

namespace {

using slalom::kPrime;
using RowMat = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using ColMat = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor>;

/// W_q as a [O, C/groups * KH * KW] f64 matrix.
RowMat as_matrix(const ConvGeometry& g, const Tensor& wq) {
  return Eigen::Map<const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(
             wq.data(), g.o, g.fan_in())
      .cast<double>();
}

bool dense_like(const ConvGeometry& g) {
  return g.h == 1 && g.w == 1 && g.kh == 1 && g.kw == 1 && g.oh == 1 && g.ow == 1 && g.groups == 1;
}

/// y = W x for one item of a convolution: im2col (in chunks of output rows, so the buffer
/// stays near 2^20 values) and a GEMM (Eigen) per group.
void im2col_linear(const ConvGeometry& g, const RowMat& w, const double* x, double* y) {
  const int64_t fan = g.fan_in(), og = g.og(), positions = g.oh * g.ow;
  const int64_t rows = std::max<int64_t>(1, (int64_t{1} << 20) / (fan * g.ow));
  RowMat col(fan, std::min(rows, g.oh) * g.ow);
  for (int64_t grp = 0; grp < g.groups; ++grp)
    for (int64_t y0 = 0; y0 < g.oh; y0 += rows) {
      const int64_t y1 = std::min(g.oh, y0 + rows), cols = (y1 - y0) * g.ow;
      im2col(g, x + grp * g.ig() * g.h * g.w, y0, y1, col.data(), fan * cols >= kParallelWork);
      Eigen::Map<RowMat, 0, Eigen::OuterStride<>> dst(y + grp * og * positions + y0 * g.ow, og,
                                                      cols, Eigen::OuterStride<>(positions));
      dst.noalias() = w.middleRows(grp * og, og) * Eigen::Map<const RowMat>(col.data(), fan, cols);
    }
}

/// y = W x for m items, in f64: exact for integer operands whose partial sums stay below
/// 2^53 (whatever the order of the additions). GEMMs (Eigen), depthwise the host reference
/// convolution.
void exact_linear(const ConvGeometry& g, const RowMat& w, const double* x, int64_t m, double* y) {
  const int64_t in = g.in_numel(), out = g.out_numel(), positions = g.oh * g.ow;
  if (dense_like(g)) {
    Eigen::Map<ColMat>(y, g.o, m).noalias() = w * Eigen::Map<const ColMat>(x, g.c, m);
    return;
  }
  for (int64_t n = 0; n < m; ++n) {
    const double* xi = x + n * in;
    double* yi = y + n * out;
    if (g.pointwise() && g.groups == 1)
      Eigen::Map<RowMat>(yi, g.o, positions).noalias() =
          w * Eigen::Map<const RowMat>(xi, g.c, positions);
    else if (g.depthwise())
      reference::conv_forward(g, 1, xi, w.data(), yi,
                              g.c * positions * g.kh * g.kw >= kParallelWork);
    else
      im2col_linear(g, w, xi, yi);
  }
}

void put_le(unsigned char* p, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) p[i] = static_cast<unsigned char>(v >> (8 * i));
}

}  // namespace

// --- SlalomEncoder ------------------------------------------------------------------------

SlalomEncoder::SlalomEncoder(Csprng& rng) {
  rng.fill(key_, sizeof key_);
}

SlalomEncoder::~SlalomEncoder() {
  sodium_memzero(key_, sizeof key_);
}

void SlalomEncoder::masks(int64_t input, int layer, uint32_t* r, int64_t n) const {
  unsigned char nonce[crypto_stream_chacha20_ietf_NONCEBYTES];
  put_le(nonce, static_cast<uint64_t>(input), 8);
  put_le(nonce + 8, static_cast<uint32_t>(layer), 4);
  // 16384 words (1024 ChaCha20 blocks) per chunk, each at its block counter: the same
  // stream on any thread count.
  constexpr int64_t kWords = 16384, kBlocks = kWords * 4 / 64;
  const int64_t chunks = (n + kWords - 1) / kWords;
  DK_CHECK((chunks + 1) * kBlocks < (int64_t{1} << 32), "slalom: a mask of {} values is too long",
           n);
#pragma omp parallel for schedule(static) if (chunks > 1)
  for (int64_t c = 0; c < chunks; ++c) {
    auto* p = reinterpret_cast<unsigned char*>(r + c * kWords);
    const size_t bytes = static_cast<size_t>(std::min(kWords, n - c * kWords)) * 4;
    std::memset(p, 0, bytes);
    crypto_stream_chacha20_ietf_xor_ic(p, p, bytes, nonce, static_cast<uint32_t>(c * kBlocks),
                                       key_);
  }
  uint32_t extra[16];
  int used = 16;
  auto block = static_cast<uint32_t>(chunks * kBlocks);
  for (int64_t i = 0; i < n; ++i) {
    r[i] &= kPrime;
    while (r[i] == kPrime) {  // probability 2^-31 per value
      if (used == 16) {
        std::memset(extra, 0, sizeof extra);
        auto* e = reinterpret_cast<unsigned char*>(extra);
        crypto_stream_chacha20_ietf_xor_ic(e, e, sizeof extra, nonce, block++, key_);
        used = 0;
      }
      r[i] = extra[used++] & kPrime;
    }
  }
  sodium_memzero(extra, sizeof extra);
}

Blinded64 SlalomEncoder::blind(const float* x, double scale, const uint32_t* r,
                               const Shape& shape) const {
  auto t = Tensor64::uninitialized(shape);
  double* out = t.data();
  const int64_t n = t.numel();
#pragma omp parallel for schedule(static) if (n >= kParallelWork)
  for (int64_t i = 0; i < n; ++i) {
    // Round to nearest, ties to even (as lrint): adding and subtracting 1.5 * 2^52 leaves
    // the nearest integer (|x scale| <= 255), in a form the compiler vectorises.
    const double q = (static_cast<double>(x[i]) * scale + 0x1.8p52) - 0x1.8p52;
    int64_t v = int64_t{r[i]} + static_cast<int64_t>(q);  // in [-255, p + 255)
    v += v < 0 ? kPrime : 0;
    v -= v >= kPrime ? kPrime : 0;
    out[i] = static_cast<double>(slalom::centred(v));
  }
  return make_blinded(std::move(t));
}

// --- UnblindingStore ----------------------------------------------------------------------

namespace {
constexpr size_t kNonce = crypto_aead_xchacha20poly1305_ietf_NPUBBYTES;
constexpr size_t kTag = crypto_aead_xchacha20poly1305_ietf_ABYTES;
/// Words per sealed piece: a layer's factors are sealed in pieces, in parallel.
constexpr int64_t kPieceWords = int64_t{1} << 16;
int64_t pieces(int64_t n) {
  return std::max<int64_t>(1, (n + kPieceWords - 1) / kPieceWords);
}
size_t sealed_size(int64_t n) {
  return static_cast<size_t>(pieces(n)) * (kNonce + kTag) + static_cast<size_t>(n) * 4;
}
/// Piece k of (input, layer) with n words in all.
std::array<unsigned char, 28> associated(int64_t input, int layer, int64_t n, int64_t k) {
  std::array<unsigned char, 28> ad{};
  put_le(ad.data(), static_cast<uint64_t>(input), 8);
  put_le(ad.data() + 8, static_cast<uint32_t>(layer), 4);
  put_le(ad.data() + 12, static_cast<uint64_t>(n), 8);
  put_le(ad.data() + 20, static_cast<uint64_t>(k), 8);
  return ad;
}
}  // namespace

UnblindingStore::UnblindingStore(Csprng& rng) {
  rng.fill(key_, sizeof key_);
}

UnblindingStore::~UnblindingStore() {
  sodium_memzero(key_, sizeof key_);
}

void UnblindingStore::seal(int64_t input, int layer, const uint32_t* u, int64_t n) {
  // Piece k: nonce || ciphertext || tag of words [k * kPieceWords, ...).
  std::vector<unsigned char> c(sealed_size(n));
  const int64_t count = pieces(n);
#pragma omp parallel for schedule(static) if (count > 1)
  for (int64_t k = 0; k < count; ++k) {
    const int64_t w0 = k * kPieceWords, len = std::min(kPieceWords, n - w0);
    unsigned char* p = c.data() + static_cast<size_t>(k) * (kNonce + kTag) + w0 * 4;
    randombytes_buf(p, kNonce);
    const auto ad = associated(input, layer, n, k);
    crypto_aead_xchacha20poly1305_ietf_encrypt(
        p + kNonce, nullptr, reinterpret_cast<const unsigned char*>(u + w0),
        static_cast<unsigned long long>(len) * 4, ad.data(), ad.size(), nullptr, p, key_);
  }
  const std::lock_guard lock(mu_);
  auto& slot = sealed_[{input, layer}];
  bytes_ += static_cast<int64_t>(c.size()) - static_cast<int64_t>(slot.size());
  slot = std::move(c);
  peak_bytes_ = std::max(peak_bytes_, bytes_);
}

Status UnblindingStore::open(int64_t input, int layer, uint32_t* u, int64_t n) {
  std::vector<unsigned char> c;
  {
    const std::lock_guard lock(mu_);
    const auto it = sealed_.find({input, layer});
    if (it == sealed_.end())
      return Status::error(fmt::format(
          "slalom: no unblinding factors stored for input {}, linear layer {}", input, layer));
    c = std::move(it->second);
    bytes_ -= static_cast<int64_t>(c.size());
    sealed_.erase(it);
  }
  bool ok = c.size() == sealed_size(n);
  const int64_t count = ok ? pieces(n) : 0;
#pragma omp parallel for reduction(&& : ok) schedule(static) if (count > 1)
  for (int64_t k = 0; k < count; ++k) {
    const int64_t w0 = k * kPieceWords, len = std::min(kPieceWords, n - w0);
    const unsigned char* p = c.data() + static_cast<size_t>(k) * (kNonce + kTag) + w0 * 4;
    const auto ad = associated(input, layer, n, k);
    ok = ok &&
         crypto_aead_xchacha20poly1305_ietf_decrypt(
             reinterpret_cast<unsigned char*>(u + w0), nullptr, nullptr, p + kNonce,
             static_cast<unsigned long long>(len) * 4 + kTag, ad.data(), ad.size(), p, key_) == 0;
  }
  if (!ok) {
    sodium_memzero(u, static_cast<size_t>(n) * 4);
    return Status::error(fmt::format(
        "slalom: the sealed unblinding factors of input {}, linear layer {} fail "
        "authentication (altered, truncated or swapped in untrusted storage); refusing them",
        input, layer));
  }
  return {};
}

void UnblindingStore::drop_before(int64_t input) {
  const std::lock_guard lock(mu_);
  for (auto it = sealed_.begin(); it != sealed_.end() && it->first.first < input;) {
    bytes_ -= static_cast<int64_t>(it->second.size());
    it = sealed_.erase(it);
  }
}

std::vector<unsigned char>* UnblindingStore::find(int64_t input, int layer) {
  const std::lock_guard lock(mu_);
  const auto it = sealed_.find({input, layer});
  return it == sealed_.end() ? nullptr : &it->second;
}

// --- SlalomEngine -------------------------------------------------------------------------

SlalomEngine::SlalomEngine(accel::Backend& backend, Csprng& rng)
    : be_(backend), encoder_(rng), store_(rng), buffers_(backend, DType::f64) {}

SlalomEngine::~SlalomEngine() {
  for (Layer& l : layers_) {
    sodium_memzero(l.s.data(), l.s.size() * 4);
    sodium_memzero(l.v.data(), l.v.size() * 4);
  }
}

void SlalomEngine::set_integrity(IntegrityMode mode, Csprng* rng) {
  DK_CHECK(mode != IntegrityMode::redundant,
           "slalom has no redundant check: use --integrity freivalds (Slalom's own)");
  DK_CHECK(mode == IntegrityMode::none || rng, "integrity checks need a generator");
  integrity_ = mode, check_rng_ = rng;
}

void SlalomEngine::load(nn::Graph& g) {
  // The quantized weights go to the accelerator; a host copy stays for the offline phase
  // (public data, outside the trusted memory meter, like the weights loaded by the host).
  const MeterScope host(nullptr);
  layers_.clear();
  layers_.resize(g.weights().size());
  for (const nn::Node& n : g.nodes()) {
    if (!n.is_linear()) continue;
    Layer& l = layers_[static_cast<size_t>(n.weights)];
    DK_CHECK(!l.weights, "slalom: layer '{}' shares its weights with another layer (unsupported)",
             n.name);
    l.name = n.name;
    l.in_item = g.node(n.inputs[0]).shape;
    l.geo = Geometry::of(n, l.in_item);
    DK_CHECK(l.geo.fan_in() <= slalom::kMaxFanIn,
             "slalom: layer '{}' has fan-in {}, above the bit budget: with p = 2^31 - 1 and "
             "8-bit activations and weights, exact decoding needs fan-in * 127 * 255 <= "
             "(p - 1) / 2, i.e. fan-in <= {}",
             n.name, l.geo.fan_in(), slalom::kMaxFanIn);
    const Tensor& w = g.weights()[static_cast<size_t>(n.weights)];
    double amax = 0;
    bool finite = true;
    for (int64_t i = 0; i < w.numel(); ++i) {
      finite = finite && std::isfinite(w[i]);
      amax = std::max(amax, std::abs(double(w[i])));
    }
    DK_CHECK(finite, "slalom: layer '{}' has weights that are not finite", n.name);
    l.shift_w = slalom::fixed_point_shift(amax, slalom::kWeightMax);
    const double scale = std::ldexp(1.0, l.shift_w);
    l.wq = Tensor::uninitialized(w.shape());
    for (int64_t i = 0; i < w.numel(); ++i)
      l.wq[i] = static_cast<float>(std::lrint(double(w[i]) * scale));  // exact in f32
    l.weights = be_.create_weights(l.wq);
    if (integrity_ == IntegrityMode::freivalds) {
      // s uniform in F_p^O, secret; v = s^T W_q mod p per input channel and tap.
      const ConvGeometry& geo = l.geo;
      const int64_t taps = geo.kh * geo.kw, cg = geo.c / geo.groups, og = geo.o / geo.groups;
      l.s.resize(static_cast<size_t>(geo.o));
      slalom::uniform(*check_rng_, l.s.data(), geo.o);
      std::vector<int64_t> acc(static_cast<size_t>(geo.c * taps), 0);
      for (int64_t o = 0; o < geo.o; ++o) {
        const int64_t c0 = o / og * cg;
        for (int64_t e = 0; e < cg * taps; ++e)
          acc[static_cast<size_t>(c0 * taps + e)] +=
              int64_t{l.s[static_cast<size_t>(o)]} * static_cast<int64_t>(l.wq[o * cg * taps + e]);
      }
      l.v.resize(acc.size());
      for (size_t i = 0; i < acc.size(); ++i) l.v[i] = static_cast<uint32_t>(slalom::mod_p(acc[i]));
      sodium_memzero(acc.data(), acc.size() * sizeof(int64_t));
    }
  }
  for (Tensor& w : g.weights()) w = Tensor();
}

Scratch SlalomEngine::scratch_bytes(const nn::Node& node, int64_t in_numel, int64_t items,
                                    int) const {
  // One input at a time: its mask (4 bytes per element) and blinded copy (8) while
  // encoding; the blinded copy, the result (8), the unblinding factors (4) and the decoded
  // integers (8) while decoding. The batch's inputs stay until every item is done.
  const int64_t out = node.shape.numel();
  return {12 * in_numel, items * in_numel * 4 + 8 * in_numel + 20 * out};
}

void SlalomEngine::begin_pass(const nn::Graph&, int64_t items) {
  DK_CHECK(items <= available(),
           "slalom: {} inputs to run but unblinding factors for only {} precomputed; run the "
           "offline phase (precompute) first",
           items, available());
  store_.drop_before(next_input_);
  pass_first_ = next_input_;
  next_input_ += items;
}

void SlalomEngine::precompute(int64_t inputs) {
  DK_CHECK(inputs >= 0, "slalom: precompute of {} inputs", inputs);
  DK_CHECK(!layers_.empty(), "slalom: load a model before precompute()");
  const double t0 = now();
  const int64_t first = next_precompute_;
  for (size_t index = 0; index < layers_.size(); ++index) {
    const Layer& l = layers_[index];
    if (!l.weights || inputs == 0) continue;
    const RowMat w = as_matrix(l.geo, l.wq);
    const int64_t n_in = l.in_numel(), n_out = l.out_numel();
    const int layer = static_cast<int>(index);
    // u_j = W_q r_j mod p for inputs j in [i0, i0 + m): r centred, y = W_q r exact in f64.
    auto batch = [&](int64_t i0, int64_t m) {
      TrustedBuffer<double> r(m * n_in), y(m * n_out);
      {
        TrustedBuffer<uint32_t> words(n_in);
        for (int64_t j = 0; j < m; ++j) {
          encoder_.masks(first + i0 + j, layer, words.data(), n_in);
          for (int64_t e = 0; e < n_in; ++e) r[j * n_in + e] = double(slalom::centred(words[e]));
        }
      }
      exact_linear(l.geo, w, r.data(), m, y.data());
      TrustedBuffer<uint32_t> u(n_out);
      for (int64_t j = 0; j < m; ++j) {
        for (int64_t e = 0; e < n_out; ++e)
          u[e] = uint32_t(slalom::mod_p(int64_t(y[j * n_out + e])));
        store_.seal(first + i0 + j, layer, u.data(), n_out);
      }
    };
    // A dense layer: every input in one GEMM (threaded); a convolution: the inputs spread
    // over the threads, one at a time each.
    if (dense_like(l.geo)) {
      batch(0, inputs);
      continue;
    }
#pragma omp parallel for schedule(dynamic) if (inputs > 1)
    for (int64_t j = 0; j < inputs; ++j) batch(j, 1);
  }
  next_precompute_ += inputs;
  offline_seconds_ += now() - t0;
}

void SlalomEngine::account(const Layer& l, bool passed) {
  counters_.checks += 1;
  if (!passed) counters_.note_failure(l.name, "forward", "Slalom Freivalds");
  if (!observer_) return;
  // Exact arithmetic modulo p: the check's tolerance is zero; what decoding keeps changes
  // with any error that is not a multiple of p.
  auto changes = [](const Tensor64& e) {
    for (int64_t i = 0; i < e.numel(); ++i)
      if (!std::isfinite(e[i]) || e[i] != std::trunc(e[i]) || std::fmod(e[i], double(kPrime)) != 0)
        return true;
    return false;
  };
  observer_->on_check(CheckEvent{
      l.name, "forward", passed, 1,
      [](int, const Tensor64& e, bool) -> std::optional<Tensor64> { return e.clone(); },
      double(kPrime),
      [&](const std::vector<const Tensor64*>& e) { return e[0] && changes(*e[0]); }});
}

Blinded64 SlalomEngine::encode(const Layer& l, int layer, const float* x, int64_t input,
                               int& shift_x) const {
  const int64_t n_in = l.in_numel();
  double amax = 0;
  bool finite = true;
#pragma omp parallel for reduction(max : amax) reduction(&& : finite) schedule(static) \
    if (n_in >= kParallelWork)
  for (int64_t i = 0; i < n_in; ++i) {
    finite = finite && std::isfinite(x[i]);
    amax = std::max(amax, std::abs(double(x[i])));
  }
  DK_CHECK(finite, "slalom: layer '{}': its input holds values that are not finite", l.name);
  shift_x = slalom::fixed_point_shift(amax, slalom::kActivationMax);
  TrustedBuffer<uint32_t> r(n_in);
  encoder_.masks(input, layer, r.data(), n_in);
  return encoder_.blind(x, std::ldexp(1.0, shift_x), r.data(), batched(1, l.in_item));
}

bool SlalomEngine::accelerate(const nn::Node& node, const Layer& l, const Blinded64& xb,
                              Tensor64& yb, double& checking, RunStats& stats) {
  accel::Buffer& in = buffers_.get(0, xb.shape());
  be_.upload(xb, in);
  stats.bytes_to_accelerator += static_cast<int64_t>(xb.bytes());
  for (int attempt = 0;; ++attempt) {
    be_.set_layer(node.weights);
    accel::Buffer& out = buffers_.get(1, yb.shape());
    if (node.op == nn::Op::conv)
      be_.conv2d_forward(node.conv, in, *l.weights, out);
    else
      be_.dense_forward(node.dense, in, *l.weights, out);
    be_.download(out, yb);
    be_.wait();
    stats.accelerator_calls += 1;
    stats.bytes_from_accelerator += static_cast<int64_t>(yb.bytes());
    if (integrity_ != IntegrityMode::freivalds) return true;
    const double c0 = now();
    const bool ok = slalom::freivalds(l.geo, l.s, l.v, xb.data(), yb.data());
    checking += now() - c0;
    account(l, ok);
    if (ok) return true;
    if (attempt > 0) break;
    counters_.recomputed += 1;
  }
  counters_.fallbacks += 1;
  return false;
}

void SlalomEngine::unblind(const Layer& l, int layer, int64_t input, const Tensor64& yb,
                           double* values) {
  const int64_t n_out = l.out_numel();
  TrustedBuffer<uint32_t> u(n_out);
  store_.open(input, layer, u.data(), n_out).throw_if_error();
  const double bound = slalom::result_bound(l.geo);
  const double* y = yb.data();
  const uint32_t* up = u.data();
  bool ok = true;
#pragma omp parallel for reduction(&& : ok) schedule(static) if (n_out >= kParallelWork)
  for (int64_t e = 0; e < n_out; ++e) {
    const bool fine = slalom::valid(y[e], bound);
    ok = ok && fine;
    values[e] = fine ? double(slalom::centred(slalom::mod_p(int64_t(y[e]) - up[e]))) : 0.0;
  }
  DK_CHECK(ok,
           "slalom: layer '{}': the accelerator returned values that are not integers of the "
           "possible range, which cannot be unblinded (--integrity freivalds checks results "
           "and recomputes)",
           l.name);
}

SlalomEngine::Decoded SlalomEngine::run_item(const nn::Node& node, const float* x, int64_t input,
                                             RunStats& stats) {
  DK_CHECK(node.is_linear() && node.weights >= 0 &&
               static_cast<size_t>(node.weights) < layers_.size() &&
               layers_[static_cast<size_t>(node.weights)].weights,
           "slalom: '{}' is not a loaded linear layer", node.name);
  DK_CHECK(input >= 0 && input < next_precompute_,
           "slalom: no unblinding factors for input {} (precomputed: {}); run the offline phase "
           "(precompute) first",
           input, next_precompute_);
  const Layer& l = layers_[static_cast<size_t>(node.weights)];

  const double t0 = now();
  int shift_x = 0;
  const Blinded64 xb = encode(l, node.weights, x, input, shift_x);
  const double t1 = now();
  stats.times.encode += t1 - t0;

  // The accelerator: W_q xbar, exact in f64; with freivalds, checked, recomputed once,
  // then computed in the trusted runtime.
  auto yb = Tensor64::uninitialized(batched(1, node.shape));
  double checking = 0;
  const bool accepted = accelerate(node, l, xb, yb, checking, stats);
  const double t2 = now();
  stats.times.accelerator += t2 - t1 - checking;

  // Unblind (exact: |W_q x_q| <= (p - 1) / 2), or compute W_q x_q here.
  Decoded d;
  d.shift = shift_x + l.shift_w;
  d.values = Tensor64::uninitialized(node.shape);
  d.values.set_wipe_on_free();
  if (accepted) {
    unblind(l, node.weights, input, yb, d.values.data());
  } else {
    const double scale_x = std::ldexp(1.0, shift_x);
    TrustedBuffer<double> xq(l.in_numel());
    for (int64_t i = 0; i < l.in_numel(); ++i) xq[i] = double(std::lrint(double(x[i]) * scale_x));
    exact_linear(l.geo, as_matrix(l.geo, l.wq), xq.data(), 1, d.values.data());
  }
  stats.times.decode += now() - t2 + checking;
  return d;
}

Tensor SlalomEngine::forward(const nn::Node& node, Tensor& src, bool consume, RunStats& stats) {
  const int64_t m = src.shape()[0], s_in = src.shape().item_numel(), s_out = node.shape.numel();
  Tensor dst = Tensor::uninitialized(batched(m, node.shape));
  for (int64_t j = 0; j < m; ++j) {
    const Decoded d = run_item(node, src.data() + j * s_in, pass_first_ + j, stats);
    const double t0 = now();
    const double scale = std::ldexp(1.0, -d.shift);
    float* y = dst.data() + j * s_out;
    const double* v = d.values.data();
#pragma omp parallel for schedule(static) if (s_out >= kParallelWork)
    for (int64_t e = 0; e < s_out; ++e) y[e] = static_cast<float>(v[e] * scale);
    if (!node.epilogue.empty()) node.epilogue.apply(y, 0, s_out);
    stats.times.decode += now() - t0;
  }
  if (consume) src = Tensor();
  return dst;
}

}  // namespace darknight::baselines
