// The worker's capture (`darknight worker --capture DIR`): every tensor it receives, as the
// operations consume it, written as .npy files with an index.jsonl (docs/protocol.md
// "Capture"), for audits that play the accelerator.
#pragma once

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <utility>

#include "protocol/tensor.h"

namespace darknight::accel::remote {

class Capture {
 public:
  /// Creates `dir` when missing and appends to its index.jsonl.
  explicit Capture(const std::string& dir);

  /// Writes one tensor; `group` > 0 labels its rows as mixtures of virtual batches.
  void write(const std::string& type, int64_t layer, int group, const Shape& shape, DType dtype,
             const void* data);

 private:
  std::filesystem::path dir_;
  std::ofstream index_;
  int64_t count_ = 0;
  std::map<std::pair<std::string, int64_t>, int64_t> batches_;
};

}  // namespace darknight::accel::remote
