// Built-in models, with weights drawn deterministically from a seed (He initialisation).
#pragma once

#include <string>
#include <vector>

#include "nn/graph.h"

namespace darknight::nn {

struct ModelOptions {
  int64_t input_size = 32;  ///< height = width of the input images
  int64_t classes = 10;
  uint64_t seed = 1;
};

/// fmnist-cnn (1x28x28 inputs), vgg16, vgg19, vgg16-bn, vgg19-bn, mobilenet (v1, ReLU6),
/// resnet18 (CIFAR stem below 64 pixels, ImageNet stem from 64).
std::vector<std::string> model_names();
/// Throws Error naming the known models when `name` is not one.
Graph build_model(const std::string& name, const ModelOptions& opts);

/// Fills t with N(0, std^2) values from a counter-based generator: the same seed gives
/// the same tensor on any thread count. (Model initialisation, not secrets.)
void init_normal(Tensor& t, uint64_t seed, double std);

}  // namespace darknight::nn
