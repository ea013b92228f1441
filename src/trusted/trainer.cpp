#include "trusted/trainer.h"

#include <omp.h>

#include <chrono>
#include <cstring>

#include "nn/backward.h"
#include "nn/kernels.h"

namespace darknight::trusted {
namespace {

/// acc += g. Both are secrets (deltas and gradients): both wipe on free.
void add_into(Tensor& acc, Tensor&& g) {
  g.set_wipe_on_free();
  if (acc.empty()) {
    acc = std::move(g);
    return;
  }
  acc.set_wipe_on_free();
  float* a = acc.data();
  const float* b = g.data();
  const int64_t n = acc.numel();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) a[i] += b[i];
}

}  // namespace

Trainer::Trainer(nn::Graph graph, TrainEngine& engine, RuntimeOptions opts)
    : engine_(engine), opts_(for_training(opts)), runtime_(std::move(graph), engine, opts_) {
  nn::Graph& g = runtime_.mutable_graph();
  const auto& nodes = g.nodes();
  for (size_t i = 0; i < nodes.size(); ++i) {
    nn::Node& n = g.mutable_node(static_cast<int>(i));
    if (n.is_linear() && !n.epilogue.shift.empty())
      params_.push_back({n.name + ".bias", &n.epilogue.shift, {}, {}});
    if (n.op == nn::Op::batch_norm && n.bn.present()) {
      has_batch_norm_ = true;
      params_.push_back({n.name + ".weight", &n.bn.gamma, {}, {}});
      params_.push_back({n.name + ".bias", &n.bn.beta, {}, {}});
    }
  }
  for (size_t i = 0; i < params_.size(); ++i) param_of_[params_[i].value] = i;
  logits_node_ = g.output();
  if (g.node(logits_node_).op == nn::Op::softmax) logits_node_ = g.node(logits_node_).inputs[0];
}

int64_t Trainer::estimate(int64_t items) const {
  // Every node's output is kept for the backward pass (batch norms also keep the
  // normalised input), plus two gradients in flight and the engine's pieces.
  const nn::Graph& g = runtime_.graph();
  const int k = engine_.granularity();
  int64_t kept = 0, largest = 0, scratch = 0;
  for (const nn::Node& n : g.nodes()) {
    const int64_t b = items * n.shape.numel() * 4;
    kept += b * (n.op == nn::Op::batch_norm && n.bn.present() ? 2 : 1);
    largest = std::max(largest, b);
    if (n.is_linear()) {
      const int64_t in = g.node(n.inputs[0]).shape.numel();
      const Scratch s = engine_.scratch_bytes(n, in, items, k);
      scratch =
          std::max({scratch, s.before, s.after, engine_.backward_scratch_bytes(n, in, items, k)});
    }
  }
  return kept + 2 * largest + scratch + engine_.resident_bytes();
}

int64_t Trainer::plan(int64_t batch) const {
  DK_CHECK(batch > 0, "empty batch");
  const int64_t budget = opts_.memory_budget;
  if (!opts_.enforce_budget || estimate(batch) <= budget) return batch;
  const double mib = 1048576.0;
  if (has_batch_norm_)
    throw Error(fmt::format(
        "training keeps a batch's activations in trusted memory: {:.1f} MiB for a batch of {} "
        "(budget {:.1f} MiB), and batch norm needs the whole batch at once; lower --batch or "
        "raise --enclave-memory",
        estimate(batch) / mib, batch, budget / mib));
  const int k = engine_.granularity();
  const int64_t first = std::min<int64_t>(k, batch);
  if (estimate(first) > budget)
    throw Error(fmt::format(
        "a training pass of one virtual batch (K = {}) needs {:.1f} MiB of trusted memory "
        "(budget {:.1f} MiB); lower -k or raise --enclave-memory",
        k, estimate(first) / mib, budget / mib));
  // The largest multiple of K that fits; gradients add up over the passes.
  int64_t lo = first, hi = batch;
  while (hi - lo > k) {
    const int64_t mid = (lo + hi) / 2 / k * k;
    if (mid <= lo) break;
    (estimate(mid) <= budget ? lo : hi) = mid;
  }
  return lo;
}

StepStats Trainer::step(const Tensor& images, const std::vector<int>& labels, const SgdParams& p) {
  const StepStats s = accumulate(images, labels);
  apply(p);
  return s;
}

StepStats Trainer::accumulate(const Tensor& images, const std::vector<int>& labels) {
  const int64_t b = images.shape()[0];
  DK_CHECK(static_cast<int64_t>(labels.size()) == b, "{} labels for {} images", labels.size(), b);
  const int64_t per_pass = plan(b);
  const ThreadScope threads(opts_.threads);
  StepStats total;
  for (int64_t start = 0; start < b; start += per_pass) {
    const int64_t m = std::min(per_pass, b - start);
    Tensor chunk(images.shape().with_batch(m), images.items(start, m));
    chunk.set_wipe_on_free();
    const std::vector<int> chunk_labels(labels.begin() + start, labels.begin() + start + m);
    const StepStats s = pass(chunk, chunk_labels, b);
    total.loss += s.loss, total.correct += s.correct, total.count += s.count;
  }
  total.loss /= double(b);
  runtime_.mutable_stats().images += b;
  return total;
}

