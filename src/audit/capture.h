// Reading captures (`darknight worker --capture DIR`, docs/protocol.md "Capture"): the
// accelerator's view, which the audit's attacks use and nothing else.
#pragma once

#include <Eigen/Dense>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "protocol/error.h"

namespace darknight::audit {

/// What a captured data tensor holds.
enum class Kind { input, delta, other };

/// One line of a capture's index.jsonl.
struct Entry {
  size_t capture = 0;  ///< which of the captures given (0 for the first)
  int64_t order = 0;   ///< its line in that capture's index (the order the worker saw)
  std::string file, type;
  int64_t layer = -1;
  int mixtures = 0;  ///< rows per virtual batch; 0 when the rows are not mixtures
  int64_t first_batch = 0;
  std::vector<int64_t> shape;
  bool f64 = false;
  Kind kind() const;
  int64_t rows() const { return shape.empty() ? 0 : shape[0]; }
  int64_t row_size() const;
};

/// The rows one group of mixtures: a virtual batch (grouped captures) or one tensor's rows.
struct Group {
  const Entry* entry = nullptr;
  int64_t batch = -1;     ///< virtual batch (grouped captures), -1 otherwise
  int64_t first_row = 0;  ///< where its rows start in the entry's tensor
  Eigen::MatrixXd rows;   ///< one mixture per row, flattened
};

/// One or more capture directories (several workers' views, pooled).
class Captures {
 public:
  static Result<Captures> open(const std::vector<std::string>& dirs);

  const std::vector<Entry>& entries() const { return entries_; }
  /// The tensor of `e` as rows (float64), the file validated against its index line.
  Result<Eigen::MatrixXd> load(const Entry& e) const;
  /// The groups of `e`'s rows: its virtual batches (each virtual batch's rows pooled over
  /// every capture that holds rows of it), or all its rows as one group.
  Result<std::vector<Group>> groups(const Entry& e) const;
  /// Where a delta tensor's rows come from: the latest earlier input tensor of `layer` in
  /// the same capture (a training step's forward comes before its backward), from row
  /// `first_row` on (the rows of the same kind of delta tensor of the same layer seen since
  /// that forward come first: a backward pass in pieces, one virtual batch at a time).
  /// `forward` is null when there is none, or when it holds too few rows.
  struct Pairing {
    const Entry* forward = nullptr;
    int64_t first_row = 0;
  };
  Pairing forward_of(const Entry& delta, int64_t layer) const;

 private:
  std::vector<std::string> dirs_;
  std::vector<Entry> entries_;
};

/// Parses a NumPy .npy file (format 1.x or 2.x, little-endian <f4 or <f8, C order, at most
/// 8 dimensions and 2^32 elements, every value finite) as [shape[0], rest] rows; `name`
/// names it in errors. The payload's size is checked against the shape before allocating.
Result<Eigen::MatrixXd> parse_npy(std::span<const unsigned char> bytes, const std::string& name,
                                  std::vector<int64_t>& shape);
/// Reads and parses a .npy file.
Result<Eigen::MatrixXd> read_npy(const std::string& path, std::vector<int64_t>& shape);

}  // namespace darknight::audit
