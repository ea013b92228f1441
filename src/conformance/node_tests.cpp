#include "conformance/node_tests.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <set>

#include "baselines/engines.h"
#include "baselines/plain_io.h"
#include "nn/onnx_import.h"
#include "onnx/onnx_io.h"

namespace darknight::conformance {
namespace fs = std::filesystem;
using accel::Backend;
using accel::BufferPtr;
using accel::ConvDesc;
using accel::DenseDesc;
using onnx_io::attr_float;
using onnx_io::attr_int;
using onnx_io::attr_ints;
using onnx_io::attr_string;

const char* outcome_name(Outcome o) {
  switch (o) {
    case Outcome::pass:
      return "pass";
    case Outcome::fail:
      return "FAIL";
    case Outcome::skip:
      return "skip";
  }
  return "?";
}

std::string default_node_test_dir() {
  return "/usr/share/libonnx-testdata/data/node";
}

std::vector<std::string> linear_op_prefixes() {
  return {"test_basic_conv", "test_conv", "test_gemm", "test_matmul"};
}

std::vector<std::string> nonlinear_op_prefixes() {
  return {"test_relu",      "test_maxpool", "test_averagepool", "test_globalaveragepool",
          "test_batchnorm", "test_softmax", "test_clip",        "test_flatten"};
}

namespace {

/// Why a test does not apply (a skip), as opposed to a failure.
struct NotApplicable {
  std::string reason;
};

using Device = baselines::PlainIo;

/// Adds bias[c] to every element of channel c of an [N, C, ...] tensor.
void add_channel_bias(Tensor& y, const Tensor& bias) {
  const int64_t n = y.shape()[0], c = y.shape()[1], inner = y.shape().item_numel() / c;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < c; ++j)
      for (int64_t k = 0; k < inner; ++k) y[(i * c + j) * inner + k] += bias[j];
}

/// Reads a list attribute of 2 spatial values (1 for 1-D ops, mapped to W with H = 1).
std::pair<int64_t, int64_t> spatial(const onnx::NodeProto& n, const char* name, int rank,
                                    int64_t dflt) {
  auto v = attr_ints(n, name);
  if (!v) return {dflt, dflt};
  if (rank == 1) return {dflt, (*v)[0]};
  return {(*v)[0], (*v)[1]};
}

/// ONNX pads [x1_begin, x2_begin, ..., x1_end, x2_end] as (top, left, bottom, right).
std::array<int64_t, 4> pads_of(const onnx::NodeProto& n, int rank) {
  auto v = attr_ints(n, "pads");
  if (!v) return {0, 0, 0, 0};
  if (rank == 1) return {0, (*v)[0], 0, (*v)[1]};
  return {(*v)[0], (*v)[1], (*v)[2], (*v)[3]};
}

/// 1-D tensors [N, C, W] become [N, C, 1, W].
Tensor as_2d(const Tensor& t) {
  Tensor c = t.clone();
  if (t.shape().rank() == 3) c.reshape(Shape{t.shape()[0], t.shape()[1], 1, t.shape()[2]});
  return c;
}

std::vector<Tensor> one(Tensor t) {
  std::vector<Tensor> v;
  v.push_back(std::move(t));
  return v;
}

int64_t floor_div2(int64_t v) {
  return v >= 0 ? v / 2 : -((-v + 1) / 2);
}

std::variant<std::vector<Tensor>, NotApplicable> run_conv(Device& dev, const onnx::NodeProto& n,
                                                          const std::vector<Tensor>& in) {
  const int rank = in[0].shape().rank() - 2;
  if (rank != 1 && rank != 2)
    return NotApplicable{fmt::format("{}-D convolution: the accelerator's conv is 2-D", rank)};
  Tensor x = as_2d(in[0]), w = as_2d(in[1]);
  ConvDesc d;
  d.in_channels = x.shape().c();
  d.out_channels = w.shape()[0];
  d.groups = attr_int(n, "group").value_or(1);
  d.kernel_h = w.shape()[2], d.kernel_w = w.shape()[3];
  std::tie(d.stride_h, d.stride_w) = spatial(n, "strides", rank, 1);
  std::tie(d.dilation_h, d.dilation_w) = spatial(n, "dilations", rank, 1);
  const std::string auto_pad = attr_string(n, "auto_pad").value_or("NOTSET");
  if (auto_pad == "SAME_UPPER" || auto_pad == "SAME_LOWER") {
    auto same = [&](int64_t size, int64_t k, int64_t s, int64_t dil, int64_t& b, int64_t& e) {
      const int64_t out = (size + s - 1) / s, eff = (k - 1) * dil + 1;
      const int64_t total = std::max<int64_t>(0, (out - 1) * s + eff - size);
      b = auto_pad == "SAME_UPPER" ? total / 2 : total - total / 2;
      e = total - b;
    };
    same(x.shape().h(), d.kernel_h, d.stride_h, d.dilation_h, d.pad_top, d.pad_bottom);
    same(x.shape().w(), d.kernel_w, d.stride_w, d.dilation_w, d.pad_left, d.pad_right);
  } else if (auto_pad == "NOTSET") {
    auto p = pads_of(n, rank);
    d.pad_top = p[0], d.pad_left = p[1], d.pad_bottom = p[2], d.pad_right = p[3];
  } else if (auto_pad != "VALID") {
    return NotApplicable{"unknown auto_pad " + auto_pad};
  }
  auto wts = dev.backend().create_weights(w);
  BufferPtr src = dev.put(x);
  BufferPtr dst = dev.make(d.dst_shape(x.shape()));
  dev.backend().conv2d_forward(d, *src, *wts, *dst);
  Tensor y = dev.get(*dst);
  if (in.size() > 2) add_channel_bias(y, in[2]);
  return one(std::move(y));
}

/// ConvTranspose is the backward-data pass of the convolution whose weights it takes:
/// W [C_in, C_out/g, KH, KW] is the forward conv's [O, I/g, KH, KW] with O = C_in.
std::variant<std::vector<Tensor>, NotApplicable> run_conv_transpose(Device& dev,
                                                                    const onnx::NodeProto& n,
                                                                    const std::vector<Tensor>& in) {
  const int rank = in[0].shape().rank() - 2;
  if (rank != 1 && rank != 2)
    return NotApplicable{fmt::format("{}-D convolution: the accelerator's conv is 2-D", rank)};
  Tensor x = as_2d(in[0]), w = as_2d(in[1]);
  ConvDesc d;
  d.groups = attr_int(n, "group").value_or(1);
  d.out_channels = x.shape().c();
  d.in_channels = w.shape()[1] * d.groups;
  d.kernel_h = w.shape()[2], d.kernel_w = w.shape()[3];
  std::tie(d.stride_h, d.stride_w) = spatial(n, "strides", rank, 1);
  std::tie(d.dilation_h, d.dilation_w) = spatial(n, "dilations", rank, 1);
  auto [oph, opw] = spatial(n, "output_padding", rank, 0);
  const auto pads = pads_of(n, rank);
  const auto out_shape = attr_ints(n, "output_shape");
  const std::string auto_pad = attr_string(n, "auto_pad").value_or("NOTSET");

  // Output size and the padding at its start, per spatial axis (ONNX operator spec).
  auto axis = [&](int ax, int64_t in_size, int64_t k, int64_t s, int64_t dil, int64_t op,
                  int64_t pad_b, int64_t pad_e, int64_t& out, int64_t& begin) {
    const int64_t eff = (k - 1) * dil + 1;
    if (out_shape || auto_pad == "SAME_UPPER" || auto_pad == "SAME_LOWER") {
      out = out_shape ? (*out_shape)[static_cast<size_t>(rank == 1 ? 0 : ax)] : in_size * s;
      const int64_t total = s * (in_size - 1) + op + eff - out;
      begin = auto_pad == "SAME_UPPER" ? floor_div2(total) : total - floor_div2(total);
    } else {
      out = s * (in_size - 1) + op + eff - pad_b - pad_e;
      begin = pad_b;
    }
  };
  int64_t oh, ow;
  axis(0, x.shape().h(), d.kernel_h, d.stride_h, d.dilation_h, oph, pads[0], pads[2], oh,
       d.pad_top);
  axis(1, x.shape().w(), d.kernel_w, d.stride_w, d.dilation_w, opw, pads[1], pads[3], ow,
       d.pad_left);
  if (d.pad_top < 0 || d.pad_left < 0)
    return NotApplicable{"negative leading padding has no forward-convolution equivalent"};
  // The forward convolution over the output needs just enough trailing padding for its last
  // window; output rows beyond it receive nothing (output_padding).
  const int64_t eff_h = (d.kernel_h - 1) * d.dilation_h + 1;
  const int64_t eff_w = (d.kernel_w - 1) * d.dilation_w + 1;
  d.pad_bottom = std::max<int64_t>(0, d.stride_h * (x.shape().h() - 1) + eff_h - oh - d.pad_top);
  d.pad_right = std::max<int64_t>(0, d.stride_w * (x.shape().w() - 1) + eff_w - ow - d.pad_left);
  const Shape y_shape{x.shape().n(), d.in_channels, oh, ow};
  if (d.dst_shape(y_shape) != x.shape())
    return NotApplicable{"output shape has no forward-convolution equivalent"};

  auto wts = dev.backend().create_weights(w);
  BufferPtr diff_dst = dev.put(x);
  BufferPtr diff_src = dev.make(y_shape);
  dev.backend().conv2d_backward_data(d, *diff_dst, *wts, *diff_src);
  Tensor y = dev.get(*diff_src);
  if (in.size() > 2) add_channel_bias(y, in[2]);
  if (rank == 1) y.reshape(Shape{y_shape[0], y_shape[1], y_shape[3]});
  return one(std::move(y));
}

Tensor transpose2d(const Tensor& t) {
  const int64_t r = t.shape()[0], c = t.shape()[1];
  Tensor o(Shape{c, r});
  for (int64_t i = 0; i < r; ++i)
    for (int64_t j = 0; j < c; ++j) o[j * r + i] = t[i * c + j];
  return o;
}

/// dst[M, N] = a[M, K] * b[K, N] on the accelerator: a dense layer with weights b^T.
Tensor matmul2d(Device& dev, const Tensor& a, const Tensor& b) {
  DenseDesc d{a.shape()[1], b.shape()[1]};
  auto wts = dev.backend().create_weights(transpose2d(b));
  BufferPtr src = dev.put(a);
  BufferPtr dst = dev.make(d.dst_shape(a.shape()));
  dev.backend().dense_forward(d, *src, *wts, *dst);
  return dev.get(*dst);
}

std::variant<std::vector<Tensor>, NotApplicable> run_gemm(Device& dev, const onnx::NodeProto& n,
                                                          const std::vector<Tensor>& in) {
  Tensor a = attr_int(n, "transA").value_or(0) ? transpose2d(in[0]) : in[0].clone();
  Tensor b = attr_int(n, "transB").value_or(0) ? transpose2d(in[1]) : in[1].clone();
  const float alpha = attr_float(n, "alpha").value_or(1.0f);
  const float beta = attr_float(n, "beta").value_or(1.0f);
  Tensor y = matmul2d(dev, a, b);
  const int64_t m = y.shape()[0], cols = y.shape()[1];
  for (int64_t i = 0; i < m * cols; ++i) y[i] *= alpha;
  if (in.size() > 2) {  // C broadcasts to [M, N] (unidirectional)
    const Shape& cs = in[2].shape();
    const int64_t cr = cs.rank() == 2 ? cs[0] : 1;
    const int64_t cc = cs.rank() >= 1 ? cs[cs.rank() - 1] : 1;
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < cols; ++j) y[i * cols + j] += beta * in[2][(i % cr) * cc + j % cc];
  }
  return one(std::move(y));
}

