#include "nn/onnx_import.h"

#include <array>
#include <cmath>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <variant>

#include "onnx/onnx_io.h"
#include "protocol/checked.h"

namespace darknight::nn {
namespace {

using onnx_io::attr_float;
using onnx_io::attr_int;
using onnx_io::attr_ints;
using onnx_io::attr_string;

/// The batch dimension in folded shape arithmetic (unknown until run time).
constexpr int64_t kBatch = std::numeric_limits<int64_t>::min();
/// Window attributes (kernel_shape, strides, dilations, pads) and Pad amounts above this
/// are refused as absurd, which keeps the shape arithmetic far from overflow.
constexpr int64_t kMaxWindow = int64_t{1} << 24;
/// Folded shape arithmetic (Concat results) longer than this is refused: real models
/// fold vectors of a few dimensions, and repeated Concats could double a list per node.
constexpr size_t kMaxFoldedInts = size_t{1} << 16;

/// A value known at load time: float data (weights) or integers (shape arithmetic).
/// Shared, never modified: Identity/Dropout/Unsqueeze of a constant share it, not copy it.
struct Const {
  Tensor floats;
  std::vector<int64_t> ints;
  bool is_int = false;
};
using ConstPtr = std::shared_ptr<const Const>;

class Importer {
 public:
  explicit Importer(const onnx::ModelProto& m) : m_(m) {
    for (const auto& op : m.opset_import())
      if (op.domain().empty() || op.domain() == "ai.onnx") opset_ = static_cast<int>(op.version());
    // What the graph may hold: the model's weights, with room for small derived tensors.
    // More means weights shared by many nodes or sizes the file declares but does not hold.
    budget_ = 2 * static_cast<int64_t>(m.ByteSizeLong()) + (int64_t{1} << 20);
  }

  Graph run() {
    const auto& g = m_.graph();
    for (const auto& init : g.initializer()) protos_[init.name()] = &init;
    // The one data input: a graph input that is not an initializer.
    std::string input;
    Shape item;
    for (const auto& in : g.input()) {
      if (protos_.count(in.name())) continue;
      if (!input.empty()) fail("graph", "more than one data input ({} and {})", input, in.name());
      input = in.name();
      const auto& dims = in.type().tensor_type().shape().dim();
      if (dims.size() < 2) fail("graph", "input '{}' must have a batch dimension", input);
      std::vector<int64_t> d;
      for (int i = 1; i < dims.size(); ++i) {
        if (!dims[i].has_dim_value() || dims[i].dim_value() <= 0)
          fail("graph", "input '{}' dimension {} must be a fixed size", input, i);
        d.push_back(dims[i].dim_value());
      }
      item = Shape(std::span<const int64_t>(d));
    }
    if (input.empty()) fail("graph", "no data input");
    graph_.emplace(item);
    values_[input] = 0;
    for (const auto& n : g.node()) node(n);
    if (g.output_size() != 1) fail("graph", "{} outputs; one is supported", g.output_size());
    graph_->set_output(data(g.output(0).name(), "graph output"));
    return std::move(*graph_);
  }

 private:
  template <typename... A>
  [[noreturn]] void fail(const std::string& where, fmt::format_string<A...> f, A&&... a) {
    throw Error(fmt::format("{}: {}", where, fmt::format(f, std::forward<A>(a)...)));
  }

  Graph& g() { return *graph_; }

  /// Input i of a node, which must be there (a node with fewer inputs is an error).
  const std::string& input(const onnx::NodeProto& n, int i, const std::string& where) {
    if (i >= n.input_size()) fail(where, "input {} is missing ({} given)", i, n.input_size());
    if (n.input(i).empty()) fail(where, "input {} is missing (empty name)", i);
    return n.input(i);
  }
  /// Whether optional input i is given.
  bool has_input(const onnx::NodeProto& n, int i) {
    return i < n.input_size() && !n.input(i).empty();
  }

