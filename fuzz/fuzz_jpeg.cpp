// Image-folder JPEG decode (data::decode_jpeg: libjpeg-turbo, then resize and crop to 16x16).
// The fuzzer caps declared images at 4 megapixels (the loader: data::kMaxJpegPixels, 64)
// so that each run stays fast; the check is the same code.
#include <cstddef>
#include <cstdint>

#include "data/datasets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace darknight;
  (void)data::decode_jpeg({data, size}, 16, "fuzz.jpg", int64_t{1} << 22);
  return 0;
}
