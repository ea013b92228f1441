// The model graph (nn/graph.h) on its own: shape inference and its errors, epilogues,
// pooling geometry, counts, deep copies and fusion, against values worked out by hand.
#include "nn/graph.h"

#include <gtest/gtest.h>

#include <set>

#include "support/random.h"

namespace darknight::nn {
namespace {

using testing::random_tensor;

accel::ConvDesc conv3x3(int64_t in, int64_t out, int64_t groups = 1) {
  accel::ConvDesc d;
  d.in_channels = in, d.out_channels = out, d.groups = groups;
  d.kernel_h = d.kernel_w = 3;
  d.pad_top = d.pad_left = d.pad_bottom = d.pad_right = 1;
  return d;
}

Tensor values(const Shape& s, std::vector<float> v) {
  return Tensor(s, v);
}

/// The message of the Error that `f` throws ("" when it does not throw).
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(Graph, OpNamesAreDistinct) {
  std::set<std::string> names;
  for (int op = 0; op <= static_cast<int>(Op::identity); ++op)
    names.insert(op_name(static_cast<Op>(op)));
  EXPECT_EQ(names.size(), static_cast<size_t>(Op::identity) + 1);
  EXPECT_EQ(names.count("?"), 0u);
  EXPECT_STREQ(op_name(Op::global_avg_pool), "GlobalAvgPool");
}

TEST(Graph, EpilogueAppliesScaleShiftAndActivationPerChannel) {
  // Two channels of three elements: y = act(scale[c] * x + shift[c]).
  Epilogue e;
  e.scale = values(Shape{2}, {2, -1});
  e.shift = values(Shape{2}, {1, 0.5f});
  e.inner = 3;
  std::vector<float> item{-1, 0, 1, 2, 3, 4};
  e.apply(item.data(), 0, 6);
  EXPECT_EQ(item, (std::vector<float>{-1, 1, 3, -1.5f, -2.5f, -3.5f}));
  e.act = Act::relu;
  item = {-1, 0, 1, 2, 3, 4};
  e.apply(item.data(), 0, 6);
  EXPECT_EQ(item, (std::vector<float>{0, 1, 3, 0, 0, 0}));
  // A range that starts and ends inside channels touches only its elements.
  e.act = Act::clip, e.lo = -2, e.hi = 2;
  item = {-1, 0, 1, 2, 3, 4};
  e.apply(item.data(), 2, 4);
  EXPECT_EQ(item, (std::vector<float>{-1, 0, 2, -1.5f, 3, 4}));
  EXPECT_EQ(e.str(), "+scale+shift+clip[-2,2]");
  EXPECT_TRUE(Epilogue{}.empty());
  EXPECT_FALSE(e.empty());
}

TEST(Graph, PoolOutputShapesFloorAndCeil) {
  PoolDesc p{3, 3, 2, 2};
  EXPECT_EQ(p.dst_shape(Shape{4, 8, 8}), (Shape{4, 3, 3}));  // (8 - 3) / 2 + 1
  p.ceil_mode = true;
  EXPECT_EQ(p.dst_shape(Shape{4, 8, 8}), (Shape{4, 4, 4}));  // ceil(5 / 2) + 1
  // Ceil mode keeps a partial last window (6 + 1 leading pad: windows start at -1, 1, 3, 5)
  // but drops one that would start in the trailing padding (4 + 1: a 3rd would start at 4).
  PoolDesc q{2, 2, 2, 2, 1, 1, 0, 0};
  q.ceil_mode = true;
  EXPECT_EQ(q.dst_shape(Shape{1, 6, 6}), (Shape{1, 4, 4}));
  PoolDesc edge{2, 2, 2, 2, 0, 0, 1, 1};
  edge.ceil_mode = true;
  EXPECT_EQ(edge.dst_shape(Shape{1, 4, 4}), (Shape{1, 2, 2}));
  EXPECT_NE(error_of([&] { p.dst_shape(Shape{8, 8}); }).find("[C, H, W]"), std::string::npos);
  EXPECT_NE(error_of([&] {
              PoolDesc{3, 3, 0, 1}.dst_shape(Shape{1, 8, 8});
            }).find("window"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              PoolDesc{1, 1, 1, 1, -1}.dst_shape(Shape{1, 8, 8});
            }).find("negative"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              PoolDesc{9, 9, 1, 1}.dst_shape(Shape{1, 8, 8});
            }).find("larger than padded input"),
            std::string::npos);
}

