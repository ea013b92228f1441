// ONNX models exported by PyTorch (tests/fixtures/onnx, made by
// scripts/make_onnx_fixtures.py) give PyTorch's outputs in all three modes.
#include "nn/onnx_import.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "accel/backend.h"
#include "baselines/engines.h"
#include "onnx/onnx_io.h"
#include "registry/registry.h"
#include "support/fuzz_regressions.h"
#include "trusted/darknight_engine.h"
#include "support/scratch.h"

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
  const testing::ScratchDir scratch("dk_damaged_onnx");
  const fs::path tmp = scratch / "damaged.onnx";
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
}

// ---- Hostile models: every attribute and size is checked before it is used ---------------

onnx::TensorProto zeros(const std::string& name, std::vector<int64_t> dims) {
  onnx::TensorProto t;
  t.set_name(name);
  t.set_data_type(onnx::TensorProto::FLOAT);
  int64_t n = 1;
  for (int64_t d : dims) t.add_dims(d), n *= d;
  t.set_raw_data(std::string(static_cast<size_t>(n) * 4, '\0'));
  return t;
}

void set_ints(onnx::NodeProto& n, const std::string& name, std::vector<int64_t> v) {
  auto* a = n.add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INTS);
  for (int64_t x : v) a->add_ints(x);
}

/// A model with data input "x" of item shape `item`, the given nodes and initializers, and
/// output "y".
onnx::ModelProto model_of(std::vector<int64_t> item, std::vector<onnx::NodeProto> nodes,
                          std::vector<onnx::TensorProto> inits = {}) {
  onnx::ModelProto m;
  m.set_ir_version(7);
  m.add_opset_import()->set_version(13);
  auto* g = m.mutable_graph();
  auto* in = g->add_input();
  in->set_name("x");
  auto* shape = in->mutable_type()->mutable_tensor_type()->mutable_shape();
  shape->add_dim()->set_dim_param("N");
  for (int64_t d : item) shape->add_dim()->set_dim_value(d);
  g->add_output()->set_name("y");
  for (auto& n : nodes) *g->add_node() = std::move(n);
  for (auto& t : inits) *g->add_initializer() = std::move(t);
  return m;
}

onnx::NodeProto node(const std::string& op, std::vector<std::string> inputs,
                     const std::string& output = "y", const std::string& name = "n1") {
  onnx::NodeProto n;
  n.set_op_type(op);
  n.set_name(name);
  for (auto& i : inputs) n.add_input(i);
  n.add_output(output);
  return n;
}

/// The import error's message ("" when the model imports).
std::string refusal(const onnx::ModelProto& m) {
  auto g = import_onnx(m);
  return g.ok() ? "" : g.status().message();
}

onnx::ModelProto conv_with(const std::string& attr, std::vector<int64_t> v) {
  onnx::NodeProto c = node("Conv", {"x", "w"}, "y", "conv1");
  if (!attr.empty()) set_ints(c, attr, v);
  return model_of({3, 8, 8}, {c}, {zeros("w", {2, 3, 3, 3})});
}

TEST(OnnxImport, ConvPadsOfOneValueAreRefusedWithAClearMessage) {
  const std::string why = refusal(conv_with("pads", {1}));
  EXPECT_NE(why.find("node 'conv1' (Conv): pads has 1 values; a 2-D window needs 4"),
            std::string::npos)
      << why;
  auto ok = import_onnx(conv_with("pads", {1, 1, 1, 1}));
  ASSERT_TRUE(ok.ok()) << ok.status().message();
  EXPECT_EQ(ok.value().output_shape(), (Shape{2, 8, 8}));
}

