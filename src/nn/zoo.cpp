#include "nn/zoo.h"

#include <cmath>

namespace darknight::nn {
namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

/// Builds a model, giving every layer's weights its own seed stream.
class Builder {
 public:
  Builder(const Shape& input, uint64_t seed) : g_(input), seed_(seed) {}
  Graph& graph() { return g_; }
  int input() const { return 0; }

  int conv(int x, int64_t out, int64_t k, int64_t stride, int64_t pad, int64_t groups,
           const std::string& name) {
    accel::ConvDesc d;
    d.in_channels = g_.node(x).shape[0], d.out_channels = out, d.kernel_h = d.kernel_w = k;
    d.stride_h = d.stride_w = stride, d.pad_top = d.pad_left = d.pad_bottom = d.pad_right = pad;
    d.groups = groups;
    Tensor w(d.weight_shape());
    init_normal(w, splitmix64(seed_ + ++layer_), std::sqrt(2.0 / double(d.fan_in())));
    return g_.conv(x, d, std::move(w), Tensor(Shape{out}), name);
  }
  int dense(int x, int64_t out, const std::string& name) {
    const int64_t in = g_.node(x).shape.numel();
    Tensor w(Shape{out, in});
    init_normal(w, splitmix64(seed_ + ++layer_), std::sqrt(2.0 / double(in)));
    return g_.dense(x, out, std::move(w), Tensor(Shape{out}), name);
  }
  /// Batch norm as PyTorch initialises it (gamma 1, beta 0, running mean 0, var 1).
  int bn(int x, const std::string& name) {
    const int64_t c = g_.node(x).shape[0];
    BatchNormParams p;
    p.gamma = Tensor(Shape{c}), p.beta = Tensor(Shape{c});
    p.mean = Tensor(Shape{c}), p.var = Tensor(Shape{c});
    p.gamma.fill(1.0f), p.var.fill(1.0f);
    return g_.batch_norm(x, std::move(p), name);
  }
  int relu(int x, const std::string& name) { return g_.unary(Op::relu, x, name); }
  int relu6(int x, const std::string& name) { return g_.clip(x, 0.0f, 6.0f, name); }
  int max_pool(int x, int64_t k, int64_t s, int64_t p, const std::string& name) {
    PoolDesc d;
    d.kernel_h = d.kernel_w = k, d.stride_h = d.stride_w = s;
    d.pad_top = d.pad_left = d.pad_bottom = d.pad_right = p;
    return g_.pool(Op::max_pool, x, d, name);
  }

