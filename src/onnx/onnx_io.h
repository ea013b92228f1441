// Reading ONNX files with the real ONNX/protobuf libraries: models, tensors, attributes.
// Everything read here is untrusted input: errors come back as Status values.
#pragma once

#include <onnx/onnx_pb.h>

#include <optional>
#include <string>
#include <vector>

#include "protocol/error.h"
#include "protocol/tensor.h"

namespace darknight::onnx_io {

/// Parses a serialized ModelProto (model.onnx).
Result<onnx::ModelProto> load_model(const std::string& path);
/// Parses a serialized TensorProto (input_0.pb, output_0.pb, ...).
Result<onnx::TensorProto> load_tensor_proto(const std::string& path);
/// Converts a FLOAT or DOUBLE TensorProto (raw_data or typed fields) into an f32 tensor,
/// checking that the payload size matches the dims.
Result<Tensor> to_tensor(const onnx::TensorProto& t);
/// Converts an INT64 or INT32 TensorProto (shape arithmetic, Reshape targets) to values.
Result<std::vector<int64_t>> to_int64s(const onnx::TensorProto& t);
/// load_tensor_proto + to_tensor.
Result<Tensor> load_tensor(const std::string& path);

std::optional<int64_t> attr_int(const onnx::NodeProto& n, const std::string& name);
std::optional<float> attr_float(const onnx::NodeProto& n, const std::string& name);
std::optional<std::string> attr_string(const onnx::NodeProto& n, const std::string& name);
std::optional<std::vector<int64_t>> attr_ints(const onnx::NodeProto& n, const std::string& name);

}  // namespace darknight::onnx_io
