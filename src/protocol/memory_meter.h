// Accounting of the trusted runtime's memory: live and peak bytes of the tensors it holds.
//
// A MeterScope makes a meter current for the calling thread; every TensorT allocated while
// it is current charges that meter until the tensor is freed (wherever that happens). The
// accelerator's entry points switch metering off (the accelerator's memory is not the
// enclave's), so peak_bytes() is the enclave working set that SGX's 128 MiB EPC bounds.
#pragma once

#include <atomic>
#include <cstdint>

namespace darknight {

class MemoryMeter {
 public:
  void add(int64_t bytes) {
    const int64_t now = live_.fetch_add(bytes, std::memory_order_relaxed) + bytes;
    int64_t peak = peak_.load(std::memory_order_relaxed);
    while (now > peak && !peak_.compare_exchange_weak(peak, now, std::memory_order_relaxed)) {
    }
  }
  void sub(int64_t bytes) { live_.fetch_sub(bytes, std::memory_order_relaxed); }
  int64_t live_bytes() const { return live_.load(std::memory_order_relaxed); }
  int64_t peak_bytes() const { return peak_.load(std::memory_order_relaxed); }
  /// Restarts the peak from the bytes live now.
  void reset_peak() { peak_.store(live_bytes(), std::memory_order_relaxed); }

 private:
  std::atomic<int64_t> live_{0};
  std::atomic<int64_t> peak_{0};
};

/// Charges bytes held outside TensorT (e.g. weights inside a library) for its lifetime.
class MeterCharge {
 public:
  MeterCharge() = default;
  MeterCharge(MemoryMeter* meter, int64_t bytes) : meter_(meter), bytes_(bytes) {
    if (meter_) meter_->add(bytes_);
  }
  ~MeterCharge() {
    if (meter_) meter_->sub(bytes_);
  }
  MeterCharge(const MeterCharge&) = delete;
  MeterCharge& operator=(const MeterCharge&) = delete;

 private:
  MemoryMeter* meter_ = nullptr;
  int64_t bytes_ = 0;
};

/// The meter charged by allocations on this thread (nullptr: none).
MemoryMeter* current_meter();

/// Makes `meter` current on this thread for the scope's lifetime (nullptr switches
/// metering off), restoring the previous one after.
class MeterScope {
 public:
  explicit MeterScope(MemoryMeter* meter);
  ~MeterScope();
  MeterScope(const MeterScope&) = delete;
  MeterScope& operator=(const MeterScope&) = delete;

 private:
  MemoryMeter* previous_;
};

}  // namespace darknight