std::variant<std::vector<Tensor>, NotApplicable> run_matmul(Device& dev, const onnx::NodeProto&,
                                                            const std::vector<Tensor>& in) {
  const Shape &as = in[0].shape(), &bs = in[1].shape();
  if (as.rank() < 2 || bs.rank() < 2)
    return NotApplicable{"1-D MatMul operands (vector products) are not mapped"};
  if (as.rank() != bs.rank()) return NotApplicable{"MatMul batch broadcasting is not mapped"};
  for (int i = 0; i + 2 < as.rank(); ++i)
    if (as[i] != bs[i]) return NotApplicable{"MatMul batch broadcasting is not mapped"};
  const int64_t m = as[as.rank() - 2], k = as[as.rank() - 1], nn = bs[bs.rank() - 1];
  const int64_t batches = as.numel() / (m * k);
  std::vector<int64_t> dims(as.dims().begin(), as.dims().end());
  dims.back() = nn;
  Tensor y{Shape(std::span<const int64_t>(dims))};
  for (int64_t bi = 0; bi < batches; ++bi) {
    Tensor a(Shape{m, k},
             in[0].span().subspan(static_cast<size_t>(bi * m * k), static_cast<size_t>(m * k)));
    Tensor b(Shape{k, nn},
             in[1].span().subspan(static_cast<size_t>(bi * k * nn), static_cast<size_t>(k * nn)));
    Tensor r = matmul2d(dev, a, b);
    std::copy(r.data(), r.data() + r.numel(), y.data() + bi * m * nn);
  }
  return one(std::move(y));
}

