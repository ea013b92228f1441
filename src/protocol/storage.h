// The trusted runtime's memory: 64-byte-aligned storage charged to a memory meter, and
// the one way secrets are held. Like SEAL's self-clearing memory pool, storage that holds a
// secret is overwritten when it is freed, wherever that happens; the property belongs to
// the storage, so a tensor's copies (clone, cast) keep it.
//
//   TensorT::set_wipe_on_free()  a tensor holding a secret (activations, deltas, gradients,
//                                noise, decrypted data); kept by clone() and cast()
//   SecretBuffer<T>              any other secret: coefficient matrices, keys, Eigen work
//                                matrices (trusted/secret_eigen.h), Slalom's buffers
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <span>
#include <type_traits>
#include <utility>

#include "protocol/memory_meter.h"

namespace darknight {

/// Whether an allocation is charged to the meter current on this thread (memory_meter.h).
/// Tensors always are; small secrets (coefficients, keys) are not.
enum class Metered : bool { no, yes };

namespace detail {
constexpr size_t kTensorAlignment = 64;
void* aligned_alloc_bytes(size_t bytes);  // throws std::bad_alloc; nullptr for 0 bytes
struct AlignedFree {
  void operator()(void* p) const noexcept { std::free(p); }
};
/// Overwrites memory in a way the compiler may not elide.
void secure_zero(void* p, size_t bytes) noexcept;

/// Owning aligned storage: charges `meter` (by default the current one) from allocation
/// until freed, and wipes its bytes on free once marked as holding a secret.
class Storage {
 public:
  Storage() = default;
  explicit Storage(size_t bytes) : Storage(bytes, current_meter()) {}
  Storage(size_t bytes, MemoryMeter* meter)
      : p_(aligned_alloc_bytes(bytes)), bytes_(bytes), meter_(meter) {
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
  bool wipes_on_free() const { return wipe_; }
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

/// `n` elements of a secret, 64-byte aligned, wiped when freed. Move-only: a move hands the
/// storage over and leaves no copy behind.
template <typename T>
class SecretBuffer {
  static_assert(std::is_trivially_copyable_v<T>, "secrets are plain bytes");

 public:
  SecretBuffer() = default;
  /// `n` zeroed elements.
  SecretBuffer(int64_t n, Metered metered) : SecretBuffer(uninitialized(n, metered)) {
    if (n_ > 0) std::memset(data(), 0, bytes());
  }
  /// `n` elements left unset, for buffers that are about to be written whole.
  static SecretBuffer uninitialized(int64_t n, Metered metered) {
    SecretBuffer b;
    b.storage_ = detail::Storage(static_cast<size_t>(n) * sizeof(T),
                                 metered == Metered::yes ? current_meter() : nullptr);
    b.storage_.set_wipe_on_free();
    b.n_ = n;
    return b;
  }
  SecretBuffer(SecretBuffer&& o) noexcept
      : storage_(std::move(o.storage_)), n_(std::exchange(o.n_, 0)) {}
  SecretBuffer& operator=(SecretBuffer&& o) noexcept {
    if (this != &o) storage_ = std::move(o.storage_), n_ = std::exchange(o.n_, 0);
    return *this;
  }
  SecretBuffer(const SecretBuffer&) = delete;
  SecretBuffer& operator=(const SecretBuffer&) = delete;

  T* data() { return static_cast<T*>(storage_.get()); }
  const T* data() const { return static_cast<const T*>(storage_.get()); }
  int64_t size() const { return n_; }
  size_t bytes() const { return static_cast<size_t>(n_) * sizeof(T); }
  std::span<T> span() { return {data(), static_cast<size_t>(n_)}; }
  std::span<const T> span() const { return {data(), static_cast<size_t>(n_)}; }
  T& operator[](int64_t i) { return data()[i]; }
  const T& operator[](int64_t i) const { return data()[i]; }

 private:
  detail::Storage storage_;
  int64_t n_ = 0;
};

}  // namespace darknight
