#include "trusted/secrets.h"

#include <omp.h>

namespace darknight::trusted {

Draw DirectSource::next(int k, int64_t n, DType dtype) {
  Draw d{Mixing::draw(k, scale_, rng_), {}, {}};
  if (dtype == DType::f32) {
    d.noise32 = Tensor(Shape{n});
    d.noise32.set_wipe_on_free();
    rng_.gaussian(d.noise32.data(), n, noise_.mean, noise_.std);
  } else {
    d.noise64 = Tensor64(Shape{n});
    d.noise64.set_wipe_on_free();
    rng_.gaussian(d.noise64.data(), n, noise_.mean, noise_.std);
  }
  return d;
}

PooledSource::PooledSource(Csprng& rng, NoiseSpec noise, double mixing_scale, int64_t capacity)
    : direct_(rng, noise, mixing_scale), capacity_(capacity) {
  DK_CHECK(capacity > 0, "the precompute pool needs a positive capacity");
  worker_ = std::thread([this] { run(); });
}

PooledSource::~PooledSource() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  worker_.join();
}

void PooledSource::announce(int k, int64_t n, DType dtype) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!meter_) meter_ = current_meter();
  todo_.push_back({k, n, dtype});
  cv_.notify_all();
}

Draw PooledSource::next(int k, int64_t n, DType dtype) {
  std::unique_lock<std::mutex> lock(mu_);
  if (ready_.empty() && todo_.empty()) {
    lock.unlock();
    throw Error("precompute pool: a draw was requested that was never announced");
  }
  cv_.wait(lock, [&] { return !ready_.empty(); });
  auto [req, draw] = std::move(ready_.front());
  ready_.pop_front();
  DK_ASSERT(req.k == k && req.n == n && req.dtype == dtype,
            "precompute pool: requests out of order");
  ready_bytes_ -= n * static_cast<int64_t>(dtype_size(dtype));
  cv_.notify_all();
  return std::move(draw);
}

void PooledSource::run() {
  omp_set_num_threads(1);  // the main thread's cores belong to the accelerator and codec
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    cv_.wait(lock, [&] {
      if (stop_) return true;
      if (todo_.empty()) return false;
      const int64_t bytes = todo_.front().n * static_cast<int64_t>(dtype_size(todo_.front().dtype));
      return ready_.empty() || ready_bytes_ + bytes <= capacity_;
    });
    if (stop_) return;
    const Request req = todo_.front();
    todo_.pop_front();
    ready_bytes_ += req.n * static_cast<int64_t>(dtype_size(req.dtype));
    MemoryMeter* meter = meter_;
    lock.unlock();
    Draw d;
    {
      const MeterScope charge(meter);
      d = direct_.next(req.k, req.n, req.dtype);
    }
    lock.lock();
    ready_.emplace_back(req, std::move(d));
    cv_.notify_all();
  }
}

}  // namespace darknight::trusted
