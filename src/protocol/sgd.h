// SGD as torch.optim.SGD computes it, shared by the accelerator (weights) and the trusted
// runtime (biases and batch-norm parameters).
#pragma once

#include <cstdint>

namespace darknight {

/// g = grad + weight_decay * w; v = momentum * v + (1 - dampening) * g (v = g on the first
/// step); g = nesterov ? g + momentum * v : v; w -= lr * g.
struct SgdParams {
  double lr = 0.01;
  double momentum = 0.0;
  double dampening = 0.0;
  double weight_decay = 0.0;
  bool nesterov = false;
};

/// One step on n parameters. `velocity` may be null when p.momentum is 0; `first` says
/// whether this is the first step with momentum (the buffer is then initialised).
template <typename G>
inline void sgd_update(float* w, float* velocity, const G* grad, int64_t n, const SgdParams& p,
                       bool first) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    double g = static_cast<double>(grad[i]) + p.weight_decay * w[i];
    if (p.momentum != 0) {
      const double v = first ? g : p.momentum * velocity[i] + (1.0 - p.dampening) * g;
      velocity[i] = static_cast<float>(v);
      g = p.nesterov ? g + p.momentum * v : v;
    }
    w[i] = static_cast<float>(w[i] - p.lr * g);
  }
}

}  // namespace darknight