/// A non-linear op: the single-node model goes through the importer (its inputs after the
/// first become initializers) and the trusted runtime's kernels.
std::variant<std::vector<Tensor>, NotApplicable> run_imported(
    Device& dev, const onnx::ModelProto& model, const std::vector<Tensor>& in,
    const std::vector<onnx::TensorProto>& protos) {
  onnx::ModelProto m = model;
  for (size_t i = 1; i < protos.size(); ++i) {
    onnx::TensorProto* init = m.mutable_graph()->add_initializer();
    *init = protos[i];
    init->set_name(m.graph().input(static_cast<int>(i)).name());
  }
  auto g = nn::import_onnx(m);
  if (!g.ok()) return NotApplicable{g.status().message()};
  baselines::PlainEngine engine(dev.backend());
  trusted::Runtime rt(std::move(g).value(), engine, trusted::RuntimeOptions{});
  Tensor y = rt.infer(in[0]);
  // The output keeps the model's declared shape (the runtime returns [N, item...]).
  const auto& dims = m.graph().output(0).type().tensor_type().shape().dim();
  std::vector<int64_t> d;
  for (const auto& dim : dims) d.push_back(dim.dim_value());
  if (!d.empty() && Shape(std::span<const int64_t>(d)).numel() == y.numel())
    y.reshape(Shape(std::span<const int64_t>(d)));
  return one(std::move(y));
}

