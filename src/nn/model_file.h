// DarKnight's own file format for trained models and training checkpoints: named f32
// tensors with a JSON header, checked by CRC-32 and written atomically (write to a
// temporary file, sync, rename). Files are untrusted input: every problem is reported.
//
//   "DKMODEL\0" | u32 version (1) | u64 header length | header JSON | tensor bytes | u32 CRC-32
//
// The header lists the tensors ({"name", "shape", "offset"}; little-endian f32 data) and
// free metadata ("meta"). The CRC covers everything before it.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "nn/graph.h"
#include "protocol/error.h"

namespace darknight::nn {

struct TensorFile {
  nlohmann::json meta = nlohmann::json::object();
  std::vector<std::pair<std::string, Tensor>> tensors;
  const Tensor* find(const std::string& name) const;
};

inline constexpr uint32_t kModelFileVersion = 1;

Status save_tensor_file(const std::string& path, const TensorFile& file);
/// Parses a whole file's bytes (`name` names it in errors). Checks the CRC, then that the
/// tensors (at most Shape::kMaxElements elements each) lie one after the other in the
/// data and fill it exactly, before allocating each.
Result<TensorFile> parse_tensor_file(std::string_view bytes, const std::string& name);
/// Reads a file and parses it (parse_tensor_file).
Result<TensorFile> load_tensor_file(const std::string& path);

/// A model's parameters by stable name (Node::origin): "<layer>.weight" (`weights(i)`
/// gives linear layer i's weights), "<layer>.bias", and for batch norms ".weight",
/// ".bias", ".running_mean", ".running_var".
void add_model_tensors(const Graph& g, const std::function<Tensor(int)>& weights, TensorFile& file);
/// Sets a model's parameters from a file's tensors (weights into g.weights(), biases and
/// batch norms into the nodes). Every parameter must be present with its shape.
Status apply_model_tensors(Graph& g, const TensorFile& file);

}  // namespace darknight::nn
