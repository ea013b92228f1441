#include "audit/capture.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>

namespace darknight::audit {
namespace {

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

Result<Entry> parse_line(const std::string& line, const std::string& where) {
  try {
    const auto j = nlohmann::json::parse(line);
    Entry e;
    e.file = j.at("file").get<std::string>();
    e.type = j.at("type").get<std::string>();
    e.layer = j.at("layer").get<int64_t>();
    e.shape = j.at("shape").get<std::vector<int64_t>>();
    e.f64 = j.at("dtype").get<std::string>() == "float64";
    if (j.contains("mixtures") && j["mixtures"].is_number_integer()) {
      e.mixtures = j["mixtures"].get<int>();
      e.first_batch = j.at("virtual_batch").get<int64_t>();
    }
    if (e.file.find('/') != std::string::npos || e.shape.empty() || e.mixtures < 0 ||
        std::any_of(e.shape.begin(), e.shape.end(), [](int64_t d) { return d < 0; }))
      return Status::error(where + ": malformed entry");
    return e;
  } catch (const nlohmann::json::exception& ex) {
    return Status::error(fmt::format("{}: not a capture index line ({})", where, ex.what()));
  }
}

}  // namespace

Kind Entry::kind() const {
  if (ends_with(type, "forward.src")) return Kind::input;
  if (ends_with(type, ".diff_dst")) return Kind::delta;
  return Kind::other;
}

int64_t Entry::row_size() const {
  int64_t n = 1;
  for (size_t i = 1; i < shape.size(); ++i) n *= shape[i];
  return n;
}

Result<Eigen::MatrixXd> read_npy(const std::string& path, std::vector<int64_t>& shape) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return Status::error("cannot open " + path);
  char magic[8];
  f.read(magic, 8);
  if (!f || std::memcmp(magic, "\x93NUMPY", 6) != 0 || (magic[6] != 1 && magic[6] != 2))
    return Status::error(path + ": not a .npy file of format 1 or 2");
  uint32_t len = 0;
  f.read(reinterpret_cast<char*>(&len), magic[6] == 1 ? 2 : 4);
  if (!f || len > 65536) return Status::error(path + ": bad header length");
  std::string header(len, '\0');
  f.read(header.data(), len);
  std::smatch m;
  static const std::regex re(
      R"('descr':\s*'<f([48])',\s*'fortran_order':\s*False,\s*'shape':\s*\(([0-9, ]*)\))");
  if (!f || !std::regex_search(header, m, re))
    return Status::error(path + ": only little-endian float32/float64 C-order arrays are read");
  const bool f64 = m[1] == "8";
  shape.clear();
  const std::string dims = m[2];
  static const std::regex num("[0-9]+");
  for (auto it = std::sregex_iterator(dims.begin(), dims.end(), num); it != std::sregex_iterator();
       ++it)
    shape.push_back(std::stoll(it->str()));
  if (shape.empty() || shape.size() > 8) return Status::error(path + ": unsupported shape");
  int64_t rest = 1;
  for (size_t i = 1; i < shape.size(); ++i) rest *= shape[i];
  if (shape[0] * rest > (int64_t{1} << 32)) return Status::error(path + ": too large");
  const int64_t n = shape[0] * rest;
  const auto pos = f.tellg();
  f.seekg(0, std::ios::end);
  if (f.tellg() - pos != n * (f64 ? 8 : 4))
    return Status::error(fmt::format("{}: holds {} bytes of data, its shape needs {}", path,
                                     static_cast<int64_t>(f.tellg() - pos), n * (f64 ? 8 : 4)));
  f.seekg(pos);
  // Row-major storage: rows are the first dimension.
  Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> out(shape[0], rest);
  if (f64) {
    f.read(reinterpret_cast<char*>(out.data()), n * 8);
  } else {
    std::vector<float> buf(static_cast<size_t>(n));
    f.read(reinterpret_cast<char*>(buf.data()), n * 4);
    for (int64_t i = 0; i < n; ++i) out.data()[i] = buf[static_cast<size_t>(i)];
  }
  if (!f) return Status::error(path + ": truncated");
  if (!out.allFinite()) return Status::error(path + ": holds values that are not finite");
  return Eigen::MatrixXd(out);
}

