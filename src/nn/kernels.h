// The non-linear layers, on batched f32 tensors [N, item...]: what the trusted runtime
// computes itself (and the `plain` baseline, on the accelerator's host). OpenMP-parallel.
#pragma once

#include "nn/graph.h"

namespace darknight::nn {

/// Runs a non-linear node on its (first) input, which it may overwrite and return; `b` is
/// the second input of Op::add.
Tensor run_nonlinear(const Node& n, Tensor a, const Tensor* b = nullptr);

void relu(Tensor& x);
void clip(Tensor& x, float lo, float hi);
/// x[n, c, ...] = scale[c] x + shift[c]
void channel_affine(Tensor& x, const Tensor& scale, const Tensor& shift);
Tensor max_pool(const Tensor& x, const PoolDesc& p);
/// Padding counts in the divisor only when p.count_include_pad.
Tensor avg_pool(const Tensor& x, const PoolDesc& p);
Tensor global_avg_pool(const Tensor& x);
/// Pads H and W with a constant: pads = top, left, bottom, right.
Tensor pad(const Tensor& x, const std::array<int64_t, 4>& pads, float value);
/// Softmax over each item's elements.
Tensor softmax(const Tensor& x);
/// Applies a linear node's epilogue to every item of x.
void apply_epilogue(const Epilogue& e, Tensor& x);

}  // namespace darknight::nn
