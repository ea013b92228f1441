// Deterministic test data (fixed seed, like SEAL's tests).
#pragma once

#include <random>

#include "protocol/tensor.h"

namespace darknight::testing {

inline constexpr uint64_t kTestSeed = 20240601;

/// Uniform values in [lo, hi).
inline Tensor random_tensor(const Shape& shape, uint64_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  Tensor t(shape);
  for (int64_t i = 0; i < t.numel(); ++i) t[i] = dist(rng);
  return t;
}

/// Element-wise absolute values (for error bounds: op(|x|, |w|) bounds |op(x, w)| terms).
inline Tensor abs_tensor(const Tensor& t) {
  Tensor a = t.clone();
  for (int64_t i = 0; i < a.numel(); ++i) a[i] = std::abs(a[i]);
  return a;
}

}  // namespace darknight::testing
