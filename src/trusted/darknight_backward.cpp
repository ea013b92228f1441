// DarKnight's blinded backward pass (paper section 3.2): the deltas are mixed and sent, then
// (a) the input gradients W^T dbar_j come back, decoded with A's left inverse, and (b) the
// weight gradient is made: folded (it stays on the accelerator; with checks a copy comes
// back to be checked) or by the paper's decode (the trusted side sums gamma_j Eq_j).
#include <algorithm>
#include <optional>

#include "trusted/darknight_engine.h"

namespace darknight::trusted {
namespace {

/// backward-data's check, whichever the mode (neither without checks or input gradients).
struct DataCheck {
  std::optional<BackwardDataCheck> freivalds;
  std::optional<RedundantDataCheck> redundant;

  template <typename T>
  void on_input(const BlindedT<T>& rows, int64_t first, int64_t e0) {
    if (freivalds) freivalds->on_input(rows, first, e0);
    if (redundant) redundant->on_input(rows, first, e0);
  }
  void begin_outputs() {
    if (freivalds) freivalds->begin_outputs();
    if (redundant) redundant->begin_outputs();
  }
  template <typename T>
  void on_output(const TensorT<T>& rows, int64_t first, int64_t e0) {
    if (freivalds) freivalds->on_output(rows, first, e0);
    if (redundant) redundant->on_output(rows, first, e0);
  }
  bool passed() { return freivalds ? freivalds->passed() : redundant->passed(); }
  bool above_tolerance(const Tensor64& e) const {
    return freivalds ? freivalds->above_tolerance(e) : redundant->above_tolerance(e);
  }
};

/// sum[e] += g r[e] for e < sum.numel().
template <typename T>
void add_scaled(Tensor64& sum, double g, const T* r) {
  const int64_t len = sum.numel();
#pragma omp parallel for schedule(static)
  for (int64_t e = 0; e < len; ++e) sum[e] += g * static_cast<double>(r[e]);
}

}  // namespace

template <typename T>
class DarKnightEngine::Backward {
 public:
  Backward(DarKnightEngine& e, const nn::Node& node, bool input_grad, RunStats& stats);
  /// DarKnightEngine::backward().
  Tensor run(const Tensor& delta);

 private:
  static const Kept& kept_of(DarKnightEngine& e, const nn::Node& node);
  /// Mixes the deltas (no noise) and sends them; with the redundant check, twice.
  void send_deltas(const Tensor& delta);
  /// (a) dL/d(input) of the layer's `m` inputs.
  Tensor input_grads(int64_t m);
  bool input_grads_attempt(Tensor& dx);
  /// (b) The folded decode: the gradient is sum_j Eq_j over every mixture of the pass.
  void folded_weight_grad();
  /// backward-weights from the deltas' mixtures `d` into `g`, waited for.
  void run_weight_grad(const accel::Buffer& d, accel::Buffer& g);
  bool check_grad_pair(const accel::Buffer& g, const accel::Buffer& g2);
  bool check_grad_freivalds(const accel::Buffer& g);
  /// Calls f(o0, o1) for the weight gradient's pieces of whole output channels.
  template <typename F>
  void each_row_piece(F&& f) const;
  /// Output channels [o0, o1) of the gradient `g`, downloaded.
  Tensor64 fetch_rows(const accel::Buffer& g, int64_t o0, int64_t o1);
  /// (b) The paper's decode, one virtual batch at a time (`tm`, its mixtures from `first`).
  void paper_weight_grad(const TrainingMixing& tm, int64_t first);

