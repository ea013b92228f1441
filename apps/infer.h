// `darknight infer`: private inference on a dataset, with the baselines side by side.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>

namespace darknight::app {

struct InferOptions {
  std::string model = "vgg16";
  std::string weights;
  std::string data = "synthetic";
  std::string mode = "darknight";
  std::string accelerator = "cpu";
  double accelerator_timeout = 300;
  bool tf32 = false;
  int k = 4;
  int64_t batch = 64;
  int64_t limit = 0;
  int64_t input_size = 32;
  int64_t classes = 10;
  double noise_mean = 0.0;
  double noise_std = 100.0;
  double mixing_scale = 1.0;
  std::string precision = "f32";
  bool compare_plain = false;
  uint64_t seed = 0;
  bool seeded = false;
  bool insecure = false;  ///< allow noise-free blinding (tests of the audit only)
  std::string report;
  std::string predictions;
  std::string enclave_memory = "128MiB";
  std::string normalize;
  int trusted_threads = 0;
  std::string overlap = "auto";
  int warmup = 0;
  std::string precompute = "0";
  std::string integrity = "none";
  std::string inject_faults;
};

/// Registers the subcommand's options on `app`.
CLI::App* add_infer_command(CLI::App& app, InferOptions& o);
int run_infer(const InferOptions& o);

}  // namespace darknight::app