 private:
  Graph g_;
  uint64_t seed_;
  uint64_t layer_ = 0;
};

Graph vgg(const std::vector<int>& cfg, bool bn, const ModelOptions& o) {
  Builder b(Shape{3, o.input_size, o.input_size}, o.seed);
  int x = b.input(), block = 1, idx = 1;
  for (int c : cfg) {
    if (c == 0) {
      x = b.max_pool(x, 2, 2, 0, fmt::format("pool{}", block));
      ++block, idx = 1;
      continue;
    }
    const std::string name = fmt::format("conv{}_{}", block, idx++);
    x = b.conv(x, c, 3, 1, 1, 1, name);
    if (bn) x = b.bn(x, name + "_bn");
    x = b.relu(x, name + "_relu");
  }
  x = b.graph().unary(Op::flatten, x, "flatten");
  x = b.relu(b.dense(x, 4096, "fc6"), "fc6_relu");
  x = b.relu(b.dense(x, 4096, "fc7"), "fc7_relu");
  b.dense(x, o.classes, "fc8");
  return std::move(b.graph());
}

Graph mobilenet(const ModelOptions& o) {
  Builder b(Shape{3, o.input_size, o.input_size}, o.seed);
  int x = b.relu6(b.bn(b.conv(b.input(), 32, 3, 2, 1, 1, "conv1"), "conv1_bn"), "conv1_relu");
  const int blocks[][2] = {{64, 1},  {128, 2}, {128, 1}, {256, 2}, {256, 1},  {512, 2}, {512, 1},
                           {512, 1}, {512, 1}, {512, 1}, {512, 1}, {1024, 2}, {1024, 1}};
  int i = 2;
  for (const auto& [out, stride] : blocks) {
    const int64_t c = b.graph().node(x).shape[0];
    const std::string dw = fmt::format("conv{}_dw", i), pw = fmt::format("conv{}_pw", i);
    x = b.relu6(b.bn(b.conv(x, c, 3, stride, 1, c, dw), dw + "_bn"), dw + "_relu");
    x = b.relu6(b.bn(b.conv(x, out, 1, 1, 0, 1, pw), pw + "_bn"), pw + "_relu");
    ++i;
  }
  x = b.graph().unary(Op::global_avg_pool, x, "pool");
  x = b.graph().unary(Op::flatten, x, "flatten");
  b.dense(x, o.classes, "fc");
  return std::move(b.graph());
}

Graph resnet18(const ModelOptions& o) {
  Builder b(Shape{3, o.input_size, o.input_size}, o.seed);
  int x;
  if (o.input_size >= 64) {
    x = b.relu(b.bn(b.conv(b.input(), 64, 7, 2, 3, 1, "conv1"), "bn1"), "relu1");
    x = b.max_pool(x, 3, 2, 1, "maxpool");
  } else {
    x = b.relu(b.bn(b.conv(b.input(), 64, 3, 1, 1, 1, "conv1"), "bn1"), "relu1");
  }
  const int64_t widths[] = {64, 128, 256, 512};
  for (int stage = 0; stage < 4; ++stage)
    for (int blk = 0; blk < 2; ++blk) {
      const std::string p = fmt::format("layer{}.{}", stage + 1, blk);
      const int64_t out = widths[stage];
      const int64_t stride = (stage > 0 && blk == 0) ? 2 : 1;
      int y = b.relu(b.bn(b.conv(x, out, 3, stride, 1, 1, p + ".conv1"), p + ".bn1"), p + ".relu1");
      y = b.bn(b.conv(y, out, 3, 1, 1, 1, p + ".conv2"), p + ".bn2");
      int shortcut = x;
      if (stride != 1 || b.graph().node(x).shape[0] != out)
        shortcut = b.bn(b.conv(x, out, 1, stride, 0, 1, p + ".downsample"), p + ".downsample_bn");
      x = b.relu(b.graph().add_values(y, shortcut, p + ".add"), p + ".relu2");
    }
  x = b.graph().unary(Op::global_avg_pool, x, "avgpool");
  x = b.graph().unary(Op::flatten, x, "flatten");
  b.dense(x, o.classes, "fc");
  return std::move(b.graph());
}

Graph fmnist_cnn(const ModelOptions& o) {
  DK_CHECK(o.input_size % 4 == 0 && o.input_size >= 4,
           "fmnist-cnn needs an input size divisible by 4 (28 for Fashion-MNIST), got {}",
           o.input_size);
  Builder b(Shape{1, o.input_size, o.input_size}, o.seed);
  int x = b.relu(b.conv(b.input(), 32, 3, 1, 1, 1, "conv1"), "relu1");
  x = b.max_pool(x, 2, 2, 0, "pool1");
  x = b.relu(b.conv(x, 64, 3, 1, 1, 1, "conv2"), "relu2");
  x = b.max_pool(x, 2, 2, 0, "pool2");
  x = b.graph().unary(Op::flatten, x, "flatten");
  x = b.relu(b.dense(x, 128, "fc1"), "relu3");
  b.dense(x, o.classes, "fc2");
  return std::move(b.graph());
}

}  // namespace

void init_normal(Tensor& t, uint64_t seed, double std) {
  float* p = t.data();
  const int64_t n = t.numel();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; i += 2) {
    const uint64_t r = splitmix64(seed ^ splitmix64(static_cast<uint64_t>(i)));
    const double u1 = (static_cast<double>(r >> 32) + 1.0) * 0x1p-32;
    const double u2 = static_cast<double>(r & 0xffffffffULL) * 0x1p-32;
    const double rad = std * std::sqrt(-2.0 * std::log(u1));
    p[i] = static_cast<float>(rad * std::cos(6.283185307179586 * u2));
    if (i + 1 < n) p[i + 1] = static_cast<float>(rad * std::sin(6.283185307179586 * u2));
  }
}

std::vector<std::string> model_names() {
  return {"fmnist-cnn", "vgg16", "vgg19", "vgg16-bn", "vgg19-bn", "mobilenet", "resnet18"};
}

Graph build_model(const std::string& name, const ModelOptions& o) {
  DK_CHECK(o.input_size >= 1 && o.classes >= 1, "input size and classes must be positive");
  const std::vector<int> vgg16_cfg{64, 64,  0,   128, 128, 0,   256, 256, 256,
                                   0,  512, 512, 512, 0,   512, 512, 512, 0};
  const std::vector<int> vgg19_cfg{64,  64,  0,   128, 128, 0,   256, 256, 256, 256, 0,
                                   512, 512, 512, 512, 0,   512, 512, 512, 512, 0};
  if (name == "vgg16" || name == "vgg16-bn") return vgg(vgg16_cfg, name == "vgg16-bn", o);
  if (name == "vgg19" || name == "vgg19-bn") return vgg(vgg19_cfg, name == "vgg19-bn", o);
  if (name == "mobilenet") return mobilenet(o);
  if (name == "resnet18") return resnet18(o);
  if (name == "fmnist-cnn") return fmnist_cnn(o);
  throw Error(fmt::format("unknown model '{}' (built in: {}; or an .onnx file)", name,
                          fmt::join(model_names(), ", ")));
}

}  // namespace darknight::nn
