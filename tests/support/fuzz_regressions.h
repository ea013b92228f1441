// The inputs the fuzzers once crashed on (tests/fixtures/fuzz-regressions/<target>/, see
// docs/fuzzing.md): each parser's tests run it on every one and expect a clean error.
#pragma once

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#ifndef DK_FIXTURES
#error "DK_FIXTURES must name tests/fixtures"
#endif

namespace darknight::testing {

/// (file name, bytes) of each saved input of fuzz target `target`, in name order (none
/// when the target never found a crash).
inline std::vector<std::pair<std::string, std::string>> fuzz_regressions(
    const std::string& target) {
  namespace fs = std::filesystem;
  std::vector<std::pair<std::string, std::string>> out;
  const fs::path dir = fs::path(DK_FIXTURES) / "fuzz-regressions" / target;
  if (!fs::is_directory(dir)) return out;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    std::ifstream f(e.path(), std::ios::binary);
    out.emplace_back(e.path().filename().string(),
                     std::string((std::istreambuf_iterator<char>(f)), {}));
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace darknight::testing
