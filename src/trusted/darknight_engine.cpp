#include "trusted/darknight_engine.h"

#include <chrono>

namespace darknight::trusted {
namespace {
double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
}  // namespace

DarKnightEngine::DarKnightEngine(accel::Backend& backend, const CodecOptions& opts, Csprng& rng,
                                 int64_t precompute_bytes)
    : be_(backend),
      pool_(precompute_bytes > 0 ? std::make_unique<PooledSource>(
                                       rng, opts.noise, opts.mixing_scale, precompute_bytes)
                                 : nullptr),
      encoder_(pool_ ? Encoder(opts, *pool_) : Encoder(opts, rng)),
      buffers_(backend, opts.precision) {}

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
    // The encoder draws every virtual batch's coefficients, then their noise in pieces.
    const std::vector<int> sizes = split_virtual_batches(items, o.k);
    for (int kv : sizes) pool_->announce_mixing(kv);
    for (size_t v = 0; v < sizes.size(); ++v)
      for (int64_t len : stream_pieces(in, o.stream_tile)) pool_->announce_noise(len, o.precision);
  }
}

void DarKnightEngine::load(nn::Graph& g) {
  // The weights go to the accelerator; the trusted side keeps none of them.
  const MeterScope host(nullptr);  // loaded by the host, outside the enclave
  weights_.clear();
  for (Tensor& w : g.weights()) {
    weights_.push_back(be_.create_weights(w));
    w = Tensor();
  }
}

Scratch DarKnightEngine::scratch_bytes(const nn::Node& node, int64_t in_numel, int64_t,
                                       int k) const {
  // One piece of K + 1 mixtures and its noise while encoding; one piece of K + 1 outputs
  // while decoding (the other mixtures live on the accelerator), plus the codec threads'
  // accumulators.
  const int64_t e = static_cast<int64_t>(dtype_size(encoder_.options().precision));
  const int64_t tile = encoder_.options().stream_tile;
  const int64_t acc = 64 * 2048 * 8;
  return {(k + 2) * std::min(in_numel, tile) * e + acc,
          (k + 1) * std::min(node.shape.numel(), tile) * e + acc};
}

template <typename T>
Tensor DarKnightEngine::forward_t(const nn::Node& node, Tensor& src, bool consume,
                                  RunStats& stats) {
  const int64_t m = src.shape()[0];
  const int64_t mixtures = mixture_count(split_virtual_batches(m, encoder_.options().k));
  accel::Buffer& in = buffers_.get(0, src.shape().with_batch(mixtures));
  const int64_t s_in = src.shape().item_numel();
  std::vector<Mixing> secrets;
  double transfer = 0;
  // Encode and upload piece by piece: the accelerator gathers every mixture.
  double t0 = now();
  encoder_.encode<T>(src, secrets, [&](const BlindedT<T>& rows, int64_t first, int64_t e0) {
    const double u0 = now();
    const int64_t n = rows.shape()[0], len = rows.shape()[1];
    if (len == s_in) {
      be_.upload(rows, 0, n * len, in, first * s_in);
    } else {
      for (int64_t r = 0; r < n; ++r) be_.upload(rows, r * len, len, in, (first + r) * s_in + e0);
    }
    be_.wait();  // `rows` is freed when this returns
    stats.bytes_to_accelerator += static_cast<int64_t>(rows.bytes());
    transfer += now() - u0;
  });
  if (consume) src = Tensor();  // the plaintext input is no longer needed
  double t1 = now();
  stats.times.encode += t1 - t0 - transfer;
  const accel::Weights& w = *weights_[static_cast<size_t>(node.weights)];
  accel::Buffer* out;
  if (node.op == nn::Op::conv) {
    out = &buffers_.get(1, node.conv.dst_shape(in.shape()));
    be_.conv2d_forward(node.conv, in, w, *out);
  } else {
    out = &buffers_.get(1, node.dense.dst_shape(in.shape()));
    be_.dense_forward(node.dense, in, w, *out);
  }
  be_.wait();
  stats.accelerator_calls += 1;
  const double t2 = now();
  stats.times.accelerator += t2 - t1 + transfer;
  // Download and decode piece by piece, the epilogue fused in.
  const int64_t s_out = node.shape.numel();
  std::vector<int64_t> dims{m};
  for (int64_t d : node.shape.dims()) dims.push_back(d);
  Tensor dst = Tensor::uninitialized(Shape(std::span<const int64_t>(dims)));
  transfer = 0;
  const nn::Epilogue& epi = node.epilogue;
  encoder_.decode<T>(
      secrets, dst,
      [&](TensorT<T>& rows, int64_t first, int64_t e0) {
        const double d0 = now();
        const int64_t n = rows.shape()[0], len = rows.shape()[1];
        if (len == s_out) {
          be_.download(*out, first * s_out, n * len, rows, 0);
        } else {
          for (int64_t r = 0; r < n; ++r)
            be_.download(*out, (first + r) * s_out + e0, len, rows, r * len);
        }
        be_.wait();
        stats.bytes_from_accelerator += static_cast<int64_t>(rows.bytes());
        transfer += now() - d0;
      },
      epi.empty() ? RowEpilogue{} : RowEpilogue([&epi](float* row, int64_t b, int64_t e) {
        epi.apply(row, b, e);
      }));
  const double t3 = now();
  stats.times.decode += t3 - t2 - transfer;
  stats.times.accelerator += transfer;
  return dst;
}

Tensor DarKnightEngine::forward(const nn::Node& node, Tensor& src, bool consume, RunStats& stats) {
  return encoder_.options().precision == DType::f32 ? forward_t<float>(node, src, consume, stats)
                                                    : forward_t<double>(node, src, consume, stats);
}

}  // namespace darknight::trusted
