// DarKnight's linear layers: encode the inputs of each virtual batch with fresh secrets,
// let the untrusted accelerator apply W to the mixtures, decode with the epilogue fused in.
#pragma once

#include <vector>

#include "accel/arena.h"
#include "accel/backend.h"
#include "trusted/codec.h"
#include "trusted/runtime.h"
#include "trusted/secrets.h"

namespace darknight::trusted {

class DarKnightEngine final : public LinearEngine {
 public:
  /// `backend` is the untrusted accelerator; `rng` the trusted generator. With
  /// `precompute_bytes` > 0 the secrets are drawn ahead on a background thread, holding at
  /// most that many bytes of noise.
  DarKnightEngine(accel::Backend& backend, const CodecOptions& opts, Csprng& rng,
                  int64_t precompute_bytes = 0);
  ~DarKnightEngine() override;

  std::string name() const override { return "darknight"; }
  void load(nn::Graph& g) override;
  int granularity() const override { return encoder_.options().k; }
  Scratch scratch_bytes(const nn::Node& node, int64_t in_numel, int64_t items,
                        int k) const override;
  int64_t resident_bytes() const override;
  void begin_pass(const nn::Graph& g, int64_t items) override;
  Tensor forward(const nn::Node& node, Tensor& src, bool consume, RunStats& stats) override;

 private:
  template <typename T>
  Tensor forward_t(const nn::Node& node, Tensor& src, bool consume, RunStats& stats);

  accel::Backend& be_;
  std::unique_ptr<PooledSource> pool_;
  Encoder encoder_;
  std::vector<accel::WeightsPtr> weights_;
  accel::BufferArena buffers_;  // slot 0: input mixtures, 1: output mixtures
};

}  // namespace darknight::trusted