TEST(Graph, InfersEveryOpsShape) {
  Graph g(Shape{3, 8, 8});
  const int p = g.pad(0, {1, 2, 3, 4}, 0, "pad");
  EXPECT_EQ(g.node(p).shape, (Shape{3, 12, 14}));
  const int c = g.conv(p, conv3x3(3, 4), Tensor(Shape{4, 3, 3, 3}), Tensor(), "conv");
  EXPECT_EQ(g.node(c).shape, (Shape{4, 12, 14}));
  EXPECT_EQ(g.node(c).epilogue.inner, 12 * 14);
  const int m = g.pool(Op::max_pool, c, PoolDesc{2, 2, 2, 2}, "pool");
  EXPECT_EQ(g.node(m).shape, (Shape{4, 6, 7}));
  const int a = g.add_values(m, g.unary(Op::relu, m, "relu"), "add");
  EXPECT_EQ(g.node(a).shape, (Shape{4, 6, 7}));
  const int r = g.reshape(a, Shape{24, 7}, "reshape");
  const int f = g.unary(Op::flatten, r, "flatten");
  EXPECT_EQ(g.node(f).shape, (Shape{168}));
  const int d = g.dense(r, 5, Tensor(Shape{5, 168}), Tensor(Shape{5}), "fc");
  EXPECT_EQ(g.node(d).shape, (Shape{5}));
  EXPECT_EQ(g.node(d).dense.in_features, 168);
  EXPECT_EQ(g.node(g.unary(Op::global_avg_pool, c, "gap")).shape, (Shape{4, 1, 1}));
  EXPECT_EQ(g.node(g.unary(Op::softmax, d, "softmax")).shape, (Shape{5}));
  // A node's origin is the name it was built with; the output follows the last node added.
  EXPECT_EQ(g.node(c).origin, "conv");
  EXPECT_EQ(g.output(), static_cast<int>(g.nodes().size()) - 1);
  g.set_output(d);
  EXPECT_EQ(g.output_shape(), (Shape{5}));
}

TEST(Graph, InconsistentNodesAreErrorsNamingThem) {
  Graph g(Shape{3, 8, 8});
  EXPECT_NE(error_of([&] {
              g.reshape(0, Shape{5, 5}, "r1");
            }).find("node 'r1' (Reshape): cannot reshape [3, 8, 8] to [5, 5]"),
            std::string::npos)
      << error_of([&] {
           g.reshape(0, Shape{5, 5}, "r1");
         });
  EXPECT_NE(error_of([&] {
              g.conv(0, conv3x3(4, 2), Tensor(Shape{2, 4, 3, 3}), {}, "c1");
            }).find("node 'c1' (Conv)"),
            std::string::npos);
  // Weights that do not fit the description.
  EXPECT_NE(error_of([&] {
              g.conv(0, conv3x3(3, 2), Tensor(Shape{2, 3, 5, 5}), {}, "c2");
            }).find("weights [2, 3, 5, 5]"),
            std::string::npos);
  Node n;
  n.op = Op::conv, n.name = "c3", n.inputs = {0}, n.conv = conv3x3(3, 2), n.weights = 99;
  EXPECT_NE(error_of([&] { g.add(std::move(n)); }).find("weights index 99 does not exist"),
            std::string::npos);
  Node bad_input;
  bad_input.op = Op::relu, bad_input.name = "r", bad_input.inputs = {7};
  EXPECT_NE(error_of([&] { g.add(std::move(bad_input)); }).find("input 7 does not exist"),
            std::string::npos);
  Node arity;
  arity.op = Op::add, arity.name = "a", arity.inputs = {0};
  EXPECT_NE(error_of([&] { g.add(std::move(arity)); }).find("takes 2 input(s), got 1"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              g.batch_norm(0, Tensor(Shape{2}), Tensor(Shape{2}), "bn");
            }).find("needs 3 channel parameters"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              g.pad(0, {0, -1, 0, 0}, 0, "p");
            }).find("negative padding"),
            std::string::npos);
  EXPECT_NE(error_of([&] { g.clip(0, 2, 1, "clip"); }).find("min 2 > max 1"), std::string::npos);
  BatchNormParams uneven{Tensor(Shape{3}), Tensor(Shape{3}), Tensor(Shape{2}), Tensor(Shape{3})};
  EXPECT_NE(error_of([&] { g.batch_norm(0, std::move(uneven), "bn2"); }).find("different sizes"),
            std::string::npos);
  const int flat = g.unary(Op::flatten, 0, "flat");
  EXPECT_NE(error_of([&] { g.unary(Op::global_avg_pool, flat, "gap"); }).find("[C, H, W]"),
            std::string::npos);
  EXPECT_THROW(g.set_output(100), Error);
  // Nothing was added by the failed calls.
  EXPECT_EQ(g.nodes().size(), 2u);
}

