// Where the encoder's secrets (mixing matrices and noise) come from: drawn when needed, or
// precomputed ahead by a background thread (the paper suggests precomputing them;
// docs/performance.md measures whether it helps). Both draw from the same generator in the
// same order, so a seeded run gives the same mixtures either way.
#pragma once

#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <variant>

#include "protocol/memory_meter.h"
#include "trusted/codec.h"

namespace darknight::trusted {

class SecretSource {
 public:
  virtual ~SecretSource() = default;
  /// Coefficients for the next virtual batch of k inputs.
  virtual std::unique_ptr<Mixing> next_mixing(int k) = 0;
  /// The next out.numel() noise values (wiped when out is freed).
  virtual void next_noise(Tensor& out) = 0;
  virtual void next_noise(Tensor64& out) = 0;
};

/// Draws on demand.
class DirectSource final : public SecretSource {
 public:
  /// `extra`: redundant mixtures per virtual batch (CodecOptions::redundancy).
  DirectSource(Csprng& rng, NoiseSpec noise, double mixing_scale, int extra = 0)
      : rng_(rng), noise_(noise), scale_(mixing_scale), extra_(extra) {}
  std::unique_ptr<Mixing> next_mixing(int k) override {
    return Mixing::draw(k, scale_, rng_, extra_);
  }
  void next_noise(Tensor& out) override;
  void next_noise(Tensor64& out) override;

 private:
  Csprng& rng_;
  NoiseSpec noise_;
  double scale_;
  int extra_;
};

/// Draws ahead on a background thread for requests announced in order, holding at most
/// `capacity` bytes of ready noise, charged to the trusted meter current at announce().
class PooledSource final : public SecretSource {
 public:
  PooledSource(Csprng& rng, NoiseSpec noise, double mixing_scale, int64_t capacity, int extra = 0);
  ~PooledSource() override;
  /// Announces the draws that will follow, in order.
  void announce_mixing(int k);
  void announce_noise(int64_t n, DType dtype);
  std::unique_ptr<Mixing> next_mixing(int k) override;
  void next_noise(Tensor& out) override;
  void next_noise(Tensor64& out) override;
  int64_t capacity() const { return capacity_; }

 private:
  /// What a request asks for: a mixing of k inputs (n = 0) or n noise values.
  struct Request {
    int k = 0;
    int64_t n = 0;
    DType dtype = DType::f32;
    int64_t bytes() const { return n * static_cast<int64_t>(dtype_size(dtype)); }
  };
  using Item = std::variant<std::unique_ptr<Mixing>, Tensor, Tensor64>;
  void announce(Request r);
  Item pop(const Request& expected);
  void run();

  DirectSource direct_;
  int64_t capacity_;
  MemoryMeter* meter_ = nullptr;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Request> todo_;
  std::deque<std::pair<Request, Item>> ready_;
  int64_t ready_bytes_ = 0;
  bool drawing_ = false;  ///< the worker is drawing a request taken from todo_
  bool stop_ = false;
  std::thread worker_;
};

}  // namespace darknight::trusted
