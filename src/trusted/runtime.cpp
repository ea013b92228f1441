#include "trusted/runtime.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstring>

#include "nn/kernels.h"

namespace darknight::trusted {

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

ThreadScope::ThreadScope(int n) : previous_(omp_get_max_threads()) {
  if (n > 0) omp_set_num_threads(n);
}
ThreadScope::~ThreadScope() {
  omp_set_num_threads(previous_);
}

Shape batched(int64_t n, const Shape& item) {
  std::vector<int64_t> dims{n};
  for (int64_t d : item.dims()) dims.push_back(d);
  return Shape(std::span<const int64_t>(dims));
}

Shape item_of(const Shape& batch) {
  return Shape(batch.dims().subspan(1));
}

Runtime::Runtime(nn::Graph graph, LinearEngine& engine, RuntimeOptions opts)
    : graph_(std::move(graph)), engine_(engine), opts_(std::move(opts)) {
  DK_CHECK(opts_.memory_budget > 0, "the enclave memory budget must be positive");
  graph_.fuse(opts_.training);
  last_use_ = graph_.last_uses();
  const MeterScope scope(&meter_);
  engine_.load(graph_);
}

std::pair<int64_t, int> Runtime::estimate(int64_t items, int k) const {
  const auto& nodes = graph_.nodes();
  auto bytes = [&](size_t v) { return items * nodes[v].shape.numel() * 4; };
  int64_t peak = 0;
  int where = 0;
  const int64_t out = items * graph_.output_shape().numel() * 4;  // the pass's result
  for (size_t i = 0; i < nodes.size(); ++i) {
    const nn::Node& n = nodes[i];
    // Values alive across node i other than its own inputs and output.
    int64_t others = out;
    for (size_t v = 0; v < i; ++v) {
      const bool input =
          std::find(n.inputs.begin(), n.inputs.end(), static_cast<int>(v)) != n.inputs.end();
      if (!input && last_use_[v] > static_cast<int>(i)) others += bytes(v);
    }
    int64_t in = 0;
    bool consumed = true;
    for (int v : n.inputs) {
      in += bytes(static_cast<size_t>(v));
      consumed = consumed && last_use_[static_cast<size_t>(v)] == static_cast<int>(i);
    }
    int64_t need;
    if (n.is_linear()) {
      const int64_t in_numel = nodes[static_cast<size_t>(n.inputs[0])].shape.numel();
      const Scratch sc = engine_.scratch_bytes(n, in_numel, items, k);
      need = std::max(in + sc.before, (consumed ? 0 : in) + bytes(i) + sc.after);
    } else {
      need = in + bytes(i);
    }
    if (others + need > peak) peak = others + need, where = static_cast<int>(i);
  }
  return {peak + engine_.resident_bytes(), where};
}

int64_t Runtime::plan(int64_t batch) const {
  DK_CHECK(batch > 0, "empty batch");
  const int k = engine_.granularity();
  const int64_t first = std::min<int64_t>(k, batch);
  const auto [need, where] = estimate(first, k);
  if (need > opts_.memory_budget) {
    if (!opts_.enforce_budget) return batch;  // reported, not refused
    const nn::Node& n = graph_.node(where);
    int fits = 0;
    for (int kk = k - 1; kk >= 1 && !fits; --kk)
      if (estimate(kk, kk).first <= opts_.memory_budget) fits = kk;
    throw Error(
        fmt::format("layer '{}' needs {:.1f} MiB of trusted memory for one virtual batch of K = {} "
                    "(budget {:.1f} MiB); {}",
                    n.name, need / 1048576.0, k, opts_.memory_budget / 1048576.0,
                    fits ? fmt::format("K = {} would fit", fits)
                         : std::string("not even K = 1 fits: raise --enclave-memory")));
  }
  // The largest multiple of K (up to the batch) whose estimate fits.
  int64_t lo = first, hi = batch;
  if (!opts_.enforce_budget || estimate(hi, k).first <= opts_.memory_budget) return hi;
  while (hi - lo > k) {
    const int64_t mid = (lo + hi) / 2 / k * k;
    if (mid <= lo) break;
    (estimate(mid, k).first <= opts_.memory_budget ? lo : hi) = mid;
  }
  return lo;
}

Tensor Runtime::infer(const Tensor& batch) {
  const auto& nodes = graph_.nodes();
  DK_CHECK(batch.shape().rank() == graph_.input_shape().rank() + 1 &&
               batch.shape().item_numel() == graph_.input_shape().numel(),
           "input batch {} does not match the model's input {}", batch.shape().str(),
           graph_.input_shape().str());
  const int64_t b = batch.shape()[0];
  const int64_t chunk = plan(b);
  const ThreadScope threads(opts_.threads);
  const MeterScope scope(&meter_);
  meter_.reset_peak();
  stats_.chunk_images = chunk;
  Tensor result = Tensor::uninitialized(batched(b, graph_.output_shape()));
  for (int64_t start = 0; start < b; start += chunk) {
    const int64_t m = std::min(chunk, b - start);
    engine_.begin_pass(graph_, m);
    std::vector<Tensor> values(nodes.size());
    values[0] = Tensor(batched(m, graph_.input_shape()), batch.items(start, m));
    values[0].set_wipe_on_free();
    for (size_t i = 1; i < nodes.size(); ++i) {
      const nn::Node& n = nodes[i];
      const int in = n.inputs[0];
      if (n.is_linear()) {
        const bool consume = last_use_[static_cast<size_t>(in)] == static_cast<int>(i);
        values[i] = engine_.forward(n, values[static_cast<size_t>(in)], consume, stats_);
        if (opts_.probe) opts_.probe(static_cast<int>(i), start, values[i]);
      } else {
        const double t0 = now();
        const bool reuse = last_use_[static_cast<size_t>(in)] == static_cast<int>(i) &&
                           (n.inputs.size() < 2 || n.inputs[1] != in);
        Tensor a = reuse ? std::move(values[static_cast<size_t>(in)])
                         : values[static_cast<size_t>(in)].clone();
        const Tensor* second =
            n.inputs.size() > 1 ? &values[static_cast<size_t>(n.inputs[1])] : nullptr;
        values[i] = nn::run_nonlinear(n, std::move(a), second);
        stats_.times.nonlinear += now() - t0;
      }
      values[i].set_wipe_on_free();
      for (int v : n.inputs)
        if (last_use_[static_cast<size_t>(v)] == static_cast<int>(i))
          values[static_cast<size_t>(v)] = Tensor();
    }
    const Tensor& out = values[static_cast<size_t>(graph_.output())];
    std::memcpy(result.items(start, m).data(), out.data(), out.bytes());
    if (opts_.progress) opts_.progress(start + m, b);
  }
  stats_.images += b;
  stats_.peak_trusted_bytes = std::max(stats_.peak_trusted_bytes, meter_.peak_bytes());
  result.detach_meter();  // handed to the caller, who may outlive this runtime's meter
  return result;
}

}  // namespace darknight::trusted
