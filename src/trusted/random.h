// The trusted runtime's randomness: a ChaCha20 keystream (libsodium) keyed from the OS,
// and Gaussian samples drawn from it.
#pragma once

#include <cstddef>
#include <cstdint>

namespace darknight::trusted {

/// A cryptographic generator: IETF ChaCha20 keystream under a 256-bit key, a fresh 96-bit
/// nonce for every request. The key comes from the OS (libsodium's randombytes) unless a
/// seed is given; a seeded generator is reproducible, for tests and experiments only.
/// The key is wiped when the generator is destroyed.
class Csprng {
 public:
  /// Keyed from the operating system's generator.
  Csprng();
  /// Keyed from `seed` (hashed with BLAKE2b): reproducible, and only as secret as the seed.
  explicit Csprng(uint64_t seed);
  ~Csprng();
  Csprng(const Csprng&) = delete;
  Csprng& operator=(const Csprng&) = delete;

  /// Fills `buf` with `bytes` fresh random bytes.
  void fill(void* buf, size_t bytes);
  uint64_t next_u64();

  /// n samples of N(mean, std^2). Generated in parallel chunks, each under its own nonce,
  /// so the values depend on the generator's state only, not on the thread count.
  void gaussian(float* out, int64_t n, double mean, double std);
  void gaussian(double* out, int64_t n, double mean, double std);

  /// The position in the stream (the next nonce), for checkpoints of seeded runs: a seeded
  /// generator moved back to a saved position with seek() draws again what it drew after
  /// it. seek() throws Error on a generator keyed from the OS: it would repeat keystream.
  uint64_t position() const { return next_nonce_; }
  void seek(uint64_t position);

 private:
  template <typename T>
  void gaussian_impl(T* out, int64_t n, double mean, double std);
  /// Reserves `count` consecutive nonces and returns the first.
  uint64_t reserve(uint64_t count);
  void keystream(uint64_t nonce, void* buf, size_t bytes) const;

  unsigned char key_[32];
  uint64_t next_nonce_ = 0;
  bool seeded_ = false;
};

namespace detail {
/// Box-Muller: turns n uniform 32-bit words into n standard normal samples
/// (n even; words [0, n/2) give the radii, [n/2, n) the angles).
void box_muller(const uint32_t* words, float* out, int64_t n);
void box_muller(const uint32_t* words, double* out, int64_t n);
}  // namespace detail

}  // namespace darknight::trusted
