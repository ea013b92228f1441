// The baselines DarKnight is compared with, as engines for the same runtime and trainer:
//  - PlainEngine: no protection; plaintext goes to the accelerator (the "all on GPU" case).
//  - TeeEngine: everything inside the trusted runtime, weights included, on one thread
//    (the "all in SGX" case); its weights are charged to the trusted memory meter.
#pragma once

#include <memory>

#include "accel/backend.h"
#include "baselines/plain_io.h"
#include "protocol/memory_meter.h"
#include "trusted/accelerator_engine.h"

namespace darknight::baselines {

class PlainEngine : public trusted::AcceleratorEngine {
 public:
  /// Computes in `dtype` (f32, or f64 for exact comparisons).
  explicit PlainEngine(accel::Backend& backend, DType dtype = DType::f32)
      : AcceleratorEngine(backend, dtype), dtype_(dtype), io_(backend, dtype) {}
  std::string name() const override { return "plain"; }
  trusted::Scratch scratch_bytes(const nn::Node& node, int64_t in_numel, int64_t items,
                                 int k) const override;
  Tensor forward(const nn::Node& node, Tensor& src, bool consume,
                 trusted::RunStats& stats) override;

  Tensor forward_train(const nn::Node& node, Tensor& src, trusted::RunStats& stats) override;
  Tensor backward(const nn::Node& node, const Tensor& delta, bool input_grad,
                  trusted::RunStats& stats) override;
  int64_t backward_scratch_bytes(const nn::Node& node, int64_t in_numel, int64_t items,
                                 int k) const override;
  void end_step() override {}

 protected:
  /// Uploads src into `dst`, converting to the engine's element type, and waits.
  void put(const Tensor& src, accel::Buffer& dst);
  /// Downloads `src` as f32 with the given shape.
  Tensor get(const accel::Buffer& src, const Shape& shape);
  Tensor forward_into(const nn::Node& node, const Tensor& src, accel::Buffer& in,
                      trusted::RunStats& stats);

  DType dtype_;
  PlainIo io_;
};

namespace detail {
/// Owns the tee engine's private compute library; a base so that it is built first.
struct OwnedBackend {
  std::unique_ptr<accel::Backend> owned;
};
}  // namespace detail

class TeeEngine final : private detail::OwnedBackend, public PlainEngine {
 public:
  /// Runs oneDNN on one thread inside the trusted runtime.
  explicit TeeEngine(DType dtype = DType::f32);
  std::string name() const override { return "tee"; }
  void load(nn::Graph& g) override;
  int64_t resident_bytes() const override { return weight_bytes_; }

 private:
  int64_t weight_bytes_ = 0;
  std::unique_ptr<MeterCharge> charge_;
};

}  // namespace darknight::baselines
