// Weight gradients as the accelerator can compute them from what it holds: a linear layer's
// gradient of one (input, delta) pair, the layer's geometry inferred from the shapes the
// capture shows (the accelerator knows the model).
#pragma once

#include <Eigen/Dense>
#include <cstdint>
#include <optional>
#include <vector>

#include "protocol/linear.h"

namespace darknight::audit {

class LayerGradient {
 public:
  /// From the weights' shape ([O, I] dense; [O, I/groups, KH, KW] conv) and one input and
  /// one delta item's shape ([I] or [C, H, W]; [O] or [O, OH, OW]). Convolutions: the stride
  /// and symmetric padding that map the input onto the output; none when no stride up to 4
  /// and padding up to the kernel's does.
  static std::optional<LayerGradient> infer(const std::vector<int64_t>& weights,
                                            const std::vector<int64_t>& input,
                                            const std::vector<int64_t>& delta);

  int64_t size() const { return size_; }
  /// dL/dW of one pair, flattened as the weights are (row-major).
  Eigen::VectorXd operator()(const Eigen::VectorXd& input, const Eigen::VectorXd& delta) const;

 private:
  std::optional<ConvGeometry> conv_;
  int64_t out_ = 0, in_ = 0, size_ = 0;
};

}  // namespace darknight::audit
