// Imports ONNX models (as exported by torch.onnx.export, opsets 11-17) into a Graph, with
// the real ONNX/protobuf libraries. Weights come from the initializers; the constant shape
// arithmetic PyTorch emits around view/flatten is folded at load time. A model file is
// untrusted input: any problem, including an unsupported op, is an error naming the node.
#pragma once

#include <string>

#include <onnx/onnx_pb.h>

#include "nn/graph.h"
#include "protocol/error.h"

namespace darknight::nn {

/// Supported: Conv, Gemm, MatMul, Add, Relu, Clip, MaxPool, AveragePool,
/// GlobalAveragePool, BatchNormalization, Flatten, Reshape, Pad (constant), Dropout,
/// Identity, Softmax; folded: Constant, Shape, Gather, Unsqueeze, Concat.
Result<Graph> import_onnx(const std::string& path);
Result<Graph> import_onnx(const onnx::ModelProto& model);

}  // namespace darknight::nn
