#include "trusted/darknight_engine.h"

#include <algorithm>
#include <optional>

namespace darknight::trusted {
namespace {

RowEpilogue fused(const nn::Epilogue& e) {
  if (e.empty()) return {};
  return [&e](float* row, int64_t b, int64_t end) { e.apply(row, b, end); };
}

/// Each virtual batch's decode of its outputs (Mixing::unmixing), for a CheckObserver.
CoefficientList unmixings(MixingView secrets) {
  CoefficientList d;
  for (size_t v = 0; v < secrets.size(); ++v) d.push_back(secrets[v].unmixing());
  return d;
}

/// In inference, a forward operation that fails its check is recomputed this many times,
/// then computed in the trusted runtime; a failed result is never used.
constexpr int kInferenceRecomputes = 1;

/// The items and mixtures of one chunk of the overlapped path.
struct ChunkSpan {
  int64_t item0 = 0, items = 0, mix0 = 0, mixes = 0;
};

/// The overlapped path's chunks of `per` virtual batches (of `sizes` items) each.
std::vector<ChunkSpan> chunk_spans(const std::vector<int>& sizes, int64_t per, int extra) {
  std::vector<ChunkSpan> spans;
  const int64_t vbs = static_cast<int64_t>(sizes.size());
  for (int64_t v0 = 0, item0 = 0, mix0 = 0; v0 < vbs; v0 += per) {
    ChunkSpan c{item0, 0, mix0, 0};
    for (int64_t v = v0; v < std::min(vbs, v0 + per); ++v) {
      c.items += sizes[static_cast<size_t>(v)];
      c.mixes += sizes[static_cast<size_t>(v)] + 1 + extra;
    }
    item0 += c.items, mix0 += c.mixes;
    spans.push_back(c);
  }
  return spans;
}

}  // namespace

DarKnightEngine::DarKnightEngine(accel::Backend& backend, const CodecOptions& opts, Csprng& rng,
                                 int64_t precompute_bytes, GradDecode grad_decode)
    : AcceleratorEngine(backend, opts.precision),
      settings_{opts, grad_decode, IntegrityMode::none, backend.asynchronous()},
      pool_(precompute_bytes > 0 ? std::make_unique<PooledSource>(
                                       rng, opts.noise, opts.mixing_scale, precompute_bytes)
                                 : nullptr),
      encoder_(pool_ ? Encoder(opts, *pool_) : Encoder(opts, rng)),
      train_encoder_(opts, rng),
      transfer_(backend),
      verifier_(backend) {}

DarKnightEngine::~DarKnightEngine() = default;

void DarKnightEngine::PassTimes::add_to(OpTimes& t) const {
  t.encode += encode - up;
  t.accelerator += accelerator + up + down;
  t.transfer += up + down;
  t.decode += decode - down;
}

int64_t DarKnightEngine::resident_bytes() const {
  return pool_ ? pool_->capacity() : 0;
}

void DarKnightEngine::begin_pass(const nn::Graph& g, int64_t items) {
  if (!pool_) return;
  const CodecOptions& o = settings_.codec;
  for (const nn::Node& n : g.nodes()) {
    if (!n.is_linear()) continue;
    const int64_t in = g.node(n.inputs[0]).shape.numel();
    // The encoder draws every virtual batch's coefficients, then their noise in pieces (chunk
    // by chunk when the layer is overlapped).
    const std::vector<int> sizes = split_virtual_batches(items, o.k);
    const int64_t vbs = static_cast<int64_t>(sizes.size());
    const int64_t chunk = overlap_chunk(settings_, items, n.shape.numel());
    for (int64_t c0 = 0; c0 < vbs; c0 += chunk ? chunk : vbs) {
      const int64_t c1 = chunk ? std::min(vbs, c0 + chunk) : vbs;
      for (int64_t v = c0; v < c1; ++v) pool_->announce_mixing(sizes[static_cast<size_t>(v)]);
      for (int64_t v = c0; v < c1; ++v)
        for (int64_t len : stream_pieces(in, o.stream_tile))
          pool_->announce_noise(len, o.precision);
    }
  }
}

void DarKnightEngine::set_integrity(IntegrityMode mode, Csprng* rng) {
  DK_CHECK(mode == IntegrityMode::none || rng, "integrity checks need a generator");
  DK_CHECK((mode == IntegrityMode::redundant) == (settings_.codec.redundancy == 1),
           "the redundant check needs exactly one redundant mixture in the codec options");
  settings_.integrity = mode;
  books_.set_mode(mode);
  verifier_.set_mode(mode, rng);
}

void DarKnightEngine::load(nn::Graph& g) {
  // The weights go to the accelerator; the trusted side keeps none of them, only (with
  // integrity checks) a digest made while they pass through.
  {
    const MeterScope host(nullptr);  // loaded by the host, outside the enclave
    verifier_.load(g);
  }
  AcceleratorEngine::load(g);
}

Scratch DarKnightEngine::scratch_bytes(const nn::Node& node, int64_t in_numel, int64_t items,
                                       int k) const {
  return forward_scratch(settings_, node, in_numel, items, k);
}

int64_t DarKnightEngine::backward_scratch_bytes(const nn::Node& node, int64_t in_numel, int64_t,
                                                int k) const {
  return backward_scratch(settings_, node, in_numel, k);
}

template <typename T>
void DarKnightEngine::forward_overlapped(const nn::Node& node, const Tensor& src, Tensor& dst,
                                         RunStats& stats) {
  const CodecOptions& o = settings_.codec;
  const int64_t m = src.shape()[0], s_in = src.shape().item_numel(), s_out = node.shape.numel();
  const std::vector<int> sizes = split_virtual_batches(m, o.k);
  accel::Buffer& in =
      buffer(Buf::inputs, src.shape().with_batch(mixture_count(sizes, o.redundancy)));
  const Shape out_shape = output_shape(node, in.shape());
  accel::Buffer& out = buffer(Buf::outputs, out_shape);
  be_.set_layer(node.weights);
  struct Chunk {
    ChunkSpan span;
    MixingList secrets;
    TensorT<T>* outputs = nullptr;  // a Transfer::stage()
    uint64_t mark = 0;
  };
  // encode: encoding and handing the pieces to the backend; accelerator: submitting the
  // linear ops (where a synchronous backend runs them) and waiting for their results.
  double encode = 0, decode = 0, accelerator = 0;
  // Decodes a chunk once the accelerator has finished it.
  auto finish = [&](Chunk& c) {
    const double t0 = now();
    be_.wait_for(c.mark);
    const double t1 = now();
    encoder_.decode<T>(std::span<const T>(c.outputs->data(), c.span.mixes * s_out), c.secrets, dst,
                       fused(node.epilogue), c.span.item0);
    c.secrets.clear();
    accelerator += t1 - t0;
    decode += now() - t1;
  };
  std::optional<Chunk> previous;
  int parity = 0;
  for (const ChunkSpan& span :
       chunk_spans(sizes, overlap_chunk(settings_, m, s_out), o.redundancy)) {
    Chunk c;
    c.span = span;
    // Encode, and send each piece as it is made (the backend copies it before returning).
    const double t0 = now();
    encoder_.encode<T>(
        src, c.secrets,
        [&](const BlindedT<T>& rows, int64_t first, int64_t e0) {
          transfer_.send(rows, in, s_in, span.mix0 + first, e0, stats);
          if (!be_.upload_copies()) be_.wait();
        },
        span.item0, span.items);
    encode += now() - t0;
    // The chunk's linear op and the download of its outputs, left running.
    const double s0 = now();
    const accel::BufferPtr x = be_.view(in, in.shape().with_batch(span.mixes), span.mix0 * s_in);
    const accel::BufferPtr y = be_.view(out, out_shape.with_batch(span.mixes), span.mix0 * s_out);
    linear_forward(node, *x, *y);
    c.outputs = &transfer_.stage<T>(parity, span.mixes * s_out);
    be_.download(*y, 0, span.mixes * s_out, *c.outputs, 0);
    c.mark = be_.mark();
    stats.accelerator_calls += 1;
    stats.bytes_from_accelerator += span.mixes * s_out * static_cast<int64_t>(sizeof(T));
    accelerator += now() - s0;
    // Meanwhile, decode the chunk before.
    if (previous) finish(*previous);
    previous.emplace(std::move(c));
    parity ^= 1;
  }
  finish(*previous);
  stats.times.encode += encode;
  stats.times.accelerator += accelerator;
  stats.times.decode += decode;
}

template <typename T>
bool DarKnightEngine::forward_attempt(const nn::Node& node, const accel::Buffer& in,
                                      ForwardCheck* check, MixingView secrets,
                                      const std::function<void(const OutputFetch<T>&)>& decode,
                                      PassTimes& times, RunStats& stats) {
  const double a0 = now();
  const accel::Buffer& out = linear_forward(node, in);
  be_.wait();
  stats.accelerator_calls += 1;
  const double a1 = now();
  times.accelerator += a1 - a0;
  // Download and decode piece by piece, the epilogue fused in.
  OutputFetch<T> fetch = transfer_.downloader<T>(out, node.shape.numel(), times.down, stats);
  if (check) {
    check->begin_outputs();
    fetch = [check, get = std::move(fetch)](TensorT<T>& rows, int64_t first, int64_t e0) {
      get(rows, first, e0);
      check->on_output(rows, first, e0);
    };
  }
  decode(fetch);
  times.decode += now() - a1;
  if (!check) return true;
  const bool ok = check->passed();
  books_.record(
      node, "forward", ok, [&] { return unmixings(secrets); },
      [&](const Tensor64& e) { return check->above_tolerance(e); });
  return ok;
}

template <typename T>
Tensor DarKnightEngine::forward_t(const nn::Node& node, Tensor& src, bool consume,
                                  RunStats& stats) {
  const CodecOptions& o = settings_.codec;
  const int64_t m = src.shape()[0], s_in = src.shape().item_numel();
  if (overlap_chunk(settings_, m, node.shape.numel()) > 0) {
    Tensor dst = Tensor::uninitialized(batched(m, node.shape));
    forward_overlapped<T>(node, src, dst, stats);
    if (consume) src = Tensor();
    return dst;
  }
  const int64_t mixtures = mixture_count(split_virtual_batches(m, o.k), o.redundancy);
  accel::Buffer& in = buffer(Buf::inputs, src.shape().with_batch(mixtures));
  MixingList secrets;
  std::optional<ForwardCheck> check;
  if (settings_.integrity != IntegrityMode::none)
    check.emplace(settings_.integrity, Geometry::of(node, item_of(src.shape())),
                  verifier_.digest(node.weights), secrets, mixtures, o.precision);
  PassTimes times;
  // Encode and upload piece by piece: the accelerator gathers every mixture.
  const double t0 = now();
  MixtureSink<T> sink = transfer_.uploader<T>(in, s_in, times.up, stats);
  if (check)
    sink = [&check, send = std::move(sink)](const BlindedT<T>& rows, int64_t first, int64_t e0) {
      check->on_input(rows, first, e0);
      send(rows, first, e0);
    };
  encoder_.encode<T>(src, secrets, sink);
  if (consume && !check) src = Tensor();  // the plaintext input is no longer needed
  times.encode = now() - t0;
  Tensor dst = Tensor::uninitialized(batched(m, node.shape));
  auto decode = [&](const OutputFetch<T>& fetch) {
    encoder_.decode<T>(secrets, dst, fetch, fused(node.epilogue));
  };
  books_.recompute_then_fallback(
      [&] {
        return forward_attempt<T>(node, in, check ? &*check : nullptr, secrets, decode, times,
                                  stats);
      },
      kInferenceRecomputes,
      [&] {
        const double f0 = now();
        fallback(node, src, dst);
        times.decode += now() - f0;
      });
  if (consume) src = Tensor();
  times.add_to(stats.times);
  return dst;
}

void DarKnightEngine::fallback(const nn::Node& node, const Tensor& src, Tensor& dst) {
  const Tensor w = verifier_.verified_weights(node, weights(node.weights));
  const Tensor y = trusted_linear(Geometry::of(node, item_of(src.shape())), w, src);
  const int64_t m = dst.shape()[0], s = dst.shape().item_numel();
  std::copy(y.data(), y.data() + y.numel(), dst.data());
  if (!node.epilogue.empty())
    for (int64_t i = 0; i < m; ++i) node.epilogue.apply(dst.data() + i * s, 0, s);
}

Tensor DarKnightEngine::forward(const nn::Node& node, Tensor& src, bool consume, RunStats& stats) {
  return settings_.codec.precision == DType::f32 ? forward_t<float>(node, src, consume, stats)
                                                 : forward_t<double>(node, src, consume, stats);
}

template <typename T>
Tensor DarKnightEngine::forward_train_t(const nn::Node& node, Tensor& src, RunStats& stats) {
  DK_CHECK(
      settings_.integrity == IntegrityMode::none || settings_.grad_decode == GradDecode::folded,
      "integrity checks in training need --grad-decode folded (docs/SECURITY.md)");
  const CodecOptions& o = settings_.codec;
  const int64_t m = src.shape()[0], s_in = src.shape().item_numel();
  const int64_t mixtures = mixture_count(split_virtual_batches(m, o.k), o.redundancy);
  Kept& kept = kept_[node.weights];
  kept.secrets.clear();
  kept.in_shape = src.shape().with_batch(mixtures);
  std::optional<ForwardCheck> check;
  const Geometry geo = Geometry::of(node, item_of(src.shape()));
  if (settings_.integrity == IntegrityMode::freivalds) {
    verifier_.begin_training(all_weights());
    const TrainDigest& td = verifier_.training(node.weights);
    check.emplace(settings_.integrity, geo, *td.fwd, kept.secrets, mixtures, o.precision);
    kept.grad_check = std::make_unique<WeightGradCheck>(geo, td, mixtures, o.precision);
  } else if (settings_.integrity == IntegrityMode::redundant) {
    check.emplace(settings_.integrity, geo, verifier_.digest(node.weights), kept.secrets, mixtures,
                  o.precision);
    kept.pair_check = std::make_unique<GradPairCheck>(geo, mixtures, o.k + 2, o.precision);
  }
  // The layer's input mixtures stay on the accelerator for the weight gradient.
  accel::Buffer& in = layer_input(node.weights, kept.in_shape);
  PassTimes times;
  const double t0 = now();
  MixtureSink<T> sink = transfer_.uploader<T>(in, s_in, times.up, stats);
  if (check)
    sink = [&check, &kept, send = std::move(sink)](const BlindedT<T>& rows, int64_t first,
                                                   int64_t e0) {
      check->on_input(rows, first, e0);
      if (kept.grad_check) kept.grad_check->on_forward_input(rows, first, e0);
      if (kept.pair_check) kept.pair_check->on_forward_input(rows, first, e0);
      send(rows, first, e0);
    };
  train_encoder_.encode_inputs<T>(src, kept.secrets, sink);
  times.encode = now() - t0;
  Tensor dst = Tensor::uninitialized(batched(m, node.shape));
  auto decode = [&](const OutputFetch<T>& fetch) {
    train_encoder_.decode_outputs<T>(kept.secrets, dst, fetch, fused(node.epilogue));
  };
  books_.recompute_or_stop(node, "forward", 1, [&] {
    return forward_attempt<T>(node, in, check ? &*check : nullptr, kept.secrets, decode, times,
                              stats);
  });
  times.add_to(stats.times);
  return dst;
}

Tensor DarKnightEngine::forward_train(const nn::Node& node, Tensor& src, RunStats& stats) {
  return settings_.codec.precision == DType::f32 ? forward_train_t<float>(node, src, stats)
                                                 : forward_train_t<double>(node, src, stats);
}

void DarKnightEngine::step(const SgdParams& p) {
  AcceleratorEngine::step(p);
  verifier_.after_step(all_weights(), p);
}

Tensor DarKnightEngine::read_weights(int index) {
  Tensor w = AcceleratorEngine::read_weights(index);
  verifier_.check_weights(index, w);
  return w;
}

Tensor DarKnightEngine::read_momentum(int index) {
  Tensor v = AcceleratorEngine::read_momentum(index);
  verifier_.check_momentum(index, v);
  return v;
}

}  // namespace darknight::trusted
