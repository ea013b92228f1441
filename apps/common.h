// Pieces shared by the darknight subcommands.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "accel/backend.h"
#include "backends/remote/remote_backend.h"
#include "data/datasets.h"
#include "nn/graph.h"
#include "session/modes.h"
#include "trusted/integrity.h"

namespace darknight::app {

double now();

/// Which model to build: a built-in name or an ONNX file, optionally with trained
/// parameters from a DarKnight model file (`darknight train --save`).
struct ModelSpec {
  std::string model = "vgg16";
  int64_t input_size = 32;
  int64_t classes = 10;
  uint64_t seed = 1;  ///< initial weights of built-in models
  std::string weights;
};
/// Builds or imports the model and applies `weights` when given; throws Error.
nn::Graph make_model(const ModelSpec& s);

/// Loads a dataset: "sealed:FILE" is opened (authenticated whole, then decrypted) inside
/// the trusted runtime (trusted::Enclave, keys under $DARKNIGHT_HOME); anything else goes
/// to data::load. Throws Error with the reason when the data cannot be used.
data::Dataset load_dataset(const std::string& spec, const data::LoadOptions& opts);

using session::parse_bytes;

int argmax(const float* p, int64_t n);

using WorkerFaults = accel::remote::RemoteBackend::WorkerFaults;
/// For an accelerator in a worker, what the worker says its `--inject-faults` did (the
/// trusted side cannot see faults injected there, only detect them); nullopt otherwise.
std::optional<WorkerFaults> worker_faults(accel::Backend& accelerator);

/// The report's `integrity` object for a run with `mode` checks and `faults` injected into
/// `operations` linear operations; with `worker`, also its `worker_reported` counts.
nlohmann::json integrity_report(const std::string& mode, const std::string& faults,
                                int64_t operations, const trusted::IntegrityCounters& c,
                                const std::optional<WorkerFaults>& worker = {});
/// The same counters as one line on stdout (and the worker's, on another).
void print_integrity(const std::string& mode, const trusted::IntegrityCounters& c,
                     const std::optional<WorkerFaults>& worker = {});

/// Warns on stderr, on every run, about options that weaken secrecy: `seeded` (--seed),
/// `insecure` (--insecure). Such runs' reports say `"insecure": true`.
void warn_insecure(bool seeded, bool insecure);

/// A progress bar on stderr, drawn only when stderr is a terminal.
class Progress {
 public:
  explicit Progress(std::string what);
  void update(int64_t done, int64_t total, const std::string& extra = "");

 private:
  std::string what_;
  bool tty_;
};

}  // namespace darknight::app
