// Reading ONNX files with the real ONNX/protobuf libraries: models, tensors, attributes.
// Everything read here is untrusted input: errors come back as Status values.
#pragma once

#include <onnx/onnx_pb.h>

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/error.h"
#include "protocol/tensor.h"

namespace darknight::onnx_io {

/// Parses a serialized ModelProto (model.onnx); `name` names it in errors.
Result<onnx::ModelProto> parse_model(std::string_view bytes, const std::string& name);
/// Reads and parses a model file (parse_model).
Result<onnx::ModelProto> load_model(const std::string& path);
/// Parses a serialized TensorProto (input_0.pb, output_0.pb, ...).
Result<onnx::TensorProto> parse_tensor_proto(std::string_view bytes, const std::string& name);
Result<onnx::TensorProto> load_tensor_proto(const std::string& path);
/// Converts a FLOAT or DOUBLE TensorProto (raw_data or typed fields) into an f32 tensor.
/// The dims (at most Shape::kMaxElements elements) must match the data present in the
/// proto, checked before anything is allocated; external data is refused.
Result<Tensor> to_tensor(const onnx::TensorProto& t);
/// Converts an INT64 or INT32 TensorProto (shape arithmetic, Reshape targets) to values,
/// with the same checks as to_tensor.
Result<std::vector<int64_t>> to_int64s(const onnx::TensorProto& t);
/// load_tensor_proto + to_tensor.
Result<Tensor> load_tensor(const std::string& path);

std::optional<int64_t> attr_int(const onnx::NodeProto& n, const std::string& name);
std::optional<float> attr_float(const onnx::NodeProto& n, const std::string& name);
std::optional<std::string> attr_string(const onnx::NodeProto& n, const std::string& name);
std::optional<std::vector<int64_t>> attr_ints(const onnx::NodeProto& n, const std::string& name);

}  // namespace darknight::onnx_io
