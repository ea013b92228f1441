// `darknight train`: private training (DarKnight) or a baseline on a dataset.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>

#include "options.h"

namespace darknight::app {

struct TrainOptions {
  RunOptions run;  ///< the options shared with `infer` (options.h)
  std::string model = "fmnist-cnn";
  std::string weights;
  std::string data = "fashion-mnist";
  int epochs = 1;
  int64_t steps = 0;  ///< stop after this many steps (0: whole epochs)
  double lr = 0.01;
  double momentum = 0.0;
  double weight_decay = 0.0;
  bool nesterov = false;
  std::string lr_schedule = "none";
  std::string grad_decode = "trusted";
  std::string checkpoint;
  int64_t checkpoint_every = 0;  ///< also a checkpoint every this many steps (0: epochs only)
  bool resume = false;
  std::string fallback_accelerator;
  std::string metrics;
  std::string save;
  std::string export_onnx;
  std::string augment = "auto";
  int64_t limit = 0;
  int64_t test_limit = 0;
};

CLI::App* add_train_command(CLI::App& app, TrainOptions& o);
int run_train(const TrainOptions& o);

}  // namespace darknight::app
