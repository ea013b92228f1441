// `darknight bench`: runs a suite of problems (darknight infer/train command lines listed
// in a plain text file, like oneDNN's benchdnn), repeated, and writes their reports,
// medians and spreads as JSON and CSV, then tables and plots (scripts/bench_plots.py).
#pragma once

#include <CLI/CLI.hpp>
#include <string>

namespace darknight::app {

struct BenchOptions {
  std::string suite = "quick";
  std::string out = "results/bench";
  int repeat = 3;
  bool plots = true;
  std::string only;  ///< run only the problems of these figures (comma-separated)
};

CLI::App* add_bench_command(CLI::App& app, BenchOptions& o);
int run_bench(const BenchOptions& o);

}  // namespace darknight::app
