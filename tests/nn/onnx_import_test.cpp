// ONNX models exported by PyTorch (tests/fixtures/onnx, made by
// scripts/make_onnx_fixtures.py) give PyTorch's outputs in all three modes.
#include "nn/onnx_import.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "accel/backend.h"
#include "baselines/engines.h"
#include "onnx/onnx_io.h"
#include "trusted/darknight_engine.h"

#ifndef DK_FIXTURES
#error "DK_FIXTURES must name tests/fixtures"
#endif

namespace darknight::nn {
namespace {

const std::string kDir = std::string(DK_FIXTURES) + "/onnx/";

Tensor run(const std::string& mode, Graph g, const Tensor& x) {
  auto be = accel::make_backend("cpu");
  trusted::Csprng rng(1);
  std::unique_ptr<trusted::LinearEngine> engine;
  if (mode == "darknight") {
    trusted::CodecOptions co;
    co.k = 4;
    engine = std::make_unique<trusted::DarKnightEngine>(*be, co, rng);
  } else if (mode == "plain") {
    engine = std::make_unique<baselines::PlainEngine>(*be);
  } else {
    engine = std::make_unique<baselines::TeeEngine>();
  }
  trusted::Runtime rt(std::move(g), *engine, {});
  return rt.infer(x);
}

int argmax(const float* p, int64_t n) {
  return static_cast<int>(std::max_element(p, p + n) - p);
}

using Param = std::tuple<std::string, std::string>;
class OnnxFixture : public ::testing::TestWithParam<Param> {};

TEST_P(OnnxFixture, SamePredictionsAsPyTorch) {
  const auto& [model, mode] = GetParam();
  const std::string base = model.substr(0, model.find("_opset"));
  const Tensor x = onnx_io::load_tensor(kDir + base + "_input.pb").value();
  const Tensor want = onnx_io::load_tensor(kDir + base + "_output.pb").value();
  auto g = import_onnx(kDir + model + ".onnx");
  ASSERT_TRUE(g.ok()) << g.status().message();
  const Tensor got = run(mode, std::move(g).value(), x);
  ASSERT_EQ(got.numel(), want.numel());
  const int64_t n = want.shape()[0], c = want.shape()[1];
  double worst = 0, scale = 0;
  for (int64_t i = 0; i < got.numel(); ++i)
    worst = std::max(worst, double(std::abs(got[i] - want[i]))),
    scale = std::max(scale, double(std::abs(want[i])));
  // f32 everywhere; darknight adds the rounding of noise-dominated mixtures.
  EXPECT_LE(worst, (mode == "darknight" ? 1e-3 : 1e-5) * scale) << "max |error| " << worst;
  for (int64_t i = 0; i < n; ++i)
    EXPECT_EQ(argmax(got.data() + i * c, c), argmax(want.data() + i * c, c)) << "image " << i;
}

INSTANTIATE_TEST_SUITE_P(
    Fixtures, OnnxFixture,
    ::testing::Combine(::testing::Values("residual_cnn_opset11", "residual_cnn_opset13",
                                         "residual_cnn_opset17", "matmul_cnn_opset13"),
                       ::testing::Values("darknight", "plain", "tee")),
    [](const auto& info) { return std::get<0>(info.param) + "_" + std::get<1>(info.param); });

TEST(OnnxImport, FoldsShapeArithmeticAndKeepsNoConstantsInTheGraph) {
  auto g = import_onnx(kDir + "residual_cnn_opset17.onnx");
  ASSERT_TRUE(g.ok()) << g.status().message();
  int reshapes = 0;
  for (const Node& n : g.value().nodes()) {
    reshapes += n.op == Op::reshape;
    EXPECT_NE(n.op, Op::identity);
  }
  EXPECT_EQ(reshapes, 1);  // x.view(x.size(0), -1)
  EXPECT_EQ(g.value().output_shape(), (Shape{10}));
}

TEST(OnnxImport, UnsupportedOpIsAnErrorNamingTheOpAndNode) {
  onnx::ModelProto m = onnx_io::load_model(kDir + "matmul_cnn_opset13.onnx").value();
  m.mutable_graph()->mutable_node(1)->set_op_type("Sin");
  const std::string name = m.graph().node(1).name();
  auto g = import_onnx(m);
  ASSERT_FALSE(g.ok());
  EXPECT_NE(g.status().message().find("Sin"), std::string::npos) << g.status().message();
  EXPECT_NE(g.status().message().find(name), std::string::npos) << g.status().message();
}

TEST(OnnxImport, DamagedFilesAreErrors) {
  namespace fs = std::filesystem;
  const fs::path tmp = fs::temp_directory_path() / "dk_damaged.onnx";
  std::ifstream in(kDir + "residual_cnn_opset17.onnx", std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), {});
  std::ofstream(tmp, std::ios::binary | std::ios::trunc) << bytes.substr(0, bytes.size() / 2);
  EXPECT_FALSE(import_onnx(tmp.string()).ok());
  EXPECT_FALSE(import_onnx("/nonexistent.onnx").ok());
  // A model whose weights do not match its declared shapes.
  onnx::ModelProto m = onnx_io::load_model(kDir + "matmul_cnn_opset13.onnx").value();
  for (auto& init : *m.mutable_graph()->mutable_initializer())
    if (init.dims_size() == 2) init.set_dims(0, init.dims(0) + 1);
  EXPECT_FALSE(import_onnx(m).ok());
  fs::remove(tmp);
}

}  // namespace
}  // namespace darknight::nn
