// A capture's .npy files, as `darknight audit` reads them (audit::parse_npy). The input is
// the file.
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "audit/capture.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<int64_t> shape;
  (void)darknight::audit::parse_npy(std::span<const unsigned char>(data, size), "fuzz.npy",
                                    shape);
  return 0;
}
