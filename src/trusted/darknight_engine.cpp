#include "trusted/darknight_engine.h"

#include <algorithm>
#include <chrono>
#include <optional>

namespace darknight::trusted {
namespace {

Tensor batch_of(int64_t m, const Shape& item) {
  std::vector<int64_t> dims{m};
  for (int64_t d : item.dims()) dims.push_back(d);
  return Tensor::uninitialized(Shape(std::span<const int64_t>(dims)));
}

Shape item_of(const Shape& s) {
  return Shape(s.dims().subspan(1));
}

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

}  // namespace

DarKnightEngine::DarKnightEngine(accel::Backend& backend, const CodecOptions& opts, Csprng& rng,
                                 int64_t precompute_bytes, GradDecode grad_decode)
    : be_(backend),
      overlap_(backend.asynchronous()),
      pool_(precompute_bytes > 0 ? std::make_unique<PooledSource>(
                                       rng, opts.noise, opts.mixing_scale, precompute_bytes)
                                 : nullptr),
      encoder_(pool_ ? Encoder(opts, *pool_) : Encoder(opts, rng)),
      train_encoder_(opts, rng),
      grad_decode_(grad_decode),
      buffers_(backend, opts.precision),
      train_inputs_(backend, opts.precision) {}

DarKnightEngine::~DarKnightEngine() = default;

int64_t DarKnightEngine::resident_bytes() const {
  return pool_ ? pool_->capacity() : 0;
}

void DarKnightEngine::begin_pass(const nn::Graph& g, int64_t items) {
  if (!pool_) return;
  const CodecOptions& o = encoder_.options();
  for (const nn::Node& n : g.nodes()) {
    if (!n.is_linear()) continue;
    const int64_t in = g.node(n.inputs[0]).shape.numel();
    // The encoder draws every virtual batch's coefficients, then their noise in pieces (chunk
    // by chunk when the layer is overlapped).
    const std::vector<int> sizes = split_virtual_batches(items, o.k);
    const int64_t vbs = static_cast<int64_t>(sizes.size());
    const int64_t chunk = overlap_chunk(items, n.shape.numel());
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
  DK_CHECK((mode == IntegrityMode::redundant) == (encoder_.options().redundancy == 1),
           "the redundant check needs exactly one redundant mixture in the codec options");
  integrity_ = mode, check_rng_ = rng;
}

void DarKnightEngine::load(nn::Graph& g) {
  // The weights go to the accelerator; the trusted side keeps none of them, only (with
  // integrity checks) a digest made while they pass through.
  const MeterScope host(nullptr);  // loaded by the host, outside the enclave
  digests_.clear();
  train_digests_.clear();
  groups_.assign(g.weights().size(), 1);
  for (const nn::Node& n : g.nodes())
    if (n.op == nn::Op::conv) groups_[static_cast<size_t>(n.weights)] = n.conv.groups;
  if (integrity_ != IntegrityMode::none) {
    digests_.resize(g.weights().size());
    for (const nn::Node& n : g.nodes())
      if (n.is_linear())
        digests_[static_cast<size_t>(n.weights)] = std::make_unique<WeightDigest>(
            g.weights()[static_cast<size_t>(n.weights)], n.op == nn::Op::conv ? n.conv.groups : 1,
            integrity_, *check_rng_);
  }
  weights_.clear();
  for (Tensor& w : g.weights()) {
    weights_.push_back(be_.create_weights(w));
    w = Tensor();
  }
}

Scratch DarKnightEngine::scratch_bytes(const nn::Node& node, int64_t in_numel, int64_t items,
                                       int k) const {
  // One piece of K + 1 mixtures and its noise while encoding; one piece of K + 1 outputs
  // while decoding (the other mixtures live on the accelerator), plus the codec threads'
  // accumulators.
  // With integrity checks, their per-mixture sums (freivalds: four per output position).
  const int64_t e = static_cast<int64_t>(dtype_size(encoder_.options().precision));
  const int64_t tile = encoder_.options().stream_tile;
  const int extra = encoder_.options().redundancy;
  const int64_t mixtures = mixture_count(split_virtual_batches(items, k), extra);
  const int64_t positions = node.op == nn::Op::conv ? node.shape[1] * node.shape[2] : 1;
  const int64_t check = integrity_ == IntegrityMode::freivalds
                            ? kProjections * 5 * 8 * mixtures * positions
                        : integrity_ == IntegrityMode::redundant ? 8 * mixtures
                                                                 : 0;
  const int64_t acc = 64 * 2048 * 8 + check;
  // Overlapped: the two download areas (stage()), each one chunk's outputs. They are kept
  // from layer to layer, so a layer after a larger one holds more than this; in the zoo's
  // models the layers with the largest chunks are also those with the largest activations.
  const int64_t staged =
      2 * overlap_chunk(items, node.shape.numel()) * (k + 1 + extra) * node.shape.numel() * e;
  return {(k + 2 + extra) * std::min(in_numel, tile) * e + acc + staged,
          (k + 1 + extra) * std::min(node.shape.numel(), tile) * e + acc + staged};
}

int64_t DarKnightEngine::overlap_chunk(int64_t items, int64_t out_numel) const {
  const CodecOptions& o = encoder_.options();
  const int64_t vbs = (items + o.k - 1) / o.k;
  if (!overlap_ || integrity_ != IntegrityMode::none || vbs < 2) return 0;
  // Chunks of at most 64 MiB of outputs (at least one virtual batch), and at least four
  // chunks where there are four virtual batches.
  constexpr int64_t kStageBytes = int64_t{64} << 20;
  const int64_t vb_bytes = (o.k + 1 + o.redundancy) * out_numel *
                           static_cast<int64_t>(dtype_size(o.precision));
  return std::clamp<int64_t>(kStageBytes / std::max<int64_t>(vb_bytes, 1), 1, (vbs + 3) / 4);
}

template <typename T>
TensorT<T>& DarKnightEngine::stage(int i, int64_t numel) {
  TensorT<T>& s = [&]() -> TensorT<T>& {
    if constexpr (std::is_same_v<T, float>)
      return stage32_[static_cast<size_t>(i)];
    else
      return stage64_[static_cast<size_t>(i)];
  }();
  if (s.numel() < numel) {
    s = TensorT<T>();
    s = TensorT<T>::uninitialized(Shape{numel});
  }
  return s;
}

template <typename T>
void DarKnightEngine::forward_overlapped(const nn::Node& node, const Tensor& src, Tensor& dst,
                                         RunStats& stats) {
  const CodecOptions& o = encoder_.options();
  const int64_t m = src.shape()[0], s_in = src.shape().item_numel(),
                s_out = node.shape.numel();
  const std::vector<int> sizes = split_virtual_batches(m, o.k);
  const int64_t vbs = static_cast<int64_t>(sizes.size()), per = overlap_chunk(m, s_out);
  const int64_t mixtures = mixture_count(sizes, o.redundancy);
  accel::Buffer& in = buffers_.get(0, src.shape().with_batch(mixtures));
  const Shape out_shape = node.op == nn::Op::conv ? node.conv.dst_shape(in.shape())
                                                  : node.dense.dst_shape(in.shape());
  accel::Buffer& out = buffers_.get(1, out_shape);
  const accel::Weights& w = *weights_[static_cast<size_t>(node.weights)];
  be_.set_layer(node.weights);
  struct Chunk {
    int64_t item0 = 0, items = 0, mix0 = 0, mixes = 0;
    MixingList secrets;
    TensorT<T>* outputs = nullptr;  // a stage()
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
    encoder_.decode<T>(std::span<const T>(c.outputs->data(), c.mixes * s_out), c.secrets, dst,
                       fused(node.epilogue), c.item0);
    c.secrets.clear();
    accelerator += t1 - t0;
    decode += now() - t1;
  };
  std::optional<Chunk> previous;
  int parity = 0;
  for (int64_t v0 = 0, item0 = 0, mix0 = 0; v0 < vbs; v0 += per, parity ^= 1) {
    Chunk c;
    c.item0 = item0, c.mix0 = mix0;
    for (int64_t v = v0; v < std::min(vbs, v0 + per); ++v) {
      c.items += sizes[static_cast<size_t>(v)];
      c.mixes += sizes[static_cast<size_t>(v)] + 1 + o.redundancy;
    }
    item0 += c.items, mix0 += c.mixes;
    // Encode, and send each piece as it is made (the backend copies it before returning).
    const double t0 = now();
    encoder_.encode<T>(
        src, c.secrets,
        [&](const BlindedT<T>& rows, int64_t first, int64_t e0) {
          const int64_t n = rows.shape()[0], len = rows.shape()[1];
          if (len == s_in)
            be_.upload(rows, 0, n * len, in, (c.mix0 + first) * s_in);
          else
            for (int64_t r = 0; r < n; ++r)
              be_.upload(rows, r * len, len, in, (c.mix0 + first + r) * s_in + e0);
          if (!be_.upload_copies()) be_.wait();
          stats.bytes_to_accelerator += static_cast<int64_t>(rows.bytes());
        },
        c.item0, c.items);
    encode += now() - t0;
    // The chunk's linear op and the download of its outputs, left running.
    const double s0 = now();
    const accel::BufferPtr x = be_.view(in, in.shape().with_batch(c.mixes), c.mix0 * s_in);
    const accel::BufferPtr y = be_.view(out, out_shape.with_batch(c.mixes), c.mix0 * s_out);
    if (node.op == nn::Op::conv)
      be_.conv2d_forward(node.conv, *x, w, *y);
    else
      be_.dense_forward(node.dense, *x, w, *y);
    c.outputs = &stage<T>(parity, c.mixes * s_out);
    be_.download(*y, 0, c.mixes * s_out, *c.outputs, 0);
    c.mark = be_.mark();
    stats.accelerator_calls += 1;
    stats.bytes_from_accelerator += c.mixes * s_out * static_cast<int64_t>(sizeof(T));
    accelerator += now() - s0;
    // Meanwhile, decode the chunk before.
    if (previous) finish(*previous);
    previous.emplace(std::move(c));
  }
  finish(*previous);
  stats.times.encode += encode;
  stats.times.accelerator += accelerator;
  stats.times.decode += decode;
}

int64_t DarKnightEngine::backward_scratch_bytes(const nn::Node& node, int64_t in_numel, int64_t,
                                                int k) const {
  // Delta pieces going out, input-gradient pieces coming back, and in the paper's
  // gradient decode K + 1 pieces of weight gradients with their f64 sum.
  const int64_t e = static_cast<int64_t>(dtype_size(encoder_.options().precision));
  const int64_t tile = encoder_.options().stream_tile;
  const int64_t w =
      node.is_linear()
          ? (node.op == nn::Op::conv ? node.conv.weight_shape() : node.dense.weight_shape()).numel()
          : 0;
  const int64_t n = k + 1 + encoder_.options().redundancy;
  const int64_t grads = grad_decode_ == GradDecode::trusted
                            ? n * std::min(w, tile) * e + std::min(w, tile) * 8
                            : 0;
  // Not counted: with checks, the weight gradient (both, with the redundant check) comes
  // back whole, and the weights are read back whole after each step; on large layers that
  // exceeds the budget (docs/performance.md, "Integrity checks": streaming them is to do).
  return std::max({n * std::min(node.shape.numel(), tile) * e, n * std::min(in_numel, tile) * e,
                   grads}) +
         64 * 2048 * 8;
}

template <typename T>
MixtureSink<T> DarKnightEngine::uploader(accel::Buffer& dst, int64_t item, double& seconds,
                                         RunStats& stats) {
  return [this, &dst, item, &seconds, &stats](const BlindedT<T>& rows, int64_t first, int64_t e0) {
    const double t0 = now();
    const int64_t n = rows.shape()[0], len = rows.shape()[1];
    if (len == item) {
      be_.upload(rows, 0, n * len, dst, first * item);
    } else {
      for (int64_t r = 0; r < n; ++r) be_.upload(rows, r * len, len, dst, (first + r) * item + e0);
    }
    be_.wait();  // `rows` is freed when this returns
    stats.bytes_to_accelerator += static_cast<int64_t>(rows.bytes());
    seconds += now() - t0;
  };
}

template <typename T>
OutputFetch<T> DarKnightEngine::downloader(const accel::Buffer& src, int64_t item, double& seconds,
                                           RunStats& stats) {
  return [this, &src, item, &seconds, &stats](TensorT<T>& rows, int64_t first, int64_t e0) {
    const double t0 = now();
    const int64_t n = rows.shape()[0], len = rows.shape()[1];
    if (len == item) {
      be_.download(src, first * item, n * len, rows, 0);
    } else {
      for (int64_t r = 0; r < n; ++r)
        be_.download(src, (first + r) * item + e0, len, rows, r * len);
    }
    be_.wait();
    stats.bytes_from_accelerator += static_cast<int64_t>(rows.bytes());
    seconds += now() - t0;
  };
}

const accel::Buffer& DarKnightEngine::apply(const nn::Node& node, const accel::Buffer& in) {
  const accel::Weights& w = *weights_[static_cast<size_t>(node.weights)];
  be_.set_layer(node.weights);
  if (node.op == nn::Op::conv) {
    accel::Buffer& out = buffers_.get(1, node.conv.dst_shape(in.shape()));
    be_.conv2d_forward(node.conv, in, w, out);
    return out;
  }
  accel::Buffer& out = buffers_.get(1, node.dense.dst_shape(in.shape()));
  be_.dense_forward(node.dense, in, w, out);
  return out;
}

template <typename T>
Tensor DarKnightEngine::forward_t(const nn::Node& node, Tensor& src, bool consume,
                                  RunStats& stats) {
  const CodecOptions& o = encoder_.options();
  const int64_t m = src.shape()[0], s_in = src.shape().item_numel();
  if (overlap_chunk(m, node.shape.numel()) > 0) {
    Tensor dst = batch_of(m, node.shape);
    forward_overlapped<T>(node, src, dst, stats);
    if (consume) src = Tensor();
    return dst;
  }
  const int64_t mixtures = mixture_count(split_virtual_batches(m, o.k), o.redundancy);
  accel::Buffer& in = buffers_.get(0, src.shape().with_batch(mixtures));
  MixingList secrets;
  std::optional<ForwardCheck> check;
  if (integrity_ != IntegrityMode::none)
    check.emplace(integrity_, Geometry::of(node, item_of(src.shape())), digest(node.weights),
                  secrets, mixtures, o.precision);
  double up = 0, down = 0;
  // Encode and upload piece by piece: the accelerator gathers every mixture.
  const double t0 = now();
  MixtureSink<T> sink = uploader<T>(in, s_in, up, stats);
  if (check)
    sink = [&check, send = std::move(sink)](const BlindedT<T>& rows, int64_t first, int64_t e0) {
      check->on_input(rows, first, e0);
      send(rows, first, e0);
    };
  encoder_.encode<T>(src, secrets, sink);
  if (consume && !check) src = Tensor();  // the plaintext input is no longer needed
  const double t1 = now();
  Tensor dst = batch_of(m, node.shape);
  double t2 = t1, t3 = t1;
  // With integrity checks: a result that fails is recomputed once, then computed in the
  // trusted runtime; it is never used.
  for (int attempt = 0;; ++attempt) {
    const double a0 = now();
    const accel::Buffer& out = apply(node, in);
    be_.wait();
    stats.accelerator_calls += 1;
    const double a1 = now();
    t2 += a1 - a0;
    // Download and decode piece by piece, the epilogue fused in.
    OutputFetch<T> fetch = downloader<T>(out, node.shape.numel(), down, stats);
    if (check) {
      check->begin_outputs();
      fetch = [&check, get = std::move(fetch)](TensorT<T>& rows, int64_t first, int64_t e0) {
        get(rows, first, e0);
        check->on_output(rows, first, e0);
      };
    }
    encoder_.decode<T>(secrets, dst, fetch, fused(node.epilogue));
    t3 += now() - a1;
    if (!check) break;
    const bool ok = check->passed();
    account(
        node, "forward", ok, [&] { return unmixings(secrets); },
        [&](const Tensor64& e) { return check->above_tolerance(e); });
    if (ok) break;
    if (attempt == 0) {
      counters_.recomputed += 1;
      continue;
    }
    const double f0 = now();
    fallback(node, src, dst);
    t3 += now() - f0;
    counters_.fallbacks += 1;
    break;
  }
  if (consume) src = Tensor();
  // t2 - t1: accelerator calls; t3 - t1: downloads and decoding (and checks).
  stats.times.encode += t1 - t0 - up;
  stats.times.accelerator += t2 - t1 + up + down;
  stats.times.transfer += up + down;
  stats.times.decode += t3 - t1 - down;
  return dst;
}

void DarKnightEngine::account(const nn::Node& node, const char* op, bool passed, int operations,
                              const decltype(CheckEvent::decode)& decode,
                              const decltype(CheckEvent::above_tolerance)& above) {
  counters_.checks += 1;
  if (!passed) counters_.note_failure(node.name, op, to_string(integrity_));
  if (observer_)
    observer_->on_check(CheckEvent{node.name, op, passed, operations, decode, 0.0, above});
}

void DarKnightEngine::account(const nn::Node& node, const char* op, bool passed,
                              const std::function<CoefficientList()>& d,
                              const std::function<bool(const Tensor64&)>& above) {
  if (!observer_) return account(node, op, passed, 1, {}, {});
  const CoefficientList decode = d();
  account(
      node, op, passed, 1,
      [&](int, const Tensor64& e, bool absolute) -> std::optional<Tensor64> {
        return apply_decode(decode, e, absolute);
      },
      [&](const std::vector<const Tensor64*>& e) { return e[0] && above(*e[0]); });
}

void DarKnightEngine::recompute_or_stop(const nn::Node& node, int attempt, const char* op,
                                        int operations) {
  // The limit is on the accelerator's operations: an attempt of the redundant check's
  // gradient pair is two of them, each of which may fail.
  const int limit = 8 * operations;
  if (attempt >= limit)
    throw IntegrityStop(fmt::format(
        "integrity: layer '{}': the accelerator's {} failed the check {} times in a row; "
        "stopping. The weights are only on the accelerator: resume from the last checkpoint "
        "(--resume, or --fallback-accelerator) with a healthy one",
        node.name, op, limit + 1));
  counters_.recomputed += 1;
}

void DarKnightEngine::ensure_train_digests() {
  if (!train_digests_.empty()) return;
  for (size_t i = 0; i < weights_.size(); ++i) {
    const Tensor w = be_.read_weights(*weights_[i]);
    if (!digests_[i]->matches(w))
      throw IntegrityStop("integrity: the weights on the accelerator differ from the ones loaded");
    train_digests_.push_back(
        TrainDigest::make(w, be_.read_momentum(*weights_[i]), groups_[i], *check_rng_));
  }
}

void DarKnightEngine::fallback(const nn::Node& node, const Tensor& src, Tensor& dst) {
  const Tensor w = be_.read_weights(*weights_[static_cast<size_t>(node.weights)]);
  if (!digest(node.weights).matches(w))
    throw IntegrityStop(fmt::format(
        "integrity: layer '{}': the accelerator keeps failing checks and the weights it "
        "returns differ from the verified ones; no trustworthy result can be computed",
        node.name));
  const Tensor y = trusted_linear(Geometry::of(node, item_of(src.shape())), w, src);
  const int64_t m = dst.shape()[0], s = dst.shape().item_numel();
  std::copy(y.data(), y.data() + y.numel(), dst.data());
  if (!node.epilogue.empty())
    for (int64_t i = 0; i < m; ++i) node.epilogue.apply(dst.data() + i * s, 0, s);
}

Tensor DarKnightEngine::forward(const nn::Node& node, Tensor& src, bool consume, RunStats& stats) {
  return encoder_.options().precision == DType::f32 ? forward_t<float>(node, src, consume, stats)
                                                    : forward_t<double>(node, src, consume, stats);
}

template <typename T>
Tensor DarKnightEngine::forward_train_t(const nn::Node& node, Tensor& src, RunStats& stats) {
  DK_CHECK(integrity_ == IntegrityMode::none || grad_decode_ == GradDecode::folded,
           "integrity checks in training need --grad-decode folded (docs/SECURITY.md)");
  const CodecOptions& o = encoder_.options();
  const int64_t m = src.shape()[0], s_in = src.shape().item_numel();
  const int64_t mixtures = mixture_count(split_virtual_batches(m, o.k), o.redundancy);
  Kept& kept = kept_[node.weights];
  kept.secrets.clear();
  kept.in_shape = src.shape().with_batch(mixtures);
  std::optional<ForwardCheck> check;
  const Geometry geo = Geometry::of(node, item_of(src.shape()));
  if (integrity_ == IntegrityMode::freivalds) {
    ensure_train_digests();
    const TrainDigest& td = *train_digests_[static_cast<size_t>(node.weights)];
    check.emplace(integrity_, geo, *td.fwd, kept.secrets, mixtures, o.precision);
    kept.grad_check = std::make_unique<WeightGradCheck>(geo, td, mixtures, o.precision);
  } else if (integrity_ == IntegrityMode::redundant) {
    check.emplace(integrity_, geo, digest(node.weights), kept.secrets, mixtures, o.precision);
    kept.pair_check = std::make_unique<GradPairCheck>(geo, mixtures, o.k + 2, o.precision);
  }
  // The layer's input mixtures stay on the accelerator for the weight gradient.
  accel::Buffer& in = train_inputs_.get(node.weights, kept.in_shape);
  double up = 0, down = 0;
  const double t0 = now();
  MixtureSink<T> sink = uploader<T>(in, s_in, up, stats);
  if (check)
    sink = [&check, &kept, send = std::move(sink)](const BlindedT<T>& rows, int64_t first,
                                                   int64_t e0) {
      check->on_input(rows, first, e0);
      if (kept.grad_check) kept.grad_check->on_forward_input(rows, first, e0);
      if (kept.pair_check) kept.pair_check->on_forward_input(rows, first, e0);
      send(rows, first, e0);
    };
  train_encoder_.encode_inputs<T>(src, kept.secrets, sink);
  const double t1 = now();
  Tensor dst = batch_of(m, node.shape);
  double t2 = t1, t3 = t1;
  for (int attempt = 0;; ++attempt) {
    const double a0 = now();
    const accel::Buffer& out = apply(node, in);
    be_.wait();
    stats.accelerator_calls += 1;
    const double a1 = now();
    t2 += a1 - a0;
    OutputFetch<T> fetch = downloader<T>(out, node.shape.numel(), down, stats);
    if (check) {
      check->begin_outputs();
      fetch = [&check, get = std::move(fetch)](TensorT<T>& rows, int64_t first, int64_t e0) {
        get(rows, first, e0);
        check->on_output(rows, first, e0);
      };
    }
    train_encoder_.decode_outputs<T>(kept.secrets, dst, fetch, fused(node.epilogue));
    t3 += now() - a1;
    if (!check) break;
    const bool ok = check->passed();
    account(
        node, "forward", ok, [&] { return unmixings(kept.secrets); },
        [&](const Tensor64& e) { return check->above_tolerance(e); });
    if (ok) break;
    recompute_or_stop(node, attempt, "forward");
  }
  // t2 - t1: accelerator calls; t3 - t1: downloads and decoding (and checks).
  stats.times.encode += t1 - t0 - up;
  stats.times.accelerator += t2 - t1 + up + down;
  stats.times.transfer += up + down;
  stats.times.decode += t3 - t1 - down;
  return dst;
}

Tensor DarKnightEngine::forward_train(const nn::Node& node, Tensor& src, RunStats& stats) {
  return encoder_.options().precision == DType::f32 ? forward_train_t<float>(node, src, stats)
                                                    : forward_train_t<double>(node, src, stats);
}

template <typename T>
Tensor DarKnightEngine::backward_t(const nn::Node& node, const Tensor& delta, bool input_grad,
                                   RunStats& stats) {
  const auto it = kept_.find(node.weights);
  DK_CHECK(it != kept_.end(), "backward of layer '{}' without its forward pass", node.name);
  const Kept& kept = it->second;
  const bool folded = grad_decode_ == GradDecode::folded;
  const int64_t m = delta.shape()[0], s_out = node.shape.numel();
  const int64_t s_in = kept.in_shape.item_numel(), mixtures = kept.in_shape[0];
  accel::Weights& w = *weights_[static_cast<size_t>(node.weights)];
  const accel::Buffer& in = train_inputs_.get(node.weights, kept.in_shape);
  be_.set_layer(node.weights);
  OpTimes& t = stats.backward_times;
  double up = 0, down = 0;

  // Mix the deltas (no noise) and send them.
  double t0 = now();
  accel::Buffer& dd = buffers_.get(2, delta.shape().with_batch(mixtures));
  const bool checked = integrity_ != IntegrityMode::none;
  const bool redundant = integrity_ == IntegrityMode::redundant;
  const Geometry geo = Geometry::of(node, item_of(kept.in_shape));
  const DType precision = encoder_.options().precision;
  std::optional<BackwardDataCheck> dcheck;    // freivalds
  std::optional<RedundantDataCheck> rdcheck;  // redundant
  if (checked && input_grad) {
    if (redundant)
      rdcheck.emplace(geo, digest(node.weights), kept.secrets, mixtures, precision);
    else
      dcheck.emplace(geo, *train_digests_[static_cast<size_t>(node.weights)], mixtures,
                     precision);
  }
  MixtureSink<T> sink = uploader<T>(dd, s_out, up, stats);
  if (checked)
    sink = [&, send = std::move(sink)](const BlindedT<T>& rows, int64_t first, int64_t e0) {
      if (dcheck) dcheck->on_input(rows, first, e0);
      if (rdcheck) rdcheck->on_input(rows, first, e0);
      if (kept.grad_check) kept.grad_check->on_delta(rows, first, e0);
      if (kept.pair_check) kept.pair_check->on_delta(rows, first, e0, 0);
      send(rows, first, e0);
    };
  train_encoder_.encode_deltas<T>(delta, kept.secrets, folded, sink);
  // With the redundant check, the second mixing of the deltas, for the second gradient.
  accel::Buffer* dd2 = nullptr;
  if (redundant) {
    dd2 = &buffers_.get(6, dd.shape());
    MixtureSink<T> send2 = uploader<T>(*dd2, s_out, up, stats);
    train_encoder_.encode_deltas<T>(
        delta, kept.secrets, folded,
        [&](const BlindedT<T>& rows, int64_t first, int64_t e0) {
          kept.pair_check->on_delta(rows, first, e0, 1);
          send2(rows, first, e0);
        },
        true);
  }
  double t1 = now();
  t.encode += t1 - t0 - up;
  t.accelerator += up;

  // (a) Input gradients: W^T dbar_j, decoded with A's left inverse.
  Tensor dx;
  if (input_grad) {
    dx = batch_of(m, item_of(kept.in_shape));
    for (int attempt = 0;; ++attempt) {
      t0 = now();
      accel::Buffer& dxb = buffers_.get(3, kept.in_shape);
      if (node.op == nn::Op::conv)
        be_.conv2d_backward_data(node.conv, dd, w, dxb);
      else
        be_.dense_backward_data(node.dense, dd, w, dxb);
      be_.wait();
      stats.accelerator_calls += 1;
      t1 = now();
      t.accelerator += t1 - t0;
      down = 0;
      OutputFetch<T> fetch = downloader<T>(dxb, s_in, down, stats);
      if (checked) {
        if (dcheck) dcheck->begin_outputs();
        if (rdcheck) rdcheck->begin_outputs();
        fetch = [&, get = std::move(fetch)](TensorT<T>& rows, int64_t first, int64_t e0) {
          get(rows, first, e0);
          if (dcheck) dcheck->on_output(rows, first, e0);
          if (rdcheck) rdcheck->on_output(rows, first, e0);
        };
      }
      train_encoder_.decode_input_grads<T>(kept.secrets, dx, fetch, folded);
      const double t2 = now();
      t.decode += t2 - t1 - down;
      t.accelerator += down;
      if (!checked) break;
      const bool ok = dcheck ? dcheck->passed() : rdcheck->passed();
      account(
          node, "backward-data", ok,
          [&] {
            CoefficientList d;
            for (const auto& tm : kept.secrets) d.push_back(tm->delta_unmixing(folded));
            return d;
          },
          [&](const Tensor64& e) {
            return dcheck ? dcheck->above_tolerance(e) : rdcheck->above_tolerance(e);
          });
      if (ok) break;
      recompute_or_stop(node, attempt, "backward-data");
    }
  }

  // (b) Weight gradients.
  const Shape ws = node.op == nn::Op::conv ? node.conv.weight_shape() : node.dense.weight_shape();
  auto backward_weights = [&](const accel::Buffer& x, const accel::Buffer& d, accel::Buffer& g) {
    if (node.op == nn::Op::conv)
      be_.conv2d_backward_weights(node.conv, x, d, g);
    else
      be_.dense_backward_weights(node.dense, x, d, g);
  };
  if (folded) {
    // sum_j Eq_j over every mixture of the pass is the gradient: it stays on the
    // accelerator (with checks, a copy comes back to be checked before it is applied; with
    // the redundant one, the second gradient too).
    accel::Buffer& g = buffers_.get(4, ws);
    accel::Buffer* g2 = redundant ? &buffers_.get(7, ws) : nullptr;
    // The gradients come back piece by piece, whole output channels at a time.
    const int64_t per = ws.numel() / ws[0];
    const int64_t rows_per = std::max<int64_t>(1, encoder_.options().stream_tile / per);
    auto fetch = [&](const accel::Buffer& b, int64_t o0, int64_t o1) {
      const double f0 = now();
      auto piece = TensorT<T>::uninitialized(Shape{(o1 - o0) * per});
      be_.download(b, o0 * per, piece.numel(), piece, 0);
      be_.wait();
      stats.bytes_from_accelerator += static_cast<int64_t>(piece.bytes());
      t.accelerator += now() - f0;
      return piece.template cast<double>();
    };
    for (int attempt = 0;; ++attempt) {
      t0 = now();
      backward_weights(in, dd, g);
      be_.wait();
      stats.accelerator_calls += 1;
      t.accelerator += now() - t0;
      if (!checked) break;
      bool ok = false;
      if (redundant) {
        t0 = now();
        backward_weights(in, *dd2, *g2);
        be_.wait();
        stats.accelerator_calls += 1;
        t.accelerator += now() - t0;
        GradPairCheck& pc = *kept.pair_check;
        pc.begin();
        for (int64_t o0 = 0; o0 < ws[0]; o0 += rows_per) {
          const int64_t o1 = std::min(ws[0], o0 + rows_per);
          const Tensor64 a = fetch(g, o0, o1), b = fetch(*g2, o0, o1);
          const double c0 = now();
          pc.check_piece(a.data(), b.data(), o0 * per, a.numel());
          t.decode += now() - c0;
        }
        ok = pc.passed();
        // The gradient used is the first; the check sees the difference of their errors.
        account(
            node, "backward-weights", ok, 2,
            [](int i, const Tensor64& e, bool) -> std::optional<Tensor64> {
              if (i == 1) return std::nullopt;
              return e.clone();
            },
            [&](const std::vector<const Tensor64*>& e) {
              Tensor64 diff(ws);
              for (int64_t i = 0; i < diff.numel(); ++i)
                diff[i] = (e[0] ? (*e[0])[i] : 0.0) - (e[1] ? (*e[1])[i] : 0.0);
              return pc.above_tolerance(diff);
            });
      } else {
        TrainDigest& td = *train_digests_[static_cast<size_t>(node.weights)];
        for (int64_t o0 = 0; o0 < ws[0]; o0 += rows_per) {
          const int64_t o1 = std::min(ws[0], o0 + rows_per);
          const Tensor64 rows = fetch(g, o0, o1);
          const double c0 = now();
          kept.grad_check->check_rows(rows.data(), o0, o1, td);
          t.decode += now() - c0;
        }
        ok = kept.grad_check->finish(td);
        account(
            node, "backward-weights", ok, 1,
            [](int, const Tensor64& e, bool) -> std::optional<Tensor64> { return e.clone(); },
            [&](const std::vector<const Tensor64*>& e) {
              return e[0] && kept.grad_check->above_tolerance(*e[0]);
            });
      }
      if (ok) break;
      recompute_or_stop(node, attempt, "backward-weights", redundant ? 2 : 1);
    }
    t0 = now();
    be_.accumulate_grad(w, g);
    be_.wait();
    t.accelerator += now() - t0;
    return dx;
  }
  // The paper's decode: per virtual batch, the accelerator returns every Eq_j and the
  // trusted side sums gamma_j Eq_j, piece by piece, into the pending gradient.
  const int64_t wn = ws.numel();
  int64_t first = 0;
  for (const auto& tmp : kept.secrets) {
    const TrainingMixing& tm = *tmp;
    const int n = tm.k() + 1;
    t0 = now();
    auto xv = be_.view(const_cast<accel::Buffer&>(in), kept.in_shape.with_batch(n), first * s_in);
    auto dv = be_.view(dd, dd.shape().with_batch(n), first * s_out);
    std::vector<int64_t> eq_dims{n};
    for (int64_t d : ws.dims()) eq_dims.push_back(d);
    accel::Buffer& eq = buffers_.get(5, Shape(std::span<const int64_t>(eq_dims)));
    backward_weights(*xv, *dv, eq);
    be_.wait();
    stats.accelerator_calls += 1;
    t1 = now();
    t.accelerator += t1 - t0;
    double fetch = 0, give = 0;
    int64_t e0 = 0;
    for (int64_t len : stream_pieces(wn, encoder_.options().stream_tile)) {
      double f0 = now();
      auto rows = TensorT<T>::uninitialized(Shape{n, len});
      for (int j = 0; j < n; ++j) be_.download(eq, j * wn + e0, len, rows, j * len);
      be_.wait();
      stats.bytes_from_accelerator += static_cast<int64_t>(rows.bytes());
      fetch += now() - f0;
      Tensor64 sum(Shape{len});
      for (int j = 0; j < n; ++j) {
        const double gj = tm.gamma(j);
        const T* r = rows.data() + j * len;
#pragma omp parallel for schedule(static)
        for (int64_t e = 0; e < len; ++e) sum[e] += gj * static_cast<double>(r[e]);
      }
      f0 = now();
      be_.accumulate_grad(w, sum, e0);
      give += now() - f0;
      e0 += len;
    }
    const double t2 = now();
    t.decode += t2 - t1 - fetch - give;
    t.accelerator += fetch + give;
    first += n;
  }
  return dx;
}

Tensor DarKnightEngine::backward(const nn::Node& node, const Tensor& delta, bool input_grad,
                                 RunStats& stats) {
  return encoder_.options().precision == DType::f32
             ? backward_t<float>(node, delta, input_grad, stats)
             : backward_t<double>(node, delta, input_grad, stats);
}

void DarKnightEngine::step(const SgdParams& p) {
  for (auto& w : weights_) be_.sgd_step(*w, p);
  be_.wait();
  if (integrity_ == IntegrityMode::redundant) {
    // The redundant checks' tolerances scale with the weights' norms: renewed from the
    // weights read back (unverified: see docs/SECURITY.md).
    for (size_t i = 0; i < weights_.size(); ++i)
      digests_[i] = std::make_unique<WeightDigest>(be_.read_weights(*weights_[i]), groups_[i],
                                                   integrity_, *check_rng_);
    return;
  }
  if (integrity_ != IntegrityMode::freivalds || train_digests_.empty()) return;
  // The weights and momentum after the step must be what the verified gradients give; then
  // fresh projections for the next step.
  for (size_t i = 0; i < weights_.size(); ++i) {
    const Tensor w = be_.read_weights(*weights_[i]);
    const Tensor v = be_.read_momentum(*weights_[i]);
    if (!train_digests_[i]->verify_step(w, v, p))
      throw IntegrityStop(fmt::format(
          "integrity: the weights of linear layer {} after the SGD step differ from what the "
          "verified gradient gives; stopping. Resume from the last checkpoint (--resume, or "
          "--fallback-accelerator) with a healthy accelerator",
          i));
    train_digests_[i] = TrainDigest::make(w, v, groups_[i], *check_rng_);
  }
}

Tensor DarKnightEngine::read_weights(int index) {
  Tensor w = be_.read_weights(*weights_.at(static_cast<size_t>(index)));
  // With Freivalds' check in training, what is saved (checkpoints, the model) must be the
  // weights verified after the last step.
  if (!train_digests_.empty() && !train_digests_[static_cast<size_t>(index)]->fwd->matches(w))
    throw IntegrityStop(fmt::format(
        "integrity: the accelerator returns weights {} that differ from the verified ones", index));
  return w;
}
Tensor64 DarKnightEngine::read_grad(int index) {
  return be_.read_grad(*weights_.at(static_cast<size_t>(index)));
}
Tensor DarKnightEngine::read_momentum(int index) {
  Tensor v = be_.read_momentum(*weights_.at(static_cast<size_t>(index)));
  const auto* d = train_digests_.empty() ? nullptr : train_digests_[static_cast<size_t>(index)].get();
  if (d && d->momentum && !d->momentum->matches(v))
    throw IntegrityStop(fmt::format(
        "integrity: the accelerator returns a momentum {} that differs from the verified one",
        index));
  return v;
}
void DarKnightEngine::write_momentum(int index, const Tensor& momentum) {
  be_.write_momentum(*weights_.at(static_cast<size_t>(index)), momentum);
}

}  // namespace darknight::trusted
