// Example 2: private training.
//
//   02_private_training [STEPS]
//
// Trains the zoo's Fashion-MNIST CNN for a few SGD steps (default 16: four passes over 128
// images in batches of 32) from the same weights on the same batches, twice: privately
// (DarKnight: the linear layers' forward and backward passes run on the accelerator on
// blinded mixtures only; labels, loss and non-linear layers stay in the trusted runtime),
// and unprotected (the plain baseline). Data: Fashion-MNIST when installed, else synthetic
// images with random labels. Prints "OK: ..." when the private run learns as the plain one
// does (its loss falls, and follows the plain run's within the rounding of f32 mixtures),
// "MISMATCH: ..." otherwise.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "data/datasets.h"
#include "nn/zoo.h"
#include "session/session.h"
#include "trusted/trainer.h"

using namespace darknight;

constexpr int64_t kBatch = 32, kTrain = 128, kHeldOut = 256;

// Fashion-MNIST's test file (smaller, so faster to load, than its training file): its first
// kTrain images to train on, the next kHeldOut to evaluate on.
data::Dataset load() {
  data::LoadOptions lo;
  lo.limit = kTrain + kHeldOut;
  if (std::filesystem::exists("/usr/share/datasets/fashion-mnist"))
    return data::load("fashion-mnist", lo).value();
  lo.synthetic_item = Shape{1, 28, 28}, lo.synthetic_count = kTrain + kHeldOut;
  lo.synthetic_classes = 10;
  return data::load("synthetic", lo).value();
}

// Images [first, first + n) of d, with their labels.
Tensor images(const data::Dataset& d, int64_t first, int64_t n, std::vector<int>& labels) {
  labels.assign(d.labels.begin() + first, d.labels.begin() + first + n);
  return Tensor(d.images.shape().with_batch(n), d.images.items(first, n));
}

// The fraction of the held-out images the trained model classifies right.
double accuracy(trusted::Trainer& t, const data::Dataset& d) {
  std::vector<int> labels;
  const Tensor out = t.predict(images(d, kTrain, kHeldOut, labels));
  const int64_t c = out.shape()[1];
  int64_t right = 0;
  for (int64_t i = 0; i < kHeldOut; ++i) {
    const float* p = out.data() + i * c;
    right += std::max_element(p, p + c) - p == labels[static_cast<size_t>(i)];
  }
  return double(right) / kHeldOut;
}

int main(int argc, char** argv) try {
  const int steps = argc > 1 ? std::stoi(argv[1]) : 16, epoch = kTrain / kBatch;
  const data::Dataset data = load();
  std::printf("data: %s\n", data.name.c_str());
  const nn::Graph model = nn::build_model("fmnist-cnn", {.input_size = 28, .classes = 10});
  // One engine per run, from the engine factory, on the CPU backend; K = 4 inputs per
  // virtual batch for the private run.
  session::SessionOptions o;
  o.training = true;
  o.accelerator = "cpu";
  o.k = 4;
  o.mode = session::Mode::darknight;
  session::Session private_session(o);
  o.mode = session::Mode::plain;
  session::Session plain_session(o);
  // A Trainer takes the model: its linear weights go to the engine (to the accelerator),
  // the rest (biases, batch norms) stays in the trusted runtime.
  trusted::Trainer private_run(model.clone(), private_session.train_engine(),
                               private_session.runtime_options());
  trusted::Trainer plain_run(model.clone(), plain_session.train_engine(),
                             plain_session.runtime_options());

  const SgdParams sgd{.lr = 0.02, .momentum = 0.9};
  double first = 0, last = 0, apart = 0, total = 0;  // loss sums
  std::vector<int> labels;
  for (int s = 0; s < steps; ++s) {
    const Tensor x = images(data, (s % epoch) * kBatch, kBatch, labels);
    const double p = private_run.step(x, labels, sgd).loss;
    const double q = plain_run.step(x, labels, sgd).loss;
    std::printf("step %2d: loss private %.5f, plain %.5f\n", s, p, q);
    if (s < epoch) first += p;  // the first pass over the images, and the last
    if (s >= steps - epoch) last += p;
    apart += std::abs(p - q), total += q;
  }
  std::printf(
      "mean loss of the first pass %.4f, of the last %.4f; private and plain %.2g%% apart\n",
      first / epoch, last / epoch, 100 * apart / total);
  std::printf("accuracy on %lld other images: private %.3f, plain %.3f\n",
              static_cast<long long>(kHeldOut), accuracy(private_run, data),
              accuracy(plain_run, data));
  const bool ok = steps >= 2 * epoch && last < first && apart <= 0.02 * total;
  std::printf("%s: private training %s unprotected training\n", ok ? "OK" : "MISMATCH",
              ok ? "follows" : "departs from");
  return ok ? 0 : 1;
} catch (const std::exception& e) {
  std::fprintf(stderr, "02_private_training: %s\n", e.what());
  return 1;
}
