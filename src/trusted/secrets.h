// Where the encoder's secrets (mixing matrices and noise vectors) come from: drawn when
// needed, or precomputed ahead by a background thread (the paper suggests precomputing
// them; docs/performance.md measures whether it helps). Both draw from the same generator
// in the same order, so a seeded run gives the same mixtures either way.
#pragma once

#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

#include "protocol/memory_meter.h"
#include "trusted/codec.h"

namespace darknight::trusted {

/// One virtual batch's secrets: its coefficients and a noise vector (f32 or f64).
struct Draw {
  Mixing mixing;
  Tensor noise32;
  Tensor64 noise64;
};

class SecretSource {
 public:
  virtual ~SecretSource() = default;
  /// The next draw: coefficients for k inputs and n noise values of type `dtype`.
  virtual Draw next(int k, int64_t n, DType dtype) = 0;
};

/// Draws on demand.
class DirectSource final : public SecretSource {
 public:
  DirectSource(Csprng& rng, NoiseSpec noise, double mixing_scale)
      : rng_(rng), noise_(noise), scale_(mixing_scale) {}
  Draw next(int k, int64_t n, DType dtype) override;

 private:
  friend class PooledSource;
  Csprng& rng_;
  NoiseSpec noise_;
  double scale_;
};

/// Draws ahead on a background thread, for requests announced in order, holding at most
/// `capacity` bytes of ready noise (charged to the trusted meter current when announced).
class PooledSource final : public SecretSource {
 public:
  PooledSource(Csprng& rng, NoiseSpec noise, double mixing_scale, int64_t capacity);
  ~PooledSource() override;
  /// Queues the (k, n, dtype) requests that will follow, in order.
  void announce(int k, int64_t n, DType dtype);
  Draw next(int k, int64_t n, DType dtype) override;
  int64_t capacity() const { return capacity_; }

 private:
  struct Request {
    int k;
    int64_t n;
    DType dtype;
  };
  void run();

  DirectSource direct_;
  int64_t capacity_;
  MemoryMeter* meter_ = nullptr;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Request> todo_;
  std::deque<std::pair<Request, Draw>> ready_;
  int64_t ready_bytes_ = 0;
  bool stop_ = false;
  std::thread worker_;
};

}  // namespace darknight::trusted
