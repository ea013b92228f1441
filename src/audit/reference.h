// What the audit scores its attacks against, and never hands to them: the dataset a run
// used (both splits), or a capture of the same run in plain mode.
#pragma once

#include <Eigen/Dense>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "protocol/error.h"

namespace darknight::audit {

class Reference {
 public:
  /// A directory holding index.jsonl is a plain-mode capture; anything else is a dataset
  /// spec for data::load ("fashion-mnist", "cifar10:DIR", ...), both splits.
  static Result<Reference> open(const std::string& spec);

  const std::string& description() const { return description_; }
  /// The true inputs of `layer` (the dataset's images for layer 0), one per row, centred
  /// and scaled to unit norm; null when the reference has none of `width` values.
  const Eigen::MatrixXf* inputs(int64_t layer, int64_t width) const;
  /// The indices of the rows of inputs(layer) that lie in the span of `rows` and the
  /// constant vector (relative residual below kMemberTolerance): the true inputs of a group
  /// of mixtures. Empty when the group's view is masked or holds too few mixtures.
  std::vector<int64_t> members(int64_t layer, const Eigen::MatrixXd& rows) const;
  /// For each column of `components` (unit vectors), its best |correlation| with any row of
  /// inputs(layer, components.rows()).
  Eigen::VectorXd best_matches(int64_t layer, const Eigen::MatrixXf& components) const;
  /// The label of row i of inputs(0) (-1 when unknown).
  int label(int64_t i) const;
  /// A plain capture's delta of example i of inputs(layer) (dL/d output, as the backward
  /// pass received it; empty when the reference has none).
  Eigen::VectorXd delta(int64_t layer, int64_t i) const;
  /// An example's input as the layer saw it (not normalised).
  Eigen::VectorXd raw_input(int64_t layer, int64_t i) const;

  static constexpr double kMemberTolerance = 0.05;

 private:
  std::string description_;
  std::map<int64_t, Eigen::MatrixXf> raw_;     // layer -> inputs as seen
  std::map<int64_t, Eigen::MatrixXf> unit_;    // layer -> centred unit rows
  std::map<int64_t, Eigen::MatrixXf> deltas_;  // layer -> deltas aligned with raw_ rows
  std::vector<int> labels_;                    // aligned with raw_[0] rows
  void add_inputs(int64_t layer, const Eigen::MatrixXf& rows);
};

/// Rows centred and scaled to unit norm (a zero row stays zero).
Eigen::MatrixXf unit_rows(const Eigen::MatrixXf& x);

}  // namespace darknight::audit
