// `darknight train`: private training (DarKnight) or a baseline on a dataset.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>

namespace darknight::app {

struct TrainOptions {
  std::string model = "fmnist-cnn";
  std::string weights;
  std::string data = "fashion-mnist";
  std::string mode = "darknight";
  std::string accelerator = "cpu";
  double accelerator_timeout = 300;
  bool tf32 = false;
  int epochs = 1;
  int64_t steps = 0;  ///< stop after this many steps (0: whole epochs)
  int64_t batch = 64;
  int k = 4;
  double lr = 0.01;
  double momentum = 0.0;
  double weight_decay = 0.0;
  bool nesterov = false;
  std::string lr_schedule = "none";
  double noise_mean = 0.0;
  double noise_std = 100.0;
  std::string precision = "f32";
  std::string grad_decode = "trusted";
  std::string checkpoint;
  int64_t checkpoint_every = 0;  ///< also a checkpoint every this many steps (0: epochs only)
  bool resume = false;
  std::string fallback_accelerator;
  std::string metrics;
  std::string report;
  uint64_t seed = 0;
  bool seeded = false;
  bool insecure = false;  ///< allow noise-free blinding (tests of the audit only)
  std::string save;
  std::string export_onnx;
  int64_t input_size = 32;
  int64_t classes = 10;
  std::string normalize;
  std::string augment = "auto";
  std::string enclave_memory = "128MiB";
  int trusted_threads = 0;
  int64_t limit = 0;
  int64_t test_limit = 0;
  std::string integrity = "none";
  std::string inject_faults;
};

CLI::App* add_train_command(CLI::App& app, TrainOptions& o);
int run_train(const TrainOptions& o);

}  // namespace darknight::app
