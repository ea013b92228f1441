// The wire fuzzer's input layout and the worker's reading of each request, shared by the
// fuzzer (fuzz/fuzz_wire.cpp) and the regression test of the inputs it found
// (tests/accel/wire_test.cpp).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "accel/backend.h"
#include "backends/remote/wire.h"

namespace darknight::fuzz {

using namespace darknight::accel;
using namespace darknight::accel::remote;

/// Byte 0 = frame count (mod 4: 0..3), bytes 1-2 = the first frame's length (little-endian;
/// the rest goes to the second frame, a third is empty). `first`: that length, clamped.
inline std::vector<zmq::message_t> wire_frames(const uint8_t* data, size_t size, size_t& first) {
  std::vector<zmq::message_t> frames;
  first = 0;
  if (size < 3) return frames;
  const size_t count = data[0] % 4;
  first = std::min<size_t>(size - 3, size_t{data[1]} | size_t{data[2]} << 8);
  if (count >= 1) frames.emplace_back(data + 3, first);
  if (count >= 2) frames.emplace_back(data + 3 + first, size - 3 - first);
  if (count >= 3) frames.emplace_back();
  return frames;
}

/// Reads a request's arguments as the worker does (server.cpp): shapes, dtypes,
/// convolution and dense descriptions and their output shapes; throws Error on anything
/// malformed.
inline void read_args(const Message& m) {
  Args a(m);
  switch (m.type) {
    case Type::hello:
      a.integer("version");
      a.integer("mixtures_per_batch", 0, 1 << 20);
      break;
    case Type::alloc: {
      a.integer("id");
      const DType t = a.dtype("dtype");
      const Shape s = a.shape("shape");
      (void)(s.numel() * static_cast<int64_t>(dtype_size(t)));
      break;
    }
    case Type::view:
      a.integer("id"), a.integer("base"), a.integer("offset");
      (void)a.shape("shape");
      break;
    case Type::conv2d_forward:
    case Type::conv2d_backward_data:
    case Type::conv2d_backward_weights: {
      a.integer("layer", -1, int64_t{1} << 32);
      const ConvDesc d = a.conv("conv");
      (void)d.weight_shape();
      const Shape src = a.shape("src");  // the buffer's shape, in the worker
      (void)d.dst_shape(src);
      break;
    }
    case Type::dense_forward:
    case Type::dense_backward_data:
    case Type::dense_backward_weights: {
      a.integer("layer", -1, int64_t{1} << 32);
      const DenseDesc d = a.dense();
      (void)d.weight_shape();
      (void)d.dst_shape(a.shape("src"));
      break;
    }
    default:
      while (true) {
        try {
          a.integer("any");
        } catch (const Error&) {
          break;
        }
      }
      for (size_t i = 0; i < m.reals.size(); ++i) a.real("any");
      break;
  }
  a.done();
  (void)type_name(m.type);
}

}  // namespace darknight::fuzz
