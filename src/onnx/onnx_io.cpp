#include "onnx/onnx_io.h"

#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>

#include "protocol/checked.h"

namespace darknight::onnx_io {
namespace {

Result<std::string> read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return Status::error(fmt::format("cannot open {}", path));
  std::ostringstream ss;
  ss << f.rdbuf();
  if (!f.good() && !f.eof()) return Status::error(fmt::format("cannot read {}", path));
  return ss.str();
}

const onnx::AttributeProto* find_attr(const onnx::NodeProto& n, const std::string& name) {
  for (const auto& a : n.attribute())
    if (a.name() == name) return &a;
  return nullptr;
}

}  // namespace

Result<onnx::ModelProto> parse_model(std::string_view bytes, const std::string& name) {
  onnx::ModelProto m;
  if (bytes.size() > static_cast<size_t>(std::numeric_limits<int>::max()) ||
      !m.ParseFromArray(bytes.data(), static_cast<int>(bytes.size())))
    return Status::error(fmt::format("{}: not a valid ONNX model (protobuf parse failed)", name));
  return m;
}

Result<onnx::ModelProto> load_model(const std::string& path) {
  auto bytes = read_file(path);
  if (!bytes.ok()) return bytes.status();
  return parse_model(bytes.value(), path);
}

Result<onnx::TensorProto> parse_tensor_proto(std::string_view bytes, const std::string& name) {
  onnx::TensorProto t;
  if (bytes.size() > static_cast<size_t>(std::numeric_limits<int>::max()) ||
      !t.ParseFromArray(bytes.data(), static_cast<int>(bytes.size())))
    return Status::error(fmt::format("{}: not a valid ONNX tensor (protobuf parse failed)", name));
  return t;
}

Result<onnx::TensorProto> load_tensor_proto(const std::string& path) {
  auto bytes = read_file(path);
  if (!bytes.ok()) return bytes.status();
  return parse_tensor_proto(bytes.value(), path);
}

namespace {

/// The tensor's shape, checked (rank, signs, element count), and that its data lives in
/// the file (external data is not read).
Result<Shape> declared_shape(const onnx::TensorProto& t) {
  if (t.data_location() == onnx::TensorProto::EXTERNAL)
    return Status::error(fmt::format("tensor '{}': external data is not supported", t.name()));
  const std::vector<int64_t> dims(t.dims().begin(), t.dims().end());
  return to_shape(dims, fmt::format("tensor '{}'", t.name()));
}

/// Checks that the file holds exactly `n` values of `width` bytes (raw_data) or `typed`
/// values (the typed field), before anything of that size is allocated.
Status check_count(const onnx::TensorProto& t, const Shape& shape, size_t n, size_t width,
                   int typed, const char* field) {
  if (t.has_raw_data()) {
    if (t.raw_data().size() != n * width)
      return Status::error(fmt::format("tensor '{}': raw_data has {} bytes, dims {} need {}",
                                       t.name(), t.raw_data().size(), shape.str(), n * width));
  } else if (static_cast<size_t>(typed) != n) {
    return Status::error(
        fmt::format("tensor '{}': {} {} values for dims {}", t.name(), typed, field, shape.str()));
  }
  return {};
}

}  // namespace

Result<Tensor> to_tensor(const onnx::TensorProto& t) {
  const bool is_float = t.data_type() == onnx::TensorProto::FLOAT;
  if (!is_float && t.data_type() != onnx::TensorProto::DOUBLE)
    return Status::error(fmt::format(
        "tensor '{}': element type {} is not FLOAT or DOUBLE", t.name(),
        onnx::TensorProto::DataType_Name(static_cast<onnx::TensorProto::DataType>(t.data_type()))));
  auto declared = declared_shape(t);
  if (!declared.ok()) return declared.status();
  const Shape& shape = declared.value();
  const auto n = static_cast<size_t>(shape.numel());
  // Validate before allocating: the declared size may be up to 2^40 elements.
  if (Status s = is_float ? check_count(t, shape, n, 4, t.float_data_size(), "float_data")
                          : check_count(t, shape, n, 8, t.double_data_size(), "double_data");
      !s.ok())
    return s;
  Tensor out = Tensor::uninitialized(shape);
  if (is_float) {
    if (t.has_raw_data()) {
      if (n) std::memcpy(out.data(), t.raw_data().data(), n * sizeof(float));
    } else {
      for (size_t i = 0; i < n; ++i)
        out[static_cast<int64_t>(i)] = t.float_data(static_cast<int>(i));
    }
  } else {
    for (size_t i = 0; i < n; ++i) {
      double v;
      if (t.has_raw_data())
        std::memcpy(&v, t.raw_data().data() + i * sizeof(double), sizeof(double));
      else
        v = t.double_data(static_cast<int>(i));
      out[static_cast<int64_t>(i)] = static_cast<float>(v);
    }
  }
  return out;
}

Result<std::vector<int64_t>> to_int64s(const onnx::TensorProto& t) {
  const bool is64 = t.data_type() == onnx::TensorProto::INT64;
  if (!is64 && t.data_type() != onnx::TensorProto::INT32)
    return Status::error(fmt::format("tensor '{}' is not INT64 or INT32", t.name()));
  auto declared = declared_shape(t);
  if (!declared.ok()) return declared.status();
  const Shape& shape = declared.value();
  const auto n = static_cast<size_t>(shape.numel());
  if (Status s = is64 ? check_count(t, shape, n, 8, t.int64_data_size(), "int64_data")
                      : check_count(t, shape, n, 4, t.int32_data_size(), "int32_data");
      !s.ok())
    return s;
  std::vector<int64_t> v(n);
  for (size_t i = 0; i < n; ++i) {
    if (t.has_raw_data() && is64) {
      std::memcpy(&v[i], t.raw_data().data() + i * 8, 8);
    } else if (t.has_raw_data()) {
      int32_t x;
      std::memcpy(&x, t.raw_data().data() + i * 4, 4);
      v[i] = x;
    } else {
      v[i] = is64 ? t.int64_data(static_cast<int>(i)) : t.int32_data(static_cast<int>(i));
    }
  }
  return v;
}

Result<Tensor> load_tensor(const std::string& path) {
  auto proto = load_tensor_proto(path);
  if (!proto.ok()) return proto.status();
  auto t = to_tensor(proto.value());
  if (!t.ok()) return Status::error(fmt::format("{}: {}", path, t.status().message()));
  return t;
}

std::optional<int64_t> attr_int(const onnx::NodeProto& n, const std::string& name) {
  const auto* a = find_attr(n, name);
  if (!a || a->type() != onnx::AttributeProto::INT) return std::nullopt;
  return a->i();
}

std::optional<float> attr_float(const onnx::NodeProto& n, const std::string& name) {
  const auto* a = find_attr(n, name);
  if (!a || a->type() != onnx::AttributeProto::FLOAT) return std::nullopt;
  return a->f();
}

std::optional<std::string> attr_string(const onnx::NodeProto& n, const std::string& name) {
  const auto* a = find_attr(n, name);
  if (!a || a->type() != onnx::AttributeProto::STRING) return std::nullopt;
  return a->s();
}

std::optional<std::vector<int64_t>> attr_ints(const onnx::NodeProto& n, const std::string& name) {
  const auto* a = find_attr(n, name);
  if (!a || a->type() != onnx::AttributeProto::INTS) return std::nullopt;
  return std::vector<int64_t>(a->ints().begin(), a->ints().end());
}

}  // namespace darknight::onnx_io