TEST(Graph, CountsWeightsAndMultiplyAdds) {
  Graph g(Shape{2, 4, 4});
  const int c = g.conv(0, conv3x3(2, 4, 2), Tensor(Shape{4, 1, 3, 3}), Tensor(), "conv");
  g.dense(c, 3, Tensor(Shape{3, 64}), Tensor(), "fc");
  EXPECT_EQ(g.linear_layers(), 2);
  EXPECT_EQ(g.weight_bytes(), (4 * 9 + 3 * 64) * 4);
  // conv: 4*4*4 outputs of 1*3*3 products (grouped); dense: 64*3.
  EXPECT_EQ(g.macs(), 64 * 9 + 64 * 3);
  EXPECT_NE(g.summary().find("2 linear layers"), std::string::npos) << g.summary();
  EXPECT_EQ(g.weight_shapes()[1], (Shape{3, 64}));
}

TEST(Graph, CloneIsDeep) {
  Graph g(Shape{1, 4, 4});
  const int c = g.conv(0, conv3x3(1, 2), random_tensor(Shape{2, 1, 3, 3}, 1),
                       random_tensor(Shape{2}, 2), "conv");
  BatchNormParams bn{random_tensor(Shape{2}, 3), random_tensor(Shape{2}, 4),
                     random_tensor(Shape{2}, 5), random_tensor(Shape{2}, 6, 0.5f, 1.0f)};
  g.batch_norm(c, std::move(bn), "bn");
  Graph h = g.clone();
  EXPECT_EQ(h.summary(), g.summary());
  const float w = g.weights()[0][0], b = g.node(c).epilogue.shift[0];
  const float gamma = g.node(2).bn.gamma[0];
  h.weights()[0][0] += 1, h.mutable_node(c).epilogue.shift[0] += 1;
  h.mutable_node(2).bn.gamma[0] += 1;
  EXPECT_EQ(g.weights()[0][0], w);
  EXPECT_EQ(g.node(c).epilogue.shift[0], b);
  EXPECT_EQ(g.node(2).bn.gamma[0], gamma);
  EXPECT_EQ(h.node(2).bn.eps, g.node(2).bn.eps);
}

TEST(Graph, BatchNormStatisticsGiveItsAffineMap) {
  Graph g(Shape{2, 1, 1});
  BatchNormParams bn{values(Shape{2}, {2, 1}), values(Shape{2}, {1, 0}), values(Shape{2}, {3, -1}),
                     values(Shape{2}, {4, 0.25f})};
  bn.eps = 0;
  Node& n = g.mutable_node(g.batch_norm(0, std::move(bn), "bn"));
  // scale = gamma / sqrt(var + eps), shift = beta - mean * scale.
  EXPECT_FLOAT_EQ(n.scale[0], 1.0f);
  EXPECT_FLOAT_EQ(n.shift[0], -2.0f);
  EXPECT_FLOAT_EQ(n.scale[1], 2.0f);
  EXPECT_FLOAT_EQ(n.shift[1], 2.0f);
  n.bn.var[0] = 16;
  refresh_batch_norm(n);
  EXPECT_FLOAT_EQ(n.scale[0], 0.5f);
  EXPECT_FLOAT_EQ(n.shift[0], -0.5f);
}

