// Gzip decompression (data::gunzip) with a 1 MiB cap, so that a bomb is refused at the cap
// (the loaders use data::kMaxGzipBytes, 1 GiB; the code path is the same).
#include <cstddef>
#include <cstdint>

#include "data/datasets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace darknight;
  auto out = data::gunzip({data, size}, size_t{1} << 20, "fuzz.gz");
  if (out.ok() && out.value().size() > (size_t{1} << 20)) __builtin_trap();  // the cap held?
  return 0;
}
