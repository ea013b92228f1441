#include "trusted/weight_verifier.h"

namespace darknight::trusted {

void WeightVerifier::load(nn::Graph& g) {
  load_.clear();
  train_.clear();
  groups_.assign(g.weights().size(), 1);
  for (const nn::Node& n : g.nodes())
    if (n.op == nn::Op::conv) groups_[static_cast<size_t>(n.weights)] = n.conv.groups;
  if (mode_ == IntegrityMode::none) return;
  load_.resize(g.weights().size());
  for (const nn::Node& n : g.nodes())
    if (n.is_linear())
      load_[static_cast<size_t>(n.weights)] =
          std::make_unique<WeightDigest>(g.weights()[static_cast<size_t>(n.weights)],
                                         n.op == nn::Op::conv ? n.conv.groups : 1, mode_, *rng_);
}

void WeightVerifier::begin_training(std::span<const accel::WeightsPtr> weights) {
  if (!train_.empty()) return;
  for (size_t i = 0; i < weights.size(); ++i) {
    const Tensor w = be_.read_weights(*weights[i]);
    if (!load_[i]->matches(w))
      throw IntegrityStop("integrity: the weights on the accelerator differ from the ones loaded");
    train_.push_back(TrainDigest::make(w, be_.read_momentum(*weights[i]), groups_[i], *rng_));
  }
}

void WeightVerifier::after_step(std::span<const accel::WeightsPtr> weights, const SgdParams& p) {
  if (mode_ == IntegrityMode::redundant) {
    // The redundant checks' tolerances scale with the weights' norms.
    for (size_t i = 0; i < weights.size(); ++i)
      load_[i] =
          std::make_unique<WeightDigest>(be_.read_weights(*weights[i]), groups_[i], mode_, *rng_);
    return;
  }
  if (mode_ != IntegrityMode::freivalds || train_.empty()) return;
  // The weights and momentum after the step must be what the verified gradients give; then
  // fresh projections for the next step.
  for (size_t i = 0; i < weights.size(); ++i) {
    const Tensor w = be_.read_weights(*weights[i]);
    const Tensor v = be_.read_momentum(*weights[i]);
    if (!train_[i]->verify_step(w, v, p))
      throw IntegrityStop(fmt::format(
          "integrity: the weights of linear layer {} after the SGD step differ from what the "
          "verified gradient gives; stopping. Resume from the last checkpoint (--resume, or "
          "--fallback-accelerator) with a healthy accelerator",
          i));
    train_[i] = TrainDigest::make(w, v, groups_[i], *rng_);
  }
}

void WeightVerifier::check_weights(int index, const Tensor& w) const {
  // With Freivalds' check in training, what is saved (checkpoints, the model) must be the
  // weights verified after the last step.
  if (!train_.empty() && !train_[static_cast<size_t>(index)]->fwd->matches(w))
    throw IntegrityStop(fmt::format(
        "integrity: the accelerator returns weights {} that differ from the verified ones", index));
}

void WeightVerifier::check_momentum(int index, const Tensor& v) const {
  const TrainDigest* d = train_.empty() ? nullptr : train_[static_cast<size_t>(index)].get();
  if (d && d->momentum && !d->momentum->matches(v))
    throw IntegrityStop(fmt::format(
        "integrity: the accelerator returns a momentum {} that differs from the verified one",
        index));
}

Tensor WeightVerifier::verified_weights(const nn::Node& node, const accel::Weights& w) const {
  Tensor t = be_.read_weights(w);
  if (!digest(node.weights).matches(t))
    throw IntegrityStop(fmt::format(
        "integrity: layer '{}': the accelerator keeps failing checks and the weights it "
        "returns differ from the verified ones; no trustworthy result can be computed",
        node.name));
  return t;
}

}  // namespace darknight::trusted