TEST(Graph, LastUses) {
  Graph g(Shape{4});
  const int a = g.unary(Op::relu, 0, "a");
  const int b = g.unary(Op::softmax, a, "b");
  const int c = g.add_values(a, b, "c");
  g.unary(Op::identity, 0, "unused");
  g.set_output(c);
  EXPECT_EQ(g.last_uses(), (std::vector<int>{4, 3, 3, 5, -1}));
}

TEST(Graph, FusionFoldsBatchNormAndActivationIntoTheLinearNode) {
  Graph g(Shape{1, 4, 4});
  const int c = g.conv(0, conv3x3(1, 2), random_tensor(Shape{2, 1, 3, 3}, 1),
                       values(Shape{2}, {1, 2}), "conv");
  const int i = g.unary(Op::identity, c, "dropout");
  const int bn = g.batch_norm(i, values(Shape{2}, {3, 4}), values(Shape{2}, {5, 6}), "bn");
  g.clip(bn, 0, 6, "relu6");
  g.fuse();
  ASSERT_EQ(g.nodes().size(), 2u);
  const Node& n = g.node(1);
  EXPECT_EQ(n.name, "conv+bn+relu6");
  EXPECT_EQ(n.origin, "conv");
  EXPECT_EQ(g.output(), 1);
  // scale * (z + bias) + shift = 3 z + (3 * 1 + 5), 4 z + (4 * 2 + 6).
  EXPECT_EQ(n.epilogue.scale[0], 3);
  EXPECT_EQ(n.epilogue.scale[1], 4);
  EXPECT_EQ(n.epilogue.shift[0], 8);
  EXPECT_EQ(n.epilogue.shift[1], 14);
  EXPECT_EQ(n.epilogue.act, Act::clip);
  EXPECT_EQ(n.epilogue.hi, 6);
}

TEST(Graph, FusionKeepsWhatItCannotMerge) {
  // A unit-scale batch norm stays a bias; a value read twice is not fused into; a second
  // activation is not fused; a batch norm with statistics stays for training.
  Graph g(Shape{3});
  const int d = g.dense(0, 2, Tensor(Shape{2, 3}), Tensor(), "fc");
  const int bn = g.batch_norm(d, values(Shape{2}, {1, 1}), values(Shape{2}, {7, 8}), "shift");
  const int r1 = g.unary(Op::relu, bn, "relu1");
  const int r2 = g.unary(Op::relu, r1, "relu2");
  const int d2 = g.dense(r2, 2, Tensor(Shape{2, 2}), Tensor(), "fc2");
  const int twice = g.add_values(d2, g.unary(Op::relu, d2, "relu3"), "add");
  BatchNormParams p{values(Shape{2}, {1, 1}), Tensor(Shape{2}), Tensor(Shape{2}),
                    values(Shape{2}, {1, 1})};
  const int d3 = g.dense(twice, 2, Tensor(Shape{2, 2}), Tensor(), "fc3");
  g.batch_norm(d3, std::move(p), "bn");
  Graph training = g.clone();
  g.fuse();
  std::vector<std::string> names;
  for (const Node& n : g.nodes()) names.push_back(n.name);
  EXPECT_EQ(names, (std::vector<std::string>{"input", "fc+shift+relu1", "relu2", "fc2", "relu3",
                                             "add", "fc3+bn"}));
  EXPECT_TRUE(g.node(1).epilogue.scale.empty());
  EXPECT_EQ(g.node(1).epilogue.shift[1], 8);
  EXPECT_EQ(g.node(2).inputs, (std::vector<int>{1}));
  EXPECT_EQ(g.node(5).inputs, (std::vector<int>{3, 4}));
  training.fuse(/*training=*/true);
  EXPECT_EQ(training.node(training.output()).op, Op::batch_norm);
  EXPECT_EQ(training.node(training.output()).name, "bn");
}

}  // namespace
}  // namespace darknight::nn
