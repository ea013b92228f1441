// Writes a model back to ONNX (opset 13), so that a model trained here runs in PyTorch's
// ecosystem (onnxruntime, or onnx2torch): Conv, Gemm, Relu, Clip, MaxPool, AveragePool,
// GlobalAveragePool, BatchNormalization, Flatten, Reshape, Pad, Add, Mul, Softmax.
#pragma once

#include <functional>
#include <string>

#include "nn/graph.h"
#include "protocol/error.h"

namespace darknight::nn {

/// `weights(i)` gives linear layer i's weights (they may live on an accelerator).
Status export_onnx(const Graph& g, const std::function<Tensor(int)>& weights,
                   const std::string& path);

}  // namespace darknight::nn