  /// An INTS attribute of exactly `count` values in [lo, kMaxWindow], or `fallback` when absent.
  std::vector<int64_t> window(const onnx::NodeProto& n, const char* name, size_t count, int64_t lo,
                              std::vector<int64_t> fallback, const std::string& where) {
    auto v = attr_ints(n, name);
    if (!v) return fallback;
    if (v->size() != count)
      fail(where, "{} has {} values; a 2-D window needs {}", name, v->size(), count);
    for (int64_t x : *v)
      if (x < lo || x > kMaxWindow)
        fail(where, "{} value {} is not in [{}, {}]", name, x, lo, kMaxWindow);
    return *v;
  }

  /// Counts bytes the graph is about to hold against the budget (before allocating them).
  void charge(int64_t elements, const std::string& where) {
    DK_ASSERT(elements >= 0 && elements <= 4 * Shape::kMaxElements);
    used_ += 4 * elements;
    if (used_ > budget_)
      fail(where,
           "the model's tensors would need more than {} bytes in memory, twice the file's "
           "size (weights shared by many nodes, or sizes the file declares but does not hold)",
           budget_);
  }

  int data(const std::string& name, const std::string& where) {
    auto it = values_.find(name);
    if (it == values_.end())
      fail(where, "input '{}' is not computed data (a constant where data is expected?)", name);
    return it->second;
  }
  bool is_const(const std::string& name) const {
    return consts_.count(name) || protos_.count(name);
  }
  const ConstPtr& constant(const std::string& name, const std::string& where) {
    auto it = consts_.find(name);
    if (it != consts_.end()) return it->second;
    auto p = protos_.find(name);
    if (p == protos_.end()) fail(where, "input '{}' must be a constant (initializer)", name);
    return consts_[name] = std::make_shared<const Const>(from_proto(*p->second, where));
  }
  Const from_proto(const onnx::TensorProto& t, const std::string& where) {
    Const c;
    if (t.data_type() == onnx::TensorProto::INT64 || t.data_type() == onnx::TensorProto::INT32) {
      auto v = onnx_io::to_int64s(t);
      if (!v.ok()) fail(where, "{}", v.status().message());
      c.ints = std::move(v).value();
      c.is_int = true;
    } else {
      auto v = onnx_io::to_tensor(t);
      if (!v.ok()) fail(where, "{}", v.status().message());
      c.floats = std::move(v).value();
    }
    return c;
  }
  const Tensor& floats(const std::string& name, const std::string& where) {
    const Const& c = *constant(name, where);
    if (c.is_int) fail(where, "'{}' must be a float tensor", name);
    return c.floats;
  }
  const std::vector<int64_t>& ints(const std::string& name, const std::string& where) {
    const Const& c = *constant(name, where);
    if (!c.is_int) fail(where, "'{}' must be an integer tensor", name);
    return c.ints;
  }
  float scalar(const std::string& name, const std::string& where) {
    const Tensor& t = floats(name, where);
    if (t.numel() != 1) fail(where, "'{}' must be a scalar", name);
    return t[0];
  }
  void set(const onnx::NodeProto& n, int id) { values_[n.output(0)] = id; }
  void set_const(const onnx::NodeProto& n, Const c) {
    consts_[n.output(0)] = std::make_shared<const Const>(std::move(c));
  }
  void only_first_output(const onnx::NodeProto& n, const std::string& where) {
    for (int i = 1; i < n.output_size(); ++i)
      if (!n.output(i).empty()) fail(where, "output {} ('{}') is not supported", i, n.output(i));
  }
  const Shape& shape_of(int id) { return g().node(id).shape; }

  /// Start and end padding of SAME_UPPER/SAME_LOWER along one axis (k, s, d positive, at
  /// most kMaxWindow; in at most Shape::kMaxElements: no overflow).
  static std::pair<int64_t, int64_t> same_pads(const std::string& mode, int64_t in, int64_t k,
                                               int64_t s, int64_t d) {
    const int64_t out = (in + s - 1) / s, eff = (k - 1) * d + 1;
    const int64_t total = std::max<int64_t>(0, (out - 1) * s + eff - in);
    const int64_t begin = mode == "SAME_UPPER" ? total / 2 : total - total / 2;
    return {begin, total - begin};
  }