using OpFn = std::function<std::variant<std::vector<Tensor>, NotApplicable>(
    Device&, const onnx::NodeProto&, const std::vector<Tensor>&)>;

const std::map<std::string, OpFn>& ops() {
  static const std::map<std::string, OpFn> m = {{"Conv", run_conv},
                                                {"ConvTranspose", run_conv_transpose},
                                                {"Gemm", run_gemm},
                                                {"MatMul", run_matmul}};
  return m;
}

std::string not_float_reason(const std::string& op) {
  return fmt::format("{} is an integer (quantized) op; the accelerator computes in f32/f64", op);
}

/// Ends a test with `outcome`, saying why; returns false (for `return stop(...)`).
bool stop(NodeTestResult& r, Outcome outcome, std::string detail) {
  r.outcome = outcome;
  r.detail = std::move(detail);
  return false;
}

/// The ops run by the trusted runtime through the importer (the others by ops()).
bool is_nonlinear(const std::string& op) {
  static const std::set<std::string> kNonlinear = {
      "Relu",    "MaxPool", "AveragePool", "GlobalAveragePool", "BatchNormalization",
      "Softmax", "Clip",    "Flatten"};
  return kNonlinear.count(op) > 0;
}

/// Why an op has no mapping here.
std::string unmapped_reason(const std::string& op) {
  return op.find("Integer") != std::string::npos || op.rfind("QLinear", 0) == 0
             ? not_float_reason(op)
             : "op " + op + " is not an accelerator operation";
}

/// The test's data set folders (test_data_set_N), in name order.
std::vector<fs::path> data_sets(const fs::path& dir) {
  std::vector<fs::path> sets;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.is_directory() && e.path().filename().string().rfind("test_data_set_", 0) == 0)
      sets.push_back(e.path());
  std::sort(sets.begin(), sets.end());
  return sets;
}

/// One data set's inputs (and their protos) and expected outputs.
struct DataSet {
  std::vector<Tensor> inputs, expected;
  std::vector<onnx::TensorProto> protos;
};

/// Reads `count` tensors <kind>_<i>.pb of `set` into `tensors` (and `protos`): false, with
/// the test failed (unreadable file) or skipped (an element type not mapped), on a problem.
bool read_tensors(const fs::path& set, const std::string& kind, int count, NodeTestResult& r,
                  std::vector<Tensor>& tensors, std::vector<onnx::TensorProto>* protos) {
  for (int i = 0; i < count; ++i) {
    auto proto = onnx_io::load_tensor_proto((set / fmt::format("{}_{}.pb", kind, i)).string());
    if (!proto.ok()) return stop(r, Outcome::fail, proto.status().message());
    auto t = onnx_io::to_tensor(proto.value());
    if (!t.ok())
      return stop(
          r, Outcome::skip,
          (kind == "input" ? kind : fmt::format("{} {}", kind, i)) + ": " + t.status().message());
    tensors.push_back(std::move(t).value());
    if (protos) protos->push_back(std::move(proto).value());
  }
  return true;
}

