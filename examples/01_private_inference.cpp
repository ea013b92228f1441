// Example 1: private inference of an ONNX model.
//
//   01_private_inference [MODEL.onnx]
//
// Loads an ONNX model (without an argument: builds the small Fashion-MNIST CNN of the model
// zoo and exports it to ONNX first, as `darknight train --export` does), runs a batch of
// images through it twice on the CPU backend (oneDNN) and compares:
//  - privately (DarKnight): the trusted runtime mixes every K = 4 images with secret
//    coefficients and noise; the accelerator only ever sees those blinded mixtures;
//  - unprotected (the plain baseline): plaintext images go to the accelerator.
// It prints "OK: ..." when both give the same outputs within the rounding of f32 mixtures,
// "MISMATCH: ..." otherwise.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>

#include "data/datasets.h"
#include "nn/onnx_export.h"
#include "nn/onnx_import.h"
#include "nn/zoo.h"
#include "session/session.h"
#include "trusted/runtime.h"

using namespace darknight;

// The ONNX file to run: the argument, or the zoo's fmnist-cnn exported to a temporary file.
std::string model_path(int argc, char** argv) {
  if (argc > 1) return argv[1];
  const std::string path = (std::filesystem::temp_directory_path() / "dk_example_01.onnx").string();
  nn::Graph g = nn::build_model("fmnist-cnn", {.input_size = 28, .classes = 10, .seed = 1});
  // export_onnx reads each linear layer's weights through a callback (after load() they
  // live on the accelerator); here they are still in the graph.
  nn::export_onnx(
      g, [&](int i) { return g.weights()[static_cast<size_t>(i)].clone(); }, path)
      .throw_if_error();
  return path;
}

// Runs `model` on `images` with the linear layers in `mode`: darknight (blinded) or plain
// (unprotected), on the CPU backend.
Tensor infer(session::Mode mode, nn::Graph model, const Tensor& images) {
  session::SessionOptions o;
  o.mode = mode;
  o.accelerator = "cpu";  // a backend by name ("cpu", "cuda", "ref") or a worker (example 3)
  o.k = 4;                // darknight: images mixed together in each virtual batch
  // The engine factory: the untrusted accelerator, the trusted generator (keyed from the
  // OS unless o.seeds says otherwise) and the engine of the mode.
  session::Session s(o);
  // The runtime takes the model (fusing its epilogues), hands the linear layers' weights
  // to the engine and runs the non-linear layers itself.
  trusted::Runtime rt(std::move(model), s.engine(), s.runtime_options());
  return rt.infer(images);
}

int top1(const Tensor& out, int64_t item) {
  const int64_t c = out.shape().item_numel();
  const float* p = out.data() + item * c;
  return static_cast<int>(std::max_element(p, p + c) - p);
}

int main(int argc, char** argv) try {
  const std::string path = model_path(argc, argv);
  // A model file is untrusted input: import_onnx returns an error value, never crashes.
  nn::Graph model = nn::import_onnx(path).value();
  std::printf("model %s: input %s, output %s, %lld linear layers\n", path.c_str(),
              model.input_shape().str().c_str(), model.output_shape().str().c_str(),
              static_cast<long long>(model.linear_layers()));

  // Eight images of the model's input shape (synthetic pixels in [0, 1]).
  data::LoadOptions lo;
  lo.synthetic_item = model.input_shape();
  lo.synthetic_count = 8;
  const Tensor images = data::load("synthetic", lo).value().images;

  // Privately, then unprotected (plaintext to the accelerator) as the reference.
  const Tensor blinded_out = infer(session::Mode::darknight, model.clone(), images);
  const Tensor plain_out = infer(session::Mode::plain, std::move(model), images);

  double worst = 0, scale = 0;
  for (int64_t i = 0; i < plain_out.numel(); ++i) {
    worst = std::max(worst, double(std::abs(blinded_out[i] - plain_out[i])));
    scale = std::max(scale, double(std::abs(plain_out[i])));
  }
  int agree = 0;
  const int64_t n = images.shape()[0];
  for (int64_t i = 0; i < n; ++i) agree += top1(blinded_out, i) == top1(plain_out, i);
  std::printf("private vs plain: max |difference| %.3g (largest output %.3g), top-1 %d/%lld\n",
              worst, scale, agree, static_cast<long long>(n));
  // f32 mixtures are dominated by the noise: their decode carries about 1e-4 relative error.
  const bool ok = worst <= 1e-3 * scale;
  std::printf("%s: private inference %s unprotected inference\n", ok ? "OK" : "MISMATCH",
              ok ? "agrees with" : "differs from");
  return ok ? 0 : 1;
} catch (const std::exception& e) {
  std::fprintf(stderr, "01_private_inference: %s\n", e.what());
  return 1;
}