  void node(const onnx::NodeProto& n) {
    const std::string op = n.op_type();
    const std::string where = fmt::format("node '{}' ({})", n.name(), op);
    if (!n.domain().empty() && n.domain() != "ai.onnx")
      fail(where, "operator domain '{}' is not supported", n.domain());
    if (n.output_size() < 1 || n.output(0).empty()) fail(where, "the node has no output");
    if (op == "Conv") return conv(n, where);
    if (op == "Gemm") return gemm(n, where);
    if (op == "MatMul") return matmul(n, where);
    if (op == "Add") return add(n, where);
    if (op == "Relu") return set(n, g().unary(Op::relu, data(input(n, 0, where), where), n.name()));
    if (op == "Clip") return clip(n, where);
    if (op == "MaxPool" || op == "AveragePool") return pool(n, where);
    if (op == "GlobalAveragePool")
      return set(n, g().unary(Op::global_avg_pool, data(input(n, 0, where), where), n.name()));
    if (op == "BatchNormalization") return batch_norm(n, where);
    if (op == "Flatten") return flatten(n, where);
    if (op == "Reshape") return reshape(n, where);
    if (op == "Pad") return pad(n, where);
    if (op == "Dropout" || op == "Identity") {
      only_first_output(n, where);
      const std::string& x = input(n, 0, where);
      if (is_const(x)) return share_const(n, x, where);
      return set(n, g().unary(Op::identity, data(x, where), n.name()));
    }
    if (op == "Softmax") return softmax(n, where);
    if (op == "Constant") return constant_node(n, where);
    if (op == "Shape") return shape(n, where);
    if (op == "Gather") return gather(n, where);
    if (op == "Unsqueeze") return unsqueeze(n, where);
    if (op == "Concat") return concat(n, where);
    fail(where,
         "operator {} is not supported (supported: Conv, Gemm, MatMul, Add, Relu, Clip, "
         "MaxPool, AveragePool, GlobalAveragePool, BatchNormalization, Flatten, Reshape, "
         "Pad, Dropout, Identity, Softmax, and constant Shape/Gather/Unsqueeze/Concat)",
         op);
  }

  void conv(const onnx::NodeProto& n, const std::string& where) {
    const int x = data(input(n, 0, where), where);
    const Shape& in = shape_of(x);
    const Tensor& w = floats(input(n, 1, where), where);
    if (w.shape().rank() != 4 || in.rank() != 3)
      fail(where, "only 2-D convolutions are supported (weights {}, input {})", w.shape().str(),
           in.str());
    accel::ConvDesc d;
    d.in_channels = in[0];
    d.out_channels = w.shape()[0];
    d.groups = attr_int(n, "group").value_or(1);
    d.kernel_h = w.shape()[2], d.kernel_w = w.shape()[3];
    const auto k = window(n, "kernel_shape", 2, 1, {d.kernel_h, d.kernel_w}, where);
    if (k[0] != d.kernel_h || k[1] != d.kernel_w)
      fail(where, "kernel_shape [{}, {}] does not match the weights {}", k[0], k[1],
           w.shape().str());
    const auto s = window(n, "strides", 2, 1, {1, 1}, where);
    const auto dl = window(n, "dilations", 2, 1, {1, 1}, where);
    d.stride_h = s[0], d.stride_w = s[1], d.dilation_h = dl[0], d.dilation_w = dl[1];
    const std::string ap = attr_string(n, "auto_pad").value_or("NOTSET");
    if (ap == "SAME_UPPER" || ap == "SAME_LOWER") {
      std::tie(d.pad_top, d.pad_bottom) =
          same_pads(ap, in[1], d.kernel_h, d.stride_h, d.dilation_h);
      std::tie(d.pad_left, d.pad_right) =
          same_pads(ap, in[2], d.kernel_w, d.stride_w, d.dilation_w);
    } else if (ap == "NOTSET") {
      const auto p = window(n, "pads", 4, 0, {0, 0, 0, 0}, where);
      d.pad_top = p[0], d.pad_left = p[1], d.pad_bottom = p[2], d.pad_right = p[3];
    } else if (ap != "VALID") {
      fail(where, "auto_pad {} is not supported", ap);
    }
    const Tensor* b = has_input(n, 2) ? &floats(n.input(2), where) : nullptr;
    if (b && b->numel() != d.out_channels) fail(where, "bias has {} values", b->numel());
    charge(w.numel() + d.out_channels, where);
    Tensor bias = b ? b->clone() : Tensor(Shape{d.out_channels});
    bias.reshape(Shape{d.out_channels});
    set(n, g().conv(x, d, w.clone(), std::move(bias), n.name()));
  }

