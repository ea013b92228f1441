// What the trusted side keeps of the weights on the accelerator, to check its results and
// to verify the weights it returns (trusted/integrity.h): per linear layer a digest made
// while the weights pass through at load time and, in training with Freivalds' check, one
// of the weights and momentum after each verified SGD step.
#pragma once

#include <memory>
#include <span>
#include <vector>

#include "accel/backend.h"
#include "nn/graph.h"
#include "protocol/sgd.h"
#include "trusted/integrity.h"
#include "trusted/random.h"

namespace darknight::trusted {

class WeightVerifier {
 public:
  /// Reads weights back from `backend`.
  explicit WeightVerifier(accel::Backend& backend) : be_(backend) {}

  /// Checks in `mode`, drawing their projections from `rng`.
  void set_mode(IntegrityMode mode, Csprng* rng) { mode_ = mode, rng_ = rng; }
  /// As the graph's weights pass through at load time: each layer's groups and, with
  /// checks, its digest.
  void load(nn::Graph& g);
  /// The digest of weights `index` as they are now (after training steps, the latest).
  const WeightDigest& digest(int index) const {
    return train_.empty() ? *load_[static_cast<size_t>(index)]
                          : *train_[static_cast<size_t>(index)]->fwd;
  }
  /// With Freivalds' check in training: the digests of `weights` (the accelerator's, by
  /// weights index) and their momentum, made on the first call from what it returns,
  /// verified against the load-time digests.
  void begin_training(std::span<const accel::WeightsPtr> weights);
  TrainDigest& training(int index) { return *train_[static_cast<size_t>(index)]; }
  /// After an SGD step of `weights` with `p`: redundant, the digests renewed from the
  /// weights read back (unverified: see docs/SECURITY.md); freivalds in training, the
  /// weights and momentum verified against the verified gradients, then fresh digests.
  void after_step(std::span<const accel::WeightsPtr> weights, const SgdParams& p);
  /// Throws IntegrityStop when, with Freivalds' check in training, weights or momentum
  /// `index` read back are not the ones verified after the last step.
  void check_weights(int index, const Tensor& w) const;
  void check_momentum(int index, const Tensor& v) const;
  /// The weights of `node` read back from `w`, verified against their digest.
  Tensor verified_weights(const nn::Node& node, const accel::Weights& w) const;

 private:
  accel::Backend& be_;
  IntegrityMode mode_ = IntegrityMode::none;
  Csprng* rng_ = nullptr;
  std::vector<int64_t> groups_;                      // per weights index
  std::vector<std::unique_ptr<WeightDigest>> load_;  // per weights index
  std::vector<std::unique_ptr<TrainDigest>> train_;  // per weights index
};

}  // namespace darknight::trusted
