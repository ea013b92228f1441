// Worker messages (accel/remote/wire.h): the input is cut into frames, parsed with
// Message::parse, and its arguments are read with Args the way the worker reads each
// request (shapes, dtypes, convolution and dense descriptions, their output shapes).
// The wire code reports bad input by throwing darknight::Error (the server answers it
// with an error reply); anything else is a bug.
//
// Input: byte 0 = frame count (mod 4: 0..3), bytes 1-2 = the first frame's length
// (little-endian; the rest goes to the second frame, a third is empty).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "accel/backend.h"
#include "accel/remote/wire.h"

namespace {

using namespace darknight;
using namespace darknight::accel;
using namespace darknight::accel::remote;

void read_args(const Message& m) {
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

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 3) return 0;
  const size_t count = data[0] % 4;
  const size_t first = std::min<size_t>(size - 3, size_t{data[1]} | size_t{data[2]} << 8);
  std::vector<zmq::message_t> frames;
  if (count >= 1) frames.emplace_back(data + 3, first);
  if (count >= 2) frames.emplace_back(data + 3 + first, size - 3 - first);
  if (count >= 3) frames.emplace_back();
  try {
    Message m = Message::parse(frames);
    read_args(m);
    // What parse accepted must serialise again to the same header.
    std::vector<zmq::message_t> again = m.frames();
    if (again.empty() || again[0].size() != first) __builtin_trap();
  } catch (const Error&) {
  }
  return 0;
}
