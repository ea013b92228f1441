#include "session/modes.h"

#include <fmt/format.h>

#include <cmath>

#include "protocol/error.h"

namespace darknight::session {

const std::vector<Mode>& all_modes() {
  static const std::vector<Mode> modes{Mode::darknight, Mode::plain, Mode::tee, Mode::slalom};
  return modes;
}

std::string to_string(Mode m) {
  switch (m) {
    case Mode::darknight:
      return "darknight";
    case Mode::plain:
      return "plain";
    case Mode::tee:
      return "tee";
    case Mode::slalom:
      return "slalom";
  }
  DK_ASSERT(false);
  return "";
}

Mode parse_mode(const std::string& s) {
  for (Mode m : all_modes())
    if (to_string(m) == s) return m;
  throw Error(fmt::format("unknown mode '{}' (darknight, plain, tee or slalom)", s));
}

DType parse_precision(const std::string& s) {
  if (s == "f32") return DType::f32;
  if (s == "f64") return DType::f64;
  throw Error(fmt::format("unknown precision '{}' (f32 or f64)", s));
}

std::string to_string(trusted::GradDecode g) {
  return g == trusted::GradDecode::folded ? "folded" : "trusted";
}

trusted::GradDecode parse_grad_decode(const std::string& s) {
  if (s == "trusted") return trusted::GradDecode::trusted;
  if (s == "folded") return trusted::GradDecode::folded;
  throw Error(fmt::format("unknown gradient decode '{}' (trusted or folded)", s));
}

std::optional<bool> parse_overlap(const std::string& s) {
  if (s == "auto") return std::nullopt;
  if (s == "on" || s == "off") return s == "on";
  throw Error(fmt::format("unknown overlap '{}' (auto, on or off)", s));
}

int64_t parse_bytes(const std::string& s) {
  size_t used = 0;
  double v = 0;
  try {
    v = std::stod(s, &used);
  } catch (const std::exception&) {
    throw Error(fmt::format("'{}' is not a size in bytes (e.g. 134217728, 128MiB, 1GiB)", s));
  }
  const std::string unit = s.substr(used);
  static const std::pair<const char*, double> units[] = {
      {"", 1},     {"B", 1},    {"KiB", 1024.0}, {"MiB", 1048576.0}, {"GiB", 1073741824.0},
      {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}};
  double mult = 0;
  for (const auto& [name, m] : units)
    if (unit == name) mult = m;
  if (mult == 0)
    throw Error(fmt::format("'{}': unknown unit '{}' (B, KiB, MiB, GiB, KB, MB, GB)", s, unit));
  DK_CHECK(v >= 0 && std::isfinite(v), "'{}' is not a size", s);
  return static_cast<int64_t>(v * mult);
}

}  // namespace darknight::session
