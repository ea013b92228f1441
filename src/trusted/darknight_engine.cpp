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
      encoder_(pool_ ? Encoder(opts, *pool_) : Encoder(opts, rng)) {}

DarKnightEngine::~DarKnightEngine() = default;

int64_t DarKnightEngine::resident_bytes() const {
  return pool_ ? pool_->capacity() : 0;
}

void DarKnightEngine::begin_pass(const nn::Graph& g, int64_t items) {
  if (!pool_) return;
  const int k = encoder_.options().k;
  for (const nn::Node& n : g.nodes()) {
    if (!n.is_linear()) continue;
    const int64_t in = g.node(n.inputs[0]).shape.numel();
    for (int kv : split_virtual_batches(items, k))
      pool_->announce(kv, in, encoder_.options().precision);
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

int64_t DarKnightEngine::scratch_bytes(const nn::Node& node, int64_t in_numel, int64_t items,
                                       int k) const {
  const int64_t e = static_cast<int64_t>(dtype_size(encoder_.options().precision));
  const int64_t mixtures = items + (items + k - 1) / k;
  // Encoding holds the input mixtures and one noise vector; after the upload has completed
  // they are freed and the output mixtures are downloaded.
  const int64_t encode = (mixtures + 1) * in_numel * e;
  const int64_t decode = mixtures * node.shape.numel() * e;
  return std::max(encode, decode);
}

accel::Buffer& DarKnightEngine::buffer(const Shape& shape, int slot) {
  auto& b = buffers_[{shape.str(), slot}];
  if (!b) b = be_.alloc(shape, encoder_.options().precision);
  return *b;
}

template <typename T>
Tensor DarKnightEngine::forward_t(const nn::Node& node, const Tensor& src, RunStats& stats) {
  const int64_t m = src.shape()[0];
  std::vector<Mixing> secrets;
  double t0 = now();
  Shape in_shape;
  {
    const BlindedT<T> mixtures = encoder_.encode<T>(src, secrets);
    const double t1 = now();
    stats.times.encode += t1 - t0;
    t0 = t1;
    in_shape = mixtures.shape();
    be_.upload(mixtures, buffer(in_shape, 0));
    be_.wait();  // the host copy of the mixtures may be freed only now
    stats.bytes_to_accelerator += static_cast<int64_t>(mixtures.bytes());
  }
  accel::Buffer& in = buffer(in_shape, 0);
  const accel::Weights& w = *weights_[static_cast<size_t>(node.weights)];
  accel::Buffer* out;
  if (node.op == nn::Op::conv) {
    out = &buffer(node.conv.dst_shape(in_shape), 1);
    be_.conv2d_forward(node.conv, in, w, *out);
  } else {
    out = &buffer(node.dense.dst_shape(in_shape), 1);
    be_.dense_forward(node.dense, in, w, *out);
  }
  TensorT<T> ybar(out->shape());
  be_.download(*out, ybar);
  be_.wait();
  stats.accelerator_calls += 1;
  stats.bytes_from_accelerator += static_cast<int64_t>(ybar.bytes());
  const double t1 = now();
  stats.times.accelerator += t1 - t0;
  std::vector<int64_t> dims{m};
  for (int64_t d : node.shape.dims()) dims.push_back(d);
  Tensor dst{Shape(std::span<const int64_t>(dims))};
  const nn::Epilogue& epi = node.epilogue;
  if (epi.empty())
    Encoder::decode(ybar, secrets, dst);
  else
    Encoder::decode(ybar, secrets, dst,
                    [&epi](float* row, int64_t b, int64_t e) { epi.apply(row, b, e); });
  stats.times.decode += now() - t1;
  return dst;
}

Tensor DarKnightEngine::forward(const nn::Node& node, const Tensor& src, RunStats& stats) {
  return encoder_.options().precision == DType::f32 ? forward_t<float>(node, src, stats)
                                                    : forward_t<double>(node, src, stats);
}

}  // namespace darknight::trusted
