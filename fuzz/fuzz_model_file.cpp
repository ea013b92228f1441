// DarKnight model files (.dkm, nn::parse_tensor_file), then applied to a small model
// (nn::apply_model_tensors). The input is a file without its final CRC-32: the target
// appends the right one, so that the fuzzer reaches the header and the tensors (a random
// CRC is refused first, and the fuzzer would learn nothing past it).
#include <zlib.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "nn/graph.h"
#include "nn/model_file.h"

namespace {

using namespace darknight;

/// input [1, 4, 4] -> conv 2x3x3 -> batch norm -> flatten -> dense 3.
nn::Graph tiny_model() {
  nn::Graph g(Shape{1, 4, 4});
  accel::ConvDesc d;
  d.in_channels = 1, d.out_channels = 2, d.kernel_h = 3, d.kernel_w = 3;
  int x = g.conv(0, d, Tensor(Shape{2, 1, 3, 3}), Tensor(Shape{2}), "conv");
  nn::BatchNormParams p;
  p.gamma = Tensor(Shape{2}), p.beta = Tensor(Shape{2}), p.mean = Tensor(Shape{2});
  p.var = Tensor(Shape{2});
  p.var.fill(1.0f);
  x = g.batch_norm(x, std::move(p), "bn");
  x = g.unary(nn::Op::flatten, x, "flatten");
  g.dense(x, 3, Tensor(Shape{3, 8}), Tensor(Shape{3}), "fc");
  return g;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string file(reinterpret_cast<const char*>(data), size);
  const auto crc = static_cast<uint32_t>(crc32_z(0L, data, size));
  file.append(reinterpret_cast<const char*>(&crc), sizeof crc);
  auto parsed = nn::parse_tensor_file(file, "fuzz.dkm");
  if (!parsed.ok()) return 0;
  nn::Graph g = tiny_model();
  (void)nn::apply_model_tensors(g, parsed.value());
  (void)parsed.value().meta.dump();
  return 0;
}
