// The DarKnight engine's settings and the trusted memory they cost a layer: what the runtime
// and the trainer plan a pass's chunks with (their estimate must cover the measured peak,
// which the tests check against the budget), and how the overlapped path cuts a layer into
// chunks.
#pragma once

#include <cstdint>

#include "nn/graph.h"
#include "trusted/codec.h"
#include "trusted/integrity.h"
#include "trusted/runtime.h"

namespace darknight::trusted {

/// How the trusted side obtains a virtual batch's weight gradient (docs/SECURITY.md):
/// `trusted`, the paper's: the accelerator returns every Eq_j and the trusted side sums
/// gamma_j Eq_j; `folded`: gamma_j is folded into the deltas, and the accelerator's
/// ordinary backward-weights returns the sum, which stays on the accelerator.
enum class GradDecode { trusted, folded };

struct DarKnightSettings {
  CodecOptions codec;
  GradDecode grad_decode = GradDecode::trusted;
  IntegrityMode integrity = IntegrityMode::none;
  bool overlap = false;  ///< DarKnightEngine::set_overlap
};

/// The codec threads' accumulators, allowed for in every layer: a tile (kTile elements) of
/// f64 for each of up to 64 threads.
constexpr int64_t kCodecAccumulatorBytes = 64 * kTile * 8;

/// Virtual batches per chunk of the overlapped path for a layer of `items` inputs whose
/// outputs have `out_numel` elements each; 0 when the layer is not overlapped.
int64_t overlap_chunk(const DarKnightSettings& s, int64_t items, int64_t out_numel);
/// Trusted bytes beyond the activations to run `node` (inputs of `in_numel` elements) on
/// `items` inputs in virtual batches of `k` (LinearEngine::scratch_bytes).
Scratch forward_scratch(const DarKnightSettings& s, const nn::Node& node, int64_t in_numel,
                        int64_t items, int k);
/// The same for its backward pass (TrainEngine::backward_scratch_bytes).
int64_t backward_scratch(const DarKnightSettings& s, const nn::Node& node, int64_t in_numel, int k);

}  // namespace darknight::trusted
