// DarKnight's linear layers: encode the inputs of each virtual batch with fresh secrets,
// let the untrusted accelerator apply W to the mixtures, decode with the epilogue fused in.
#pragma once

#include <map>
#include <vector>

#include "accel/backend.h"
#include "trusted/codec.h"
#include "trusted/runtime.h"

namespace darknight::trusted {

class DarKnightEngine final : public LinearEngine {
 public:
  /// `backend` is the untrusted accelerator; `rng` the trusted generator.
  DarKnightEngine(accel::Backend& backend, const CodecOptions& opts, Csprng& rng);

  std::string name() const override { return "darknight"; }
  void load(nn::Graph& g) override;
  int granularity() const override { return encoder_.options().k; }
  int64_t scratch_bytes(const nn::Node& node, int64_t in_numel, int64_t items,
                        int k) const override;
  Tensor forward(const nn::Node& node, const Tensor& src, RunStats& stats) override;

 private:
  template <typename T>
  Tensor forward_t(const nn::Node& node, const Tensor& src, RunStats& stats);
  accel::Buffer& buffer(const Shape& shape, int slot);

  accel::Backend& be_;
  Encoder encoder_;
  std::vector<accel::WeightsPtr> weights_;
  std::map<std::pair<std::string, int>, accel::BufferPtr> buffers_;
};

}  // namespace darknight::trusted
