// ONNX model import: the bytes are parsed as a ModelProto (onnx_io::parse_model) and
// imported into a Graph (nn::import_onnx), which is then fused as the engines do. Every
// input must end in a clean Status; anything else (a crash, a sanitizer report, an uncaught
// exception, a huge allocation) is a bug.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "nn/onnx_import.h"
#include "onnx/onnx_io.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace darknight;
  auto model = onnx_io::parse_model({reinterpret_cast<const char*>(data), size}, "fuzz");
  if (!model.ok()) return 0;
  auto graph = nn::import_onnx(model.value());
  if (!graph.ok()) return 0;
  nn::Graph& g = graph.value();
  (void)g.macs();
  (void)g.summary();
  g.fuse();
  return 0;
}
