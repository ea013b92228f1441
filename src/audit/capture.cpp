#include "audit/capture.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <charconv>
#include <string_view>

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

Result<Eigen::MatrixXd> parse_npy(std::span<const unsigned char> bytes, const std::string& name,
                                  std::vector<int64_t>& shape) {
  const auto* b = bytes.data();
  if (bytes.size() < 10 || std::memcmp(b, "\x93NUMPY", 6) != 0 || (b[6] != 1 && b[6] != 2))
    return Status::error(name + ": not a .npy file of format 1 or 2");
  const size_t prefix = b[6] == 1 ? 10 : 12;
  if (bytes.size() < prefix) return Status::error(name + ": truncated header");
  const size_t len = b[6] == 1 ? size_t{b[8]} | size_t{b[9]} << 8
                               : size_t{b[8]} | size_t{b[9]} << 8 | size_t{b[10]} << 16 |
                                     size_t{b[11]} << 24;
  if (len > 65536 || bytes.size() < prefix + len) return Status::error(name + ": bad header length");
  const std::string_view header(reinterpret_cast<const char*>(b + prefix), len);
  // The header is a Python dict literal; NumPy writes these three keys.
  const auto value = [&](std::string_view key) -> std::string_view {
    const size_t at = header.find(key);
    if (at == std::string_view::npos) return {};
    size_t v = header.find_first_not_of(' ', at + key.size());
    return v == std::string_view::npos ? std::string_view{} : header.substr(v);
  };
  const std::string_view descr = value("'descr':"), order = value("'fortran_order':"),
                         dims = value("'shape':");
  const bool f64 = descr.substr(0, 5) == "'<f8'";
  if ((!f64 && descr.substr(0, 5) != "'<f4'") || order.substr(0, 5) != "False" ||
      dims.substr(0, 1) != "(")
    return Status::error(name + ": only little-endian float32/float64 C-order arrays are read");
  shape.clear();
  int64_t n = 1;
  size_t i = 1;
  for (;;) {
    while (i < dims.size() && (dims[i] == ' ' || dims[i] == ',')) ++i;
    if (i < dims.size() && dims[i] == ')') break;
    int64_t v = 0;
    const auto [end, ec] = std::from_chars(dims.data() + i, dims.data() + dims.size(), v);
    if (ec != std::errc() || v < 0 || v > (int64_t{1} << 40) || shape.size() == 8)
      return Status::error(name + ": unsupported shape");
    i = static_cast<size_t>(end - dims.data());
    shape.push_back(v);
    constexpr int64_t kCap = int64_t{1} << 40;  // past every limit below
    n = v != 0 && n > kCap / v ? kCap : n * v;
  }
  if (shape.empty()) return Status::error(name + ": unsupported shape");
  const size_t want = static_cast<size_t>(n) * (f64 ? 8 : 4);
  if (n > (int64_t{1} << 32) || bytes.size() - prefix - len != want)
    return Status::error(fmt::format("{}: holds {} bytes of data, its shape needs {}", name,
                                     bytes.size() - prefix - len, want));
  const int64_t rows = shape[0], rest = rows == 0 ? 0 : n / rows;
  // Row-major storage: rows are the first dimension.
  Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> out(rows, rest);
  const unsigned char* data = b + prefix + len;
  for (int64_t i = 0; i < n; ++i) {
    if (f64) {
      std::memcpy(out.data() + i, data + i * 8, 8);
    } else {
      float v;
      std::memcpy(&v, data + i * 4, 4);
      out.data()[i] = v;
    }
  }
  if (!out.allFinite()) return Status::error(name + ": holds values that are not finite");
  return Eigen::MatrixXd(out);
}

Result<Eigen::MatrixXd> read_npy(const std::string& path, std::vector<int64_t>& shape) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return Status::error("cannot open " + path);
  const std::vector<unsigned char> bytes((std::istreambuf_iterator<char>(f)), {});
  return parse_npy(bytes, path, shape);
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
