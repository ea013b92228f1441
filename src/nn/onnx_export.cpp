#include "nn/onnx_export.h"

#include <onnx/onnx_pb.h>

#include <fstream>

namespace darknight::nn {
namespace {

class Writer {
 public:
  explicit Writer(onnx::GraphProto& g) : g_(g) {}

  std::string constant(const std::string& name, const Tensor& t, const Shape& shape) {
    onnx::TensorProto* p = g_.add_initializer();
    p->set_name(name);
    p->set_data_type(onnx::TensorProto::FLOAT);
    for (int64_t d : shape.dims()) p->add_dims(d);
    p->set_raw_data(std::string(reinterpret_cast<const char*>(t.data()), t.bytes()));
    return name;
  }
  std::string ints(const std::string& name, const std::vector<int64_t>& v) {
    onnx::TensorProto* p = g_.add_initializer();
    p->set_name(name);
    p->set_data_type(onnx::TensorProto::INT64);
    p->add_dims(static_cast<int64_t>(v.size()));
    for (int64_t x : v) p->add_int64_data(x);
    return name;
  }
  std::string scalar(const std::string& name, float v) {
    const Tensor t(Shape{1}, std::span<const float>(&v, 1));
    return constant(name, t, Shape{});
  }
  onnx::NodeProto* node(const std::string& op, const std::string& name,
                        std::vector<std::string> inputs, const std::string& output) {
    onnx::NodeProto* n = g_.add_node();
    n->set_op_type(op);
    n->set_name(name);
    for (auto& i : inputs) n->add_input(i);
    n->add_output(output);
    return n;
  }
  static void attr(onnx::NodeProto* n, const std::string& name, int64_t v) {
    auto* a = n->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::INT);
    a->set_i(v);
  }
  static void attr(onnx::NodeProto* n, const std::string& name, float v) {
    auto* a = n->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::FLOAT);
    a->set_f(v);
  }
  static void attr(onnx::NodeProto* n, const std::string& name, const std::vector<int64_t>& v) {
    auto* a = n->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::INTS);
    for (int64_t x : v) a->add_ints(x);
  }

 private:
  onnx::GraphProto& g_;
};

void value_info(onnx::ValueInfoProto* v, const std::string& name, const Shape& item) {
  v->set_name(name);
  auto* t = v->mutable_type()->mutable_tensor_type();
  t->set_elem_type(onnx::TensorProto::FLOAT);
  t->mutable_shape()->add_dim()->set_dim_param("batch");
  for (int64_t d : item.dims()) t->mutable_shape()->add_dim()->set_dim_value(d);
}

Shape channel_shape(const Shape& item) {
  return item.rank() == 3 ? Shape{item[0], 1, 1} : Shape{item[0]};
}

/// Writes graph nodes as ONNX nodes; `out` names the ONNX value of each graph value.
class NodeWriter {
 public:
  NodeWriter(Writer& w, const Graph& g, const std::function<Tensor(int)>& weights,
             std::vector<std::string>& out)
      : w_(w), g_(g), weights_(weights), out_(out) {}

  /// Writes node i (and the activation fused into it) and returns its output's name.
  std::string write(size_t i) {
    const Node& n = g_.node(static_cast<int>(i));
    const std::string& x = out_[static_cast<size_t>(n.inputs[0])];
    const std::string base = fmt::format("n{}_{}", i, n.origin);
    const std::string y = fused_activation(n, base, op(n, x, base));
    out_[i] = y;
    return y;
  }

