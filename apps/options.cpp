#include "options.h"

#include <fmt/format.h>

#include <algorithm>

#include "backends/remote/curve.h"
#include "registry/registry.h"

namespace darknight::app {

session::Seeds seeds_of(const RunOptions& o) {
  return session::Seeds(o.seeded ? std::optional(o.seed) : std::nullopt);
}

ModelSpec model_spec(const std::string& model, const std::string& weights, const RunOptions& o) {
  ModelSpec s;
  s.model = model, s.input_size = o.input_size, s.classes = o.classes;
  s.seed = seeds_of(o).base();
  s.weights = weights;
  return s;
}

namespace {

/// --accelerator (a backend name or a worker's endpoint), --accelerator-timeout and --tf32.
void add_accelerator_options(CLI::App* c, RunOptions& o) {
  c->add_option("--accelerator", o.accelerator,
                "Untrusted accelerator: a backend in this process (" +
                    fmt::format("{}", fmt::join(accel::backend_names(), ", ")) +
                    ") or a `darknight worker` at tcp://HOST:PORT or ipc://PATH")
      ->check([](const std::string& v) -> std::string {
        const auto names = accel::backend_names();
        if (accel::is_remote(v) || std::find(names.begin(), names.end(), v) != names.end())
          return "";
        return fmt::format("'{}' is neither a backend ({}) nor tcp://HOST:PORT or ipc://PATH", v,
                           fmt::join(names, ", "));
      })
      ->capture_default_str();
  c->add_option("--accelerator-timeout", o.accelerator_timeout,
                "Seconds to wait for one reply of a remote worker before failing")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  c->add_option("--worker-keys", o.worker_keys,
                "File of `ENDPOINT KEY` lines: the CurveZMQ public key of each worker "
                "(`darknight worker --keygen`); links to them are then encrypted and the workers "
                "authenticated (default: plain links)")
      ->check(CLI::ExistingFile);
  c->add_flag("--tf32", o.tf32,
              "cuda: let f32 convolutions and products use TF32 tensor cores (faster; inputs "
              "rounded to 10 mantissa bits, which costs decode precision: docs/performance.md)");
}

/// --mode, one of `modes`.
void add_mode_option(CLI::App* c, RunOptions& o, const std::vector<session::Mode>& modes) {
  std::vector<std::string> names, help;
  for (session::Mode m : modes) {
    names.push_back(session::to_string(m));
    help.push_back(names.back() + [m] {
      switch (m) {
        case session::Mode::darknight:
          return "";
        case session::Mode::plain:
          return " (unprotected)";
        case session::Mode::tee:
          return " (all in the enclave)";
        case session::Mode::slalom:
          return " (the Slalom baseline: 8-bit fixed point, one-time masks in F_p, one input at "
                 "a time)";
      }
      return "";
    }());
  }
  c->add_option("--mode", o.mode, fmt::format("{}", fmt::join(help, " | ")))
      ->check(CLI::IsMember(names))
      ->capture_default_str();
}

/// The blinding's options: -k, the noise, --precision, --insecure.
void add_blinding_options(CLI::App* c, RunOptions& o, Command cmd) {
  c->add_option("-k,--virtual-batch", o.k, "Inputs mixed together (K, 1..16)")
      ->check(CLI::Range(1, 16))
      ->capture_default_str();
  c->add_option("--noise-mean", o.noise_mean, "Mean of the blinding noise")->capture_default_str();
  c->add_option("--noise-std", o.noise_std, "Standard deviation of the blinding noise")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  c->add_option("--precision", o.precision,
                cmd == Command::train ? "Element type of the mixtures (and of plain/tee)"
                                      : "Element type of the mixtures")
      ->check(CLI::IsMember({"f32", "f64"}))
      ->capture_default_str();
  c->add_flag("--insecure", o.insecure,
              "Allow blinding noise that leaves the mixtures noise-free (--noise-std 0; with K = "
              "1 each mixture is then a scaled copy of its input): for tests of the audit only");
}

/// --integrity and --inject-faults.
void add_integrity_options(CLI::App* c, RunOptions& o, Command cmd) {
  c->add_option("--integrity", o.integrity,
                cmd == Command::train
                    ? "Check the accelerator's results: none | redundant (the paper's K+2-th "
                      "mixture, extended to the backward pass) | freivalds; both need "
                      "--grad-decode folded; docs/SECURITY.md"
                    : "Check the accelerator's results: none | redundant (the paper's K+2-th "
                      "mixture) | freivalds (secret random projection); docs/SECURITY.md")
      ->check(CLI::IsMember({"none", "redundant", "freivalds"}))
      ->capture_default_str();
  c->add_option("--inject-faults", o.inject_faults,
                std::string("KIND:RATE[:SEED]: corrupt that fraction of the in-process "
                            "accelerator's linear operations (bitflip, scale, wrong-weights, "
                            "drop, adversarial)") +
                    (cmd == Command::infer ? ", to measure the integrity checks" : ""));
}

/// The model's shape and inputs, the trusted runtime's, --seed and --report.
void add_runtime_options(CLI::App* c, RunOptions& o, Command cmd) {
  const bool train = cmd == Command::train;
  c->add_option("--batch", o.batch, train ? "Images per SGD step (B)" : "Images per batch (B)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  c->add_option("--input-size", o.input_size, "Input height/width of built-in models")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  c->add_option("--classes", o.classes, "Classes of built-in models")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  c->add_option("--normalize", o.normalize, "Per-channel MEAN[,MEAN..]:STD[,STD..] of the inputs");
  c->add_option("--enclave-memory", o.enclave_memory,
                train ? "Trusted memory budget"
                      : "Trusted memory budget (darknight: enforced; tee: reported)")
      ->capture_default_str();
  c->add_option("--trusted-threads", o.trusted_threads,
                train ? "Threads of the trusted side (0: all)"
                      : "Threads of the trusted side (0: all cores; tee always uses 1)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  c->add_option("--seed", o.seed,
                train ? "Seed weights, data order, augmentation and the trusted generator "
                        "(reproducible; weakens secrecy)"
                      : "Seed the model weights and the trusted generator (reproducible runs; "
                        "weakens secrecy)")
      ->each([&o](const std::string&) { o.seeded = true; });
  c->add_option("--report", o.report, train ? "JSON report" : "Write a JSON report to this file");
}

}  // namespace

void add_run_options(CLI::App* c, RunOptions& o, Command cmd,
                     const std::vector<session::Mode>& modes) {
  add_mode_option(c, o, modes);
  add_accelerator_options(c, o);
  add_blinding_options(c, o, cmd);
  add_integrity_options(c, o, cmd);
  add_runtime_options(c, o, cmd);
}

session::SessionOptions session_options(const RunOptions& o) {
  session::SessionOptions s;
  s.mode = session::parse_mode(o.mode);
  s.accelerator = o.accelerator;
  s.accelerator_timeout = o.accelerator_timeout;
  if (!o.worker_keys.empty()) {
    const auto keys = accel::remote::read_worker_keys(o.worker_keys).value();
    DK_CHECK(accel::is_remote(o.accelerator),
             "--worker-keys is for remote workers; --accelerator "
             "{} runs in this process",
             o.accelerator);
    const auto it = keys.find(o.accelerator);
    DK_CHECK(it != keys.end(), "{} holds no key for the worker at {}", o.worker_keys,
             o.accelerator);
    s.worker_key = it->second;
  }
  s.tf32 = o.tf32;
  s.k = o.k;
  s.precision = session::parse_precision(o.precision);
  s.noise = {o.noise_mean, o.noise_std};
  s.insecure = o.insecure;
  s.integrity = trusted::parse_integrity_mode(o.integrity);
  if (!o.inject_faults.empty()) s.faults = accel::FaultSpec::parse(o.inject_faults);
  s.enclave_memory = parse_bytes(o.enclave_memory);
  s.trusted_threads = o.trusted_threads;
  s.seeds = seeds_of(o);
  return s;
}

}  // namespace darknight::app
