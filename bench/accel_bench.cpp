// Accelerator throughput: GFLOP/s of the linear ops per backend and element type.
//   build/bench/accel_bench                     (all)
//   build/bench/accel_bench --benchmark_filter=vgg_conv1_2
// Counters: GFLOP/s = 2 * multiply-adds / time (rate over wall time of the iteration).
#include <benchmark/benchmark.h>

#include "accel/backend.h"
#include "baselines/plain_io.h"
#include "protocol/tensor.h"
#include "registry/registry.h"

namespace darknight::accel {
namespace {

Tensor ramp(const Shape& s) {
  Tensor t(s);
  for (int64_t i = 0; i < t.numel(); ++i)
    t[i] = static_cast<float>((i * 7919) % 1000) / 1000.0f - 0.5f;
  return t;
}

enum Op { kForward, kBackwardData, kBackwardWeights };

/// args: op, dtype (0 f32, 1 f64); the conv shape is fixed per benchmark name.
void conv_bench(benchmark::State& state, const char* backend, ConvDesc d, Shape src) {
  const auto op = static_cast<Op>(state.range(0));
  const DType dt = state.range(1) ? DType::f64 : DType::f32;
  auto be = make_backend(backend);
  baselines::PlainIo io(*be, dt);
  const Shape dst = d.dst_shape(src);
  auto w = be->create_weights(ramp(d.weight_shape()));
  auto x = io.put(ramp(src));
  auto dy = io.put(ramp(dst));
  auto y = io.make(dst);
  auto dx = io.make(src);
  auto dw = io.make(d.weight_shape());
  io.sync();
  auto run = [&] {
    if (op == kForward) be->conv2d_forward(d, *x, *w, *y);
    if (op == kBackwardData) be->conv2d_backward_data(d, *dy, *w, *dx);
    if (op == kBackwardWeights) be->conv2d_backward_weights(d, *x, *dy, *dw);
    be->wait();
  };
  run();  // warm-up: primitive creation, weight layouts, first touch of memory
  for (auto _ : state) run();
  const double flops = 2.0 * static_cast<double>(dst.numel()) * static_cast<double>(d.fan_in());
  state.counters["GFLOP/s"] =
      benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(fmt::format("{} {} {} {}", be->name(), dtype_name(dt),
                             op == kForward        ? "fwd"
                             : op == kBackwardData ? "bwd_data"
                                                   : "bwd_w",
                             src.str()));
}

void dense_bench(benchmark::State& state, const char* backend, DenseDesc d, int64_t n) {
  const auto op = static_cast<Op>(state.range(0));
  const DType dt = state.range(1) ? DType::f64 : DType::f32;
  auto be = make_backend(backend);
  baselines::PlainIo io(*be, dt);
  auto w = be->create_weights(ramp(d.weight_shape()));
  auto x = io.put(ramp(Shape{n, d.in_features}));
  auto dy = io.put(ramp(Shape{n, d.out_features}));
  auto y = io.make(Shape{n, d.out_features});
  auto dx = io.make(Shape{n, d.in_features});
  auto dw = io.make(d.weight_shape());
  io.sync();
  auto run = [&] {
    if (op == kForward) be->dense_forward(d, *x, *w, *y);
    if (op == kBackwardData) be->dense_backward_data(d, *dy, *w, *dx);
    if (op == kBackwardWeights) be->dense_backward_weights(d, *x, *dy, *dw);
    be->wait();
  };
  run();  // warm-up
  for (auto _ : state) run();
  const double flops = 2.0 * static_cast<double>(n * d.in_features * d.out_features);
  state.counters["GFLOP/s"] =
      benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(fmt::format("{} {}", be->name(), dtype_name(dt)));
}

// VGG16 conv1_2: 64 -> 64 channels, 224x224, 3x3, padding 1, one image.
const ConvDesc kVgg{64, 64, 3, 3, 1, 1, 1, 1, 1, 1};
const Shape kVggSrc{1, 64, 224, 224};
// VGG16 conv4_2 at 224 input: 512 -> 512, 28x28.
const ConvDesc kVgg4{512, 512, 3, 3, 1, 1, 1, 1, 1, 1};
const Shape kVgg4Src{1, 512, 28, 28};
// MobileNet depthwise 3x3 on 256 channels, 28x28, batch 5 (K+1 mixtures of K = 4).
const ConvDesc kDw{256, 256, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 256};
const Shape kDwSrc{5, 256, 28, 28};

BENCHMARK_CAPTURE(conv_bench, vgg_conv1_2 / cpu, "cpu", kVgg, kVggSrc)
    ->ArgsProduct({{kForward, kBackwardData, kBackwardWeights}, {0, 1}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK_CAPTURE(conv_bench, vgg_conv1_2 / ref, "ref", kVgg, kVggSrc)
    ->Args({kForward, 0})
    ->Iterations(2)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK_CAPTURE(conv_bench, vgg_conv4_2 / cpu, "cpu", kVgg4, kVgg4Src)
    ->ArgsProduct({{kForward, kBackwardData, kBackwardWeights}, {0, 1}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK_CAPTURE(conv_bench, mobilenet_dw / cpu, "cpu", kDw, kDwSrc)
    ->ArgsProduct({{kForward}, {0, 1}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK_CAPTURE(dense_bench, vgg_fc6 / cpu, "cpu", DenseDesc{25088, 4096}, 5)
    ->ArgsProduct({{kForward, kBackwardData, kBackwardWeights}, {0, 1}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace
}  // namespace darknight::accel

BENCHMARK_MAIN();