  DarKnightEngine& e_;
  const nn::Node& node_;
  const Kept& saved_;
  RunStats& stats_;
  OpTimes& t_;
  const bool input_grad_, folded_, checked_, redundant_;
  const int64_t s_in_, s_out_, mixtures_;
  const Shape ws_;                // the weights'
  const int64_t per_;             // weight elements per output channel
  accel::Buffer& in_;             // the layer's input mixtures, kept by forward_train()
  accel::Buffer* dd_ = nullptr;   // the deltas' mixtures
  accel::Buffer* dd2_ = nullptr;  // their second mixing (redundant check)
  DataCheck dcheck_;
};

template <typename T>
const DarKnightEngine::Kept& DarKnightEngine::Backward<T>::kept_of(DarKnightEngine& e,
                                                                   const nn::Node& node) {
  const auto it = e.kept_.find(node.weights);
  DK_CHECK(it != e.kept_.end(), "backward of layer '{}' without its forward pass", node.name);
  return it->second;
}

template <typename T>
DarKnightEngine::Backward<T>::Backward(DarKnightEngine& e, const nn::Node& node, bool input_grad,
                                       RunStats& stats)
    : e_(e),
      node_(node),
      saved_(kept_of(e, node)),
      stats_(stats),
      t_(stats.backward_times),
      input_grad_(input_grad),
      folded_(e.settings_.grad_decode == GradDecode::folded),
      checked_(e.settings_.integrity != IntegrityMode::none),
      redundant_(e.settings_.integrity == IntegrityMode::redundant),
      s_in_(saved_.in_shape.item_numel()),
      s_out_(node.shape.numel()),
      mixtures_(saved_.in_shape[0]),
      ws_(weight_shape(node)),
      per_(ws_.numel() / ws_[0]),
      in_(e.layer_input(node.weights, saved_.in_shape)) {
  e.be_.set_layer(node.weights);
}

template <typename T>
Tensor DarKnightEngine::Backward<T>::run(const Tensor& delta) {
  send_deltas(delta);
  Tensor dx;
  if (input_grad_) dx = input_grads(delta.shape()[0]);
  if (folded_) {
    folded_weight_grad();
  } else {
    int64_t first = 0;
    for (const auto& tm : saved_.secrets) {
      paper_weight_grad(*tm, first);
      first += tm->k() + 1;
    }
  }
  return dx;
}

template <typename T>
void DarKnightEngine::Backward<T>::send_deltas(const Tensor& delta) {
  double up = 0;
  const double t0 = now();
  dd_ = &e_.buffer(Buf::deltas, delta.shape().with_batch(mixtures_));
  if (checked_ && input_grad_) {
    const Geometry geo = Geometry::of(node_, item_of(saved_.in_shape));
    const DType precision = e_.settings_.codec.precision;
    if (redundant_)
      dcheck_.redundant.emplace(geo, e_.verifier_.digest(node_.weights), saved_.secrets, mixtures_,
                                precision);
    else
      dcheck_.freivalds.emplace(geo, e_.verifier_.training(node_.weights), mixtures_, precision);
  }
  MixtureSink<T> sink = e_.transfer_.uploader<T>(*dd_, s_out_, up, stats_);
  if (checked_)
    sink = [this, send = std::move(sink)](const BlindedT<T>& rows, int64_t first, int64_t e0) {
      dcheck_.on_input(rows, first, e0);
      if (saved_.grad_check) saved_.grad_check->on_delta(rows, first, e0);
      if (saved_.pair_check) saved_.pair_check->on_delta(rows, first, e0, 0);
      send(rows, first, e0);
    };
  e_.train_encoder_.encode_deltas<T>(delta, saved_.secrets, folded_, sink);
  if (redundant_) {  // the second mixing, for the second gradient
    dd2_ = &e_.buffer(Buf::deltas2, dd_->shape());
    MixtureSink<T> send2 = e_.transfer_.uploader<T>(*dd2_, s_out_, up, stats_);
    e_.train_encoder_.encode_deltas<T>(
        delta, saved_.secrets, folded_,
        [&](const BlindedT<T>& rows, int64_t first, int64_t e0) {
          saved_.pair_check->on_delta(rows, first, e0, 1);
          send2(rows, first, e0);
        },
        true);
  }
  t_.encode += now() - t0 - up;
  t_.accelerator += up;
}

template <typename T>
Tensor DarKnightEngine::Backward<T>::input_grads(int64_t m) {
  Tensor dx = Tensor::uninitialized(batched(m, item_of(saved_.in_shape)));
  e_.books_.recompute_or_stop(node_, "backward-data", 1, [&] { return input_grads_attempt(dx); });
  return dx;
}

template <typename T>
bool DarKnightEngine::Backward<T>::input_grads_attempt(Tensor& dx) {
  const double t0 = now();
  accel::Buffer& dxb = e_.buffer(Buf::input_grads, saved_.in_shape);
  e_.linear_backward_data(node_, *dd_, dxb);
  e_.be_.wait();
  stats_.accelerator_calls += 1;
  const double t1 = now();
  t_.accelerator += t1 - t0;
  double down = 0;
  OutputFetch<T> fetch = e_.transfer_.downloader<T>(dxb, s_in_, down, stats_);
  if (checked_) {
    dcheck_.begin_outputs();
    fetch = [this, get = std::move(fetch)](TensorT<T>& rows, int64_t first, int64_t e0) {
      get(rows, first, e0);
      dcheck_.on_output(rows, first, e0);
    };
  }
  e_.train_encoder_.decode_input_grads<T>(saved_.secrets, dx, fetch, folded_);
  t_.decode += now() - t1 - down;
  t_.accelerator += down;
  if (!checked_) return true;
  const bool ok = dcheck_.passed();
  e_.books_.record(
      node_, "backward-data", ok,
      [&] {
        CoefficientList d;
        for (const auto& tm : saved_.secrets) d.push_back(tm->delta_unmixing(folded_));
        return d;
      },
      [&](const Tensor64& e) { return dcheck_.above_tolerance(e); });
  return ok;
}

template <typename T>
void DarKnightEngine::Backward<T>::folded_weight_grad() {
  // The gradient stays on the accelerator; with checks a copy comes back to be checked
  // before it is applied (with the redundant check, the second gradient too).
  accel::Buffer& g = e_.buffer(Buf::weight_grad, ws_);
  accel::Buffer* g2 = redundant_ ? &e_.buffer(Buf::weight_grad2, ws_) : nullptr;
  e_.books_.recompute_or_stop(node_, "backward-weights", redundant_ ? 2 : 1, [&] {
    run_weight_grad(*dd_, g);
    if (!checked_) return true;
    if (!redundant_) return check_grad_freivalds(g);
    run_weight_grad(*dd2_, *g2);
    return check_grad_pair(g, *g2);
  });
  const double t0 = now();
  e_.be_.accumulate_grad(e_.weights(node_.weights), g);
  e_.be_.wait();
  t_.accelerator += now() - t0;
}

template <typename T>
void DarKnightEngine::Backward<T>::run_weight_grad(const accel::Buffer& d, accel::Buffer& g) {
  const double t0 = now();
  e_.linear_backward_weights(node_, in_, d, g);
  e_.be_.wait();
  stats_.accelerator_calls += 1;
  t_.accelerator += now() - t0;
}

template <typename T>
template <typename F>
void DarKnightEngine::Backward<T>::each_row_piece(F&& f) const {
  const int64_t rows_per = std::max<int64_t>(1, e_.settings_.codec.stream_tile / per_);
  for (int64_t o0 = 0; o0 < ws_[0]; o0 += rows_per) f(o0, std::min(ws_[0], o0 + rows_per));
}

template <typename T>
Tensor64 DarKnightEngine::Backward<T>::fetch_rows(const accel::Buffer& g, int64_t o0, int64_t o1) {
  return e_.transfer_.fetch_f64<T>(g, o0 * per_, (o1 - o0) * per_, t_.accelerator, stats_);
}

template <typename T>
bool DarKnightEngine::Backward<T>::check_grad_pair(const accel::Buffer& g,
                                                   const accel::Buffer& g2) {
  GradPairCheck& pc = *saved_.pair_check;
  pc.begin();
  each_row_piece([&](int64_t o0, int64_t o1) {
    const Tensor64 a = fetch_rows(g, o0, o1), b = fetch_rows(g2, o0, o1);
    const double c0 = now();
    pc.check_piece(a.data(), b.data(), o0 * per_, a.numel());
    t_.decode += now() - c0;
  });
  const bool ok = pc.passed();
  // The gradient used is the first; the check sees the difference of their errors.
  e_.books_.record(
      node_, "backward-weights", ok, 2,
      [](int i, const Tensor64& e, bool) -> std::optional<Tensor64> {
        if (i == 1) return std::nullopt;
        return e.clone();
      },
      [&](const std::vector<const Tensor64*>& e) {
        Tensor64 diff(ws_);
        for (int64_t i = 0; i < diff.numel(); ++i)
          diff[i] = (e[0] ? (*e[0])[i] : 0.0) - (e[1] ? (*e[1])[i] : 0.0);
        return pc.above_tolerance(diff);
      });
  return ok;
}

template <typename T>
bool DarKnightEngine::Backward<T>::check_grad_freivalds(const accel::Buffer& g) {
  TrainDigest& td = e_.verifier_.training(node_.weights);
  WeightGradCheck& check = *saved_.grad_check;
  each_row_piece([&](int64_t o0, int64_t o1) {
    const Tensor64 rows = fetch_rows(g, o0, o1);
    const double c0 = now();
    check.check_rows(rows.data(), o0, o1, td);
    t_.decode += now() - c0;
  });
  const bool ok = check.finish(td);
  e_.books_.record(
      node_, "backward-weights", ok, 1,
      [](int, const Tensor64& e, bool) -> std::optional<Tensor64> { return e.clone(); },
      [&](const std::vector<const Tensor64*>& e) { return e[0] && check.above_tolerance(*e[0]); });
  return ok;
}

template <typename T>
void DarKnightEngine::Backward<T>::paper_weight_grad(const TrainingMixing& tm, int64_t first) {
  // The accelerator returns every Eq_j of the virtual batch; the trusted side sums
  // gamma_j Eq_j, piece by piece, into the pending gradient.
  const int n = tm.k() + 1;
  const int64_t wn = ws_.numel();
  const double t0 = now();
  const accel::BufferPtr xv = e_.be_.view(in_, saved_.in_shape.with_batch(n), first * s_in_);
  const accel::BufferPtr dv = e_.be_.view(*dd_, dd_->shape().with_batch(n), first * s_out_);
  accel::Buffer& eq = e_.buffer(Buf::weight_grads, batched(n, ws_));
  e_.linear_backward_weights(node_, *xv, *dv, eq);
  e_.be_.wait();
  stats_.accelerator_calls += 1;
  const double t1 = now();
  t_.accelerator += t1 - t0;
  double fetch = 0, give = 0;
  int64_t e0 = 0;
  for (int64_t len : stream_pieces(wn, e_.settings_.codec.stream_tile)) {
    const TensorT<T> rows = e_.transfer_.fetch_blocks<T>(eq, n, wn, e0, len, fetch, stats_);
    Tensor64 sum(Shape{len});
    for (int j = 0; j < n; ++j) add_scaled(sum, tm.gamma(j), rows.data() + j * len);
    const double f0 = now();
    e_.be_.accumulate_grad(e_.weights(node_.weights), sum, e0);
    give += now() - f0;
    e0 += len;
  }
  t_.decode += now() - t1 - fetch - give;
  t_.accelerator += fetch + give;
}

Tensor DarKnightEngine::backward(const nn::Node& node, const Tensor& delta, bool input_grad,
                                 RunStats& stats) {
  if (settings_.codec.precision == DType::f32)
    return Backward<float>(*this, node, input_grad, stats).run(delta);
  return Backward<double>(*this, node, input_grad, stats).run(delta);
}

}  // namespace darknight::trusted
