// Built-in models and graph transformations.
#include "nn/zoo.h"

#include <gtest/gtest.h>

#include "baselines/engines.h"
#include "nn/kernels.h"
#include "registry/registry.h"
#include "support/random.h"
#include "trusted/runtime.h"

namespace darknight::nn {
namespace {

// Linear-layer weight counts of torchvision's models (parameters of rank > 1), computed with
// torchvision 0.14: vgg16 138344128, vgg19 143652544, resnet18 11678912.
TEST(Zoo, WeightCountsMatchTorchvision) {
  ModelOptions o;
  o.input_size = 224;
  o.classes = 1000;
  EXPECT_EQ(build_model("vgg16", o).weight_bytes() / 4, 138344128);
  EXPECT_EQ(build_model("vgg19", o).weight_bytes() / 4, 143652544);
  EXPECT_EQ(build_model("resnet18", o).weight_bytes() / 4, 11678912);
}

TEST(Zoo, ShapesOfEveryModel) {
  for (const auto& name : model_names()) {
    ModelOptions o;
    o.input_size = name == "fmnist-cnn" ? 28 : 32;
    o.classes = 7;
    Graph g = build_model(name, o);
    SCOPED_TRACE(name);
    EXPECT_EQ(g.output_shape(), (Shape{7}));
    EXPECT_EQ(g.input_shape()[0], name == "fmnist-cnn" ? 1 : 3);
    EXPECT_GT(g.linear_layers(), 1);
  }
  ModelOptions big;
  big.input_size = 224;
  EXPECT_EQ(build_model("mobilenet", big).node(1).conv.groups, 1);
  EXPECT_THROW(build_model("alexnet", big), Error);
}

TEST(Zoo, SeedDeterminesWeights) {
  ModelOptions a, b;
  a.input_size = b.input_size = 28;
  b.seed = 2;
  Graph g1 = build_model("fmnist-cnn", a), g2 = build_model("fmnist-cnn", a),
        g3 = build_model("fmnist-cnn", b);
  const Tensor &w1 = g1.weights()[0], &w2 = g2.weights()[0], &w3 = g3.weights()[0];
  int same12 = 0, same13 = 0;
  for (int64_t i = 0; i < w1.numel(); ++i) same12 += w1[i] == w2[i], same13 += w1[i] == w3[i];
  EXPECT_EQ(same12, w1.numel());
  EXPECT_LT(same13, 3);
  // He initialisation: std sqrt(2 / fan_in) = sqrt(2/9) for conv1.
  double s2 = 0;
  for (int64_t i = 0; i < w1.numel(); ++i) s2 += double(w1[i]) * w1[i];
  EXPECT_NEAR(std::sqrt(s2 / w1.numel()), std::sqrt(2.0 / 9.0), 0.05);
}

TEST(Graph, FusesBatchNormAndActivationsIntoLinearLayers) {
  ModelOptions o;
  o.input_size = 32;
  Graph g = build_model("resnet18", o);
  const size_t before = g.nodes().size();
  g.fuse();
  EXPECT_LT(g.nodes().size(), before);
  int fused_relu = 0, standalone_bn = 0;
  for (const Node& n : g.nodes()) {
    fused_relu += n.is_linear() && n.epilogue.act == Act::relu;
    standalone_bn += n.op == Op::batch_norm;
  }
  EXPECT_EQ(standalone_bn, 0);
  EXPECT_GT(fused_relu, 8);
  // The residual branch conv2 + bn2 is fused, but its ReLU follows the add: not fused.
  for (const Node& n : g.nodes())
    if (n.name.find("layer1.0.conv2") == 0) {
      EXPECT_EQ(n.epilogue.act, Act::none) << n.name;
    }
}

// The fused graph computes what the unfused one does (both run by the plain baseline).
TEST(Graph, FusionPreservesResults) {
  ModelOptions o;
  o.input_size = 32;
  o.seed = 5;
  auto run = [&](bool fuse_first) {
    Graph g = build_model("mobilenet", o);
    auto be = accel::make_backend("ref");
    baselines::PlainEngine engine(*be);
    // Runtime always fuses; for the unfused reference run each op by hand.
    const Tensor x = testing::random_tensor(Shape{2, 3, 32, 32}, 9, 0.0f, 1.0f);
    if (fuse_first) {
      trusted::Runtime rt(std::move(g), engine, {});
      return rt.infer(x);
    }
    engine.load(g);
    std::vector<Tensor> v(g.nodes().size());
    v[0] = x.clone();
    trusted::RunStats stats;
    for (size_t i = 1; i < g.nodes().size(); ++i) {
      const Node& n = g.node(static_cast<int>(i));
      Tensor& a = v[static_cast<size_t>(n.inputs[0])];
      v[i] = n.is_linear() ? engine.forward(n, a, false, stats) : run_nonlinear(n, a.clone());
    }
    return std::move(v.back());
  };
  const Tensor fused = run(true), plain = run(false);
  ASSERT_EQ(fused.numel(), plain.numel());
  for (int64_t i = 0; i < fused.numel(); ++i)
    EXPECT_NEAR(fused[i], plain[i], 1e-4 * (1 + std::abs(plain[i])));
}

TEST(Graph, RejectsInconsistentLayersWithTheirName) {
  Graph g(Shape{3, 8, 8});
  try {
    g.dense(0, 10, Tensor(Shape{10, 191}), Tensor(Shape{10}), "fc_wrong");
    FAIL();
  } catch (const Error& e) {
    // dense() reads the input size from the graph, so the weights disagree with it.
    EXPECT_NE(std::string(e.what()).find("fc_wrong"), std::string::npos) << e.what();
  }
  PoolDesc p;
  p.kernel_h = p.kernel_w = 9;
  EXPECT_THROW(g.pool(Op::max_pool, 0, p, "too_big"), Error);
  EXPECT_THROW(g.add_values(0, g.pool(Op::max_pool, 0, PoolDesc{2, 2, 2, 2}, "half"), "bad_add"),
               Error);
}

TEST(Kernels, PoolingEdgeCases) {
  // 1x1x3x3 ramp; max pool 2x2 stride 2 with ceil mode keeps the last partial window.
  Tensor x(Shape{1, 1, 3, 3});
  for (int64_t i = 0; i < 9; ++i) x[i] = static_cast<float>(i);
  PoolDesc p{2, 2, 2, 2};
  p.ceil_mode = true;
  const Tensor m = max_pool(x, p);
  ASSERT_EQ(m.shape(), (Shape{1, 1, 2, 2}));
  EXPECT_EQ(m[0], 4);
  EXPECT_EQ(m[3], 8);
  PoolDesc a{3, 3, 1, 1, 1, 1, 1, 1};
  const Tensor excl = avg_pool(x, a);
  a.count_include_pad = true;
  const Tensor incl = avg_pool(x, a);
  EXPECT_FLOAT_EQ(excl[0], (0 + 1 + 3 + 4) / 4.0f);
  EXPECT_FLOAT_EQ(incl[0], (0 + 1 + 3 + 4) / 9.0f);
  const Tensor s = softmax(Tensor(Shape{1, 3}, std::vector<float>{1000, 1000, 1000}));
  EXPECT_FLOAT_EQ(s[0], 1.0f / 3);  // no overflow
}

}  // namespace
}  // namespace darknight::nn