Result<Captures> Captures::open(const std::vector<std::string>& dirs) {
  if (dirs.empty()) return Status::error("no capture directory given");
  Captures c;
  c.dirs_ = dirs;
  for (size_t d = 0; d < dirs.size(); ++d) {
    const std::string index = (std::filesystem::path(dirs[d]) / "index.jsonl").string();
    std::ifstream f(index);
    if (!f) return Status::error(fmt::format("{}: not a capture (no index.jsonl)", dirs[d]));
    std::string line;
    for (int64_t n = 0; std::getline(f, line); ++n) {
      if (line.empty()) continue;
      auto e = parse_line(line, fmt::format("{} line {}", index, n + 1));
      if (!e.ok()) return e.status();
      e.value().capture = d;
      e.value().order = n;
      c.entries_.push_back(std::move(e).value());
    }
  }
  return c;
}

Result<Eigen::MatrixXd> Captures::load(const Entry& e) const {
  std::vector<int64_t> shape;
  const std::string path = (std::filesystem::path(dirs_[e.capture]) / e.file).string();
  auto m = read_npy(path, shape);
  if (m.ok() && shape != e.shape)
    return Status::error(path + ": its shape differs from the one in index.jsonl");
  return m;
}

Result<std::vector<Group>> Captures::groups(const Entry& e) const {
  auto whole = load(e);
  if (!whole.ok()) return whole.status();
  const Eigen::MatrixXd& x = whole.value();
  std::vector<Group> out;
  if (e.mixtures == 0) {
    out.push_back(Group{&e, -1, 0, x});
    return out;
  }
  for (int64_t r = 0; r < x.rows(); r += e.mixtures) {
    const int64_t n = std::min<int64_t>(e.mixtures, x.rows() - r);
    out.push_back(Group{&e, e.first_batch + r / e.mixtures, r, x.middleRows(r, n)});
  }
  // Pool the rows other captures hold of the same virtual batches.
  for (const Entry& o : entries_) {
    if (o.capture == e.capture || o.type != e.type || o.layer != e.layer || o.mixtures == 0)
      continue;
    const int64_t nb = (o.rows() + o.mixtures - 1) / o.mixtures;
    Eigen::MatrixXd y;
    for (Group& g : out) {
      if (g.batch < o.first_batch || g.batch >= o.first_batch + nb) continue;
      if (y.size() == 0) {
        auto yo = load(o);
        if (!yo.ok()) return yo.status();
        y = std::move(yo).value();
      }
      const int64_t r = (g.batch - o.first_batch) * o.mixtures;
      const int64_t n = std::min<int64_t>(o.mixtures, y.rows() - r);
      if (y.cols() != g.rows.cols()) continue;
      Eigen::MatrixXd both(g.rows.rows() + n, g.rows.cols());
      both << g.rows, y.middleRows(r, n);
      g.rows = std::move(both);
    }
  }
  return out;
}

Captures::Pairing Captures::forward_of(const Entry& delta, int64_t layer) const {
  Pairing p;
  for (const Entry& e : entries_) {
    if (e.capture != delta.capture || e.order >= delta.order) continue;
    if (e.kind() == Kind::input && e.layer == layer && e.mixtures == delta.mixtures) {
      p = Pairing{&e, 0};
    } else if (p.forward != nullptr && e.type == delta.type && e.layer == delta.layer) {
      p.first_row += e.rows();
    }
  }
  if (p.forward != nullptr && p.forward->rows() < p.first_row + delta.rows()) return {};
  return p;
}

}  // namespace darknight::audit
