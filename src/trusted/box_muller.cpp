// Box-Muller, vectorised: compiled with -ffast-math -fopenmp-simd so that GCC calls glibc's
// vector log/sin/cos (libmvec), with an AVX2 clone chosen at run time where supported.
// The inputs are uniform words: u1 = (w + 1) / 2^b in (0, 1] keeps log finite, with b = 32
// bits in f64 and the top b = 24 bits in f32 (so that w + 1 is exact in a float: rounding
// 2^31 + 1 to a float would give u1 = 0 and an infinite sample).
#include <cmath>
#include <type_traits>

#include "trusted/random.h"

namespace darknight::trusted::detail {
namespace {

template <typename T>
__attribute__((target_clones("avx2", "default"))) void box_muller_impl(
    const uint32_t* __restrict words, T* __restrict out, int64_t n) {
  const int64_t h = n / 2;
  // Uniform values from words with signed (vectorisable) conversions only.
  constexpr bool f32 = std::is_same_v<T, float>;
  constexpr int kShift = f32 ? 8 : 0;
  constexpr T kScale = f32 ? T(0x1p-24) : T(0x1p-32);
  constexpr T kOffset = f32 ? T(0) : T(2147483648.0);  // f64: (int32)w + 2^31 = w
  auto word = [](uint32_t w) {
    return f32 ? static_cast<T>(static_cast<int32_t>(w >> kShift))
               : static_cast<T>(static_cast<int32_t>(w)) + kOffset;
  };
#pragma omp simd
  for (int64_t i = 0; i < h; ++i) {
    const T u1 = (word(words[i]) + T(1)) * kScale;  // (0, 1]
    out[i] = std::sqrt(T(-2) * std::log(u1));
  }
  const T angle = T(6.283185307179586) * kScale;
#pragma omp simd
  for (int64_t i = 0; i < h; ++i) out[h + i] = out[i] * std::sin(word(words[h + i]) * angle);
#pragma omp simd
  for (int64_t i = 0; i < h; ++i) out[i] = out[i] * std::cos(word(words[h + i]) * angle);
}

}  // namespace

void box_muller(const uint32_t* words, float* out, int64_t n) {
  box_muller_impl(words, out, n);
}
void box_muller(const uint32_t* words, double* out, int64_t n) {
  box_muller_impl(words, out, n);
}

}  // namespace darknight::trusted::detail
