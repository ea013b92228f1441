#include "enclave.h"

#include <cstdio>
#include <fstream>
#include <sstream>

#include "common.h"
#include "data/sealed_file.h"
#include "trusted/enclave.h"

namespace darknight::app {
namespace {

std::string read_text(const std::string& path) {
  std::ifstream f(path);
  DK_CHECK(f, "cannot open {}", path);
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

std::string trim(std::string s) {
  const auto b = s.find_first_not_of(" \t\r\n"), e = s.find_last_not_of(" \t\r\n");
  return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

/// A 64-digit hex key, given as such or as a file holding it.
data::Bytes32 key_arg(const std::string& arg, const std::string& what) {
  std::string hex = trim(arg);
  if (hex.size() != 64) hex = trim(read_text(arg));
  return data::from_hex32(hex, what).value();
}

int run_info(const EnclaveOptions& o) {
  const std::vector<unsigned char> nonce =
      o.nonce.empty() ? std::vector<unsigned char>{} : data::from_hex(o.nonce, "--nonce").value();
  const trusted::Enclave enclave;
  const data::AttestationReport r = enclave.report(nonce);
  std::printf("measurement   %s  (BLAKE2b-256 of this executable)\n",
              data::to_hex(r.measurement).c_str());
  std::printf("public key    %s  (X25519, sealed at rest under the platform)\n",
              data::to_hex(r.public_key).c_str());
  std::printf("platform key  %s  (Ed25519; simulated, in %s)\n",
              data::to_hex(r.platform_key).c_str(), trusted::default_home().c_str());
  const std::string json = data::report_to_json(r);
  if (o.report.empty()) {
    std::printf("%s", json.c_str());
    return 0;
  }
  std::ofstream f(o.report);
  f << json;
  f.close();
  DK_CHECK(f, "cannot write {}", o.report);
  std::printf("report        %s\n", o.report.c_str());
  return 0;
}

int run_platform_key() {
  const trusted::Platform platform(trusted::default_home());
  std::printf("%s\n", data::to_hex(platform.public_key()).c_str());
  return 0;
}

int run_seal(const EnclaveOptions& o) {
  const double t0 = now();
  data::ReportExpectations e;
  e.platform_key = key_arg(o.platform_key, "--platform-key");
  e.measurement = data::from_hex32(trim(o.expect_measurement), "--expect-measurement").value();
  e.check_nonce = o.check_nonce;
  if (o.check_nonce) e.nonce = data::from_hex(trim(o.expect_nonce), "--expect-nonce").value();
  const data::AttestationReport report = data::verify_report(read_text(o.seal_report), e).value();

  DK_CHECK(o.data.rfind("synthetic", 0) != 0 && o.data.rfind("sealed:", 0) != 0,
           "--data {}: seal a dataset read from files (fashion-mnist[:DIR], cifar10:DIR, "
           "cifar100:DIR, imagefolder:DIR)",
           o.data);
  data::LoadOptions lo;
  lo.limit = o.limit;
  lo.split = data::Split::train;
  const data::Dataset train = data::load(o.data, lo).value();
  lo.split = data::Split::test;
  const data::Dataset test = data::load(o.data, lo).value();
  const double t1 = now();
  const int64_t chunk = parse_bytes(o.chunk_size);
  data::seal_datasets({{data::Split::train, &train}, {data::Split::test, &test}}, report, o.out,
                      chunk)
      .throw_if_error();
  const double t2 = now();
  std::printf(
      "sealed %s (train %lld, test %lld examples) for enclave %s into %s: %.1f MB, loaded in "
      "%.2f s, sealed in %.2f s\n",
      train.name.c_str(), static_cast<long long>(train.images.shape()[0]),
      static_cast<long long>(test.images.shape()[0]), data::to_hex(report.measurement).c_str(),
      o.out.c_str(), static_cast<double>(std::ifstream(o.out, std::ios::ate).tellg()) / 1e6,
      t1 - t0, t2 - t1);
  return 0;
}

}  // namespace

EnclaveCommands::EnclaveCommands(CLI::App& app, EnclaveOptions& o) : o_(o) {
  info_ = app.add_subcommand(
      "enclave-info",
      "Print the (simulated) enclave's measurement and keys and write a signed attestation "
      "report (keys under $DARKNIGHT_HOME, default ~/.darknight)");
  info_->add_option("--report", o.report, "Write the attestation report (JSON) to this file");
  info_->add_option("--nonce", o.nonce,
                    "The data owner's freshness nonce (hex), put in the report");

  platform_ = app.add_subcommand(
      "platform-key", "Print the platform's public key (Ed25519, hex), for the data owner to pin");

  seal_ = app.add_subcommand(
      "seal",
      "Data owner: verify an attestation report and encrypt a dataset (both splits) for that "
      "enclave; train/infer then read it with --data sealed:FILE");
  seal_->add_option("--report", o.seal_report, "Attestation report from enclave-info")->required();
  seal_
      ->add_option("--platform-key", o.platform_key,
                   "The pinned platform public key (hex, or a file holding it)")
      ->required();
  seal_
      ->add_option("--expect-measurement", o.expect_measurement,
                   "The enclave measurement to trust (hex)")
      ->required();
  seal_->add_option("--expect-nonce", o.expect_nonce, "The nonce given to enclave-info (hex)")
      ->each([&o](const std::string&) { o.check_nonce = true; });
  seal_
      ->add_option("--data", o.data,
                   "Dataset to seal: fashion-mnist[:DIR], cifar10:DIR, cifar100:DIR, "
                   "imagefolder:DIR")
      ->required();
  seal_->add_option("--out", o.out, "Sealed file to write")->required();
  seal_->add_option("--limit", o.limit, "Keep the first N examples of each split (0: all)")
      ->check(CLI::NonNegativeNumber);
  seal_->add_option("--chunk-size", o.chunk_size, "Plaintext bytes per encrypted chunk")
      ->capture_default_str();
}

bool EnclaveCommands::parsed() const {
  return *info_ || *platform_ || *seal_;
}

int EnclaveCommands::run() const {
  if (*info_) return run_info(o_);
  if (*platform_) return run_platform_key();
  return run_seal(o_);
}

}  // namespace darknight::app
