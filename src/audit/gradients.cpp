#include "audit/gradients.h"

#include "protocol/error.h"

namespace darknight::audit {

std::optional<LayerGradient> LayerGradient::infer(const std::vector<int64_t>& weights,
                                                  const std::vector<int64_t>& input,
                                                  const std::vector<int64_t>& delta) {
  LayerGradient g;
  int64_t in = 1, out = 1;
  for (int64_t d : input) in *= d;
  for (int64_t d : delta) out *= d;
  if (weights.size() == 2) {
    if (weights[0] != out || weights[1] != in) return std::nullopt;
    g.out_ = out, g.in_ = in, g.size_ = out * in;
    return g;
  }
  if (weights.size() != 4 || input.size() != 3 || delta.size() != 3 || weights[1] < 1 ||
      input[0] % weights[1] != 0 || delta[0] != weights[0])
    return std::nullopt;
  ConvDesc d;
  d.in_channels = input[0], d.out_channels = weights[0];
  d.kernel_h = weights[2], d.kernel_w = weights[3];
  d.groups = input[0] / weights[1];
  if (d.out_channels % d.groups != 0) return std::nullopt;
  for (int64_t s = 1; s <= 4; ++s)
    for (int64_t p = 0; p < std::max(d.kernel_h, d.kernel_w); ++p) {
      d.stride_h = d.stride_w = s;
      d.pad_top = d.pad_left = d.pad_bottom = d.pad_right = p;
      if ((input[1] + 2 * p - d.kernel_h) / s + 1 != delta[1] ||
          (input[2] + 2 * p - d.kernel_w) / s + 1 != delta[2] || input[1] + 2 * p < d.kernel_h ||
          input[2] + 2 * p < d.kernel_w)
        continue;
      g.conv_ = ConvGeometry(d, Shape{input[0], input[1], input[2]});
      g.size_ = weights[0] * weights[1] * weights[2] * weights[3];
      return g;
    }
  return std::nullopt;
}

Eigen::VectorXd LayerGradient::operator()(const Eigen::VectorXd& input,
                                          const Eigen::VectorXd& delta) const {
  Eigen::VectorXd w = Eigen::VectorXd::Zero(size_);
  if (!conv_) {
    Eigen::Map<Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(
        w.data(), out_, in_) = delta * input.transpose();
    return w;
  }
  DK_CHECK(input.size() == conv_->in_numel() && delta.size() == conv_->out_numel(),
           "LayerGradient: an input of {} and a delta of {} values do not fit the layer",
           input.size(), delta.size());
  reference::conv_backward_weights<double>(*conv_, 1, 1, input.data(), delta.data(), w.data());
  return w;
}

}  // namespace darknight::audit
