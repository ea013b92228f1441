// Owning, 64-byte-aligned dense tensors (row-major; NCHW for images).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <type_traits>
#include <utility>

#include "protocol/error.h"
#include "protocol/shape.h"
#include "protocol/storage.h"

namespace darknight {

/// Element types of tensors and accelerator buffers. Activations and weights are f32;
/// mixtures may be f64 where float32 decode error is too large.
enum class DType : uint8_t { f32 = 0, f64 = 1 };

constexpr size_t dtype_size(DType t) {
  return t == DType::f32 ? 4 : 8;
}
constexpr const char* dtype_name(DType t) {
  return t == DType::f32 ? "f32" : "f64";
}

template <typename T>
constexpr DType dtype_of() {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "f32 or f64 only");
  return std::is_same_v<T, float> ? DType::f32 : DType::f64;
}

template <typename T>
class TensorT {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "f32 or f64 only");

 public:
  using value_type = T;
  static constexpr DType kDType = dtype_of<T>();

  /// An empty tensor (shape [0], no storage).
  TensorT() = default;
  /// A zero-filled tensor of the given shape.
  explicit TensorT(const Shape& shape) : shape_(shape), data_(alloc(shape.numel())) {
    if (numel() > 0) std::memset(data(), 0, bytes());
  }
  /// A tensor whose elements are left unset, for outputs that are about to be written
  /// whole (saves a pass over memory).
  static TensorT uninitialized(const Shape& shape) {
    TensorT t;
    t.shape_ = shape;
    t.data_ = alloc(shape.numel());
    return t;
  }
  /// A tensor holding a copy of `values` (values.size() must equal shape.numel()).
  TensorT(const Shape& shape, std::span<const T> values)
      : shape_(shape), data_(alloc(shape.numel())) {
    DK_CHECK(static_cast<int64_t>(values.size()) == shape.numel(), "{} values given for shape {}",
             values.size(), shape.str());
    if (numel() > 0) std::memcpy(data(), values.data(), bytes());
  }

  // Move-only: copies of large tensors are explicit (clone()).
  TensorT(TensorT&&) noexcept = default;
  TensorT& operator=(TensorT&&) noexcept = default;
  TensorT(const TensorT&) = delete;
  TensorT& operator=(const TensorT&) = delete;

  /// A copy; it wipes on free when this tensor does.
  TensorT clone() const {
    TensorT out(shape_, span());
    if (wipes_on_free()) out.set_wipe_on_free();
    return out;
  }
  /// Element-wise conversion to another element type; it wipes on free when this tensor
  /// does.
  template <typename U>
  TensorT<U> cast() const {
    auto out = TensorT<U>::uninitialized(shape_);
    if (wipes_on_free()) out.set_wipe_on_free();
    for (int64_t i = 0; i < numel(); ++i) out.data()[i] = static_cast<U>(data()[i]);
    return out;
  }

  const Shape& shape() const { return shape_; }
  int64_t numel() const { return shape_.numel(); }
  size_t bytes() const { return static_cast<size_t>(numel()) * sizeof(T); }
  bool empty() const { return numel() == 0; }
  DType dtype() const { return kDType; }

  T* data() { return static_cast<T*>(data_.get()); }
  const T* data() const { return static_cast<const T*>(data_.get()); }
  std::span<T> span() { return {data(), static_cast<size_t>(numel())}; }
  std::span<const T> span() const { return {data(), static_cast<size_t>(numel())}; }
  T& operator[](int64_t i) { return data()[i]; }
  const T& operator[](int64_t i) const { return data()[i]; }

  /// The rows [begin, begin+count) along the first dimension, read-only.
  std::span<const T> items(int64_t begin, int64_t count) const {
    const int64_t item = shape_.item_numel();
    DK_CHECK(begin >= 0 && count >= 0 && begin + count <= shape_[0],
             "items [{}, {}) out of range for shape {}", begin, begin + count, shape_.str());
    return {data() + begin * item, static_cast<size_t>(count * item)};
  }
  std::span<T> items(int64_t begin, int64_t count) {
    auto s = std::as_const(*this).items(begin, count);
    return {const_cast<T*>(s.data()), s.size()};
  }

  /// Reinterprets the same elements with another shape of equal element count.
  void reshape(const Shape& shape) {
    DK_CHECK(shape.numel() == numel(), "cannot reshape {} to {}", shape_.str(), shape.str());
    shape_ = shape;
  }

  /// Zeroes the bytes when the tensor is freed (for secrets: protocol/storage.h). Moves,
  /// clone() and cast() keep the mark; a reassigned tensor takes its new value's.
  void set_wipe_on_free() { data_.set_wipe_on_free(); }
  bool wipes_on_free() const { return data_.wipes_on_free(); }
  /// No longer charged to the meter it was allocated under (the caller takes it out of
  /// that meter's scope, e.g. a runtime's output; the meter may not outlive it).
  void detach_meter() noexcept { data_.detach_meter(); }

  void fill(T v) {
    for (int64_t i = 0; i < numel(); ++i) data()[i] = v;
  }

 private:
  static detail::Storage alloc(int64_t n) {
    return detail::Storage(static_cast<size_t>(n) * sizeof(T));
  }
  Shape shape_{0};
  detail::Storage data_;
};

using Tensor = TensorT<float>;
using Tensor64 = TensorT<double>;

}  // namespace darknight