  void dense(const onnx::NodeProto& n, int x, Tensor weights, Tensor bias,
             const std::string& where) {
    const Shape& in = shape_of(x);
    if (in.rank() != 1) fail(where, "input must be [batch, features], got item {}", in.str());
    if (weights.shape()[1] != in[0])
      fail(where, "weights {} for {} input features", weights.shape().str(), in[0]);
    if (bias.numel() != weights.shape()[0])
      fail(where, "{} bias values for {} outputs", bias.numel(), weights.shape()[0]);
    set(n, g().dense(x, weights.shape()[0], std::move(weights), std::move(bias), n.name()));
  }

  static Tensor transpose(const Tensor& t) {
    const int64_t r = t.shape()[0], c = t.shape()[1];
    Tensor o(Shape{c, r});
    for (int64_t i = 0; i < r; ++i)
      for (int64_t j = 0; j < c; ++j) o[j * r + i] = t[i * c + j];
    return o;
  }

  void gemm(const onnx::NodeProto& n, const std::string& where) {
    const int x = data(input(n, 0, where), where);
    if (attr_int(n, "transA").value_or(0)) fail(where, "transA = 1 is not supported");
    const Tensor& b = floats(input(n, 1, where), where);
    if (b.shape().rank() != 2) fail(where, "B must be a matrix");
    charge(2 * b.numel(), where);  // weights and bias (at most as many values)
    Tensor w = attr_int(n, "transB").value_or(0) ? b.clone() : transpose(b);
    const float alpha = attr_float(n, "alpha").value_or(1.0f);
    const float beta = attr_float(n, "beta").value_or(1.0f);
    if (alpha != 1.0f)
      for (int64_t i = 0; i < w.numel(); ++i) w[i] *= alpha;
    const int64_t out = w.shape()[0];
    Tensor bias(Shape{out});
    if (has_input(n, 2)) {
      const Tensor& c = floats(n.input(2), where);
      if (c.numel() != out && c.numel() != 1)
        fail(where, "C {} must broadcast per output feature", c.shape().str());
      for (int64_t i = 0; i < out; ++i) bias[i] = beta * c[c.numel() == 1 ? 0 : i];
    }
    dense(n, x, std::move(w), std::move(bias), where);
  }

  void matmul(const onnx::NodeProto& n, const std::string& where) {
    const int x = data(input(n, 0, where), where);
    const Tensor& b = floats(input(n, 1, where), where);
    if (b.shape().rank() != 2) fail(where, "only data x constant matrix products are supported");
    charge(2 * b.numel(), where);
    dense(n, x, transpose(b), Tensor(Shape{b.shape()[1]}), where);
  }

  void add(const onnx::NodeProto& n, const std::string& where) {
    const std::string &a = input(n, 0, where), &b = input(n, 1, where);
    const bool c0 = is_const(a), c1 = is_const(b);
    if (!c0 && !c1) return set(n, g().add_values(data(a, where), data(b, where), n.name()));
    if (c0 && c1) fail(where, "adding two constants is not supported");
    const int x = data(c0 ? b : a, where);
    const Tensor& c = floats(c0 ? a : b, where);
    const Shape& item = shape_of(x);
    const int64_t channels = item.rank() ? item[0] : 1;
    // A constant that broadcasts per channel ([C], [C,1,1], [1,C,1,1], scalar) is a shift.
    int64_t non_unit = 0;
    for (int64_t d : c.shape().dims()) non_unit += d != 1;
    const bool per_channel =
        c.numel() == 1 ||
        (c.numel() == channels && non_unit == 1 &&
         (item.rank() == 1 ? c.shape()[c.shape().rank() - 1] == channels
                           : c.shape().rank() >= 3 && c.shape()[c.shape().rank() - 3] == channels));
    if (!per_channel)
      fail(where, "adding a constant of shape {} to {} is not supported", c.shape().str(),
           item.str());
    charge(2 * channels, where);  // the channel count is the declared input's, not data's
    Tensor scale(Shape{channels}), shift(Shape{channels});
    scale.fill(1.0f);
    for (int64_t i = 0; i < channels; ++i) shift[i] = c[c.numel() == 1 ? 0 : i];
    set(n, g().batch_norm(x, std::move(scale), std::move(shift), n.name()));
  }

