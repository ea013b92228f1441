#include "onnx/onnx_io.h"

#include <cstring>
#include <fstream>
#include <sstream>

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

Result<onnx::ModelProto> load_model(const std::string& path) {
  auto bytes = read_file(path);
  if (!bytes.ok()) return bytes.status();
  onnx::ModelProto m;
  if (!m.ParseFromString(bytes.value()))
    return Status::error(fmt::format("{}: not a valid ONNX model (protobuf parse failed)", path));
  return m;
}

Result<onnx::TensorProto> load_tensor_proto(const std::string& path) {
  auto bytes = read_file(path);
  if (!bytes.ok()) return bytes.status();
  onnx::TensorProto t;
  if (!t.ParseFromString(bytes.value()))
    return Status::error(fmt::format("{}: not a valid ONNX tensor (protobuf parse failed)", path));
  return t;
}

Result<Tensor> to_tensor(const onnx::TensorProto& t) {
  std::vector<int64_t> dims(t.dims().begin(), t.dims().end());
  for (int64_t d : dims)
    if (d < 0) return Status::error(fmt::format("tensor '{}' has a negative dimension", t.name()));
  if (dims.size() > Shape::kMaxRank)
    return Status::error(
        fmt::format("tensor '{}' has rank {} > {}", t.name(), dims.size(), Shape::kMaxRank));
  Shape shape;
  try {
    shape = Shape(std::span<const int64_t>(dims));
  } catch (const Error& e) {
    return Status::error(fmt::format("tensor '{}': {}", t.name(), e.what()));
  }
  const auto n = static_cast<size_t>(shape.numel());
  Tensor out(shape);
  if (t.data_type() == onnx::TensorProto::FLOAT) {
    if (t.has_raw_data()) {
      if (t.raw_data().size() != n * sizeof(float))
        return Status::error(fmt::format("tensor '{}': raw_data has {} bytes, dims {} need {}",
                                         t.name(), t.raw_data().size(), shape.str(), n * 4));
      std::memcpy(out.data(), t.raw_data().data(), n * sizeof(float));
    } else {
      if (static_cast<size_t>(t.float_data_size()) != n)
        return Status::error(fmt::format("tensor '{}': {} float_data values for dims {}", t.name(),
                                         t.float_data_size(), shape.str()));
      for (size_t i = 0; i < n; ++i)
        out[static_cast<int64_t>(i)] = t.float_data(static_cast<int>(i));
    }
  } else if (t.data_type() == onnx::TensorProto::DOUBLE) {
    if (t.has_raw_data()) {
      if (t.raw_data().size() != n * sizeof(double))
        return Status::error(fmt::format("tensor '{}': raw_data has {} bytes, dims {} need {}",
                                         t.name(), t.raw_data().size(), shape.str(), n * 8));
      for (size_t i = 0; i < n; ++i) {
        double v;
        std::memcpy(&v, t.raw_data().data() + i * sizeof(double), sizeof(double));
        out[static_cast<int64_t>(i)] = static_cast<float>(v);
      }
    } else {
      if (static_cast<size_t>(t.double_data_size()) != n)
        return Status::error(fmt::format("tensor '{}': {} double_data values for dims {}", t.name(),
                                         t.double_data_size(), shape.str()));
      for (size_t i = 0; i < n; ++i)
        out[static_cast<int64_t>(i)] = static_cast<float>(t.double_data(static_cast<int>(i)));
    }
  } else {
    return Status::error(fmt::format(
        "tensor '{}': element type {} is not FLOAT or DOUBLE", t.name(),
        onnx::TensorProto::DataType_Name(static_cast<onnx::TensorProto::DataType>(t.data_type()))));
  }
  return out;
}

Result<std::vector<int64_t>> to_int64s(const onnx::TensorProto& t) {
  int64_t n = 1;
  for (int64_t d : t.dims()) {
    if (d < 0 || d > (int64_t{1} << 24))
      return Status::error(fmt::format("tensor '{}': bad dims", t.name()));
    n *= d;
  }
  std::vector<int64_t> v(static_cast<size_t>(n));
  if (t.data_type() == onnx::TensorProto::INT64) {
    if (t.has_raw_data()) {
      if (t.raw_data().size() != v.size() * 8)
        return Status::error(
            fmt::format("tensor '{}': raw_data size does not match dims", t.name()));
      std::memcpy(v.data(), t.raw_data().data(), v.size() * 8);
    } else {
      if (static_cast<size_t>(t.int64_data_size()) != v.size())
        return Status::error(
            fmt::format("tensor '{}': int64_data size does not match dims", t.name()));
      for (size_t i = 0; i < v.size(); ++i) v[i] = t.int64_data(static_cast<int>(i));
    }
  } else if (t.data_type() == onnx::TensorProto::INT32) {
    if (t.has_raw_data()) {
      if (t.raw_data().size() != v.size() * 4)
        return Status::error(
            fmt::format("tensor '{}': raw_data size does not match dims", t.name()));
      for (size_t i = 0; i < v.size(); ++i) {
        int32_t x;
        std::memcpy(&x, t.raw_data().data() + i * 4, 4);
        v[i] = x;
      }
    } else {
      if (static_cast<size_t>(t.int32_data_size()) != v.size())
        return Status::error(
            fmt::format("tensor '{}': int32_data size does not match dims", t.name()));
      for (size_t i = 0; i < v.size(); ++i) v[i] = t.int32_data(static_cast<int>(i));
    }
  } else {
    return Status::error(fmt::format("tensor '{}' is not INT64 or INT32", t.name()));
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
