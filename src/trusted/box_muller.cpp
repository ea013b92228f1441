// Box-Muller, vectorised: compiled with -ffast-math -fopenmp-simd so that GCC calls glibc's
// vector log/sin/cos (libmvec), with an AVX2 clone chosen at run time where supported.
// The inputs are uniform words in [0, 2^32): u1 = (w + 1) / 2^32 in (0, 1] keeps log finite.
#include <cmath>

#include "trusted/random.h"

namespace darknight::trusted::detail {
namespace {

template <typename T>
__attribute__((target_clones("avx2", "default"))) void box_muller_impl(
    const uint32_t* __restrict words, T* __restrict out, int64_t n) {
  const int64_t h = n / 2;
  // (T)(int32_t)w + 2^31 converts an unsigned word with signed (vectorisable) conversions.
#pragma omp simd
  for (int64_t i = 0; i < h; ++i) {
    const T u1 = (static_cast<T>(static_cast<int32_t>(words[i])) + T(2147483649.0)) * T(0x1p-32);
    out[i] = std::sqrt(T(-2) * std::log(u1));
  }
  constexpr T kAngle = T(6.283185307179586 * 0x1p-32);
#pragma omp simd
  for (int64_t i = 0; i < h; ++i) {
    const T t = (static_cast<T>(static_cast<int32_t>(words[h + i])) + T(2147483648.0)) * kAngle;
    out[h + i] = out[i] * std::sin(t);
  }
#pragma omp simd
  for (int64_t i = 0; i < h; ++i) {
    const T t = (static_cast<T>(static_cast<int32_t>(words[h + i])) + T(2147483648.0)) * kAngle;
    out[i] = out[i] * std::cos(t);
  }
}

}  // namespace

void box_muller(const uint32_t* words, float* out, int64_t n) {
  box_muller_impl(words, out, n);
}
void box_muller(const uint32_t* words, double* out, int64_t n) {
  box_muller_impl(words, out, n);
}

}  // namespace darknight::trusted::detail
