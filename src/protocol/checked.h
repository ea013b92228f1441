// Overflow-checked size arithmetic for sizes that come from untrusted input (files,
// messages): every parser computes "how many elements / bytes does this declare" here, and
// compares the answer with the data actually present before it allocates anything.
// Element counts of shapes are capped by Shape (Shape::kMaxElements); to_shape() reports
// that check as a Status instead of throwing.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <type_traits>

#include "protocol/error.h"
#include "protocol/shape.h"

namespace darknight {

/// a * b, or nullopt when it does not fit in T.
template <typename T>
requires std::is_integral_v<T>
constexpr std::optional<T> checked_mul(T a, T b) {
  T r{};
  if (__builtin_mul_overflow(a, b, &r)) return std::nullopt;
  return r;
}

/// a + b, or nullopt when it does not fit in T.
template <typename T>
requires std::is_integral_v<T>
constexpr std::optional<T> checked_add(T a, T b) {
  T r{};
  if (__builtin_add_overflow(a, b, &r)) return std::nullopt;
  return r;
}

/// The product of `values`, or nullopt when one is negative or the product exceeds `cap`
/// (overflow included).
constexpr std::optional<int64_t> checked_product(std::span<const int64_t> values, int64_t cap) {
  int64_t n = 1;
  for (int64_t v : values) {
    if (v < 0) return std::nullopt;
    auto m = checked_mul(n, v);
    if (!m || *m > cap) return std::nullopt;
    n = *m;
  }
  return n;
}

/// A Shape from untrusted dimensions: rank, signs and element count checked by Shape
/// itself (at most Shape::kMaxElements elements); a violation is an error value naming
/// `what`, not an exception.
inline Result<Shape> to_shape(std::span<const int64_t> dims, const std::string& what) {
  try {
    return Shape(dims);
  } catch (const Error& e) {
    return Status::error(fmt::format("{}: {}", what, e.what()));
  }
}

}  // namespace darknight
