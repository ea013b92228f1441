// Fashion-MNIST's IDX files, decompressed (data::decode_idx). The input holds both files:
// a 2-byte little-endian length L, L bytes of the label file, then the image file.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>

#include "data/datasets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace darknight;
  if (size < 2) return 0;
  const size_t l = std::min<size_t>(size - 2, size_t{data[0]} | size_t{data[1]} << 8);
  const std::span<const unsigned char> labels(data + 2, l), images(data + 2 + l, size - 2 - l);
  (void)data::decode_idx(images, labels, "images", "labels");
  return 0;
}