TEST(OnnxImport, EveryWindowAttributeHasItsLengthAndRangeChecked) {
  for (const auto& [attr, v] : std::vector<std::pair<std::string, std::vector<int64_t>>>{
           {"strides", {1}}, {"dilations", {1, 1, 1}}, {"kernel_shape", {3}}, {"pads", {}}}) {
    const std::string why = refusal(conv_with(attr, v));
    EXPECT_NE(why.find(fmt::format("{} has {} values", attr, v.size())), std::string::npos) << why;
  }
  EXPECT_NE(refusal(conv_with("kernel_shape", {3, 5})).find("does not match the weights"),
            std::string::npos);
  EXPECT_NE(refusal(conv_with("strides", {1, int64_t{1} << 40})).find("not in [1, "),
            std::string::npos);
  EXPECT_NE(refusal(conv_with("pads", {0, 0, -1, 0})).find("not in [0, "), std::string::npos);
  EXPECT_NE(refusal(conv_with("dilations", {0, 1})).find("not in [1, "), std::string::npos);
  // Pooling: kernel_shape, strides and pads alike.
  auto pool = [](const std::string& attr, std::vector<int64_t> v) {
    onnx::NodeProto p = node("MaxPool", {"x"}, "y", "pool1");
    set_ints(p, "kernel_shape", attr == "kernel_shape" ? v : std::vector<int64_t>{2, 2});
    if (attr != "kernel_shape") set_ints(p, attr, v);
    return refusal(model_of({3, 8, 8}, {p}));
  };
  EXPECT_NE(pool("strides", {2}).find("node 'pool1' (MaxPool): strides has 1 values"),
            std::string::npos)
      << pool("strides", {2});
  EXPECT_NE(pool("pads", {0, 0}).find("pads has 2 values"), std::string::npos);
  EXPECT_NE(pool("kernel_shape", {2}).find("kernel_shape has 1 values"), std::string::npos);
  EXPECT_EQ(pool("strides", {2, 2}), "");
}

TEST(OnnxImport, MissingInputsAndOutputsAreErrors) {
  EXPECT_NE(refusal(model_of({3, 8, 8}, {node("Conv", {"x"})}, {})).find("input 1 is missing"),
            std::string::npos);
  EXPECT_NE(refusal(model_of({4}, {node("Add", {"x"})})).find("input 1 is missing"),
            std::string::npos);
  onnx::NodeProto relu = node("Relu", {"x"});
  relu.clear_output();
  EXPECT_NE(refusal(model_of({4}, {relu})).find("no output"), std::string::npos);
  EXPECT_NE(refusal(model_of({4}, {node("Relu", {})})).find("input 0 is missing"),
            std::string::npos);
}

TEST(OnnxImport, FoldedShapeArithmeticCannotGrowWithoutBound) {
  // c0 = [1]; c(i+1) = Concat(c(i), c(i)): 17 nodes would make 2^17 integers.
  std::vector<onnx::NodeProto> nodes;
  onnx::NodeProto c0 = node("Constant", {}, "c0", "c0");
  auto* a = c0.add_attribute();
  a->set_name("value_ints"), a->set_type(onnx::AttributeProto::INTS), a->add_ints(1);
  nodes.push_back(c0);
  for (int i = 0; i < 17; ++i) {
    const std::string prev = fmt::format("c{}", i), next = fmt::format("c{}", i + 1);
    nodes.push_back(node("Concat", {prev, prev}, next, next));
  }
  nodes.push_back(node("Relu", {"x"}));
  EXPECT_NE(refusal(model_of({4}, nodes)).find("more than 65536 values"), std::string::npos)
      << refusal(model_of({4}, nodes));
}

TEST(OnnxImport, SharedWeightsAndDeclaredSizesCannotAmplifyMemory) {
  // 40 convolutions share one 64 KiB initializer: the graph would hold 40 copies.
  std::vector<onnx::NodeProto> nodes;
  std::string x = "x";
  for (int i = 0; i < 40; ++i) {
    const std::string y = i == 39 ? "y" : fmt::format("h{}", i);
    nodes.push_back(node("Conv", {x, "w"}, y, fmt::format("conv{}", i)));
    x = y;
  }
  const std::string why = refusal(model_of({128, 2, 2}, nodes, {zeros("w", {128, 128, 1, 1})}));
  EXPECT_NE(why.find("would need more than"), std::string::npos) << why;
  EXPECT_EQ(
      refusal(model_of({128, 2, 2}, {node("Conv", {"x", "w"})}, {zeros("w", {128, 128, 1, 1})})),
      "");  // one is fine
  // An input declaring 2^30 channels and a scalar Add: 8 GiB of scale and shift.
  onnx::TensorProto one = zeros("one", {});
  const std::string huge =
      refusal(model_of({int64_t{1} << 30}, {node("Add", {"x", "one"})}, {one}));
  EXPECT_NE(huge.find("would need more than"), std::string::npos) << huge;
}

TEST(OnnxImport, FuzzRegressionsAreCleanErrors) {
  for (const auto& [name, bytes] : darknight::testing::fuzz_regressions("onnx_model")) {
    SCOPED_TRACE(name);
    auto m = onnx_io::parse_model(bytes, name);
    if (!m.ok()) continue;
    auto g = import_onnx(m.value());
    ASSERT_FALSE(g.ok());
    EXPECT_FALSE(g.status().message().empty());
  }
}

}  // namespace
}  // namespace darknight::nn
