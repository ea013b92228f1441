// The untrusted accelerator's interface: linear operations on blinded mixtures, and the
// model's weights, which it holds.
//
// What crosses to an accelerator (docs/architecture.md):
//  - data only as BlindedT tensors (mixtures made by the trusted encoder, or plaintext on
//    the explicitly named unprotected path);
//  - the model's weights and the weight updates, which DarKnight's threat model lets the
//    accelerator see.
//
// Design for every kind of device (CPU today, CUDA next): memory lives in Buffers the
// backend allocates; upload/download/ops are submitted asynchronously in order and wait()
// blocks until all have finished; a host tensor given to upload/download must stay alive
// and unchanged until that wait(). Every public call validates shapes, dtypes and buffer
// ownership first and throws darknight::Error on misuse. Memory the accelerator allocates
// is never charged to the trusted runtime's MemoryMeter.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "protocol/blinded.h"
#include "protocol/linear.h"
#include "protocol/sgd.h"
#include "protocol/tensor.h"

namespace darknight::accel {

/// The linear operations' descriptions (protocol/linear.h), here as accel::ConvDesc and
/// accel::DenseDesc too.
using darknight::ConvDesc;
using darknight::DenseDesc;
using darknight::SgdParams;

class Backend;

/// Memory on an accelerator. Made by Backend::alloc, usable only with that backend.
class Buffer {
 public:
  virtual ~Buffer() = default;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  const Shape& shape() const { return shape_; }
  DType dtype() const { return dtype_; }
  size_t bytes() const { return static_cast<size_t>(shape_.numel()) * dtype_size(dtype_); }
  const Backend* owner() const { return owner_; }

 protected:
  Buffer(const Backend* owner, const Shape& shape, DType dtype)
      : owner_(owner), shape_(shape), dtype_(dtype) {}

 private:
  const Backend* owner_;
  Shape shape_;
  DType dtype_;
};
using BufferPtr = std::unique_ptr<Buffer>;

/// A weight tensor held by an accelerator (f32 master copy, plus the SGD momentum).
class Weights {
 public:
  virtual ~Weights() = default;
  Weights(const Weights&) = delete;
  Weights& operator=(const Weights&) = delete;

  const Shape& shape() const { return shape_; }
  const Backend* owner() const { return owner_; }
  /// Incremented by every update; backends key derived copies (layouts, f64) on it.
  uint64_t version() const { return version_; }

 protected:
  Weights(const Backend* owner, const Shape& shape) : owner_(owner), shape_(shape) {}
  void bump_version() { ++version_; }

 private:
  const Backend* owner_;
  Shape shape_;
  uint64_t version_ = 0;
};
using WeightsPtr = std::unique_ptr<Weights>;

class Backend {
 public:
  virtual ~Backend() = default;
  Backend() = default;
  Backend(const Backend&) = delete;
  Backend& operator=(const Backend&) = delete;

  /// Says which linear layer (0 for the first) the following operations belong to: a label
  /// for the remote worker's capture and logs (the accelerator learns nothing new: it is
  /// told which weights to use). Ignored by in-process backends.
  virtual void set_layer(int64_t) {}

  /// Short name: "ref", "cpu", "cuda", "remote".
  virtual std::string name() const = 0;
  /// One line saying what runs it (library versions, threads, device).
  virtual std::string describe() const = 0;

