#include "trusted/random.h"

#include <sodium.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "protocol/error.h"

namespace darknight::trusted {
namespace {

constexpr int64_t kChunk = 1 << 14;  // samples per nonce in gaussian()

void init_sodium() {
  if (sodium_init() < 0) throw std::runtime_error("libsodium failed to initialise");
}

}  // namespace

Csprng::Csprng() {
  init_sodium();
  randombytes_buf(key_, sizeof key_);
}

Csprng::Csprng(uint64_t seed) {
  init_sodium();
  unsigned char in[8];
  for (int i = 0; i < 8; ++i) in[i] = static_cast<unsigned char>(seed >> (8 * i));
  static const unsigned char kContext[] = "darknight.seeded-csprng.v1";
  crypto_generichash(key_, sizeof key_, in, sizeof in, kContext, sizeof kContext - 1);
  seeded_ = true;
}

Csprng::~Csprng() {
  sodium_memzero(key_, sizeof key_);
}

uint64_t Csprng::reserve(uint64_t count) {
  const uint64_t first = next_nonce_;
  next_nonce_ += count;
  return first;
}

void Csprng::keystream(uint64_t nonce, void* buf, size_t bytes) const {
  unsigned char n[crypto_stream_chacha20_ietf_NONCEBYTES] = {};
  for (int i = 0; i < 8; ++i) n[i] = static_cast<unsigned char>(nonce >> (8 * i));
  crypto_stream_chacha20_ietf(static_cast<unsigned char*>(buf), bytes, n, key_);
}

void Csprng::seek(uint64_t position) {
  DK_CHECK(seeded_,
           "Csprng::seek: only a seeded generator can be moved (an OS-keyed one would "
           "repeat its keystream)");
  next_nonce_ = position;
}

void Csprng::fill(void* buf, size_t bytes) {
  keystream(reserve(1), buf, bytes);
}

uint64_t Csprng::next_u64() {
  uint64_t v;
  fill(&v, sizeof v);
  return v;
}

template <typename T>
void Csprng::gaussian_impl(T* out, int64_t n, double mean, double std) {
  if (n <= 0) return;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  const uint64_t base = reserve(static_cast<uint64_t>(chunks));
#pragma omp parallel
  {
    std::vector<uint32_t> words(kChunk);
    std::vector<T> tmp(kChunk);
#pragma omp for schedule(static)
    for (int64_t c = 0; c < chunks; ++c) {
      const int64_t begin = c * kChunk, count = std::min(kChunk, n - begin);
      const int64_t even = count + (count & 1);
      keystream(base + static_cast<uint64_t>(c), words.data(), static_cast<size_t>(even) * 4);
      detail::box_muller(words.data(), tmp.data(), even);
      const T m = static_cast<T>(mean), s = static_cast<T>(std);
      for (int64_t i = 0; i < count; ++i) out[begin + i] = m + s * tmp[static_cast<size_t>(i)];
    }
    sodium_memzero(words.data(), words.size() * sizeof(uint32_t));
    sodium_memzero(tmp.data(), tmp.size() * sizeof(T));
  }
}

void Csprng::gaussian(float* out, int64_t n, double mean, double std) {
  gaussian_impl(out, n, mean, std);
}
void Csprng::gaussian(double* out, int64_t n, double mean, double std) {
  gaussian_impl(out, n, mean, std);
}

}  // namespace darknight::trusted
