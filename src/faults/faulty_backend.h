// A backend that runs every call on another and, while an injector is set, corrupts the
// outputs of its linear operations the way a faulty or cheating accelerator would
// (faults/faults.h). For measuring the integrity checks: the trusted engines see an ordinary
// Backend and know nothing of it.
#pragma once

#include <memory>
#include <string>

#include "accel/backend.h"
#include "faults/faults.h"

namespace darknight::accel {

class FaultyBackend final : public Backend {
 public:
  /// Decorates `inner`, which it owns (first form) or which must outlive it (second).
  explicit FaultyBackend(std::unique_ptr<Backend> inner);
  explicit FaultyBackend(Backend& inner);

  /// From now on, corrupts linear outputs as `f` says (null: none). Not owned.
  void set_injector(FaultInjector* f) { faults_ = f; }
  Backend& inner() { return inner_; }

  void set_layer(int64_t layer) override { inner_.set_layer(layer); }
  std::string name() const override { return inner_.name(); }
  std::string describe() const override { return inner_.describe(); }
  void wait() override { inner_.wait(); }
  bool asynchronous() const override { return inner_.asynchronous(); }
  uint64_t mark() override { return inner_.mark(); }
  void wait_for(uint64_t m) override { inner_.wait_for(m); }
  bool upload_copies() const override { return inner_.upload_copies(); }

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
  void run(LinearOp kind, const Buffer& a, const Weights* w, const Buffer* b, Buffer& dst,
           const LinearRerun& op);

  std::unique_ptr<Backend> owned_;
  Backend& inner_;
  FaultInjector* faults_ = nullptr;
};

}  // namespace darknight::accel