void Trainer::apply(const SgdParams& p) {
  const ThreadScope threads(opts_.threads);
  // The update: weights on the accelerator, the rest here.
  const double t0 = now();
  engine_.step(p);
  RunStats& stats = runtime_.mutable_stats();
  stats.backward_times.accelerator += now() - t0;
  const double t1 = now();
  for (TrustedParam& tp : params_) {
    if (tp.grad.empty()) continue;
    const bool first = tp.momentum.empty();
    if (p.momentum != 0 && first) {
      tp.momentum = Tensor(tp.value->shape());
      tp.momentum.set_wipe_on_free();  // made of gradients
    }
    sgd_update(tp.value->data(), tp.momentum.data(), tp.grad.data(), tp.value->numel(), p, first);
    tp.grad.fill(0.0f);
  }
  nn::Graph& g = runtime_.mutable_graph();
  for (size_t i = 0; i < g.nodes().size(); ++i) {
    nn::Node& n = g.mutable_node(static_cast<int>(i));
    if (n.op == nn::Op::batch_norm && n.bn.present()) nn::refresh_batch_norm(n);
  }
  stats.backward_times.nonlinear += now() - t1;
}

StepStats Trainer::pass(const Tensor& images, const std::vector<int>& labels, int64_t batch) {
  nn::Graph& g = runtime_.mutable_graph();
  const auto& nodes = g.nodes();
  RunStats& stats = runtime_.mutable_stats();
  const MeterScope scope(&runtime_.meter());
  const int64_t m = images.shape()[0];
  std::vector<Tensor> values(nodes.size());
  std::vector<nn::BatchNormCache> bn_cache(nodes.size());
  values[0] = Tensor(batched(m, g.input_shape()), images.span());
  values[0].set_wipe_on_free();
  // Forward, keeping every node's output.
  for (size_t i = 1; i < nodes.size(); ++i) {
    const nn::Node& n = nodes[i];
    Tensor& x = values[static_cast<size_t>(n.inputs[0])];
    if (n.is_linear()) {
      values[i] = engine_.forward_train(n, x, stats);
    } else {
      const double t0 = now();
      if (n.op == nn::Op::batch_norm && n.bn.present()) {
        values[i] = nn::batch_norm_train(g.mutable_node(static_cast<int>(i)), x, bn_cache[i]);
        bn_cache[i].xhat.set_wipe_on_free();
        bn_cache[i].inv_std.set_wipe_on_free();
      } else {
        values[i] = nn::run_nonlinear(
            n, x.clone(),
            n.inputs.size() > 1 ? &values[static_cast<size_t>(n.inputs[1])] : nullptr);
      }
      stats.times.nonlinear += now() - t0;
    }
    values[i].set_wipe_on_free();
  }
  // The loss, on the trusted side.
  double t0 = now();
  StepStats s;
  std::vector<Tensor> grads(nodes.size());
  Tensor dlogits;
  const Tensor& logits = values[static_cast<size_t>(logits_node_)];
  s.loss = nn::softmax_cross_entropy(logits, labels, batch, dlogits, s.correct) * double(m);
  s.count = m;
  add_into(grads[static_cast<size_t>(logits_node_)], std::move(dlogits));
  stats.backward_times.nonlinear += now() - t0;
  // Backward.
  for (size_t i = nodes.size() - 1; i >= 1; --i) {
    if (grads[i].empty()) continue;
    const nn::Node& n = nodes[i];
    Tensor dy = std::move(grads[i]);
    const size_t in = static_cast<size_t>(n.inputs[0]);
    if (n.is_linear()) {
      t0 = now();
      Tensor dbias;
      nn::epilogue_backward(n.epilogue, values[i], dy, dbias);
      if (!dbias.empty()) add_into(params_[param_of_.at(&n.epilogue.shift)].grad, std::move(dbias));
      stats.backward_times.nonlinear += now() - t0;
      Tensor dx = engine_.backward(n, dy, in != 0, stats);
      if (in != 0) add_into(grads[in], std::move(dx));
    } else {
      t0 = now();
      if (n.op == nn::Op::add) {
        add_into(grads[static_cast<size_t>(n.inputs[1])], dy.clone());
        add_into(grads[in], std::move(dy));
      } else if (n.op == nn::Op::batch_norm && n.bn.present()) {
        Tensor dgamma, dbeta;
        Tensor dx = nn::batch_norm_backward(n, dy, bn_cache[i], dgamma, dbeta);
        add_into(params_[param_of_.at(&n.bn.gamma)].grad, std::move(dgamma));
        add_into(params_[param_of_.at(&n.bn.beta)].grad, std::move(dbeta));
        if (in != 0) add_into(grads[in], std::move(dx));
      } else if (in != 0) {
        add_into(grads[in], nn::nonlinear_backward(n, values[in], values[i], dy));
      }
      stats.backward_times.nonlinear += now() - t0;
    }
    values[i] = Tensor();
    bn_cache[i] = {};
  }
  engine_.end_step();
  stats.peak_trusted_bytes = std::max(stats.peak_trusted_bytes, runtime_.meter().peak_bytes());
  return s;
}

Tensor Trainer::predict(const Tensor& images) {
  return runtime_.infer(images);
}

}  // namespace darknight::trusted