/// Compares the outputs with the expected ones (kAtol, kRtol), keeping the largest error;
/// false, with the test failed, on the first that differs.
bool matches(const std::vector<Tensor>& outs, const std::vector<Tensor>& expected,
             const fs::path& set, NodeTestResult& r) {
  for (size_t i = 0; i < expected.size(); ++i) {
    if (i >= outs.size() || outs[i].shape() != expected[i].shape())
      return stop(
          r, Outcome::fail,
          fmt::format("output {} has shape {}, expected {}", i,
                      i < outs.size() ? outs[i].shape().str() : "none", expected[i].shape().str()));
    for (int64_t j = 0; j < expected[i].numel(); ++j) {
      const double e = expected[i][j], g = outs[i][j], err = std::abs(g - e);
      r.max_abs_error = std::max(r.max_abs_error, err);
      if (!(err <= kAtol + kRtol * std::abs(e)))
        return stop(r, Outcome::fail,
                    fmt::format("{}: output {} element {} is {}, expected {}",
                                set.filename().string(), i, j, g, e));
    }
  }
  return true;
}

/// Runs one data set of the test of `model` (one node) and checks its outputs: false, with
/// the outcome set, when the test stops here.
bool run_data_set(const fs::path& set, const onnx::ModelProto& model, Backend& be, DType dtype,
                  NodeTestResult& r) {
  const auto& graph = model.graph();
  DataSet ds;
  if (!read_tensors(set, "input", graph.input_size(), r, ds.inputs, &ds.protos) ||
      !read_tensors(set, "output", graph.output_size(), r, ds.expected, nullptr))
    return false;
  std::variant<std::vector<Tensor>, NotApplicable> got;
  try {
    Device dev(be, dtype);
    got = is_nonlinear(r.op) ? run_imported(dev, model, ds.inputs, ds.protos)
                             : ops().at(r.op)(dev, graph.node(0), ds.inputs);
  } catch (const std::exception& e) {
    return stop(r, Outcome::fail, e.what());
  }
  if (auto* na = std::get_if<NotApplicable>(&got)) return stop(r, Outcome::skip, na->reason);
  return matches(std::get<std::vector<Tensor>>(got), ds.expected, set, r);
}

NodeTestResult run_one(const fs::path& dir, Backend& be, DType dtype) {
  NodeTestResult r;
  r.name = dir.filename().string();
  auto model = onnx_io::load_model((dir / "model.onnx").string());
  if (!model.ok()) {
    stop(r, Outcome::fail, model.status().message());
    return r;
  }
  if (model.value().graph().node_size() != 1) {
    stop(r, Outcome::skip, "not a single-node graph");
    return r;
  }
  r.op = model.value().graph().node(0).op_type();
  if (!ops().count(r.op) && !is_nonlinear(r.op)) {
    stop(r, Outcome::skip, unmapped_reason(r.op));
    return r;
  }
  for (const auto& set : data_sets(dir)) {
    if (!run_data_set(set, model.value(), be, dtype, r)) return r;
    ++r.data_sets;
  }
  r.outcome = Outcome::pass;
  r.detail = fmt::format("{} data set(s) on {} {}", r.data_sets, be.name(), dtype_name(dtype));
  return r;
}

}  // namespace

std::vector<NodeTestResult> run_node_tests(const std::string& dir,
                                           const std::vector<std::string>& prefixes,
                                           Backend& backend, DType dtype) {
  DK_CHECK(fs::is_directory(dir),
           "ONNX node test directory {} not found (install libonnx-testdata)", dir);
  std::vector<fs::path> tests;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    for (const auto& p : prefixes)
      if (name.rfind(p, 0) == 0) {
        tests.push_back(e.path());
        break;
      }
  }
  std::sort(tests.begin(), tests.end());
  std::vector<NodeTestResult> results;
  for (const auto& t : tests) results.push_back(run_one(t, backend, dtype));
  return results;
}

}  // namespace darknight::conformance