  void clip(const onnx::NodeProto& n, const std::string& where) {
    float lo = std::numeric_limits<float>::lowest(), hi = std::numeric_limits<float>::max();
    if (opset_ < 11) {
      lo = attr_float(n, "min").value_or(lo);
      hi = attr_float(n, "max").value_or(hi);
    } else {
      if (has_input(n, 1)) lo = scalar(n.input(1), where);
      if (has_input(n, 2)) hi = scalar(n.input(2), where);
    }
    if (!(lo <= hi)) fail(where, "min {} is not <= max {}", lo, hi);
    const int x = data(input(n, 0, where), where);
    if (lo == 0.0f && hi == std::numeric_limits<float>::max())
      return set(n, g().unary(Op::relu, x, n.name()));
    set(n, g().clip(x, lo, hi, n.name()));
  }

  void pool(const onnx::NodeProto& n, const std::string& where) {
    only_first_output(n, where);
    const int x = data(input(n, 0, where), where);
    const Shape& in = shape_of(x);
    if (in.rank() != 3) fail(where, "only 2-D pooling is supported");
    if (!attr_ints(n, "kernel_shape")) fail(where, "kernel_shape must have 2 values");
    const auto k = window(n, "kernel_shape", 2, 1, {}, where);
    for (int64_t v : window(n, "dilations", 2, 1, {1, 1}, where))
      if (v != 1) fail(where, "dilated pooling is not supported");
    if (attr_int(n, "storage_order").value_or(0) != 0)
      fail(where, "storage_order 1 is not supported");
    PoolDesc p;
    p.kernel_h = k[0], p.kernel_w = k[1];
    const auto s = window(n, "strides", 2, 1, {1, 1}, where);
    p.stride_h = s[0], p.stride_w = s[1];
    p.ceil_mode = attr_int(n, "ceil_mode").value_or(0) != 0;
    p.count_include_pad = attr_int(n, "count_include_pad").value_or(0) != 0;
    const std::string ap = attr_string(n, "auto_pad").value_or("NOTSET");
    if (ap == "SAME_UPPER" || ap == "SAME_LOWER") {
      std::tie(p.pad_top, p.pad_bottom) = same_pads(ap, in[1], p.kernel_h, p.stride_h, 1);
      std::tie(p.pad_left, p.pad_right) = same_pads(ap, in[2], p.kernel_w, p.stride_w, 1);
    } else if (ap == "NOTSET") {
      const auto pads = window(n, "pads", 4, 0, {0, 0, 0, 0}, where);
      p.pad_top = pads[0], p.pad_left = pads[1], p.pad_bottom = pads[2], p.pad_right = pads[3];
    } else if (ap != "VALID") {
      fail(where, "auto_pad {} is not supported", ap);
    }
    set(n, g().pool(n.op_type() == "MaxPool" ? Op::max_pool : Op::avg_pool, x, p, n.name()));
  }

  void batch_norm(const onnx::NodeProto& n, const std::string& where) {
    only_first_output(n, where);
    if (attr_int(n, "training_mode").value_or(0) != 0)
      fail(where, "training_mode = 1 is not supported at inference");
    const int x = data(input(n, 0, where), where);
    if (shape_of(x).rank() < 1) fail(where, "needs an input with channels");
    const int64_t c = shape_of(x)[0];
    std::array<const Tensor*, 4> src{};
    for (int i = 0; i < 4; ++i) {
      src[static_cast<size_t>(i)] = &floats(input(n, i + 1, where), where);
      if (src[static_cast<size_t>(i)]->numel() != c)
        fail(where, "parameters must have {} values", c);
    }
    charge(4 * c, where);
    BatchNormParams p;
    p.gamma = src[0]->clone(), p.beta = src[1]->clone();
    p.mean = src[2]->clone(), p.var = src[3]->clone();
    p.eps = attr_float(n, "epsilon").value_or(1e-5f);
    // ONNX momentum weighs the running value (PyTorch's momentum = 1 - ONNX's).
    p.momentum = 1.0 - attr_float(n, "momentum").value_or(0.9f);
    for (Tensor* t : {&p.gamma, &p.beta, &p.mean, &p.var}) t->reshape(Shape{c});
    set(n, g().batch_norm(x, std::move(p), n.name()));
  }

