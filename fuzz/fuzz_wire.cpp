// Worker messages (backends/remote/wire.h): the input is cut into frames, parsed with
// Message::parse, and its arguments are read with Args the way the worker reads each
// request (fuzz/wire_input.h). The wire code reports bad input by throwing
// darknight::Error (the server answers it with an error reply); anything else is a bug.
//
// Input: byte 0 = frame count (mod 4: 0..3), bytes 1-2 = the first frame's length
// (little-endian; the rest goes to the second frame, a third is empty).
#include "fuzz/wire_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace darknight::fuzz;
  if (size < 3) return 0;
  size_t first = 0;
  std::vector<zmq::message_t> frames = wire_frames(data, size, first);
  try {
    Message m = Message::parse(frames);
    read_args(m);
    // What parse accepted must serialise again to the same header.
    std::vector<zmq::message_t> again = m.frames();
    if (again.empty() || again[0].size() != first) __builtin_trap();
  } catch (const darknight::Error&) {
  }
  return 0;
}
