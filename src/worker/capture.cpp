#include "worker/capture.h"

#include <fmt/format.h>

#include <nlohmann/json.hpp>
#include <vector>

namespace darknight::accel::remote {

Capture::Capture(const std::string& dir) : dir_(dir) {
  std::filesystem::create_directories(dir_);
  index_.open(dir_ / "index.jsonl", std::ios::app);
  DK_CHECK(index_.good(), "capture: cannot write {}", (dir_ / "index.jsonl").string());
}

void Capture::write(const std::string& type, int64_t layer, int group, const Shape& shape,
                    DType dtype, const void* data) {
  const std::string name = fmt::format("{:06d}.npy", count_++);
  std::ofstream f(dir_ / name, std::ios::binary);
  std::string dims;
  for (int64_t d : shape.dims()) dims += fmt::format("{}, ", d);
  if (shape.rank() > 1) dims.resize(dims.size() - 2);
  std::string header = fmt::format("{{'descr': '<{}', 'fortran_order': False, 'shape': ({}), }}",
                                   dtype == DType::f32 ? "f4" : "f8", dims);
  header.append(63 - (10 + header.size()) % 64, ' ');
  header += '\n';
  const uint16_t len = static_cast<uint16_t>(header.size());
  f.write("\x93NUMPY\x01\x00", 8);
  f.write(reinterpret_cast<const char*>(&len), 2);
  f << header;
  f.write(static_cast<const char*>(data),
          static_cast<std::streamsize>(shape.numel() * static_cast<int64_t>(dtype_size(dtype))));
  DK_CHECK(f.good(), "capture: cannot write {}", (dir_ / name).string());
  nlohmann::json line = {{"file", name},
                         {"type", type},
                         {"layer", layer},
                         {"shape", std::vector<int64_t>(shape.dims().begin(), shape.dims().end())},
                         {"dtype", dtype == DType::f32 ? "float32" : "float64"}};
  if (group > 0) {
    int64_t& next = batches_[{type, layer}];
    line["virtual_batch"] = next;
    line["mixture"] = 0;
    line["mixtures"] = group;
    next += (shape[0] + group - 1) / group;
  } else {
    line["virtual_batch"] = nullptr;
    line["mixture"] = nullptr;
  }
  index_ << line.dump() << '\n';
  index_.flush();
}

}  // namespace darknight::accel::remote
