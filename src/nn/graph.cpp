#include "nn/graph.h"

#include <algorithm>
#include <cmath>

namespace darknight::nn {

const char* op_name(Op op) {
  switch (op) {
    case Op::input:
      return "Input";
    case Op::conv:
      return "Conv";
    case Op::dense:
      return "Dense";
    case Op::relu:
      return "Relu";
    case Op::clip:
      return "Clip";
    case Op::max_pool:
      return "MaxPool";
    case Op::avg_pool:
      return "AvgPool";
    case Op::global_avg_pool:
      return "GlobalAvgPool";
    case Op::batch_norm:
      return "BatchNorm";
    case Op::flatten:
      return "Flatten";
    case Op::reshape:
      return "Reshape";
    case Op::pad:
      return "Pad";
    case Op::add:
      return "Add";
    case Op::softmax:
      return "Softmax";
    case Op::identity:
      return "Identity";
  }
  return "?";
}

void Epilogue::apply(float* item, int64_t begin, int64_t end) const {
  const float* sc = scale.empty() ? nullptr : scale.data();
  const float* sh = shift.empty() ? nullptr : shift.data();
  int64_t e = begin;
  while (e < end) {
    const int64_t c = e / inner;
    const int64_t stop = std::min(end, (c + 1) * inner);
    const float a = sc ? sc[c] : 1.0f, b = sh ? sh[c] : 0.0f;
    for (int64_t i = e; i < stop; ++i) item[i] = a * item[i] + b;
    if (act == Act::relu)
      for (int64_t i = e; i < stop; ++i) item[i] = std::max(item[i], 0.0f);
    else if (act == Act::clip)
      for (int64_t i = e; i < stop; ++i) item[i] = std::min(std::max(item[i], lo), hi);
    e = stop;
  }
}

std::string Epilogue::str() const {
  std::string s;
  if (!scale.empty()) s += "+scale";
  if (!shift.empty()) s += "+shift";
  if (act == Act::relu) s += "+relu";
  if (act == Act::clip) s += fmt::format("+clip[{},{}]", lo, hi);
  return s;
}

Shape PoolDesc::dst_shape(const Shape& item) const {
  DK_CHECK(item.rank() == 3, "pooling needs [C, H, W] items, got {}", item.str());
  DK_CHECK(kernel_h > 0 && kernel_w > 0 && stride_h > 0 && stride_w > 0, "bad pooling window");
  DK_CHECK(pad_top >= 0 && pad_left >= 0 && pad_bottom >= 0 && pad_right >= 0,
           "negative pooling padding");
  auto out = [&](int64_t in, int64_t k, int64_t s, int64_t pb, int64_t pe) {
    const int64_t span = in + pb + pe - k;
    DK_CHECK(span >= 0, "pooling window {} larger than padded input {}", k, in + pb + pe);
    int64_t o = (ceil_mode ? (span + s - 1) / s : span / s) + 1;
    if (ceil_mode && (o - 1) * s >= in + pb) --o;  // last window must start inside
    return o;
  };
  return Shape{item[0], out(item[1], kernel_h, stride_h, pad_top, pad_bottom),
               out(item[2], kernel_w, stride_w, pad_left, pad_right)};
}

Graph::Graph(const Shape& item) {
  Node in;
  in.op = Op::input;
  in.name = "input";
  in.shape = item;
  nodes_.push_back(std::move(in));
}

Graph Graph::clone() const {
  Graph g(input_shape());
  g.nodes_.clear();
  for (const Node& n : nodes_) {
    Node c;
    c.op = n.op, c.name = n.name, c.origin = n.origin, c.inputs = n.inputs, c.shape = n.shape;
    c.conv = n.conv, c.dense = n.dense, c.weights = n.weights;
    c.epilogue.scale = n.epilogue.scale.clone(), c.epilogue.shift = n.epilogue.shift.clone();
    c.epilogue.act = n.epilogue.act, c.epilogue.lo = n.epilogue.lo, c.epilogue.hi = n.epilogue.hi;
    c.epilogue.inner = n.epilogue.inner;
    c.pool = n.pool, c.pads = n.pads, c.pad_value = n.pad_value, c.lo = n.lo, c.hi = n.hi;
    c.scale = n.scale.clone(), c.shift = n.shift.clone();
    c.bn.gamma = n.bn.gamma.clone(), c.bn.beta = n.bn.beta.clone();
    c.bn.mean = n.bn.mean.clone(), c.bn.var = n.bn.var.clone();
    c.bn.eps = n.bn.eps, c.bn.momentum = n.bn.momentum;
    g.nodes_.push_back(std::move(c));
  }
  for (const Tensor& w : weights_) g.weights_.push_back(w.clone());
  g.weight_shapes_ = weight_shapes_;
  g.output_ = output_;
  return g;
}

int Graph::add_weights(Tensor weights) {
  weight_shapes_.push_back(weights.shape());
  weights_.push_back(std::move(weights));
  return static_cast<int>(weights_.size()) - 1;
}

int Graph::add(Node n) {
  for (int i : n.inputs)
    DK_CHECK(i >= 0 && i < static_cast<int>(nodes_.size()), "node {}: input {} does not exist",
             n.name, i);
  const size_t arity = n.op == Op::add ? 2 : 1;
  DK_CHECK(n.inputs.size() == arity, "node {} ({}) takes {} input(s), got {}", n.name,
           op_name(n.op), arity, n.inputs.size());
  const Shape& x = nodes_[static_cast<size_t>(n.inputs[0])].shape;
  try {
    switch (n.op) {
      case Op::input:
        throw Error("only one input");
      case Op::conv: {
        DK_CHECK(x.rank() == 3, "needs [C, H, W] input, got {}", x.str());
        const Shape d = n.conv.dst_shape(Shape{1, x[0], x[1], x[2]});
        n.shape = Shape{d[1], d[2], d[3]};
        DK_CHECK(weight_shapes_.at(static_cast<size_t>(n.weights)) == n.conv.weight_shape(),
                 "weights {} for {}", weight_shapes_[static_cast<size_t>(n.weights)].str(),
                 n.conv.str());
        n.epilogue.inner = d[2] * d[3];
        break;
      }
      case Op::dense:
        DK_CHECK(x.numel() == n.dense.in_features, "needs {} input features, got {} ({})",
                 n.dense.in_features, x.numel(), x.str());
        n.dense.validate();
        n.shape = Shape{n.dense.out_features};
        DK_CHECK(weight_shapes_.at(static_cast<size_t>(n.weights)) == n.dense.weight_shape(),
                 "weights {} for dense {}", weight_shapes_[static_cast<size_t>(n.weights)].str(),
                 n.dense.str());
        n.epilogue.inner = 1;
        break;
      case Op::relu:
      case Op::clip:
      case Op::identity:
      case Op::softmax:
        n.shape = x;
        break;
      case Op::batch_norm:
        DK_CHECK(x.rank() >= 1 && n.scale.numel() == x[0] && n.shift.numel() == x[0],
                 "needs {} channel parameters", x.rank() ? x[0] : 0);
        n.shape = x;
        break;
      case Op::max_pool:
      case Op::avg_pool:
        n.shape = n.pool.dst_shape(x);
        break;
      case Op::global_avg_pool:
        DK_CHECK(x.rank() == 3, "needs [C, H, W] input, got {}", x.str());
        n.shape = Shape{x[0], 1, 1};
        break;
      case Op::flatten:
        n.shape = Shape{x.numel()};
        break;
      case Op::reshape:
        DK_CHECK(n.shape.numel() == x.numel(), "cannot reshape {} to {}", x.str(), n.shape.str());
        break;
      case Op::pad:
        DK_CHECK(x.rank() == 3, "needs [C, H, W] input, got {}", x.str());
        for (int64_t p : n.pads) DK_CHECK(p >= 0, "negative padding");
        n.shape = Shape{x[0], x[1] + n.pads[0] + n.pads[2], x[2] + n.pads[1] + n.pads[3]};
        break;
      case Op::add: {
        const Shape& y = nodes_[static_cast<size_t>(n.inputs[1])].shape;
        DK_CHECK(x == y, "adds values of shapes {} and {}", x.str(), y.str());
        n.shape = x;
        break;
      }
    }
  } catch (const Error& e) {
    throw Error(fmt::format("node '{}' ({}): {}", n.name, op_name(n.op), e.what()));
  } catch (const std::out_of_range&) {
    throw Error(fmt::format("node '{}': weights index {} does not exist", n.name, n.weights));
  }
  if (n.origin.empty()) n.origin = n.name;
  nodes_.push_back(std::move(n));
  output_ = static_cast<int>(nodes_.size()) - 1;
  return output_;
}

int Graph::conv(int x, accel::ConvDesc d, Tensor weights, Tensor bias, const std::string& name) {
  Node n;
  n.op = Op::conv;
  n.name = name;
  n.inputs = {x};
  n.conv = d;
  n.weights = add_weights(std::move(weights));
  n.epilogue.shift = std::move(bias);
  return add(std::move(n));
}

int Graph::dense(int x, int64_t out, Tensor weights, Tensor bias, const std::string& name) {
  Node n;
  n.op = Op::dense;
  n.name = name;
  n.inputs = {x};
  n.dense = accel::DenseDesc{node(x).shape.numel(), out};
  n.weights = add_weights(std::move(weights));
  n.epilogue.shift = std::move(bias);
  return add(std::move(n));
}

int Graph::unary(Op op, int x, const std::string& name) {
  Node n;
  n.op = op;
  n.name = name;
  n.inputs = {x};
  return add(std::move(n));
}

int Graph::clip(int x, float lo, float hi, const std::string& name) {
  DK_CHECK(lo <= hi, "clip {}: min {} > max {}", name, lo, hi);
  Node n;
  n.op = Op::clip;
  n.name = name;
  n.inputs = {x};
  n.lo = lo, n.hi = hi;
  return add(std::move(n));
}

int Graph::pool(Op op, int x, PoolDesc p, const std::string& name) {
  Node n;
  n.op = op;
  n.name = name;
  n.inputs = {x};
  n.pool = p;
  return add(std::move(n));
}

int Graph::batch_norm(int x, Tensor scale, Tensor shift, const std::string& name) {
  Node n;
  n.op = Op::batch_norm;
  n.name = name;
  n.inputs = {x};
  n.scale = std::move(scale);
  n.shift = std::move(shift);
  return add(std::move(n));
}

int Graph::reshape(int x, const Shape& item, const std::string& name) {
  Node n;
  n.op = Op::reshape;
  n.name = name;
  n.inputs = {x};
  n.shape = item;
  return add(std::move(n));
}

int Graph::pad(int x, std::array<int64_t, 4> pads, float value, const std::string& name) {
  Node n;
  n.op = Op::pad;
  n.name = name;
  n.inputs = {x};
  n.pads = pads;
  n.pad_value = value;
  return add(std::move(n));
}

void refresh_batch_norm(Node& n) {
  const int64_t c = n.bn.gamma.numel();
  if (n.scale.numel() != c) n.scale = Tensor(Shape{c});
  if (n.shift.numel() != c) n.shift = Tensor(Shape{c});
  for (int64_t i = 0; i < c; ++i) {
    const double s = n.bn.gamma[i] / std::sqrt(static_cast<double>(n.bn.var[i]) + n.bn.eps);
    n.scale[i] = static_cast<float>(s);
    n.shift[i] = static_cast<float>(n.bn.beta[i] - n.bn.mean[i] * s);
  }
}

int Graph::batch_norm(int x, BatchNormParams params, const std::string& name) {
  Node n;
  n.op = Op::batch_norm;
  n.name = name;
  n.inputs = {x};
  const int64_t c = params.gamma.numel();
  DK_CHECK(params.beta.numel() == c && params.mean.numel() == c && params.var.numel() == c,
           "batch norm {}: parameters of different sizes", name);
  n.bn = std::move(params);
  refresh_batch_norm(n);
  return add(std::move(n));
}

int Graph::add_values(int a, int b, const std::string& name) {
  Node n;
  n.op = Op::add;
  n.name = name;
  n.inputs = {a, b};
  return add(std::move(n));
}

void Graph::set_output(int id) {
  DK_CHECK(id >= 0 && id < static_cast<int>(nodes_.size()), "output {} does not exist", id);
  output_ = id;
}

int64_t Graph::weight_bytes() const {
  int64_t b = 0;
  for (const Shape& s : weight_shapes_) b += s.numel() * 4;
  return b;
}

int64_t Graph::linear_layers() const {
  return std::count_if(nodes_.begin(), nodes_.end(), [](const Node& n) { return n.is_linear(); });
}

int64_t Graph::macs() const {
  int64_t m = 0;
  for (const Node& n : nodes_) {
    if (n.op == Op::conv) m += n.shape.numel() * n.conv.fan_in();
    if (n.op == Op::dense) m += n.dense.in_features * n.dense.out_features;
  }
  return m;
}

std::vector<int> Graph::last_uses() const {
  std::vector<int> last(nodes_.size(), -1);
  for (size_t i = 0; i < nodes_.size(); ++i)
    for (int in : nodes_[i].inputs) last[static_cast<size_t>(in)] = static_cast<int>(i);
  last[static_cast<size_t>(output_)] = static_cast<int>(nodes_.size());
  return last;
}

void Graph::fuse(bool training) {
  const size_t n = nodes_.size();
  std::vector<int> alias(n);
  for (size_t i = 0; i < n; ++i) alias[i] = static_cast<int>(i);
  auto resolve = [&](int id) {
    while (alias[static_cast<size_t>(id)] != id) id = alias[static_cast<size_t>(id)];
    return id;
  };
  // Consumers of each value once identities are skipped.
  for (size_t i = 0; i < n; ++i)
    if (nodes_[i].op == Op::identity) alias[i] = nodes_[i].inputs[0];
  std::vector<int> consumers(n, 0);
  for (size_t i = 0; i < n; ++i) {
    if (nodes_[i].op == Op::identity) continue;
    for (int in : nodes_[i].inputs) ++consumers[static_cast<size_t>(resolve(in))];
  }
  ++consumers[static_cast<size_t>(resolve(output_))];
  std::vector<bool> keep(n, true);
  for (size_t i = 0; i < n; ++i) {
    Node& node = nodes_[i];
    if (node.op == Op::identity) {
      keep[i] = false;
      continue;
    }
    for (int& in : node.inputs) in = resolve(in);
    if (node.op != Op::batch_norm && node.op != Op::relu && node.op != Op::clip) continue;
    if (training && node.op == Op::batch_norm && node.bn.present()) continue;
    const int src = node.inputs[0];
    Node& lin = nodes_[static_cast<size_t>(src)];
    if (!lin.is_linear() || consumers[static_cast<size_t>(src)] != 1 ||
        lin.epilogue.act != Act::none)
      continue;
    Epilogue& e = lin.epilogue;
    if (node.op == Op::batch_norm) {
      const int64_t c = node.scale.numel();
      Tensor scale(Shape{c}), shift(Shape{c});
      bool unit = true;
      for (int64_t k = 0; k < c; ++k) {
        const float s0 = e.scale.empty() ? 1.0f : e.scale[k];
        const float b0 = e.shift.empty() ? 0.0f : e.shift[k];
        scale[k] = node.scale[k] * s0;
        shift[k] = node.scale[k] * b0 + node.shift[k];
        unit = unit && scale[k] == 1.0f;
      }
      e.scale = unit ? Tensor() : std::move(scale);  // a pure shift stays a bias
      e.shift = std::move(shift);
    } else if (node.op == Op::relu) {
      e.act = Act::relu;
    } else {
      e.act = Act::clip, e.lo = node.lo, e.hi = node.hi;
    }
    lin.name += "+" + node.name;
    keep[i] = false;
    alias[i] = src;
    consumers[static_cast<size_t>(src)] = consumers[i];
  }
  // Renumber the kept nodes.
  std::vector<int> new_id(n, -1);
  std::vector<Node> out;
  for (size_t i = 0; i < n; ++i) {
    if (!keep[i]) continue;
    new_id[i] = static_cast<int>(out.size());
    out.push_back(std::move(nodes_[i]));
  }
  for (Node& node : out)
    for (int& in : node.inputs) in = new_id[static_cast<size_t>(resolve(in))];
  output_ = new_id[static_cast<size_t>(resolve(output_))];
  nodes_ = std::move(out);
}

std::string Graph::summary() const {
  std::string s;
  for (size_t i = 0; i < nodes_.size(); ++i) {
    const Node& n = nodes_[i];
    s += fmt::format("{:>3} {:<14} {:<28} {}", i, op_name(n.op), n.name, n.shape.str());
    if (n.op == Op::conv) s += "  " + n.conv.str();
    if (n.op == Op::dense) s += "  " + n.dense.str();
    if (n.is_linear()) s += n.epilogue.str();
    s += "\n";
  }
  s += fmt::format("{} linear layers, {:.1f} M weights ({:.1f} MiB), {:.1f} M MACs per item\n",
                   linear_layers(), weight_bytes() / 4e6, weight_bytes() / 1048576.0, macs() / 1e6);
  return s;
}

}  // namespace darknight::nn
