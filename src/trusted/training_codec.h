// DarKnight's training codec (paper section 3.2). Per virtual batch of K inputs and per
// layer, secret matrices B ((K+1)x(K+1), mixes the inputs and a fresh noise vector), A
// ((K+1)xK, mixes the K deltas) and a diagonal Gamma with
//
//   A^T Gamma B = [I_K | 0]                (B drawn orthogonal, Gamma drawn, A solved for)
//
// Forward:   xbar_j = sum_i B[j,i] x_i + B[j,K] r; the accelerator keeps xbar_j.
// Backward:  dbar_j = sum_i A[j,i] delta_i; the accelerator returns W^T dbar_j, decoded with
//            A's left inverse into W^T delta_i, and Eq_j = dbar_j xbar_j^T, from which
//            sum_j gamma_j Eq_j = sum_i delta_i x_i^T, the virtual batch's weight gradient.
// Folded:    dbar_j = gamma_j sum_i A[j,i] delta_i, so that the accelerator's ordinary
//            backward-weights summed over the mixtures is that gradient directly; W^T dbar_j
//            is then decoded with (Gamma A)'s left inverse. Neither mode hides Gamma.
#pragma once

#include <vector>

#include "trusted/codec.h"

namespace darknight::trusted {

/// The secrets of one virtual batch at one layer in training. Wiped when destroyed; neither
/// copyable nor movable.
class TrainingMixing {
 public:
  /// B = scale * Q (Q random orthogonal), gamma_j = +-U(0.5, 1.5), A = Gamma^-1 B^-T [I; 0].
  static std::unique_ptr<TrainingMixing> draw(int k, double scale, Csprng& rng);
  TrainingMixing(const TrainingMixing&) = delete;
  TrainingMixing& operator=(const TrainingMixing&) = delete;
  TrainingMixing(TrainingMixing&&) = delete;
  TrainingMixing& operator=(TrainingMixing&&) = delete;
  ~TrainingMixing();

  int k() const { return b_->k(); }
  const Mixing& forward() const { return *b_; }
  double a(int j, int i) const { return a_(j, i); }
  double gamma(int j) const { return gamma_[static_cast<size_t>(j)]; }
  /// The deltas' mixing: A, or Gamma A when folded ((k+1) x k).
  std::unique_ptr<Coefficients> delta_mixing(bool folded) const;
  /// The input gradients' decoding: A's left inverse, or (Gamma A)'s ((k) x (k+1)).
  std::unique_ptr<Coefficients> delta_unmixing(bool folded) const;
  /// (A^T Gamma B)[i][c], for checking the identity.
  double identity(int i, int c) const;

 private:
  TrainingMixing(int k, double scale, Csprng& rng);
  std::unique_ptr<Mixing> b_;
  Coefficients a_, pinv_;
  std::vector<double> gamma_;
};
using TrainingMixingList = std::vector<std::unique_ptr<TrainingMixing>>;

/// Encodes and decodes the forward and backward passes of a layer in training.
class TrainingEncoder : public Encoder {
 public:
  TrainingEncoder(const CodecOptions& opts, Csprng& rng);

  /// Mixes the inputs with fresh secrets (appended to `secrets`) and noise.
  template <typename T>
  void encode_inputs(const Tensor& src, TrainingMixingList& secrets, const MixtureSink<T>& sink);
  /// Decodes the layer's outputs W x_i (with `epilogue`).
  template <typename T>
  void decode_outputs(const TrainingMixingList& secrets, Tensor& dst, const OutputFetch<T>& fetch,
                      const RowEpilogue& epilogue = {}) const;
  /// Mixes the deltas (no noise): K + 1 mixtures per virtual batch.
  template <typename T>
  void encode_deltas(const Tensor& deltas, const TrainingMixingList& secrets, bool folded,
                     const MixtureSink<T>& sink);
  /// Decodes W^T dbar_j into the input gradients W^T delta_i.
  template <typename T>
  void decode_input_grads(const TrainingMixingList& secrets, Tensor& dst,
                          const OutputFetch<T>& fetch, bool folded) const;

 private:
  Csprng& rng_;
};

}  // namespace darknight::trusted
