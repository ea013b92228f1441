#include "nn/model_file.h"

#include <fcntl.h>
#include <unistd.h>
#include <zlib.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include "protocol/checked.h"

namespace darknight::nn {
namespace {

constexpr char kMagic[8] = {'D', 'K', 'M', 'O', 'D', 'E', 'L', '\0'};

template <typename T>
void put(std::string& out, T v) {
  out.append(reinterpret_cast<const char*>(&v), sizeof v);
}

template <typename T>
bool take(std::string_view in, size_t& pos, T& v) {
  if (in.size() < pos + sizeof v) return false;
  std::memcpy(&v, in.data() + pos, sizeof v);
  pos += sizeof v;
  return true;
}

/// Visits (name, tensor) for every parameter of the graph.
template <typename F>
void for_each_param(Graph& g, F&& f) {
  for (size_t i = 0; i < g.nodes().size(); ++i) {
    Node& n = g.mutable_node(static_cast<int>(i));
    if (n.is_linear()) {
      f(n.origin + ".weight", nullptr, n.weights);
      if (!n.epilogue.shift.empty()) f(n.origin + ".bias", &n.epilogue.shift, -1);
    }
    if (n.op == Op::batch_norm && n.bn.present()) {
      f(n.origin + ".weight", &n.bn.gamma, -1);
      f(n.origin + ".bias", &n.bn.beta, -1);
      f(n.origin + ".running_mean", &n.bn.mean, -1);
      f(n.origin + ".running_var", &n.bn.var, -1);
    }
  }
}

}  // namespace

const Tensor* TensorFile::find(const std::string& name) const {
  for (const auto& [n, t] : tensors)
    if (n == name) return &t;
  return nullptr;
}

Status save_tensor_file(const std::string& path, const TensorFile& file) {
  nlohmann::json header;
  header["meta"] = file.meta;
  header["tensors"] = nlohmann::json::array();
  uint64_t offset = 0;
  for (const auto& [name, t] : file.tensors) {
    header["tensors"].push_back(
        {{"name", name},
         {"shape", std::vector<int64_t>(t.shape().dims().begin(), t.shape().dims().end())},
         {"offset", offset}});
    offset += t.bytes();
  }
  const std::string h = header.dump();
  std::string out(kMagic, sizeof kMagic);
  put(out, kModelFileVersion);
  put(out, static_cast<uint64_t>(h.size()));
  out += h;
  for (const auto& [name, t] : file.tensors)
    out.append(reinterpret_cast<const char*>(t.data()), t.bytes());
  put(out,
      static_cast<uint32_t>(crc32_z(0L, reinterpret_cast<const Bytef*>(out.data()), out.size())));
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) return Status::error(fmt::format("cannot write {}", tmp));
    // For tests of kill -9 while saving (tests/kill_resume_test.sh): half the file, a pause
    // of DARKNIGHT_TEST_SLOW_SAVE_MS milliseconds, then the rest.
    const char* pause_ms = std::getenv("DARKNIGHT_TEST_SLOW_SAVE_MS");
    const size_t half = pause_ms ? out.size() / 2 : 0;
    f.write(out.data(), static_cast<std::streamsize>(half));
    if (pause_ms) {
      f.flush();
      std::this_thread::sleep_for(std::chrono::milliseconds(std::atoi(pause_ms)));
    }
    f.write(out.data() + half, static_cast<std::streamsize>(out.size() - half));
    f.flush();
    if (!f) return Status::error(fmt::format("writing {} failed", tmp));
  }
  // Make the data durable before the rename makes it visible.
  if (FILE* fp = std::fopen(tmp.c_str(), "rb")) {
    ::fsync(fileno(fp));
    std::fclose(fp);
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) return Status::error(fmt::format("cannot rename {} to {}: {}", tmp, path, ec.message()));
  // And the rename durable: the directory entry too.
  const std::filesystem::path dir = std::filesystem::path(path).parent_path();
  if (const int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY); fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
  return {};
}