 private:
  /// The node's own op; returns its output's name.
  std::string op(const Node& n, const std::string& x, const std::string& base) {
    const std::string& y = base;
    switch (n.op) {
      case Op::conv:
        return conv(n, x, base);
      case Op::dense:
        return dense(n, x, base);
      case Op::max_pool:
      case Op::avg_pool:
        pool(n, x, base);
        break;
      case Op::batch_norm:
        batch_norm(n, x, base);
        break;
      case Op::relu:
        w_.node("Relu", base, {x}, y);
        break;
      case Op::clip:
        w_.node("Clip", base, {x, w_.scalar(base + ".min", n.lo), w_.scalar(base + ".max", n.hi)},
                y);
        break;
      case Op::global_avg_pool:
        w_.node("GlobalAveragePool", base, {x}, y);
        break;
      case Op::flatten:
        Writer::attr(w_.node("Flatten", base, {x}, y), "axis", int64_t{1});
        break;
      case Op::reshape: {
        std::vector<int64_t> dims{0};
        for (int64_t d : n.shape.dims()) dims.push_back(d);
        w_.node("Reshape", base, {x, w_.ints(base + ".shape", dims)}, y);
        break;
      }
      case Op::pad:
        w_.node(
            "Pad", base,
            {x, w_.ints(base + ".pads", {0, 0, n.pads[0], n.pads[1], 0, 0, n.pads[2], n.pads[3]}),
             w_.scalar(base + ".value", n.pad_value)},
            y);
        break;
      case Op::add:
        w_.node("Add", base, {x, out_[static_cast<size_t>(n.inputs[1])]}, y);
        break;
      case Op::softmax:
        Writer::attr(w_.node("Softmax", base, {x}, y), "axis", int64_t{1});
        break;
      case Op::identity:
        w_.node("Identity", base, {x}, y);
        break;
      case Op::input:
        break;
    }
    return y;
  }

  /// Conv with its bias as the third input when the epilogue is a plain bias; otherwise Mul
  /// by the scale and Add of the shift follow it.
  std::string conv(const Node& n, const std::string& x, const std::string& base) {
    const accel::ConvDesc& d = n.conv;
    std::vector<std::string> inputs{
        x, w_.constant(base + ".weight", weights_(n.weights), d.weight_shape())};
    const bool plain_bias = n.epilogue.scale.empty() && !n.epilogue.shift.empty();
    if (plain_bias)
      inputs.push_back(w_.constant(base + ".bias", n.epilogue.shift, Shape{d.out_channels}));
    auto* c = w_.node("Conv", base, inputs, base + ".conv");
    Writer::attr(c, "kernel_shape", std::vector<int64_t>{d.kernel_h, d.kernel_w});
    Writer::attr(c, "strides", std::vector<int64_t>{d.stride_h, d.stride_w});
    Writer::attr(c, "pads", std::vector<int64_t>{d.pad_top, d.pad_left, d.pad_bottom, d.pad_right});
    Writer::attr(c, "dilations", std::vector<int64_t>{d.dilation_h, d.dilation_w});
    Writer::attr(c, "group", d.groups);
    std::string y = base + ".conv";
    if (!plain_bias && !n.epilogue.scale.empty()) {
      w_.node("Mul", base + ".scale",
              {y, w_.constant(base + ".scale_c", n.epilogue.scale, channel_shape(n.shape))},
              base + ".mul");
      y = base + ".mul";
    }
    if (!plain_bias && !n.epilogue.shift.empty()) {
      w_.node("Add", base + ".shift",
              {y, w_.constant(base + ".shift_c", n.epilogue.shift, channel_shape(n.shape))},
              base + ".add");
      y = base + ".add";
    }
    return y;
  }

  /// Gemm (after a Flatten for items of rank > 1), then Mul and Add for a scaled epilogue.
  std::string dense(const Node& n, const std::string& x, const std::string& base) {
    std::string src = x;
    if (g_.node(n.inputs[0]).shape.rank() != 1) {
      Writer::attr(w_.node("Flatten", base + ".flatten", {x}, base + ".flat"), "axis", int64_t{1});
      src = base + ".flat";
    }
    const Shape out{n.dense.out_features};
    std::vector<std::string> inputs{
        src, w_.constant(base + ".weight", weights_(n.weights), n.dense.weight_shape())};
    if (!n.epilogue.shift.empty() && n.epilogue.scale.empty())
      inputs.push_back(w_.constant(base + ".bias", n.epilogue.shift, out));
    Writer::attr(w_.node("Gemm", base, inputs, base + ".gemm"), "transB", int64_t{1});
    if (n.epilogue.scale.empty()) return base + ".gemm";
    w_.node("Mul", base + ".scale",
            {base + ".gemm", w_.constant(base + ".scale_c", n.epilogue.scale, out)}, base + ".mul");
    w_.node("Add", base + ".shift",
            {base + ".mul", w_.constant(base + ".shift_c", n.epilogue.shift, out)}, base + ".add");
    return base + ".add";
  }

