#include "worker.h"

#include <csignal>
#include <cstdio>

#include "accel/backend.h"
#include "backends/remote/curve.h"
#include "common.h"
#include "registry/registry.h"
#include "worker/server.h"

namespace darknight::app {

namespace {

std::atomic<bool> stop_requested{false};

void on_signal(int) {
  stop_requested = true;
}

}  // namespace

CLI::App* add_worker_command(CLI::App& app, WorkerOptions& o) {
  auto* c = app.add_subcommand(
      "worker",
      "Serve an accelerator backend to trusted runtimes in other processes or hosts "
      "(one session at a time; stop with Ctrl-C)");
  c->add_option("--listen", o.listen, "tcp://HOST:PORT (port 0: any free port) or ipc://PATH")
      ->capture_default_str();
  c->add_option("--backend", o.backend, "Backend that runs the linear operations")
      ->check(CLI::IsMember(accel::backend_names()))
      ->capture_default_str();
  c->add_option("--threads", o.threads, "Backend threads (0: all cores)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  c->add_flag("--tf32", o.tf32, "cuda: allow TF32 tensor-core math for f32 (off by default)");
  c->add_option("--capture", o.capture,
                "Write every tensor received to DIR as .npy files with DIR/index.jsonl (the "
                "accelerator's view, for audits)");
  c->add_option("--max-memory", o.max_memory,
                "Memory clients may allocate, e.g. 8GiB (0: half of this machine's)")
      ->capture_default_str();
  c->add_option("--inject-faults", o.inject_faults,
                "KIND:RATE[:SEED]: corrupt that fraction of the linear operations' outputs "
                "(bitflip, scale, wrong-weights, drop, adversarial), to measure integrity checks");
  c->add_option("--keygen", o.keygen,
                "Write a CurveZMQ key pair to DIR (public.key, secret.key), print the public key "
                "and exit")
      ->excludes(c->get_option("--capture"));
  c->add_option("--key", o.key,
                "Serve only encrypted, authenticated links (CurveZMQ) with the key pair in DIR; "
                "trusted runtimes pin its public key with --worker-keys")
      ->check(CLI::ExistingDirectory)
      ->excludes(c->get_option("--keygen"));
  return c;
}

int run_worker(const WorkerOptions& o) {
  if (!o.keygen.empty()) {
    const auto keys = accel::remote::generate_keys(o.keygen).value();
    std::printf("%s\n", keys.public_key.c_str());
    return 0;
  }
  accel::BackendOptions bo;
  bo.threads = o.threads;
  bo.tf32 = o.tf32;
  auto be = accel::make_backend(o.backend, bo);
  accel::remote::ServerOptions so;
  so.capture_dir = o.capture;
  so.max_bytes = parse_bytes(o.max_memory);
  so.faults = o.inject_faults;
  std::string pub;
  if (!o.key.empty()) {
    const auto keys = accel::remote::load_keys(o.key).value();
    so.curve_secret_key = keys.secret_key;
    pub = keys.public_key;
  }
  accel::remote::Server server(*be, so);
  const std::string endpoint = server.bind(o.listen);
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  std::printf("worker: listening on %s (%s)%s%s\n", endpoint.c_str(), be->describe().c_str(),
              pub.empty() ? ", plain links (no --key)"
                          : (", encrypted links only (CurveZMQ), public key " + pub).c_str(),
              o.capture.empty() ? "" : (", capturing to " + o.capture).c_str());
  std::fflush(stdout);
  server.serve(stop_requested);
  std::printf("worker: stopped after %lld requests (%lld refused)\n",
              static_cast<long long>(server.requests()), static_cast<long long>(server.errors()));
  return 0;
}

}  // namespace darknight::app
