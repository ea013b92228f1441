// The ONNX operator conformance data (Debian's libonnx-testdata) on every backend.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "conformance/node_tests.h"
#include "onnx/onnx_io.h"
#include "registry/registry.h"
#include "support/available.h"
#include "support/scratch.h"

namespace darknight::conformance {
namespace {

using Param = std::tuple<std::string, DType>;

class NodeConformance : public ::testing::TestWithParam<Param> {};

TEST_P(NodeConformance, ApplicableTestsPass) {
  DK_SKIP_IF_UNAVAILABLE(std::get<0>(GetParam()));
  auto be = accel::make_backend(std::get<0>(GetParam()));
  auto prefixes = linear_op_prefixes();
  for (const auto& p : nonlinear_op_prefixes()) prefixes.push_back(p);
  const auto results =
      run_node_tests(default_node_test_dir(), prefixes, *be, std::get<1>(GetParam()));
  int pass = 0;
  std::map<std::string, int> passed_by_op;
  for (const auto& r : results) {
    if (r.outcome == Outcome::fail) {
      ADD_FAILURE() << r.name << ": " << r.detail;
    }
    if (r.outcome == Outcome::skip) {
      EXPECT_FALSE(r.detail.empty()) << r.name << " skipped silently";
    }
    if (r.outcome == Outcome::pass) {
      ++pass;
      ++passed_by_op[r.op];
    }
  }
  // Every applicable test of each family runs (docs/conformance.md lists the skips): linear
  // ops on the accelerator, non-linear ones through the ONNX importer and the runtime.
  const std::map<std::string, int> expected = {
      {"Conv", 6},    {"ConvTranspose", 9}, {"Gemm", 11},
      {"MatMul", 3},  {"AveragePool", 11},  {"BatchNormalization", 2},
      {"Clip", 3},    {"Flatten", 2},       {"GlobalAveragePool", 2},
      {"MaxPool", 9}, {"Relu", 1},          {"Softmax", 2}};
  EXPECT_EQ(passed_by_op, expected);
  std::printf("%s %s: %d of %zu node tests pass\n", std::get<0>(GetParam()).c_str(),
              dtype_name(std::get<1>(GetParam())), pass, results.size());
}

INSTANTIATE_TEST_SUITE_P(AllBackends, NodeConformance,
                         ::testing::Combine(::testing::ValuesIn(accel::backend_names()),
                                            ::testing::Values(DType::f32, DType::f64)),
                         [](const auto& info) {
                           return std::get<0>(info.param) + "_" +
                                  dtype_name(std::get<1>(info.param));
                         });

// A wrong result is reported as a failure: the runner is pointed at a copy of a real test
// whose expected output was altered in one element.
TEST(NodeConformanceRunner, ReportsAWrongExpectedOutputAsFailure) {
  namespace fs = std::filesystem;
  const fs::path src = fs::path(default_node_test_dir()) / "test_basic_conv_with_padding";
  const testing::ScratchDir scratch("dk_node_test_tampered");
  const fs::path& tmp = scratch.path();
  fs::create_directories(tmp / "test_basic_conv_with_padding");
  fs::copy(src, tmp / "test_basic_conv_with_padding", fs::copy_options::recursive);
  const fs::path out = tmp / "test_basic_conv_with_padding/test_data_set_0/output_0.pb";
  auto proto = onnx_io::load_tensor_proto(out.string());
  ASSERT_TRUE(proto.ok());
  onnx::TensorProto t = proto.value();
  Tensor v = onnx_io::to_tensor(t).value();
  v[3] += 0.5f;
  t.clear_float_data();
  t.set_raw_data(std::string(reinterpret_cast<const char*>(v.data()), v.bytes()));
  std::ofstream(out, std::ios::binary | std::ios::trunc) << t.SerializeAsString();

  auto be = accel::make_backend("ref");
  const auto results = run_node_tests(tmp.string(), {"test_basic_conv"}, *be, DType::f32);
  ASSERT_EQ(results.size(), 1u);
  EXPECT_EQ(results[0].outcome, Outcome::fail);
  EXPECT_NE(results[0].detail.find("element 3"), std::string::npos) << results[0].detail;
}

TEST(OnnxIo, RejectsDamagedTensorFiles) {
  namespace fs = std::filesystem;
  const testing::ScratchDir scratch("dk_onnx_io_test");
  const fs::path tmp = scratch / "t.pb";
  onnx::TensorProto t;
  t.set_name("x");
  t.set_data_type(onnx::TensorProto::FLOAT);
  t.add_dims(2);
  t.add_dims(3);
  t.set_raw_data(std::string(5 * 4, '\0'));  // 5 floats for 6 elements
  std::ofstream(tmp, std::ios::binary | std::ios::trunc) << t.SerializeAsString();
  auto r = onnx_io::load_tensor(tmp.string());
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("raw_data"), std::string::npos) << r.status().message();

  std::ofstream(tmp, std::ios::binary | std::ios::trunc) << "\xff\xff\xff garbage";
  EXPECT_FALSE(onnx_io::load_tensor(tmp.string()).ok());
  EXPECT_FALSE(onnx_io::load_tensor("/nonexistent/input_0.pb").ok());

  t.set_data_type(onnx::TensorProto::INT32);
  EXPECT_FALSE(onnx_io::to_tensor(t).ok());
  t.set_data_type(onnx::TensorProto::FLOAT);
  t.clear_dims();
  t.add_dims(int64_t{1} << 30);
  t.add_dims(int64_t{1} << 30);  // absurd: 2^60 elements
  EXPECT_FALSE(onnx_io::to_tensor(t).ok());
}

}  // namespace
}  // namespace darknight::conformance
