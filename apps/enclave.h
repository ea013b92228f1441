// `darknight enclave-info`, `darknight platform-key` (the enclave's side) and
// `darknight seal` (the data owner's side): attestation and sealed data ingress.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>

namespace darknight::app {

struct EnclaveOptions {
  // enclave-info
  std::string report;
  std::string nonce;
  // seal
  std::string seal_report;
  std::string platform_key;
  std::string expect_measurement;
  std::string expect_nonce;
  bool check_nonce = false;
  std::string data;
  std::string out;
  int64_t limit = 0;
  std::string chunk_size = "1MiB";
};

/// Registers the three subcommands.
class EnclaveCommands {
 public:
  EnclaveCommands(CLI::App& app, EnclaveOptions& o);
  /// Whether one of them was given on the command line.
  bool parsed() const;
  /// Runs the one given; throws Error on failure.
  int run() const;

 private:
  EnclaveOptions& o_;
  CLI::App* info_;
  CLI::App* platform_;
  CLI::App* seal_;
};

}  // namespace darknight::app
