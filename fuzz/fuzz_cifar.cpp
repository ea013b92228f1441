// One CIFAR binary batch file (data::decode_cifar_batch). The first byte picks the
// format (even: CIFAR-10, odd: CIFAR-100); the rest is the file.
#include <cstddef>
#include <cstdint>
#include <span>

#include "data/datasets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace darknight;
  if (size < 1) return 0;
  (void)data::decode_cifar_batch({data + 1, size - 1}, data[0] % 2 ? 100 : 10, "batch");
  return 0;
}
