// The `darknight` command line.
#include <darknight/version.h>
#include <malloc.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>
#include <limits>
#include <string>
#include <vector>

#include "accel/backend.h"
#include "audit.h"
#include "bench.h"
#include "conformance/node_tests.h"
#include "enclave.h"
#include "infer.h"
#include "registry/registry.h"
#include "train.h"
#include "worker.h"

namespace dk = darknight;

namespace {

dk::DType parse_precision(const std::string& p) {
  return p == "f64" ? dk::DType::f64 : dk::DType::f32;
}

int cmd_backends() {
  for (const auto& name : dk::accel::backend_names()) {
    const std::string why = dk::accel::unavailable_reason(name);
    if (why.empty())
      std::printf("%s\n", dk::accel::make_backend(name)->describe().c_str());
    else
      std::printf("%s: unavailable here: %s\n", name.c_str(), why.c_str());
  }
  return 0;
}

int cmd_conformance(const std::vector<std::string>& backends, const std::string& precision,
                    const std::string& dir) {
  int failed = 0;
  for (const auto& name : backends) {
    auto be = dk::accel::make_backend(name);
    const dk::DType dtype = parse_precision(precision);
    auto prefixes = dk::conformance::linear_op_prefixes();
    for (const auto& p : dk::conformance::nonlinear_op_prefixes()) prefixes.push_back(p);
    auto results = dk::conformance::run_node_tests(dir, prefixes, *be, dtype);
    int pass = 0, fail = 0, skip = 0;
    std::printf("ONNX node conformance on %s (%s), rtol %g atol %g\n", be->describe().c_str(),
                dk::dtype_name(dtype), dk::conformance::kRtol, dk::conformance::kAtol);
    for (const auto& r : results) {
      std::printf("  %-4s %-48s %-14s max|err| %-9.2e %s\n",
                  dk::conformance::outcome_name(r.outcome), r.name.c_str(), r.op.c_str(),
                  r.max_abs_error,
                  r.outcome == dk::conformance::Outcome::pass ? "" : r.detail.c_str());
      pass += r.outcome == dk::conformance::Outcome::pass;
      fail += r.outcome == dk::conformance::Outcome::fail;
      skip += r.outcome == dk::conformance::Outcome::skip;
    }
    std::printf("%s %s: %d of %d applicable tests pass, %d fail, %d skipped (reasons above)\n",
                name.c_str(), dk::dtype_name(dtype), pass, pass + fail, fail, skip);
    failed += fail;
  }
  return failed == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  // Keep freed memory in the process: the runtime allocates and frees activations of up
  // to hundreds of MB per layer, and glibc would otherwise map and fault them in afresh
  // each time (measured: most of a VGG16-224 run's system time).
  mallopt(M_MMAP_MAX, 0);
  mallopt(M_TRIM_THRESHOLD, std::numeric_limits<int>::max());

  CLI::App app{
      "DarKnight: training and inference on private data with an untrusted accelerator.\n"
      "A trusted runtime blinds each batch; the accelerator only sees linear mixtures.\n"
      "See README.md and docs/SECURITY.md for what is and is not hidden."};
  app.set_version_flag("--version", std::string("darknight ") + DARKNIGHT_VERSION);
  app.require_subcommand(0, 1);

  auto* backends = app.add_subcommand("backends", "List the accelerator backends built in");

  std::vector<std::string> conf_backends{"ref", "cpu"};
  std::string conf_precision = "f32";
  std::string conf_dir = dk::conformance::default_node_test_dir();
  auto* conf = app.add_subcommand("conformance",
                                  "Run the ONNX operator conformance tests (linear ops on the "
                                  "backends, non-linear ops in the trusted runtime)");
  conf->add_option("--backend", conf_backends, "Backends to test")
      ->check(CLI::IsMember(dk::accel::backend_names()))
      ->capture_default_str();
  conf->add_option("--precision", conf_precision, "Mixture element type")
      ->check(CLI::IsMember({"f32", "f64"}))
      ->capture_default_str();
  conf->add_option("--dir", conf_dir, "ONNX node test directory")->capture_default_str();

  dk::app::InferOptions infer_opts;
  auto* infer = dk::app::add_infer_command(app, infer_opts);
  dk::app::TrainOptions train_opts;
  auto* train = dk::app::add_train_command(app, train_opts);
  dk::app::WorkerOptions worker_opts;
  auto* worker = dk::app::add_worker_command(app, worker_opts);
  dk::app::BenchOptions bench_opts;
  auto* bench = dk::app::add_bench_command(app, bench_opts);
  dk::app::AuditCommand audit_opts;
  auto* audit = dk::app::add_audit_command(app, audit_opts);
  dk::app::EnclaveOptions enclave_opts;
  const dk::app::EnclaveCommands enclave_cmds(app, enclave_opts);

  CLI11_PARSE(app, argc, argv);
  try {
    if (*backends) return cmd_backends();
    if (*conf) return cmd_conformance(conf_backends, conf_precision, conf_dir);
    if (*infer) return dk::app::run_infer(infer_opts);
    if (*train) return dk::app::run_train(train_opts);
    if (*worker) return dk::app::run_worker(worker_opts);
    if (*bench) return dk::app::run_bench(bench_opts);
    if (*audit) return dk::app::run_audit(audit_opts);
    if (enclave_cmds.parsed()) return enclave_cmds.run();
    std::printf("%s", app.help().c_str());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "darknight: error: %s\n", e.what());
    return 1;
  }
}
