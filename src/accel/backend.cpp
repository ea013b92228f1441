#include "accel/backend.h"
#include "accel/faults.h"

#include <fmt/format.h>

#include "accel/cpu/cpu_backend.h"
#ifdef DARKNIGHT_HAVE_CUDA
#include "accel/cuda/cuda_backend.h"
#endif
#include "accel/ref/ref_backend.h"
#include "accel/remote/remote_backend.h"
#include "protocol/checked.h"

namespace darknight::accel {

// ---------------------------------------------------------------- descriptions

void ConvDesc::validate() const {
  DK_CHECK(in_channels > 0 && out_channels > 0, "conv {}: channels must be positive", str());
  DK_CHECK(kernel_h > 0 && kernel_w > 0, "conv {}: kernel must be positive", str());
  DK_CHECK(stride_h > 0 && stride_w > 0, "conv {}: stride must be positive", str());
  DK_CHECK(dilation_h > 0 && dilation_w > 0, "conv {}: dilation must be >= 1", str());
  DK_CHECK(pad_top >= 0 && pad_left >= 0 && pad_bottom >= 0 && pad_right >= 0,
           "conv {}: padding must be non-negative", str());
  DK_CHECK(groups > 0 && in_channels % groups == 0 && out_channels % groups == 0,
           "conv {}: groups must divide both channel counts", str());
}

Shape ConvDesc::weight_shape() const {
  return Shape{out_channels, in_channels / groups, kernel_h, kernel_w};
}

Shape ConvDesc::dst_shape(const Shape& src) const {
  validate();
  DK_CHECK(src.rank() == 4, "conv {}: src must be NCHW, got {}", str(), src.str());
  DK_CHECK(src.c() == in_channels, "conv {}: src {} has {} channels, expected {}", str(), src.str(),
           src.c(), in_channels);
  // The fields may come from a file or a message: overflow-checked (validate() made every
  // one positive, the pads non-negative).
  auto extent = [&](int64_t in, int64_t k, int64_t d, int64_t pb, int64_t pe, int64_t s) {
    std::optional<int64_t> eff = checked_mul(k - 1, d), padded = checked_add(in, pb);
    if (eff) eff = checked_add(*eff, int64_t{1});
    if (padded) padded = checked_add(*padded, pe);
    DK_CHECK(eff && padded, "conv {}: window or padding too large (overflow)", str());
    DK_CHECK(*padded >= *eff, "conv {}: kernel larger than padded input {}", str(), src.str());
    return (*padded - *eff) / s + 1;
  };
  return Shape{src.n(), out_channels,
               extent(src.h(), kernel_h, dilation_h, pad_top, pad_bottom, stride_h),
               extent(src.w(), kernel_w, dilation_w, pad_left, pad_right, stride_w)};
}

std::string ConvDesc::str() const {
  return fmt::format("{}->{} k{}x{} s{}x{} p{},{},{},{} d{}x{} g{}", in_channels, out_channels,
                     kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left, pad_bottom,
                     pad_right, dilation_h, dilation_w, groups);
}

void DenseDesc::validate() const {
  DK_CHECK(in_features > 0 && out_features > 0, "dense {}: features must be positive", str());
}

Shape DenseDesc::dst_shape(const Shape& src) const {
  validate();
  DK_CHECK(src.rank() >= 2, "dense {}: src must have a batch dimension, got {}", str(), src.str());
  DK_CHECK(src.item_numel() == in_features, "dense {}: src {} has {} features per item", str(),
           src.str(), src.item_numel());
  return Shape{src[0], out_features};
}

std::string DenseDesc::str() const {
  return fmt::format("{}->{}", in_features, out_features);
}

// ---------------------------------------------------------------- validation

void Backend::check_owned(const Buffer& b, const char* what) const {
  DK_CHECK(b.owner() == this, "{}: buffer belongs to another backend", what);
}

void Backend::check_owned(const Weights& w, const char* what) const {
  DK_CHECK(w.owner() == this, "{}: weights belong to another backend", what);
}

void Backend::check_transfer(const Buffer& b, const Shape& host_shape, DType host_dtype,
                             const char* op) const {
  check_owned(b, op);
  DK_CHECK(b.shape() == host_shape && b.dtype() == host_dtype,
           "{}: buffer is {} {}, host tensor is {} {}", op, dtype_name(b.dtype()), b.shape().str(),
           dtype_name(host_dtype), host_shape.str());
}

void Backend::check_range(const Buffer& b, DType host_dtype, int64_t host_numel,
                          int64_t host_offset, int64_t count, int64_t buffer_offset,
                          const char* op) const {
  check_owned(b, op);
  DK_CHECK(b.dtype() == host_dtype, "{}: buffer is {}, host tensor is {}", op,
           dtype_name(b.dtype()), dtype_name(host_dtype));
  DK_CHECK(count >= 0 && host_offset >= 0 && buffer_offset >= 0 &&
               host_offset + count <= host_numel && buffer_offset + count <= b.shape().numel(),
           "{}: range of {} elements at host offset {} / buffer offset {} is outside the host "
           "tensor ({}) or the buffer ({})",
           op, count, host_offset, buffer_offset, host_numel, b.shape().numel());
}

static void check_buffer(const Buffer& b, const Shape& want, DType dtype, const char* op,
                         const char* name) {
  DK_CHECK(b.shape() == want, "{}: {} is {}, expected {}", op, name, b.shape().str(), want.str());
  DK_CHECK(b.dtype() == dtype, "{}: {} is {}, expected {}", op, name, dtype_name(b.dtype()),
           dtype_name(dtype));
}

int64_t Backend::check_backward_weights(const Shape& weight_shape, const Buffer& diff_weights,
                                        int64_t batch, DType dtype, const char* op) const {
  check_owned(diff_weights, op);
  DK_CHECK(diff_weights.dtype() == dtype, "{}: diff_weights is {}, expected {}", op,
           dtype_name(diff_weights.dtype()), dtype_name(dtype));
  const Shape& s = diff_weights.shape();
  if (s == weight_shape) return 1;
  DK_CHECK(s.rank() == weight_shape.rank() + 1 && s.item_numel() == weight_shape.numel(),
           "{}: diff_weights is {}, expected {} or [P, ...{}]", op, s.str(), weight_shape.str(),
           weight_shape.str());
  for (int i = 0; i < weight_shape.rank(); ++i)
    DK_CHECK(s[i + 1] == weight_shape[i], "{}: diff_weights is {}, expected [P, ...{}]", op,
             s.str(), weight_shape.str());
  const int64_t parts = s[0];
  DK_CHECK(parts >= 1 && batch % parts == 0, "{}: {} parts do not divide the batch of {}", op,
           parts, batch);
  return parts;
}

// ---------------------------------------------------------------- public calls

BufferPtr Backend::alloc(const Shape& shape, DType dtype) {
  const MeterScope unmetered(nullptr);
  return do_alloc(shape, dtype);
}

BufferPtr Backend::view(Buffer& base, const Shape& shape, int64_t offset) {
  const MeterScope unmetered(nullptr);
  check_owned(base, "view");
  DK_CHECK(offset >= 0 && offset + shape.numel() <= base.shape().numel(),
           "view: {} at offset {} does not fit in a buffer of {}", shape.str(), offset,
           base.shape().str());
  return do_view(base, shape, offset);
}

WeightsPtr Backend::create_weights(const Tensor& weights) {
  const MeterScope unmetered(nullptr);
  DK_CHECK(weights.numel() > 0, "create_weights: empty weights {}", weights.shape().str());
  return do_create_weights(weights);
}

void Backend::check_result(const Shape& got, bool empty, const Weights& w, bool may_be_empty,
                           const char* op) {
  if ((empty && may_be_empty) || (!empty && got == w.shape())) return;
  const std::string why =
      fmt::format("{}: the accelerator ({}) returned {} for weights of {}{}", op, describe(),
                  empty ? "nothing" : "a tensor of " + got.str(), w.shape().str(),
                  may_be_empty ? " (expected that shape or nothing)" : "");
  on_bad_result(why);
  throw Error(why);
}

Tensor Backend::read_weights(const Weights& w) {
  const MeterScope unmetered(nullptr);
  check_owned(w, "read_weights");
  Tensor t = do_read_weights(w);
  check_result(t.shape(), t.empty(), w, false, "read_weights");
  return t;
}

static void check_sgd(const SgdParams& p) {
  DK_CHECK(p.lr >= 0 && p.momentum >= 0 && p.weight_decay >= 0 && p.dampening >= 0,
           "sgd: lr, momentum, dampening and weight decay must be non-negative");
  DK_CHECK(!p.nesterov || (p.momentum > 0 && p.dampening == 0),
           "sgd: Nesterov momentum requires a momentum and zero dampening");
}

void Backend::accumulate_grad(Weights& w, const Buffer& grad, double scale) {
  const MeterScope unmetered(nullptr);
  check_owned(w, "accumulate_grad");
  check_owned(grad, "accumulate_grad");
  DK_CHECK(grad.shape() == w.shape(), "accumulate_grad: gradient {} for weights {}",
           grad.shape().str(), w.shape().str());
  do_accumulate_grad(w, grad, scale);
}

void Backend::accumulate_grad(Weights& w, const Tensor64& piece, int64_t offset) {
  const MeterScope unmetered(nullptr);
  check_owned(w, "accumulate_grad");
  DK_CHECK(offset >= 0 && offset + piece.numel() <= w.shape().numel(),
           "accumulate_grad: {} elements at offset {} for weights {}", piece.numel(), offset,
           w.shape().str());
  do_accumulate_grad_host(w, piece.data(), offset, piece.numel());
}

void Backend::sgd_step(Weights& w, const SgdParams& p) {
  const MeterScope unmetered(nullptr);
  check_owned(w, "sgd_step");
  check_sgd(p);
  do_sgd_step(w, p);
}

void Backend::sgd_step(Weights& w, const Buffer& grad, const SgdParams& p) {
  check_sgd(p);
  accumulate_grad(w, grad);
  sgd_step(w, p);
}

void Backend::sgd_step(Weights& w, const Tensor& grad, const SgdParams& p) {
  DK_CHECK(grad.shape() == w.shape(), "sgd_step: gradient {} for weights {}", grad.shape().str(),
           w.shape().str());
  check_sgd(p);
  accumulate_grad(w, grad.cast<double>(), 0);
  sgd_step(w, p);
}

Tensor64 Backend::read_grad(const Weights& w) {
  const MeterScope unmetered(nullptr);
  check_owned(w, "read_grad");
  Tensor64 t = do_read_grad(w);
  check_result(t.shape(), t.empty(), w, false, "read_grad");
  return t;
}

Tensor Backend::read_momentum(const Weights& w) {
  const MeterScope unmetered(nullptr);
  check_owned(w, "read_momentum");
  Tensor t = do_read_momentum(w);
  check_result(t.shape(), t.empty(), w, true, "read_momentum");
  return t;
}

void Backend::write_momentum(Weights& w, const Tensor& momentum) {
  const MeterScope unmetered(nullptr);
  check_owned(w, "write_momentum");
  DK_CHECK(momentum.empty() || momentum.shape() == w.shape(), "write_momentum: {} for weights {}",
           momentum.shape().str(), w.shape().str());
  do_write_momentum(w, momentum);
}

void Backend::conv2d_forward(const ConvDesc& d, const Buffer& src, const Weights& w, Buffer& dst) {
  const MeterScope unmetered(nullptr);
  const char* op = "conv2d_forward";
  check_owned(src, op), check_owned(w, op), check_owned(dst, op);
  check_buffer(dst, d.dst_shape(src.shape()), src.dtype(), op, "dst");
  DK_CHECK(w.shape() == d.weight_shape(), "{}: weights {} for {}", op, w.shape().str(), d.str());
  do_conv2d_forward(d, src, w, dst);
  if (faults_)
    faults_->after(
        *this, LinearOp::forward, src, &w, nullptr,
        [&](const Buffer& a, const Weights* x, const Buffer*, Buffer& y) {
          do_conv2d_forward(d, a, *x, y);
        },
        dst);
}

void Backend::conv2d_backward_data(const ConvDesc& d, const Buffer& diff_dst, const Weights& w,
                                   Buffer& diff_src) {
  const MeterScope unmetered(nullptr);
  const char* op = "conv2d_backward_data";
  check_owned(diff_dst, op), check_owned(w, op), check_owned(diff_src, op);
  check_buffer(diff_dst, d.dst_shape(diff_src.shape()), diff_src.dtype(), op, "diff_dst");
  DK_CHECK(w.shape() == d.weight_shape(), "{}: weights {} for {}", op, w.shape().str(), d.str());
  do_conv2d_backward_data(d, diff_dst, w, diff_src);
  if (faults_)
    faults_->after(
        *this, LinearOp::backward_data, diff_dst, &w, nullptr,
        [&](const Buffer& a, const Weights* x, const Buffer*, Buffer& y) {
          do_conv2d_backward_data(d, a, *x, y);
        },
        diff_src);
}

void Backend::conv2d_backward_weights(const ConvDesc& d, const Buffer& src, const Buffer& diff_dst,
                                      Buffer& diff_weights) {
  const MeterScope unmetered(nullptr);
  const char* op = "conv2d_backward_weights";
  check_owned(src, op), check_owned(diff_dst, op);
  check_buffer(diff_dst, d.dst_shape(src.shape()), src.dtype(), op, "diff_dst");
  const int64_t parts =
      check_backward_weights(d.weight_shape(), diff_weights, src.shape()[0], src.dtype(), op);
  do_conv2d_backward_weights(d, src, diff_dst, diff_weights, parts);
  if (faults_)
    faults_->after(
        *this, LinearOp::backward_weights, src, nullptr, &diff_dst,
        [&](const Buffer& a, const Weights*, const Buffer* b, Buffer& y) {
          do_conv2d_backward_weights(d, a, *b, y, parts);
        },
        diff_weights);
}

void Backend::dense_forward(const DenseDesc& d, const Buffer& src, const Weights& w, Buffer& dst) {
  const MeterScope unmetered(nullptr);
  const char* op = "dense_forward";
  check_owned(src, op), check_owned(w, op), check_owned(dst, op);
  check_buffer(dst, d.dst_shape(src.shape()), src.dtype(), op, "dst");
  DK_CHECK(w.shape() == d.weight_shape(), "{}: weights {} for {}", op, w.shape().str(), d.str());
  do_dense_forward(d, src, w, dst);
  if (faults_)
    faults_->after(
        *this, LinearOp::forward, src, &w, nullptr,
        [&](const Buffer& a, const Weights* x, const Buffer*, Buffer& y) {
          do_dense_forward(d, a, *x, y);
        },
        dst);
}

void Backend::dense_backward_data(const DenseDesc& d, const Buffer& diff_dst, const Weights& w,
                                  Buffer& diff_src) {
  const MeterScope unmetered(nullptr);
  const char* op = "dense_backward_data";
  check_owned(diff_dst, op), check_owned(w, op), check_owned(diff_src, op);
  check_buffer(diff_dst, d.dst_shape(diff_src.shape()), diff_src.dtype(), op, "diff_dst");
  DK_CHECK(w.shape() == d.weight_shape(), "{}: weights {} for {}", op, w.shape().str(), d.str());
  do_dense_backward_data(d, diff_dst, w, diff_src);
  if (faults_)
    faults_->after(
        *this, LinearOp::backward_data, diff_dst, &w, nullptr,
        [&](const Buffer& a, const Weights* x, const Buffer*, Buffer& y) {
          do_dense_backward_data(d, a, *x, y);
        },
        diff_src);
}

void Backend::dense_backward_weights(const DenseDesc& d, const Buffer& src, const Buffer& diff_dst,
                                     Buffer& diff_weights) {
  const MeterScope unmetered(nullptr);
  const char* op = "dense_backward_weights";
  check_owned(src, op), check_owned(diff_dst, op);
  check_buffer(diff_dst, d.dst_shape(src.shape()), src.dtype(), op, "diff_dst");
  const int64_t parts =
      check_backward_weights(d.weight_shape(), diff_weights, src.shape()[0], src.dtype(), op);
  do_dense_backward_weights(d, src, diff_dst, diff_weights, parts);
  if (faults_)
    faults_->after(
        *this, LinearOp::backward_weights, src, nullptr, &diff_dst,
        [&](const Buffer& a, const Weights*, const Buffer* b, Buffer& y) {
          do_dense_backward_weights(d, a, *b, y, parts);
        },
        diff_weights);
}

// ---------------------------------------------------------------- registry

std::vector<std::string> backend_names() {
#ifdef DARKNIGHT_HAVE_CUDA
  return {"cuda", "cpu", "ref"};
#else
  return {"cpu", "ref"};
#endif
}

std::string unavailable_reason(const std::string& name) {
#ifdef DARKNIGHT_HAVE_CUDA
  if (name == "cuda") return CudaBackend::unavailable_reason();
#else
  if (name == "cuda")
    return "this darknight was built without the CUDA backend (DARKNIGHT_CUDA=off, or no CUDA "
           "toolkit and cuDNN at build time)";
#endif
  return "";
}

bool is_remote(const std::string& name) {
  return name.rfind("tcp://", 0) == 0 || name.rfind("ipc://", 0) == 0;
}

std::unique_ptr<Backend> make_backend(const std::string& name, const BackendOptions& opts) {
  if (is_remote(name))
    return std::make_unique<remote::RemoteBackend>(
        remote::RemoteOptions{name, opts.timeout_s, opts.mixtures_per_batch});
  if (name == "cpu") return std::make_unique<CpuBackend>(opts);
#ifdef DARKNIGHT_HAVE_CUDA
  if (name == "cuda") return std::make_unique<CudaBackend>(opts);
#else
  if (name == "cuda") throw Error("cuda backend: " + unavailable_reason(name));
#endif
  if (name == "ref") return std::make_unique<RefBackend>();
  throw Error(fmt::format("unknown accelerator backend '{}' (available: {}, or a worker's "
                          "tcp://HOST:PORT or ipc://PATH)", name,
                          fmt::join(backend_names(), ", ")));
}

}  // namespace darknight::accel