Result<TensorFile> parse_tensor_file(std::string_view in, const std::string& name) {
  auto bad = [&](const std::string& why) {
    return Status::error(fmt::format("{}: not a valid DarKnight model file: {}", name, why));
  };
  if (in.size() < sizeof kMagic + 16 || std::memcmp(in.data(), kMagic, sizeof kMagic) != 0)
    return bad("bad magic");
  uint32_t crc_stored;
  std::memcpy(&crc_stored, in.data() + in.size() - 4, 4);
  const auto crc =
      static_cast<uint32_t>(crc32_z(0L, reinterpret_cast<const Bytef*>(in.data()), in.size() - 4));
  if (crc != crc_stored) return bad("CRC mismatch (truncated or corrupted)");
  size_t pos = sizeof kMagic;
  uint32_t version = 0;
  uint64_t hlen = 0;
  take(in, pos, version);
  take(in, pos, hlen);
  if (version != kModelFileVersion)
    return bad(fmt::format("version {} (this build reads {})", version, kModelFileVersion));
  if (hlen > in.size() - pos - 4) return bad("header length past the end");
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(in.substr(pos, hlen));
  } catch (const std::exception& e) {
    return bad(std::string("header is not JSON: ") + e.what());
  }
  pos += hlen;
  const uint64_t data_size = in.size() - 4 - pos;
  TensorFile out;
  try {
    out.meta = header.at("meta");
    const auto& tensors = header.at("tensors");
    if (!tensors.is_array()) return bad("'tensors' is not a list");
    // The tensors follow each other, as written, and fill the data exactly: nothing is
    // allocated for bytes the file does not hold, nor twice for the same bytes.
    uint64_t next = 0;
    for (const auto& t : tensors) {
      const auto tname = t.at("name").get<std::string>();
      const auto dims = t.at("shape").get<std::vector<int64_t>>();
      const auto offset = t.at("offset").get<uint64_t>();
      auto shape = to_shape(dims, fmt::format("tensor '{}'", tname));
      if (!shape.ok()) return bad(shape.status().message());
      const auto bytes = static_cast<uint64_t>(shape.value().numel()) * 4;
      if (offset != next)
        return bad(fmt::format("tensor '{}' starts at byte {} of the data, expected {}", tname,
                               offset, next));
      if (bytes > data_size - offset)
        return bad(fmt::format("tensor '{}' lies past the end of the data", tname));
      Tensor v = Tensor::uninitialized(shape.value());
      if (bytes) std::memcpy(v.data(), in.data() + pos + offset, bytes);
      out.tensors.emplace_back(tname, std::move(v));
      next = offset + bytes;
    }
    if (next != data_size)
      return bad(fmt::format("{} bytes of data follow the last tensor", data_size - next));
  } catch (const nlohmann::json::exception& e) {
    return bad(std::string("malformed header: ") + e.what());
  }
  return out;
}

Result<TensorFile> load_tensor_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return Status::error(fmt::format("cannot open {}", path));
  const std::string in((std::istreambuf_iterator<char>(f)), {});
  if (f.bad()) return Status::error(fmt::format("cannot read {}", path));
  return parse_tensor_file(in, path);
}

void add_model_tensors(const Graph& g, const std::function<Tensor(int)>& weights,
                       TensorFile& file) {
  for_each_param(const_cast<Graph&>(g), [&](const std::string& name, Tensor* t, int w) {
    file.tensors.emplace_back(name, t ? t->clone() : weights(w));
  });
}

Status apply_model_tensors(Graph& g, const TensorFile& file) {
  Status status;
  for_each_param(g, [&](const std::string& name, Tensor* t, int w) {
    if (!status.ok()) return;
    const Tensor* v = file.find(name);
    const Shape want = t ? t->shape() : g.weight_shapes()[static_cast<size_t>(w)];
    if (!v) {
      status = Status::error(fmt::format("the model file has no tensor '{}'", name));
    } else if (v->numel() != want.numel()) {
      status = Status::error(fmt::format("tensor '{}' is {} in the file, the model needs {}", name,
                                         v->shape().str(), want.str()));
    } else {
      Tensor c = v->clone();
      c.reshape(want);
      (t ? *t : g.weights()[static_cast<size_t>(w)]) = std::move(c);
    }
  });
  if (!status.ok()) return status;
  for (size_t i = 0; i < g.nodes().size(); ++i) {
    Node& n = g.mutable_node(static_cast<int>(i));
    if (n.op == Op::batch_norm && n.bn.present()) refresh_batch_norm(n);
  }
  return status;
}

}  // namespace darknight::nn
