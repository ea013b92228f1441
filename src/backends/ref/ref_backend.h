// The reference accelerator: plain loops with float64 accumulation. The oracle every other
// backend is tested against; slow on purpose (no blocking, one thread).
#pragma once

#include "accel/backend.h"

namespace darknight::accel {

class RefBackend final : public Backend {
 public:
  std::string name() const override { return "ref"; }
  std::string describe() const override {
    return "ref: plain loops, float64 accumulation, 1 thread";
  }
  void wait() override {}

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
};

}  // namespace darknight::accel