  // --- memory ---------------------------------------------------------------------------
  BufferPtr alloc(const Shape& shape, DType dtype);
  /// A buffer of another shape over elements [offset, offset + shape.numel()) of `base`
  /// (same element type); it aliases base's memory and is valid while base lives. Lets a
  /// caller keep one allocation for calls of varying shapes, or address part of a batch.
  BufferPtr view(Buffer& base, const Shape& shape, int64_t offset = 0);
  /// Copies blinded host data into `dst` (same shape and dtype).
  template <typename T>
  void upload(const BlindedT<T>& src, Buffer& dst) {
    const MeterScope unmetered(nullptr);
    check_transfer(dst, src.shape(), dtype_of<T>(), "upload");
    do_upload(src.data(), dst, 0, dst.bytes());
  }
  /// Copies elements [src_offset, src_offset + count) of `src` to elements
  /// [dst_offset, dst_offset + count) of `dst` (flat, row-major indices).
  template <typename T>
  void upload(const BlindedT<T>& src, int64_t src_offset, int64_t count, Buffer& dst,
              int64_t dst_offset) {
    const MeterScope unmetered(nullptr);
    check_range(dst, dtype_of<T>(), src.numel(), src_offset, count, dst_offset, "upload");
    do_upload(src.data() + src_offset, dst, static_cast<size_t>(dst_offset) * sizeof(T),
              static_cast<size_t>(count) * sizeof(T));
  }
  /// Copies `src` into host tensor `dst` (same shape and dtype); valid after wait().
  template <typename T>
  void download(const Buffer& src, TensorT<T>& dst) {
    const MeterScope unmetered(nullptr);
    check_transfer(src, dst.shape(), dtype_of<T>(), "download");
    do_download(src, 0, src.bytes(), dst.data());
  }
  /// Copies elements [src_offset, src_offset + count) of `src` to elements
  /// [dst_offset, dst_offset + count) of `dst`; valid after wait().
  template <typename T>
  void download(const Buffer& src, int64_t src_offset, int64_t count, TensorT<T>& dst,
                int64_t dst_offset) {
    const MeterScope unmetered(nullptr);
    check_range(src, dtype_of<T>(), dst.numel(), dst_offset, count, src_offset, "download");
    do_download(src, static_cast<size_t>(src_offset) * sizeof(T),
                static_cast<size_t>(count) * sizeof(T), dst.data() + dst_offset);
  }
  /// Blocks until everything submitted so far has finished.
  virtual void wait() = 0;
  /// True when submitted work runs while the caller goes on (a GPU): callers can then
  /// overlap their own work with it, using mark() and wait_for().
  virtual bool asynchronous() const { return false; }
  /// Marks the work submitted so far; wait_for(mark) blocks until that work has finished
  /// and its downloads are filled, while later work may still run. Default: wait() all.
  virtual uint64_t mark() { return 0; }
  virtual void wait_for(uint64_t /*mark*/) { wait(); }
  /// True when upload() has copied its source when it returns (the caller may reuse it at
  /// once); false: the source must stay unchanged until wait().
  virtual bool upload_copies() const { return true; }

  // --- weights --------------------------------------------------------------------------
  // What read_weights, read_momentum and read_grad return is untrusted (a remote worker
  // chooses it): a result of another shape than the weights' throws Error naming the
  // backend, after on_bad_result.
  WeightsPtr create_weights(const Tensor& weights);
  /// Reads weights back (for checkpoints). Synchronous.
  Tensor read_weights(const Weights& w);
  /// Adds scale * grad (a device buffer of the weights' shape, f32 or f64) to the
  /// weights' pending gradient (kept in f64).
  void accumulate_grad(Weights& w, const Buffer& grad, double scale = 1.0);
  /// Adds a host piece to elements [offset, offset + piece.numel()) of the pending
  /// gradient (a gradient decoded by the trusted side, which DarKnight discloses).
  void accumulate_grad(Weights& w, const Tensor64& piece, int64_t offset);
  /// One SGD step with the pending gradient, which it then clears.
  void sgd_step(Weights& w, const SgdParams& p);
  /// accumulate_grad + sgd_step, for a gradient on the device or on the host.
  void sgd_step(Weights& w, const Buffer& grad, const SgdParams& p);
  void sgd_step(Weights& w, const Tensor& grad, const SgdParams& p);
  /// The SGD momentum buffer (empty before the first step with momentum), and setting it
  /// back (for checkpoints).
  Tensor read_momentum(const Weights& w);
  void write_momentum(Weights& w, const Tensor& momentum);
  /// The pending gradient (zeros when none), for tests and checks. Synchronous.
  Tensor64 read_grad(const Weights& w);

  // --- linear operations, batched over all mixtures in the buffers --------------------
  // src/dst/diff buffers share one dtype (f32 or f64); weights are converted as needed.
  void conv2d_forward(const ConvDesc& d, const Buffer& src, const Weights& w, Buffer& dst);
  void conv2d_backward_data(const ConvDesc& d, const Buffer& diff_dst, const Weights& w,
                            Buffer& diff_src);
  /// diff_weights is [O, I/g, KH, KW] (summed over the batch) or [P, O, I/g, KH, KW]: the
  /// batch split into P equal consecutive parts, each part's gradient summed on its own
  /// (P = N gives per-mixture gradients).
  void conv2d_backward_weights(const ConvDesc& d, const Buffer& src, const Buffer& diff_dst,
                               Buffer& diff_weights);
  void dense_forward(const DenseDesc& d, const Buffer& src, const Weights& w, Buffer& dst);
  void dense_backward_data(const DenseDesc& d, const Buffer& diff_dst, const Weights& w,
                           Buffer& diff_src);
  /// diff_weights is [O, I] or [P, O, I], as for conv2d_backward_weights.
  void dense_backward_weights(const DenseDesc& d, const Buffer& src, const Buffer& diff_dst,
                              Buffer& diff_weights);

 protected:
  /// Called when a result breaks this interface's contract (read_weights returning another
  /// shape than the weights', ...), just before the call throws Error: a backend whose
  /// results come from another process stops using that connection. Default: nothing.
  virtual void on_bad_result(const std::string& /*why*/) {}