  void pool(const Node& n, const std::string& x, const std::string& y) {
    auto* p = w_.node(n.op == Op::max_pool ? "MaxPool" : "AveragePool", y, {x}, y);
    Writer::attr(p, "kernel_shape", std::vector<int64_t>{n.pool.kernel_h, n.pool.kernel_w});
    Writer::attr(p, "strides", std::vector<int64_t>{n.pool.stride_h, n.pool.stride_w});
    Writer::attr(
        p, "pads",
        std::vector<int64_t>{n.pool.pad_top, n.pool.pad_left, n.pool.pad_bottom, n.pool.pad_right});
    if (n.pool.ceil_mode) Writer::attr(p, "ceil_mode", int64_t{1});
    if (n.op == Op::avg_pool && n.pool.count_include_pad)
      Writer::attr(p, "count_include_pad", int64_t{1});
  }

  /// BatchNormalization with its statistics; a fixed affine map as Mul and Add.
  void batch_norm(const Node& n, const std::string& x, const std::string& y) {
    const std::string& base = y;
    if (!n.bn.present()) {
      w_.node("Mul", base + ".scale",
              {x, w_.constant(base + ".scale_c", n.scale, channel_shape(n.shape))}, base + ".mul");
      w_.node("Add", base,
              {base + ".mul", w_.constant(base + ".shift_c", n.shift, channel_shape(n.shape))}, y);
      return;
    }
    const Shape c{n.bn.gamma.numel()};
    auto* b = w_.node(
        "BatchNormalization", base,
        {x, w_.constant(base + ".weight", n.bn.gamma, c), w_.constant(base + ".bias", n.bn.beta, c),
         w_.constant(base + ".running_mean", n.bn.mean, c),
         w_.constant(base + ".running_var", n.bn.var, c)},
        y);
    Writer::attr(b, "epsilon", static_cast<float>(n.bn.eps));
    Writer::attr(b, "momentum", static_cast<float>(1.0 - n.bn.momentum));  // ONNX's convention
  }

  /// An activation fused into a linear layer follows it.
  std::string fused_activation(const Node& n, const std::string& base, const std::string& y) {
    if (!n.is_linear() || n.epilogue.act == Act::none) return y;
    const std::string a = base + ".act";
    if (n.epilogue.act == Act::relu)
      w_.node("Relu", a, {y}, a);
    else
      w_.node("Clip", a,
              {y, w_.scalar(a + ".min", n.epilogue.lo), w_.scalar(a + ".max", n.epilogue.hi)}, a);
    return a;
  }

  Writer& w_;
  const Graph& g_;
  const std::function<Tensor(int)>& weights_;
  std::vector<std::string>& out_;
};

/// An opset-13 model with the graph's input declared.
void start_model(onnx::ModelProto& model, const Graph& g) {
  model.set_ir_version(8);
  model.set_producer_name("darknight");
  auto* opset = model.add_opset_import();
  opset->set_domain("");
  opset->set_version(13);
  onnx::GraphProto* graph = model.mutable_graph();
  graph->set_name("darknight");
  value_info(graph->add_input(), "input", g.input_shape());
}

}  // namespace

Status export_onnx(const Graph& g, const std::function<Tensor(int)>& weights,
                   const std::string& path) {
  onnx::ModelProto model;
  start_model(model, g);
  onnx::GraphProto* graph = model.mutable_graph();
  Writer w(*graph);
  std::vector<std::string> out(g.nodes().size());
  out[0] = "input";
  try {
    NodeWriter nodes(w, g, weights, out);
    for (size_t i = 1; i < g.nodes().size(); ++i) nodes.write(i);
  } catch (const Error& e) {
    return Status::error(fmt::format("exporting to ONNX: {}", e.what()));
  }
  // The output, renamed "output".
  w.node("Identity", "output", {out[static_cast<size_t>(g.output())]}, "output");
  value_info(graph->add_output(), "output", g.output_shape());
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f || !model.SerializeToOstream(&f))
    return Status::error(fmt::format("cannot write {}", path));
  return {};
}

}  // namespace darknight::nn
