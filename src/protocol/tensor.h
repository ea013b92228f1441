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
#include "protocol/memory_meter.h"
#include "protocol/shape.h"

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

namespace detail {
constexpr size_t kTensorAlignment = 64;
void* aligned_alloc_bytes(size_t bytes);  // throws std::bad_alloc; nullptr for 0 bytes
struct AlignedFree {
  void operator()(void* p) const noexcept { std::free(p); }
};
/// Overwrites memory in a way the compiler may not elide.
void secure_zero(void* p, size_t bytes) noexcept;

/// Owning storage of a tensor: charges the meter current at allocation until freed, and
/// wipes its bytes on free when asked to (secrets: noise, coefficients, plaintext).
class Storage {
 public:
  Storage() = default;
  explicit Storage(size_t bytes)
      : p_(aligned_alloc_bytes(bytes)), bytes_(bytes), meter_(current_meter()) {
    if (meter_) meter_->add(static_cast<int64_t>(bytes_));
  }
  Storage(Storage&& o) noexcept
      : p_(std::exchange(o.p_, nullptr)),
        bytes_(std::exchange(o.bytes_, 0)),
        meter_(std::exchange(o.meter_, nullptr)),
        wipe_(std::exchange(o.wipe_, false)) {}
  Storage& operator=(Storage&& o) noexcept {
    if (this != &o) {
      release();
      p_ = std::exchange(o.p_, nullptr), bytes_ = std::exchange(o.bytes_, 0);
      meter_ = std::exchange(o.meter_, nullptr), wipe_ = std::exchange(o.wipe_, false);
    }
    return *this;
  }
  ~Storage() { release(); }
  void* get() const { return p_; }
  void set_wipe_on_free() { wipe_ = true; }
  /// Stops charging the meter (for memory handed out of the metered scope).
  void detach_meter() noexcept {
    if (meter_) meter_->sub(static_cast<int64_t>(bytes_));
    meter_ = nullptr;
  }

 private:
  void release() noexcept {
    if (!p_) return;
    if (wipe_) secure_zero(p_, bytes_);
    if (meter_) meter_->sub(static_cast<int64_t>(bytes_));
    std::free(p_);
    p_ = nullptr;
  }
  void* p_ = nullptr;
  size_t bytes_ = 0;
  MemoryMeter* meter_ = nullptr;
  bool wipe_ = false;
};
}  // namespace detail

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

  TensorT clone() const { return TensorT(shape_, span()); }
  /// Element-wise conversion to another element type.
  template <typename U>
  TensorT<U> cast() const {
    auto out = TensorT<U>::uninitialized(shape_);
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

  /// Zeroes the bytes when the tensor is freed (for secrets).
  void set_wipe_on_free() { data_.set_wipe_on_free(); }
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
