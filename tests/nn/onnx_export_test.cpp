// ONNX export (nn/onnx_export.h): exported models are valid ONNX (the ONNX library's
// checker and strict shape inference), and re-imported they compute what the original
// graph does; failures are error values.
#include "nn/onnx_export.h"

#include <gtest/gtest.h>
#include <onnx/checker.h>
#include <onnx/shape_inference/implementation.h>

#include <unistd.h>

#include <filesystem>

#include "baselines/engines.h"
#include "nn/onnx_import.h"
#include "nn/zoo.h"
#include "onnx/onnx_io.h"
#include "registry/registry.h"
#include "support/random.h"

#ifndef DK_FIXTURES
#error "DK_FIXTURES must name tests/fixtures"
#endif

namespace darknight::nn {
namespace {

namespace fs = std::filesystem;
using testing::random_tensor;

std::string temp_path(const std::string& name) {
  // The process id: test runs of two build trees may share the temporary directory.
  return (fs::temp_directory_path() /
          ("dk_export_" + std::to_string(::getpid()) + "_" + name + ".onnx"))
      .string();
}

/// Exports `g` (weights still in the graph) to a temporary file; returns its path.
std::string export_graph(const Graph& g, const std::string& name) {
  const std::string path = temp_path(name);
  Graph copy = g.clone();
  const Status s = export_onnx(
      copy, [&](int i) { return copy.weights()[static_cast<size_t>(i)].clone(); }, path);
  EXPECT_TRUE(s.ok()) << s.message();
  return path;
}

Tensor run_plain(Graph g, const Tensor& x) {
  auto be = accel::make_backend("cpu");
  baselines::PlainEngine engine(*be);
  trusted::RuntimeOptions ro;
  ro.enforce_budget = false;
  trusted::Runtime rt(std::move(g), engine, ro);
  return rt.infer(x);
}

/// Every op the exporter writes, in a graph that imports back: pad, conv with a bias, a
/// batch norm with statistics, clip, max pool in ceil mode, grouped conv without a bias,
/// relu, add, average pool counting its padding, identity, reshape, dense from a rank-2
/// item, softmax. Paddings differ on every side, so that their order matters.
Graph all_ops() {
  Graph g(Shape{3, 8, 8});
  int x = g.pad(0, {1, 2, 3, 0}, 0.5f, "pad");  // [3, 12, 10]
  accel::ConvDesc d;
  d.in_channels = 3, d.out_channels = 4, d.kernel_h = d.kernel_w = 3;
  d.pad_top = d.pad_left = d.pad_bottom = d.pad_right = 1;
  x = g.conv(x, d, random_tensor(d.weight_shape(), 1), random_tensor(Shape{4}, 2), "conv1");
  BatchNormParams bn{random_tensor(Shape{4}, 3, 0.5f, 1.5f), random_tensor(Shape{4}, 4),
                     random_tensor(Shape{4}, 5), random_tensor(Shape{4}, 6, 0.5f, 2.0f)};
  bn.eps = 1e-3, bn.momentum = 0.2;
  x = g.batch_norm(x, std::move(bn), "bn1");
  x = g.clip(x, -1, 3, "clip");
  PoolDesc mp{3, 3, 2, 2};
  mp.ceil_mode = true;
  const int p = g.pool(Op::max_pool, x, mp, "maxpool");  // [4, 6, 5]
  d.in_channels = 4, d.groups = 2;
  d.pad_top = 1, d.pad_left = 0, d.pad_bottom = 1, d.pad_right = 2;
  x = g.conv(p, d, random_tensor(d.weight_shape(), 7), Tensor(), "conv2");
  x = g.add_values(p, g.unary(Op::relu, x, "relu"), "add");
  PoolDesc ap{3, 3, 1, 1, 2, 1, 0, 1};
  ap.count_include_pad = true;
  x = g.unary(Op::identity, g.pool(Op::avg_pool, x, ap, "avgpool"), "dropout");
  x = g.reshape(x, Shape{4, 30}, "reshape");
  x = g.dense(x, 6, random_tensor(Shape{6, 120}, 8), random_tensor(Shape{6}, 9), "fc");
  g.unary(Op::softmax, x, "softmax");
  return g;
}

void expect_same_outputs(const Graph& a, const Graph& b, uint64_t seed) {
  const Tensor x = random_tensor(trusted::batched(2, a.input_shape()), seed, 0.0f, 1.0f);
  const Tensor ya = run_plain(a.clone(), x), yb = run_plain(b.clone(), x);
  ASSERT_EQ(ya.shape(), yb.shape());
  for (int64_t i = 0; i < ya.numel(); ++i)
    EXPECT_NEAR(ya[i], yb[i], 1e-5 * (1 + std::abs(ya[i]))) << i;
}

TEST(OnnxExport, ReimportedModelsComputeTheSame) {
  struct Model {
    std::string name;
    Graph g;
  };
  std::vector<Model> models;
  models.push_back({"all_ops", all_ops()});
  for (const char* name : {"fmnist-cnn", "mobilenet", "resnet18"})
    models.push_back(
        {name, build_model(name, {.input_size = std::string(name) == "fmnist-cnn" ? 28 : 32,
                                  .classes = 7})});
  // Fused, without batch norms: a conv's bias and activation become Conv and Relu.
  Graph fused = build_model("fmnist-cnn", {.input_size = 28});
  fused.fuse();
  models.push_back({"fmnist-cnn_fused", std::move(fused)});
  for (const Model& m : models) {
    SCOPED_TRACE(m.name);
    const std::string path = export_graph(m.g, m.name);
    auto back = import_onnx(path);
    fs::remove(path);
    ASSERT_TRUE(back.ok()) << back.status().message();
    const Graph& g = back.value();
    EXPECT_EQ(g.input_shape(), m.g.input_shape());
    EXPECT_EQ(g.output_shape(), m.g.output_shape());
    EXPECT_EQ(g.linear_layers(), m.g.linear_layers());
    EXPECT_EQ(g.weight_shapes(), m.g.weight_shapes());
    expect_same_outputs(m.g, g, 11);
  }
}

TEST(OnnxExport, BatchNormKeepsItsStatisticsAndSettings) {
  const Graph g = all_ops();
  const std::string path = export_graph(g, "bn");
  const Graph back = import_onnx(path).value();
  fs::remove(path);
  const Node* bn = nullptr;
  for (const Node& n : back.nodes())
    if (n.op == Op::batch_norm) bn = &n;
  ASSERT_NE(bn, nullptr);
  const Node& want = g.node(3);
  ASSERT_EQ(want.op, Op::batch_norm);
  EXPECT_NEAR(bn->bn.eps, 1e-3, 1e-9);
  EXPECT_NEAR(bn->bn.momentum, 0.2, 1e-6);  // ONNX's momentum is 1 - PyTorch's
  for (int64_t c = 0; c < 4; ++c) {
    EXPECT_EQ(bn->bn.gamma[c], want.bn.gamma[c]);
    EXPECT_EQ(bn->bn.var[c], want.bn.var[c]);
  }
}

// A model exported by PyTorch, imported, exported and imported again still gives PyTorch's
// outputs.
TEST(OnnxExport, PyTorchModelSurvivesARoundTrip) {
  const std::string dir = std::string(DK_FIXTURES) + "/onnx/";
  const Tensor x = onnx_io::load_tensor(dir + "residual_cnn_input.pb").value();
  const Tensor want = onnx_io::load_tensor(dir + "residual_cnn_output.pb").value();
  const Graph first = import_onnx(dir + "residual_cnn_opset17.onnx").value();
  const std::string path = export_graph(first, "pytorch");
  Graph second = import_onnx(path).value();
  fs::remove(path);
  const Tensor got = run_plain(std::move(second), x);
  ASSERT_EQ(got.numel(), want.numel());
  for (int64_t i = 0; i < got.numel(); ++i) EXPECT_NEAR(got[i], want[i], 1e-4) << i;
}

// Fused graphs carry scales (a folded batch norm) that export as Mul and Add: the ONNX
// library's checker and strict shape inference accept every exported model.
TEST(OnnxExport, ExportsAreValidOnnx) {
  std::vector<std::pair<std::string, Graph>> graphs;
  graphs.emplace_back("all_ops", all_ops());
  for (const char* name : {"fmnist-cnn", "mobilenet", "resnet18"})
    graphs.emplace_back(
        name, build_model(name, {.input_size = std::string(name) == "fmnist-cnn" ? 28 : 32}));
  for (size_t i = 0, n = graphs.size(); i < n; ++i) {
    Graph f = graphs[i].second.clone();
    f.fuse();
    graphs.emplace_back(graphs[i].first + "_fused", std::move(f));
  }
  Graph scaled_dense(Shape{5});  // a dense layer with a folded (non-unit) batch norm
  scaled_dense.batch_norm(scaled_dense.dense(0, 3, random_tensor(Shape{3, 5}, 1), Tensor(), "fc"),
                          random_tensor(Shape{3}, 2, 0.5f, 2.0f), random_tensor(Shape{3}, 3), "bn");
  scaled_dense.fuse();
  graphs.emplace_back("scaled_dense", std::move(scaled_dense));
  for (auto& [name, g] : graphs) {
    SCOPED_TRACE(name);
    const std::string path = export_graph(g, name);
    auto model = onnx_io::load_model(path);
    fs::remove(path);
    ASSERT_TRUE(model.ok()) << model.status().message();
    onnx::ModelProto& m = model.value();
    EXPECT_NO_THROW(onnx::checker::check_model(m));
    // Strict inference; it fails when a shape it infers contradicts the declared output.
    EXPECT_NO_THROW(onnx::shape_inference::InferShapes(m, onnx::OpSchemaRegistry::Instance(),
                                                       onnx::ShapeInferenceOptions(true, 1, true)));
    const auto& dims = m.graph().output(0).type().tensor_type().shape().dim();
    ASSERT_EQ(dims.size(), g.output_shape().rank() + 1);
    EXPECT_EQ(dims[0].dim_param(), "batch");
    for (int d = 0; d < g.output_shape().rank(); ++d)
      EXPECT_EQ(dims[d + 1].dim_value(), g.output_shape()[d]);
    int muls = 0;
    for (const auto& node : m.graph().node()) muls += node.op_type() == "Mul";
    // Folded batch norms (scales) export as Mul; a bias alone goes into Conv or Gemm.
    if (name == "resnet18_fused" || name == "scaled_dense") {
      EXPECT_GT(muls, 0);
    }
    if (name.rfind("fmnist-cnn", 0) == 0) {
      EXPECT_EQ(muls, 0);
    }
  }
}

TEST(OnnxExport, FailuresAreErrors) {
  Graph g = build_model("fmnist-cnn", {.input_size = 28});
  const Status unwritable = export_onnx(
      g, [&](int i) { return g.weights()[static_cast<size_t>(i)].clone(); },
      "/nonexistent-dir/model.onnx");
  ASSERT_FALSE(unwritable.ok());
  EXPECT_EQ(unwritable.message(), "cannot write /nonexistent-dir/model.onnx");
  // Weights that cannot be read (e.g. an accelerator that failed) stop the export.
  const std::string path = temp_path("unreadable");
  fs::remove(path);
  const Status unreadable = export_onnx(
      g, [](int i) -> Tensor { throw Error(fmt::format("layer {} is gone", i)); }, path);
  ASSERT_FALSE(unreadable.ok());
  EXPECT_EQ(unreadable.message(), "exporting to ONNX: layer 0 is gone");
  EXPECT_FALSE(fs::exists(path));  // nothing half-written
}

}  // namespace
}  // namespace darknight::nn