  void flatten(const onnx::NodeProto& n, const std::string& where) {
    if (attr_int(n, "axis").value_or(1) != 1) fail(where, "only axis = 1 is supported");
    set(n, g().unary(Op::flatten, data(input(n, 0, where), where), n.name()));
  }

  void reshape(const onnx::NodeProto& n, const std::string& where) {
    if (attr_int(n, "allowzero").value_or(0) != 0) fail(where, "allowzero = 1 is not supported");
    const int x = data(input(n, 0, where), where);
    const Shape& in = shape_of(x);
    const auto& t = ints(input(n, 1, where), where);
    if (t.empty() || (t[0] != kBatch && t[0] != 0 && t[0] != -1))
      fail(where, "the target shape must keep the batch dimension");
    std::vector<int64_t> dims;
    int infer = -1;
    int64_t known = 1;
    for (size_t i = 1; i < t.size(); ++i) {
      int64_t d = t[i];
      if (d == 0) {
        if (static_cast<int>(i) - 1 >= in.rank()) fail(where, "0 copies a missing dimension");
        d = in[static_cast<int>(i) - 1];
      }
      if (d == -1) {
        if (infer >= 0 || t[0] == -1) fail(where, "more than one dimension to infer");
        infer = static_cast<int>(dims.size());
        dims.push_back(1);
        continue;
      }
      if (d <= 0) fail(where, "bad target dimension {}", d);
      const auto k = checked_mul(known, d);
      if (!k || *k > Shape::kMaxElements) fail(where, "the target shape is too large");
      known = *k;
      dims.push_back(d);
    }
    if (infer >= 0) {
      if (in.numel() % known) fail(where, "cannot reshape {} to the target", in.str());
      dims[static_cast<size_t>(infer)] = in.numel() / known;
    }
    set(n, g().reshape(x, Shape(std::span<const int64_t>(dims)), n.name()));
  }

  void pad(const onnx::NodeProto& n, const std::string& where) {
    if (attr_string(n, "mode").value_or("constant") != "constant")
      fail(where, "only constant padding is supported");
    const int x = data(input(n, 0, where), where);
    std::vector<int64_t> p;
    float value = 0;
    if (opset_ < 11) {
      p = attr_ints(n, "pads").value_or(std::vector<int64_t>{});
      value = attr_float(n, "value").value_or(0.0f);
    } else {
      p = ints(input(n, 1, where), where);
      if (has_input(n, 2)) value = scalar(n.input(2), where);
      if (has_input(n, 3)) fail(where, "axes are not supported");
    }
    if (p.size() != 8 || p[0] || p[1] || p[4] || p[5])
      fail(where, "only padding of H and W of a 4-D tensor is supported");
    for (int64_t v : p)
      if (v < 0 || v > kMaxWindow) fail(where, "pad {} is not in [0, {}]", v, kMaxWindow);
    set(n, g().pad(x, {p[2], p[3], p[6], p[7]}, value, n.name()));
  }

  void softmax(const onnx::NodeProto& n, const std::string& where) {
    const int x = data(input(n, 0, where), where);
    const int rank = shape_of(x).rank() + 1;
    int64_t axis = attr_int(n, "axis").value_or(opset_ < 13 ? 1 : -1);
    if (axis < 0) axis += rank;
    // Before opset 13 Softmax flattens from `axis`; from 13 it works along `axis` alone.
    if (axis != 1 || (opset_ >= 13 && rank != 2))
      fail(where,
           "softmax over axis {} of a rank-{} tensor is not supported (only over each "
           "item's features)",
           axis, rank);
    set(n, g().unary(Op::softmax, x, n.name()));
  }

