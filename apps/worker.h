// `darknight worker`: the untrusted accelerator as a separate process (docs/protocol.md).
#pragma once

#include <CLI/CLI.hpp>
#include <string>

namespace darknight::app {

struct WorkerOptions {
  std::string listen = "tcp://127.0.0.1:5555";
  std::string backend = "cpu";
  int threads = 0;
  bool tf32 = false;
  std::string capture;
  std::string max_memory = "0";
  std::string inject_faults;
  std::string keygen;  ///< --keygen DIR: write a key pair and exit
  std::string key;     ///< --key DIR: serve encrypted links only, with this key pair
};

CLI::App* add_worker_command(CLI::App& app, WorkerOptions& o);
int run_worker(const WorkerOptions& o);

}  // namespace darknight::app
