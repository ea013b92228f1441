// The CUDA accelerator: cuDNN convolutions (algorithm chosen once per shape by cuDNN's
// heuristics and cached), cuBLAS for dense layers, weights, gradients and SGD on the device,
// f32 and f64 mixtures. TF32 tensor-core math is off unless BackendOptions::tf32 asks for it
// (it rounds inputs to 10 mantissa bits, which breaks the decode's precision).
//
// One CUDA stream runs every call in order. Transfers go through pinned host buffers, so
// upload() returns once its source is copied there, download() at once, and the host may
// work while the GPU computes; download()'s destination is filled at wait() or at the
// wait_for() of a later mark().
#pragma once

#include <memory>
#include <string>

#include "accel/backend.h"

namespace darknight::accel {

class CudaBackend final : public Backend {
 public:
  /// Throws Error when no CUDA device can be used (the message says why).
  explicit CudaBackend(const BackendOptions& opts = {});
  ~CudaBackend() override;
  std::string name() const override { return "cuda"; }
  std::string describe() const override;
  void wait() override;
  bool asynchronous() const override { return true; }
  uint64_t mark() override;
  void wait_for(uint64_t mark) override;

  /// Why no CUDA device can be used here (no driver, no device, ...), or "".
  static std::string unavailable_reason();

 protected:
  BufferPtr do_alloc(const Shape& shape, DType dtype) override;
  BufferPtr do_view(Buffer& base, const Shape& shape, int64_t offset) override;
  void do_upload(const void* src, Buffer& dst, size_t offset, size_t bytes) override;
  void do_download(const Buffer& src, size_t offset, size_t bytes, void* dst) override;
  WeightsPtr do_create_weights(const Tensor& weights) override;
  Tensor do_read_weights(const Weights& w) override;
  void do_accumulate_grad(Weights& w, const Buffer& grad, double scale) override;
  void do_accumulate_grad_host(Weights& w, const double* piece, int64_t offset,
                               int64_t count) override;
  void do_sgd_step(Weights& w, const SgdParams& p) override;
  Tensor do_read_momentum(const Weights& w) override;
  void do_write_momentum(Weights& w, const Tensor& momentum) override;
  Tensor64 do_read_grad(const Weights& w) override;
  void do_conv2d_forward(const ConvDesc& d, const Buffer& src, const Weights& w,
                         Buffer& dst) override;
  void do_conv2d_backward_data(const ConvDesc& d, const Buffer& diff_dst, const Weights& w,
                               Buffer& diff_src) override;
  void do_conv2d_backward_weights(const ConvDesc& d, const Buffer& src, const Buffer& diff_dst,
                                  Buffer& diff_weights, int64_t parts) override;
  void do_dense_forward(const DenseDesc& d, const Buffer& src, const Weights& w,
                        Buffer& dst) override;
  void do_dense_backward_data(const DenseDesc& d, const Buffer& diff_dst, const Weights& w,
                              Buffer& diff_src) override;
  void do_dense_backward_weights(const DenseDesc& d, const Buffer& src, const Buffer& diff_dst,
                                 Buffer& diff_weights, int64_t parts) override;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace darknight::accel
