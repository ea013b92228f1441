#include "trusted/darknight_memory.h"

#include <algorithm>

namespace darknight::trusted {

int64_t overlap_chunk(const DarKnightSettings& s, int64_t items, int64_t out_numel) {
  const CodecOptions& o = s.codec;
  const int64_t vbs = (items + o.k - 1) / o.k;
  if (!s.overlap || s.integrity != IntegrityMode::none || vbs < 2) return 0;
  // Chunks of at most 64 MiB of outputs (at least one virtual batch), and at least four
  // chunks where there are four virtual batches.
  constexpr int64_t kStageBytes = int64_t{64} << 20;
  const int64_t vb_bytes =
      (o.k + 1 + o.redundancy) * out_numel * static_cast<int64_t>(dtype_size(o.precision));
  return std::clamp<int64_t>(kStageBytes / std::max<int64_t>(vb_bytes, 1), 1, (vbs + 3) / 4);
}

Scratch forward_scratch(const DarKnightSettings& s, const nn::Node& node, int64_t in_numel,
                        int64_t items, int k) {
  // One piece of K + 1 mixtures and its noise while encoding; one piece of K + 1 outputs
  // while decoding (the other mixtures live on the accelerator), plus the codec threads'
  // accumulators.
  // With integrity checks, their per-mixture sums (freivalds: four per output position).
  const int64_t e = static_cast<int64_t>(dtype_size(s.codec.precision));
  const int64_t tile = s.codec.stream_tile;
  const int extra = s.codec.redundancy;
  const int64_t mixtures = mixture_count(split_virtual_batches(items, k), extra);
  const int64_t positions = node.op == nn::Op::conv ? node.shape[1] * node.shape[2] : 1;
  const int64_t check = s.integrity == IntegrityMode::freivalds
                            ? kProjections * 5 * 8 * mixtures * positions
                        : s.integrity == IntegrityMode::redundant ? 8 * mixtures
                                                                  : 0;
  const int64_t acc = kCodecAccumulatorBytes + check;
  // Overlapped: the two download areas (Transfer::stage), each one chunk's outputs. They are
  // kept from layer to layer, so a layer after a larger one holds more than this; in the
  // zoo's models the layers with the largest chunks are also those with the largest
  // activations.
  const int64_t staged =
      2 * overlap_chunk(s, items, node.shape.numel()) * (k + 1 + extra) * node.shape.numel() * e;
  return {(k + 2 + extra) * std::min(in_numel, tile) * e + acc + staged,
          (k + 1 + extra) * std::min(node.shape.numel(), tile) * e + acc + staged};
}

int64_t backward_scratch(const DarKnightSettings& s, const nn::Node& node, int64_t in_numel,
                         int k) {
  // Delta pieces going out, input-gradient pieces coming back, and in the paper's
  // gradient decode K + 1 pieces of weight gradients with their f64 sum.
  const int64_t e = static_cast<int64_t>(dtype_size(s.codec.precision));
  const int64_t tile = s.codec.stream_tile;
  const int64_t w =
      node.is_linear()
          ? (node.op == nn::Op::conv ? node.conv.weight_shape() : node.dense.weight_shape()).numel()
          : 0;
  const int64_t n = k + 1 + s.codec.redundancy;
  const int64_t grads =
      s.grad_decode == GradDecode::trusted ? n * std::min(w, tile) * e + std::min(w, tile) * 8 : 0;
  // Not counted: with checks, the weight gradient (both, with the redundant check) comes
  // back whole, and the weights are read back whole after each step; on large layers that
  // exceeds the budget (docs/performance.md, "Integrity checks": streaming them is to do).
  return std::max({n * std::min(node.shape.numel(), tile) * e, n * std::min(in_numel, tile) * e,
                   grads}) +
         kCodecAccumulatorBytes;
}

}  // namespace darknight::trusted
