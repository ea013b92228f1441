// Training-mode forward and backward of the non-linear layers, the loss, and the linear
// layers' epilogues: what the trusted runtime computes in a training step. Batched f32
// tensors [N, item...], OpenMP-parallel.
#pragma once

#include <vector>

#include "nn/graph.h"

namespace darknight::nn {

/// Batch norm over the batch (N, H, W per channel): returns the output and keeps what the
/// backward pass needs; updates the running statistics as PyTorch does.
struct BatchNormCache {
  Tensor xhat;     ///< normalised input
  Tensor inv_std;  ///< [C]
};
Tensor batch_norm_train(Node& n, const Tensor& x, BatchNormCache& cache);
/// Returns dx; sets dgamma, dbeta ([C]).
Tensor batch_norm_backward(const Node& n, const Tensor& dy, const BatchNormCache& cache,
                           Tensor& dgamma, Tensor& dbeta);

/// The input gradient of a non-linear node (not batch norm, not add), given its input x,
/// its output y and the output gradient dy.
Tensor nonlinear_backward(const Node& n, const Tensor& x, const Tensor& y, const Tensor& dy);

/// Through a linear node's epilogue (bias and activation; no scale in training): turns
/// dL/d(output) into dL/d(linear result) in place, given the output, and adds the bias
/// gradient to `dbias` ([C]).
void epilogue_backward(const Epilogue& e, const Tensor& y, Tensor& dy, Tensor& dbias);

/// Mean softmax cross-entropy of the logits [N, C] against labels; returns the loss, sets
/// dlogits = (softmax - onehot) / scale (scale: the batch size the loss averages over) and
/// counts the correct top-1 predictions. Labels out of range throw Error.
double softmax_cross_entropy(const Tensor& logits, const std::vector<int>& labels, int64_t scale,
                             Tensor& dlogits, int64_t& correct);

}  // namespace darknight::nn
