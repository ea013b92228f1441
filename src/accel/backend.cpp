#include "accel/backend.h"

#include <fmt/format.h>

namespace darknight::accel {

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
}

void Backend::conv2d_backward_data(const ConvDesc& d, const Buffer& diff_dst, const Weights& w,
                                   Buffer& diff_src) {
  const MeterScope unmetered(nullptr);
  const char* op = "conv2d_backward_data";
  check_owned(diff_dst, op), check_owned(w, op), check_owned(diff_src, op);
  check_buffer(diff_dst, d.dst_shape(diff_src.shape()), diff_src.dtype(), op, "diff_dst");
  DK_CHECK(w.shape() == d.weight_shape(), "{}: weights {} for {}", op, w.shape().str(), d.str());
  do_conv2d_backward_data(d, diff_dst, w, diff_src);
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
}

void Backend::dense_forward(const DenseDesc& d, const Buffer& src, const Weights& w, Buffer& dst) {
  const MeterScope unmetered(nullptr);
  const char* op = "dense_forward";
  check_owned(src, op), check_owned(w, op), check_owned(dst, op);
  check_buffer(dst, d.dst_shape(src.shape()), src.dtype(), op, "dst");
  DK_CHECK(w.shape() == d.weight_shape(), "{}: weights {} for {}", op, w.shape().str(), d.str());
  do_dense_forward(d, src, w, dst);
}

void Backend::dense_backward_data(const DenseDesc& d, const Buffer& diff_dst, const Weights& w,
                                  Buffer& diff_src) {
  const MeterScope unmetered(nullptr);
  const char* op = "dense_backward_data";
  check_owned(diff_dst, op), check_owned(w, op), check_owned(diff_src, op);
  check_buffer(diff_dst, d.dst_shape(diff_src.shape()), diff_src.dtype(), op, "diff_dst");
  DK_CHECK(w.shape() == d.weight_shape(), "{}: weights {} for {}", op, w.shape().str(), d.str());
  do_dense_backward_data(d, diff_dst, w, diff_src);
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
}

// ---------------------------------------------------------------- raw transfers

void RawTransfer::upload(Backend& be, const void* src, Buffer& dst, size_t offset, size_t bytes) {
  const MeterScope unmetered(nullptr);
  be.check_owned(dst, "raw upload");
  DK_CHECK(offset <= dst.bytes() && bytes <= dst.bytes() - offset,
           "raw upload: {} bytes at {} into a buffer of {}", bytes, offset, dst.bytes());
  be.do_upload(src, dst, offset, bytes);
}

void RawTransfer::download(Backend& be, const Buffer& src, size_t offset, size_t bytes,
                           void* dst) {
  const MeterScope unmetered(nullptr);
  be.check_owned(src, "raw download");
  DK_CHECK(offset <= src.bytes() && bytes <= src.bytes() - offset,
           "raw download: {} bytes at {} from a buffer of {}", bytes, offset, src.bytes());
  be.do_download(src, offset, bytes, dst);
}

void RawTransfer::accumulate_grad(Backend& be, Weights& w, const double* piece, int64_t offset,
                                  int64_t count) {
  const MeterScope unmetered(nullptr);
  be.check_owned(w, "raw accumulate_grad");
  DK_CHECK(offset >= 0 && count >= 0 && count <= w.shape().numel() - offset,
           "raw accumulate_grad: {} values at {} for weights {}", count, offset, w.shape().str());
  be.do_accumulate_grad_host(w, piece, offset, count);
}

}  // namespace darknight::accel
