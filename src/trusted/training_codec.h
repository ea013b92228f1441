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
// Redundant (the paper's integrity check extended to training, docs/SECURITY.md): B is
//            (K+2)x(K+1) with null vector c (c^T B = 0), and Gamma A = B^+T [I; 0] + c v^T
//            for a secret v; every such A gives the same gradient, so a second delta mixing
//            with another v (`second_delta_mixing`) gives a second, equal gradient. Gamma A
//            has K+2 rows and K columns: two null vectors of its transpose check W^T dbar_j.
#pragma once

#include <vector>

#include "trusted/codec.h"

namespace darknight::trusted {

/// The secrets of one virtual batch at one layer in training, in secret storage (wiped when
/// freed). Neither copyable nor movable.
class TrainingMixing {
 public:
  /// B = scale * Q (Q random orthogonal; with `extra` = 1 one more row, the redundant
  /// mixture), gamma_j = +-U(0.5, 1.5), A = Gamma^-1 (B^+T [I; 0] + c v^T) (v = 0 without
  /// the redundant mixture; else v and the second mixing's v' ~ N(0, 1/scale^2)).
  static std::unique_ptr<TrainingMixing> draw(int k, double scale, Csprng& rng, int extra = 0);
  TrainingMixing(const TrainingMixing&) = delete;
  TrainingMixing& operator=(const TrainingMixing&) = delete;
  TrainingMixing(TrainingMixing&&) = delete;
  TrainingMixing& operator=(TrainingMixing&&) = delete;
  ~TrainingMixing() = default;

  int k() const { return b_->k(); }
  /// Mixtures per virtual batch: k + 1, or k + 2 with the redundant mixture.
  int mixtures() const { return b_->mixtures(); }
  const Mixing& forward() const { return *b_; }
  double a(int j, int i) const { return a_(j, i); }
  double gamma(int j) const { return gamma_[j]; }
  /// The deltas' mixing: A, or Gamma A when folded ((k+1) x k).
  std::unique_ptr<Coefficients> delta_mixing(bool folded) const;
  /// The input gradients' decoding: A's left inverse, or (Gamma A)'s ((k) x (k+1)).
  std::unique_ptr<Coefficients> delta_unmixing(bool folded) const;
  /// With the redundant mixture: the second folded mixing of the deltas (same gradient).
  std::unique_ptr<Coefficients> second_delta_mixing() const;
  /// Unit null vectors of (Gamma A)^T (mixtures() - k of them, as rows): sum_j
  /// null(r, j) dbar_j = 0 for the folded delta mixtures, and so for W^T dbar_j.
  const Coefficients& delta_null() const { return *null_; }
  /// The condition number of Gamma A (its null vectors are null to double precision
  /// relative to it).
  double delta_condition() const { return delta_cond_; }
  /// (A^T Gamma B)[i][c], for checking the identity.
  double identity(int i, int c) const;

 private:
  TrainingMixing(int k, double scale, Csprng& rng, int extra);
  std::unique_ptr<Mixing> b_;
  Coefficients a_, pinv_;
  std::unique_ptr<Coefficients> second_, null_;
  double delta_cond_ = 0;
  SecretBuffer<double> gamma_;
};
using TrainingMixingList = std::vector<std::unique_ptr<TrainingMixing>>;

/// Encodes and decodes the forward and backward passes of a layer in training.
class TrainingEncoder : public Encoder {
 public:
  TrainingEncoder(const CodecOptions& opts, Csprng& rng);

  /// Mixes the inputs with fresh secrets (appended to `secrets`) and noise; with the codec's
  /// redundancy, K + 2 mixtures per virtual batch.
  template <typename T>
  void encode_inputs(const Tensor& src, TrainingMixingList& secrets, const MixtureSink<T>& sink);
  /// Decodes the layer's outputs W x_i (with `epilogue`).
  template <typename T>
  void decode_outputs(const TrainingMixingList& secrets, Tensor& dst, const OutputFetch<T>& fetch,
                      const RowEpilogue& epilogue = {}) const;
  /// Mixes the deltas (no noise): as many mixtures per virtual batch as the inputs had;
  /// `second`: with the second folded mixing (redundant mixture only).
  template <typename T>
  void encode_deltas(const Tensor& deltas, const TrainingMixingList& secrets, bool folded,
                     const MixtureSink<T>& sink, bool second = false);
  /// Decodes W^T dbar_j into the input gradients W^T delta_i.
  template <typename T>
  void decode_input_grads(const TrainingMixingList& secrets, Tensor& dst,
                          const OutputFetch<T>& fetch, bool folded) const;

 private:
  Csprng& rng_;
};

}  // namespace darknight::trusted
