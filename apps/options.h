// The options `darknight infer` and `darknight train` share, declared once, and their typed
// values (session/session.h): each subcommand adds only its own options.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>
#include <vector>

#include "common.h"
#include "session/modes.h"
#include "session/seeds.h"
#include "session/session.h"

namespace darknight::app {

/// The options `infer` and `train` share, as given on the command line.
struct RunOptions {
  std::string mode = "darknight";
  std::string accelerator = "cpu";
  double accelerator_timeout = 300;
  std::string worker_keys;  ///< --worker-keys FILE: `ENDPOINT KEY` lines
  bool tf32 = false;
  int k = 4;
  int64_t batch = 64;
  int64_t input_size = 32;
  int64_t classes = 10;
  std::string normalize;
  double noise_mean = 0.0;
  double noise_std = 100.0;
  std::string precision = "f32";
  std::string integrity = "none";
  std::string inject_faults;
  uint64_t seed = 0;
  bool seeded = false;
  bool insecure = false;  ///< allow noise-free blinding (tests of the audit only)
  std::string enclave_memory = "128MiB";
  int trusted_threads = 0;
  std::string report;
};

/// The subcommand whose options are being declared (where their help differs).
enum class Command { infer, train };
/// Adds the shared options to `c`: --mode (one of `modes`), the accelerator's, the
/// blinding's, the checks', the seed, the trusted runtime's and --report.
void add_run_options(CLI::App* c, RunOptions& o, Command cmd,
                     const std::vector<session::Mode>& modes);
/// The shared options, typed (parsed once); the caller sets the subcommand's own fields.
session::SessionOptions session_options(const RunOptions& o);

/// The run's seeds (session/seeds.h).
session::Seeds seeds_of(const RunOptions& o);
/// The model `model` of a run, with the parameters in `weights` (if any).
ModelSpec model_spec(const std::string& model, const std::string& weights, const RunOptions& o);

}  // namespace darknight::app
