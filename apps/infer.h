// `darknight infer`: private inference on a dataset, with the baselines side by side.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>

#include "options.h"

namespace darknight::app {

struct InferOptions {
  RunOptions run;  ///< the options shared with `train` (options.h)
  std::string model = "vgg16";
  std::string weights;
  std::string data = "synthetic";
  int64_t limit = 0;
  double mixing_scale = 1.0;
  bool compare_plain = false;
  std::string predictions;
  std::string overlap = "auto";
  int warmup = 0;
  std::string precompute = "0";
};

/// Registers the subcommand's options on `app`.
CLI::App* add_infer_command(CLI::App& app, InferOptions& o);
int run_infer(const InferOptions& o);

}  // namespace darknight::app
