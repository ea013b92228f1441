#include "protocol/storage.h"

#include <string.h>
#include <cstdlib>
#include <new>

namespace darknight::detail {

void* aligned_alloc_bytes(size_t bytes) {
  if (bytes == 0) return nullptr;
  const size_t rounded = (bytes + kTensorAlignment - 1) / kTensorAlignment * kTensorAlignment;
  void* p = std::aligned_alloc(kTensorAlignment, rounded);
  if (p == nullptr) throw std::bad_alloc();
  return p;
}

void secure_zero(void* p, size_t bytes) noexcept {
  if (p && bytes) explicit_bzero(p, bytes);
}

}  // namespace darknight::detail
