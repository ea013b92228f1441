// The seeds a run derives from its one --seed, named by purpose. Each purpose draws from a
// stream of its own, so that turning one on (integrity checks, injected faults) does not
// change what another draws: a checked run blinds as an unchecked one does.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>

#include "trusted/random.h"

namespace darknight::session {

class Seeds {
 public:
  /// Unseeded: the trusted generators are keyed from the operating system.
  Seeds() = default;
  explicit Seeds(std::optional<uint64_t> seed) : seed_(seed) {}

  /// Whether the run was given a seed (reproducible; weakens secrecy).
  bool seeded() const { return seed_.has_value(); }
  /// The run's seed, 1 when unseeded: initial weights of built-in models, the data's order
  /// and synthetic data (none of them secret).
  uint64_t base() const { return seed_.value_or(1); }
  /// Synthetic test data (the training data uses base()).
  uint64_t test_data() const { return base() + 1; }
  /// The augmentation of the batch that starts at example `start` of `epoch` (epochs of
  /// `examples` examples).
  uint64_t augmentation(int epoch, int64_t examples, int64_t start) const {
    return base() * 7919 + static_cast<uint64_t>(epoch * examples + start);
  }

  /// The trusted generator of the blinding (coefficients and noise).
  std::unique_ptr<trusted::Csprng> blinding() const { return generator(seed_); }
  /// The trusted generator of the integrity checks' secret vectors.
  std::unique_ptr<trusted::Csprng> checks() const { return generator(derive(kChecks)); }
  /// The fault injector's stream when its spec names none (nullopt: from the OS).
  std::optional<uint64_t> faults() const { return derive(kFaults); }

 private:
  static constexpr uint64_t kChecks = 0x636865636bULL;    // "check"
  static constexpr uint64_t kFaults = 0x6661756c7473ULL;  // "faults"

  std::optional<uint64_t> derive(uint64_t purpose) const {
    return seed_ ? std::optional<uint64_t>(*seed_ ^ purpose) : std::nullopt;
  }
  static std::unique_ptr<trusted::Csprng> generator(std::optional<uint64_t> seed) {
    return seed ? std::make_unique<trusted::Csprng>(*seed) : std::make_unique<trusted::Csprng>();
  }

  std::optional<uint64_t> seed_;
};

}  // namespace darknight::session
