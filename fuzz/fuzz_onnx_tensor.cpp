// ONNX tensors (input_0.pb, initializers): the bytes are parsed as a TensorProto and
// converted both as data (onnx_io::to_tensor) and as shape arithmetic (to_int64s).
#include <cstddef>
#include <cstdint>

#include "onnx/onnx_io.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace darknight;
  auto t = onnx_io::parse_tensor_proto({reinterpret_cast<const char*>(data), size}, "fuzz");
  if (!t.ok()) return 0;
  (void)onnx_io::to_tensor(t.value());
  (void)onnx_io::to_int64s(t.value());
  return 0;
}