  void constant_node(const onnx::NodeProto& n, const std::string& where) {
    Const c;
    for (const auto& a : n.attribute()) {
      if (a.name() == "value") {
        c = from_proto(a.t(), where);
      } else if (a.name() == "value_float") {
        const float v = a.f();
        c.floats = Tensor(Shape{}, std::span<const float>(&v, 1));
      } else if (a.name() == "value_floats") {
        std::vector<float> v(a.floats().begin(), a.floats().end());
        c.floats = Tensor(Shape{static_cast<int64_t>(v.size())}, v);
      } else if (a.name() == "value_int") {
        c.ints = {a.i()}, c.is_int = true;
      } else if (a.name() == "value_ints") {
        c.ints.assign(a.ints().begin(), a.ints().end()), c.is_int = true;
      } else {
        fail(where, "attribute {} is not supported", a.name());
      }
    }
    set_const(n, std::move(c));
  }

  void shape(const onnx::NodeProto& n, const std::string& where) {
    const Shape& item = shape_of(data(input(n, 0, where), where));
    std::vector<int64_t> s{kBatch};
    for (int64_t d : item.dims()) s.push_back(d);
    const auto r = static_cast<int64_t>(s.size());
    int64_t start = attr_int(n, "start").value_or(0), end = attr_int(n, "end").value_or(r);
    if (start < 0) start += r;
    if (end < 0) end += r;
    start = std::clamp<int64_t>(start, 0, r), end = std::clamp<int64_t>(end, start, r);
    Const c;
    c.is_int = true;
    c.ints.assign(s.begin() + start, s.begin() + end);
    set_const(n, std::move(c));
  }

  void gather(const onnx::NodeProto& n, const std::string& where) {
    if (attr_int(n, "axis").value_or(0) != 0) fail(where, "only axis 0 is supported");
    const auto& v = ints(input(n, 0, where), where);
    const auto& idx = ints(input(n, 1, where), where);
    Const c;
    c.is_int = true;
    for (int64_t i : idx) {
      if (i < 0) i += static_cast<int64_t>(v.size());
      if (i < 0 || i >= static_cast<int64_t>(v.size())) fail(where, "index {} out of range", i);
      c.ints.push_back(v[static_cast<size_t>(i)]);
    }
    set_const(n, std::move(c));
  }

  void unsqueeze(const onnx::NodeProto& n, const std::string& where) {
    // Folded shape arithmetic only: a scalar or a vector stays a flat list of integers.
    share_const(n, input(n, 0, where), where);
  }

  /// The node's output is the constant `name` itself (shared, not copied).
  void share_const(const onnx::NodeProto& n, const std::string& name, const std::string& where) {
    const ConstPtr c = constant(name, where);  // a copy of the pointer: the map may change
    consts_[n.output(0)] = c;
  }

  void concat(const onnx::NodeProto& n, const std::string& where) {
    Const c;
    c.is_int = true;
    for (const auto& in : n.input()) {
      const auto& v = ints(in, where);
      if (v.size() > kMaxFoldedInts - c.ints.size())
        fail(where, "the folded result would have more than {} values", kMaxFoldedInts);
      c.ints.insert(c.ints.end(), v.begin(), v.end());
    }
    set_const(n, std::move(c));
  }

  const onnx::ModelProto& m_;
  int opset_ = 13;
  std::optional<Graph> graph_;
  std::map<std::string, const onnx::TensorProto*> protos_;
  std::map<std::string, ConstPtr> consts_;
  std::map<std::string, int> values_;
  int64_t budget_ = 0, used_ = 0;  ///< bytes of tensors the graph holds, at most budget_
};

}  // namespace

Result<Graph> import_onnx(const onnx::ModelProto& model) {
  try {
    return Importer(model).run();
  } catch (const Error& e) {
    return Status::error(e.what());
  }
}

Result<Graph> import_onnx(const std::string& path) {
  auto model = onnx_io::load_model(path);
  if (!model.ok()) return model.status();
  auto g = import_onnx(model.value());
  if (!g.ok()) return Status::error(fmt::format("{}: {}", path, g.status().message()));
  return g;
}

}  // namespace darknight::nn
