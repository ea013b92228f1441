// ONNX tensors are untrusted input: declared sizes are checked against the data present
// before anything is allocated, and size arithmetic cannot overflow.
#include "onnx/onnx_io.h"

#include <gtest/gtest.h>

#include "protocol/memory_meter.h"
#include "support/fuzz_regressions.h"

namespace darknight::onnx_io {
namespace {

onnx::TensorProto float_tensor(std::vector<int64_t> dims, std::string raw) {
  onnx::TensorProto t;
  t.set_name("t");
  t.set_data_type(onnx::TensorProto::FLOAT);
  for (int64_t d : dims) t.add_dims(d);
  t.set_raw_data(std::move(raw));
  return t;
}

TEST(OnnxTensor, ValidRawAndTypedData) {
  auto t = float_tensor({2}, std::string("\0\0\x80\x3f\0\0\0\x40", 8));  // 1.0f, 2.0f
  auto v = to_tensor(t);
  ASSERT_TRUE(v.ok()) << v.status().message();
  EXPECT_EQ(v.value().shape(), Shape{2});
  EXPECT_EQ(v.value()[1], 2.0f);
  onnx::TensorProto i;
  i.set_data_type(onnx::TensorProto::INT32);
  i.add_dims(3);
  for (int x : {4, -1, 7}) i.add_int32_data(x);
  EXPECT_EQ(to_int64s(i).value(), (std::vector<int64_t>{4, -1, 7}));
}

TEST(OnnxTensor, HugeDeclaredSizeWithFourBytesIsRefusedWithoutAllocating) {
  // 2^40 elements declared (Shape's limit), 4 bytes present.
  auto t = float_tensor({int64_t{1} << 20, int64_t{1} << 20}, std::string(4, '\0'));
  MemoryMeter meter;
  Result<Tensor> v = Status::error("unset");
  {
    MeterScope scope(&meter);
    v = to_tensor(t);
  }
  ASSERT_FALSE(v.ok());
  EXPECT_NE(v.status().message().find("raw_data has 4 bytes"), std::string::npos)
      << v.status().message();
  EXPECT_EQ(meter.peak_bytes(), 0);  // nothing of the declared size was allocated
  // The same with typed values, and one element more than Shape allows.
  t.clear_raw_data();
  t.add_float_data(1.0f);
  EXPECT_NE(to_tensor(t).status().message().find("1 float_data values"), std::string::npos);
  t.set_dims(1, (int64_t{1} << 20) + 1);
  EXPECT_NE(to_tensor(t).status().message().find("more than"), std::string::npos)
      << to_tensor(t).status().message();
}

TEST(OnnxTensor, OverflowingDimsProductIsRefused) {
  // Each dimension is small; the product wraps around 2^64 (2^72).
  onnx::TensorProto t;
  t.set_name("shape");
  t.set_data_type(onnx::TensorProto::INT64);
  for (int i = 0; i < 3; ++i) t.add_dims(int64_t{1} << 24);
  t.add_int64_data(1);
  auto v = to_int64s(t);
  ASSERT_FALSE(v.ok());
  EXPECT_NE(v.status().message().find("more than"), std::string::npos) << v.status().message();
  // A product that wraps to exactly 0 (2^64) is refused too, not read as empty.
  t.clear_dims();
  for (int i = 0; i < 4; ++i) t.add_dims(int64_t{1} << 16);
  t.clear_int64_data();
  EXPECT_FALSE(to_int64s(t).ok());
  EXPECT_FALSE(to_tensor(float_tensor({-1}, "")).ok());
  EXPECT_FALSE(to_tensor(float_tensor({1, 1, 1, 1, 1, 1, 1}, std::string(4, '\0'))).ok());
}

TEST(OnnxTensor, ExternalDataAndOtherTypesAreRefused) {
  auto t = float_tensor({1}, std::string(4, '\0'));
  t.set_data_location(onnx::TensorProto::EXTERNAL);
  EXPECT_NE(to_tensor(t).status().message().find("external data"), std::string::npos);
  t = float_tensor({1}, std::string(1, '\0'));
  t.set_data_type(onnx::TensorProto::UINT8);
  EXPECT_NE(to_tensor(t).status().message().find("not FLOAT or DOUBLE"), std::string::npos);
  EXPECT_NE(to_int64s(t).status().message().find("not INT64 or INT32"), std::string::npos);
  EXPECT_FALSE(parse_tensor_proto("\xff\xff\xff", "junk").ok());
}

TEST(OnnxTensor, FuzzRegressionsAreCleanErrors) {
  for (const auto& [name, bytes] : darknight::testing::fuzz_regressions("onnx_tensor")) {
    SCOPED_TRACE(name);
    auto t = parse_tensor_proto(bytes, name);
    if (!t.ok()) continue;
    EXPECT_FALSE(to_tensor(t.value()).ok() && to_int64s(t.value()).ok());
  }
}

}  // namespace
}  // namespace darknight::onnx_io
