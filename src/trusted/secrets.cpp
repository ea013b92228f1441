#include "trusted/secrets.h"

#include <omp.h>

namespace darknight::trusted {

void DirectSource::next_noise(Tensor& out) {
  out.set_wipe_on_free();
  rng_.gaussian(out.data(), out.numel(), noise_.mean, noise_.std);
}

void DirectSource::next_noise(Tensor64& out) {
  out.set_wipe_on_free();
  rng_.gaussian(out.data(), out.numel(), noise_.mean, noise_.std);
}

PooledSource::PooledSource(Csprng& rng, NoiseSpec noise, double mixing_scale, int64_t capacity,
                           int extra)
    : direct_(rng, noise, mixing_scale, extra), capacity_(capacity) {
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

void PooledSource::announce(Request r) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!meter_) meter_ = current_meter();
  todo_.push_back(r);
  cv_.notify_all();
}

void PooledSource::announce_mixing(int k) {
  announce({k, 0, DType::f32});
}
void PooledSource::announce_noise(int64_t n, DType dtype) {
  announce({0, n, dtype});
}

PooledSource::Item PooledSource::pop(const Request& want) {
  std::unique_lock<std::mutex> lock(mu_);
  DK_CHECK(!ready_.empty() || !todo_.empty() || drawing_,
           "precompute pool: a draw was requested that was never announced");
  cv_.wait(lock, [&] { return !ready_.empty(); });
  auto [req, item] = std::move(ready_.front());
  ready_.pop_front();
  DK_ASSERT(req.k == want.k && req.n == want.n && req.dtype == want.dtype,
            "precompute pool: draws requested out of the announced order");
  ready_bytes_ -= req.bytes();
  cv_.notify_all();
  return std::move(item);
}

std::unique_ptr<Mixing> PooledSource::next_mixing(int k) {
  return std::get<std::unique_ptr<Mixing>>(pop({k, 0, DType::f32}));
}

void PooledSource::next_noise(Tensor& out) {
  Tensor t = std::get<Tensor>(pop({0, out.numel(), DType::f32}));
  t.reshape(out.shape());
  out = std::move(t);
}

void PooledSource::next_noise(Tensor64& out) {
  Tensor64 t = std::get<Tensor64>(pop({0, out.numel(), DType::f64}));
  t.reshape(out.shape());
  out = std::move(t);
}

void PooledSource::run() {
  omp_set_num_threads(1);  // the cores belong to the accelerator and the codec
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    cv_.wait(lock, [&] {
      return stop_ || (!todo_.empty() &&
                       (ready_.empty() || ready_bytes_ + todo_.front().bytes() <= capacity_));
    });
    if (stop_) return;
    const Request req = todo_.front();
    todo_.pop_front();
    ready_bytes_ += req.bytes();
    drawing_ = true;  // neither announced nor ready while the lock is released
    MemoryMeter* meter = meter_;
    lock.unlock();
    Item item;
    {
      const MeterScope charge(meter);
      if (req.n == 0) {
        item = direct_.next_mixing(req.k);
      } else if (req.dtype == DType::f32) {
        auto t = Tensor::uninitialized(Shape{req.n});
        direct_.next_noise(t);
        item = std::move(t);
      } else {
        auto t = Tensor64::uninitialized(Shape{req.n});
        direct_.next_noise(t);
        item = std::move(t);
      }
    }
    lock.lock();
    drawing_ = false;
    ready_.emplace_back(req, std::move(item));
    cv_.notify_all();
  }
}

}  // namespace darknight::trusted
