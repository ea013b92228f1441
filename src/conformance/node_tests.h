// ONNX operator conformance: runs the node tests of Debian's libonnx-testdata
// (/usr/share/libonnx-testdata/data/node/<test>/{model.onnx,test_data_set_N/*.pb}) through an
// accelerator backend (linear ops) or the trusted runtime (non-linear ops) and compares
// with the expected outputs.
#pragma once

#include <string>
#include <vector>

#include "accel/backend.h"

namespace darknight::conformance {

enum class Outcome { pass, fail, skip };
const char* outcome_name(Outcome o);

struct NodeTestResult {
  std::string name;  ///< test directory name, e.g. test_conv_with_strides_padding
  std::string op;    ///< ONNX op type
  Outcome outcome = Outcome::skip;
  std::string detail;  ///< why it failed or was skipped; what ran when it passed
  double max_abs_error = 0;
  int data_sets = 0;
};

/// Comparison used for every node test, as the ONNX backend test runner does:
/// |got - expected| <= kAtol + kRtol * |expected| element-wise.
inline constexpr double kRtol = 1e-3;
inline constexpr double kAtol = 1e-7;

std::string default_node_test_dir();
/// Test-name prefixes of the linear operators the accelerator implements.
std::vector<std::string> linear_op_prefixes();
/// Test-name prefixes of the non-linear operators the trusted runtime implements; these
/// tests go through the ONNX importer and the runtime (inputs after the first become
/// initializers, as a model's parameters would be).
std::vector<std::string> nonlinear_op_prefixes();

/// Runs every test under `dir` whose name starts with one of `prefixes`, with mixtures of
/// element type `dtype`, in name order.
std::vector<NodeTestResult> run_node_tests(const std::string& dir,
                                           const std::vector<std::string>& prefixes,
                                           accel::Backend& backend, DType dtype);

}  // namespace darknight::conformance
