// The baselines DarKnight is compared with, as LinearEngines for the same runtime:
//  - PlainEngine: no protection; plaintext goes to the accelerator (the "all on GPU" case).
//  - TeeEngine: everything inside the trusted runtime, weights included, on one thread
//    (the "all in SGX" case); its weights are charged to the trusted memory meter.
#pragma once

#include <map>
#include <memory>
#include <vector>

#include "accel/arena.h"
#include "accel/backend.h"
#include "protocol/memory_meter.h"
#include "trusted/runtime.h"

namespace darknight::baselines {

class PlainEngine : public trusted::LinearEngine {
 public:
  explicit PlainEngine(accel::Backend& backend) : be_(backend), buffers_(backend, DType::f32) {}
  std::string name() const override { return "plain"; }
  void load(nn::Graph& g) override;
  trusted::Scratch scratch_bytes(const nn::Node& node, int64_t in_numel, int64_t items,
                                 int k) const override;
  Tensor forward(const nn::Node& node, Tensor& src, bool consume,
                 trusted::RunStats& stats) override;

 protected:
  accel::Backend& be_;
  std::vector<accel::WeightsPtr> weights_;
  accel::BufferArena buffers_;
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
  TeeEngine();
  std::string name() const override { return "tee"; }
  void load(nn::Graph& g) override;
  int64_t resident_bytes() const override { return weight_bytes_; }

 private:
  int64_t weight_bytes_ = 0;
  std::unique_ptr<MeterCharge> charge_;
};

}  // namespace darknight::baselines
