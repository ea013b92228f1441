// A private scratch directory per test: ctest runs tests in parallel, each in its own
// process, so fixed names under /tmp race (one test's TearDown removed another's files).
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <stdexcept>
#include <string>
#include <system_error>

namespace darknight::testing {

/// Creates a fresh, uniquely named directory (mkdtemp) and removes it with everything in
/// it when destroyed.
class ScratchDir {
 public:
  explicit ScratchDir(const std::string& stem = "dk_test") {
    std::string tmpl = (std::filesystem::temp_directory_path() / (stem + "_XXXXXX")).string();
    if (mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed: " + tmpl);
    path_ = tmpl;
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;

  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

}  // namespace darknight::testing
