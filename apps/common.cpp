#include "common.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>

#include <fmt/format.h>

#include "nn/model_file.h"
#include "nn/onnx_import.h"
#include "nn/zoo.h"
#include "registry/registry.h"
#include "trusted/enclave.h"

namespace darknight::app {

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

nn::Graph make_model(const ModelSpec& s) {
  const bool onnx = s.model.size() > 5 && s.model.compare(s.model.size() - 5, 5, ".onnx") == 0;
  nn::Graph g = [&] {
    if (onnx) return nn::import_onnx(s.model).value();
    nn::ModelOptions mo;
    mo.input_size = s.model == "fmnist-cnn" && s.input_size == 32 ? 28 : s.input_size;
    mo.classes = s.classes;
    mo.seed = s.seed;
    return nn::build_model(s.model, mo);
  }();
  if (!s.weights.empty()) {
    const nn::TensorFile file = nn::load_tensor_file(s.weights).value();
    const std::string saved = file.meta.value("model", std::string());
    DK_CHECK(saved.empty() || saved == s.model,
             "{} holds a trained '{}', not '{}' (give --model {})", s.weights, saved, s.model,
             saved);
    const Status st = nn::apply_model_tensors(g, file);
    DK_CHECK(st.ok(), "{}: {}", s.weights, st.message());
  }
  return g;
}

data::Dataset load_dataset(const std::string& spec, const data::LoadOptions& opts) {
  if (spec.rfind("sealed:", 0) != 0) return data::load(spec, opts).value();
  const std::string path = spec.substr(7);
  DK_CHECK(!path.empty(), "sealed data needs a file: sealed:FILE");
  const trusted::Enclave enclave;
  return enclave.open_sealed(path, opts.split, opts.limit).value();
}

int argmax(const float* p, int64_t n) {
  return static_cast<int>(std::max_element(p, p + n) - p);
}

void warn_insecure(bool seeded, bool insecure) {
  if (seeded)
    std::fprintf(stderr,
                 "darknight: warning: --seed makes the blinding coefficients and noise "
                 "reproducible; anyone who knows the seed can unblind. Use it for tests only.\n");
  if (insecure)
    std::fprintf(stderr,
                 "darknight: warning: --insecure allows noise-free blinding: the accelerator may "
                 "receive scaled copies of the inputs. Use it for tests of the audit only.\n");
}

Progress::Progress(std::string what) : what_(std::move(what)), tty_(isatty(2)) {}

void Progress::update(int64_t done, int64_t total, const std::string& extra) {
  if (!tty_) return;
  const int width = 30, filled = static_cast<int>(width * done / std::max<int64_t>(total, 1));
  std::fprintf(stderr, "\r%s [%s%s] %lld/%lld %s", what_.c_str(), std::string(filled, '=').c_str(),
               std::string(width - filled, ' ').c_str(), static_cast<long long>(done),
               static_cast<long long>(total), extra.c_str());
  if (done == total) std::fprintf(stderr, "\n");
}

std::optional<WorkerFaults> worker_faults(accel::Backend& accelerator) {
  auto* remote = dynamic_cast<accel::remote::RemoteBackend*>(&accelerator);
  if (!remote) return std::nullopt;
  return remote->worker_faults();
}

nlohmann::json integrity_report(const std::string& mode, const std::string& faults,
                                int64_t operations, const trusted::IntegrityCounters& c,
                                const std::optional<WorkerFaults>& worker) {
  nlohmann::json j = {{"mode", mode},
          {"faults", faults},
          {"operations", operations},
          {"checks", c.checks},
          {"injected", c.injected},
          {"injected_above_tolerance", c.injected_above_tolerance},
          {"changed_output", c.changed_output},
          {"detected", c.detected},
          {"missed", c.missed},
          // null where infinite (an exactly zero output changed)
          {"largest_missed_excess", std::isfinite(c.largest_missed_excess)
                                        ? nlohmann::json(c.largest_missed_excess)
                                        : nlohmann::json()},
          {"failed", c.failed},
          {"recomputed", c.recomputed},
          {"fallbacks", c.fallbacks},
          {"false_alarms", c.false_alarms},
          {"unattributed", c.unattributed}};
  if (mode == "none")  // nothing checks, so nothing judges the faults
    for (const char* k : {"changed_output", "missed", "largest_missed_excess"}) j.erase(k);
  if (worker)
    j["worker_reported"] = {{"operations", worker->operations},
                            {"injected", worker->injected},
                            {"note", "counted by the untrusted worker, not verified"}};
  return j;
}

void print_integrity(const std::string& mode, const trusted::IntegrityCounters& c,
                     const std::optional<WorkerFaults>& worker) {
  if (mode == "none") {
    std::printf("  integrity none: %lld faults injected, unchecked\n",
                static_cast<long long>(c.injected));
    return;
  }
  std::printf(
      "  integrity %s: %lld checks, %lld faults injected (%lld changed an output, %lld of "
      "those missed; %lld above the check's tolerance), %lld detected, %lld recomputed, %lld "
      "computed in the trusted runtime, %lld false alarms\n",
      mode.c_str(), static_cast<long long>(c.checks), static_cast<long long>(c.injected),
      static_cast<long long>(c.changed_output), static_cast<long long>(c.missed),
      static_cast<long long>(c.injected_above_tolerance), static_cast<long long>(c.detected),
      static_cast<long long>(c.recomputed), static_cast<long long>(c.fallbacks),
      static_cast<long long>(c.false_alarms));
  if (c.unattributed > 0 || (worker && worker->injected > 0))
    std::printf("  %lld failed checks of the worker's operations; the worker says it injected "
                "%lld faults into %lld linear operations\n",
                static_cast<long long>(c.unattributed),
                static_cast<long long>(worker ? worker->injected : 0),
                static_cast<long long>(worker ? worker->operations : 0));
}

}  // namespace darknight::app