  virtual BufferPtr do_alloc(const Shape& shape, DType dtype) = 0;
  virtual BufferPtr do_view(Buffer& base, const Shape& shape, int64_t offset) = 0;
  /// Copies `bytes` from host `src` to `dst` at byte `offset` (validated).
  virtual void do_upload(const void* src, Buffer& dst, size_t offset, size_t bytes) = 0;
  /// Copies `bytes` of `src` from byte `offset` to host `dst` (validated).
  virtual void do_download(const Buffer& src, size_t offset, size_t bytes, void* dst) = 0;
  virtual WeightsPtr do_create_weights(const Tensor& weights) = 0;
  virtual Tensor do_read_weights(const Weights& w) = 0;
  virtual void do_accumulate_grad(Weights& w, const Buffer& grad, double scale) = 0;
  virtual void do_accumulate_grad_host(Weights& w, const double* piece, int64_t offset,
                                       int64_t count) = 0;
  virtual void do_sgd_step(Weights& w, const SgdParams& p) = 0;
  virtual Tensor do_read_momentum(const Weights& w) = 0;
  virtual void do_write_momentum(Weights& w, const Tensor& momentum) = 0;
  virtual Tensor64 do_read_grad(const Weights& w) = 0;

  // Called with validated arguments; `parts` is P for backward-weights.
  virtual void do_conv2d_forward(const ConvDesc& d, const Buffer& src, const Weights& w,
                                 Buffer& dst) = 0;
  virtual void do_conv2d_backward_data(const ConvDesc& d, const Buffer& diff_dst, const Weights& w,
                                       Buffer& diff_src) = 0;
  virtual void do_conv2d_backward_weights(const ConvDesc& d, const Buffer& src,
                                          const Buffer& diff_dst, Buffer& diff_weights,
                                          int64_t parts) = 0;
  virtual void do_dense_forward(const DenseDesc& d, const Buffer& src, const Weights& w,
                                Buffer& dst) = 0;
  virtual void do_dense_backward_data(const DenseDesc& d, const Buffer& diff_dst, const Weights& w,
                                      Buffer& diff_src) = 0;
  virtual void do_dense_backward_weights(const DenseDesc& d, const Buffer& src,
                                         const Buffer& diff_dst, Buffer& diff_weights,
                                         int64_t parts) = 0;

 private:
  friend struct RawTransfer;
  void check_owned(const Buffer& b, const char* what) const;
  void check_owned(const Weights& w, const char* what) const;
  void check_transfer(const Buffer& b, const Shape& host_shape, DType host_dtype,
                      const char* op) const;
  void check_range(const Buffer& b, DType host_dtype, int64_t host_numel, int64_t host_offset,
                   int64_t count, int64_t buffer_offset, const char* op) const;
  int64_t check_backward_weights(const Shape& weight_shape, const Buffer& diff_weights,
                                 int64_t batch, DType dtype, const char* op) const;
  /// Throws (after on_bad_result) unless a result read for `w` has w's shape (or is empty,
  /// where `may_be_empty`).
  void check_result(const Shape& got, bool empty, const Weights& w, bool may_be_empty,
                    const char* op);
};

/// Unchecked byte copies between host memory and a buffer, for untrusted-side code that moves
/// bytes the accelerator already holds: the worker server (bytes off the wire) and backends
/// that decorate another (faults/faulty_backend.h). Checks only that the range lies inside
/// the buffer. Never used by the trusted runtime (tests/layering_test.sh), which hands data
/// over only as BlindedT.
struct RawTransfer {
  static void upload(Backend& be, const void* src, Buffer& dst, size_t offset, size_t bytes);
  static void download(Backend& be, const Buffer& src, size_t offset, size_t bytes, void* dst);
  /// Adds count host values to the pending gradient of `w` from element `offset`.
  static void accumulate_grad(Backend& be, Weights& w, const double* piece, int64_t offset,
                              int64_t count);
};

/// Options for a backend (registry/registry.h make_backend).
struct BackendOptions {
  int threads = 0;  ///< worker threads for CPU backends; 0 = all cores
  /// A remote worker (tcp://HOST:PORT, ipc://PATH): the longest wait for one reply, and the
  /// mixtures per virtual batch (K + 1, + 1 with the redundant mixture) for its capture.
  double timeout_s = 300;
  int mixtures_per_batch = 0;
  /// A remote worker's CurveZMQ public key (Z85, 40 characters): an encrypted link to the
  /// worker holding its secret key; empty: a plain link.
  std::string worker_key = {};
  /// cuda: allow TF32 tensor-core math for f32 (10-bit mantissa inputs; off by default).
  bool tf32 = false;
};

}  // namespace darknight::accel
