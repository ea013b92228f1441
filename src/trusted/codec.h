// DarKnight's inference codec (paper section 3.1): mixes each virtual batch of K inputs
// and one fresh noise vector with a secret (K+1)x(K+1) matrix A, and decodes the
// accelerator's outputs with A^-1, dropping the noise column.
//
//   mixtures   xbar_j = sum_{i<K} A[j,i] x_i + A[j,K] r          (j = 0..K)
//   accelerator ybar_j = W xbar_j = sum_i A[j,i] (W x_i) + A[j,K] (W r)
//   decode      W x_i  = sum_j (A^-1)[i,j] ybar_j                 (i = 0..K-1)
//
// A and r are drawn fresh for every virtual batch and every layer (reusing either breaks
// the scheme; see docs/SECURITY.md). Mixing is computed in the mixtures' element type (its
// rounding is that of the mixtures themselves); decoding, where the noise cancels,
// accumulates in f64 whatever the element type, so what remains is the rounding of the
// mixtures and of the accelerator's arithmetic.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "protocol/blinded.h"
#include "protocol/tensor.h"
#include "trusted/random.h"

namespace darknight::trusted {

struct NoiseSpec {
  double mean = 0.0;
  double std = 100.0;  ///< default: see docs/SECURITY.md "Noise default"
};

struct CodecOptions {
  int k = 4;  ///< inputs per virtual batch, 1..16
  NoiseSpec noise;
  double mixing_scale = 1.0;  ///< A = scale * Q with Q a random orthogonal matrix
  DType precision = DType::f32;
  /// Redundant mixtures per virtual batch (0, or 1 for the paper's integrity check).
  int redundancy = 0;
  /// Allow noise that leaves the mixtures noise-free (std 0, or so small next to the mean
  /// and to unit-scale inputs that the element type rounds it away): with K = 1 each mixture
  /// is then a scaled copy of its input. For tests of the audit only; validate() refuses it
  /// otherwise.
  bool insecure = false;
  /// Elements per streamed piece: mixtures are made and decoded this many elements of each
  /// item at a time, so the trusted side never holds a layer's whole set of mixtures.
  int64_t stream_tile = int64_t{1} << 18;
  void validate() const;
};

/// A secret coefficient matrix, row-major, in secret storage (wiped when freed). Neither
/// copyable nor movable: lists hold it by unique_ptr.
class Coefficients {
 public:
  Coefficients(int rows, int cols)
      : rows_(rows), cols_(cols), m_(int64_t{rows} * cols, Metered::no) {}
  Coefficients(const Coefficients&) = delete;
  Coefficients& operator=(const Coefficients&) = delete;
  Coefficients(Coefficients&&) = delete;
  Coefficients& operator=(Coefficients&&) = delete;
  int rows() const { return rows_; }
  int cols() const { return cols_; }
  double& operator()(int r, int c) { return m_[int64_t{r} * cols_ + c]; }
  double operator()(int r, int c) const { return m_[int64_t{r} * cols_ + c]; }
  const double* row(int r) const { return m_.data() + int64_t{r} * cols_; }

 private:
  int rows_ = 0, cols_ = 0;
  SecretBuffer<double> m_;
};
using CoefficientList = std::vector<std::unique_ptr<Coefficients>>;

/// The secret coefficients of one virtual batch at one layer, in secret storage (wiped when
/// freed). Neither copyable nor movable.
/// A is (k+1+extra) x (k+1): one row per mixture, one column per input and the noise. With
/// extra = 1 the (k+2)-th mixture is redundant (the paper's integrity check, section 3.3):
/// the outputs then satisfy sum_j c_j ybar_j = 0 for the null vector c of A^T.
class Mixing {
 public:
  /// A = scale * Q[:, 0..k], Q a Haar-distributed orthogonal (k+1+extra)-square matrix (QR of
  /// a Gaussian matrix with the signs of R's diagonal moved into Q), so cond(A) = 1.
  static std::unique_ptr<Mixing> draw(int k, double scale, Csprng& rng, int extra = 0);
  /// For tests: a given (k+1+extra) x (k+1) row-major matrix. Throws Error when it is
  /// rank-deficient.
  static std::unique_ptr<Mixing> from_matrix(int k, std::vector<double> a, int extra = 0);

  Mixing(const Mixing&) = delete;
  Mixing& operator=(const Mixing&) = delete;
  Mixing(Mixing&&) = delete;
  Mixing& operator=(Mixing&&) = delete;
  ~Mixing() = default;

  int k() const { return k_; }
  /// Unknowns per virtual batch: the k inputs and the noise.
  int n() const { return k_ + 1; }
  /// Mixtures sent: n() + extra.
  int mixtures() const { return k_ + 1 + extra_; }
  int extra() const { return extra_; }
  double a(int j, int i) const { return a_[j * n() + i]; }
  /// A's pseudo-inverse (n x mixtures; the inverse when extra = 0).
  double inv(int i, int j) const { return inv_[i * mixtures() + j]; }
  /// Unit null vectors of A^T (extra of them): sum_j null(r, j) A[j, i] = 0.
  double null(int r, int j) const { return null_[r * mixtures() + j]; }
  double condition_number() const { return cond_; }
  /// A, the mixing of the k inputs and the noise (the last column).
  std::unique_ptr<Coefficients> mixing() const;
  /// The first k rows of A's pseudo-inverse: each output's W x_i from the outputs.
  std::unique_ptr<Coefficients> unmixing() const;

 private:
  Mixing(int k, int extra, SecretBuffer<double> a);
  int k_ = 0, extra_ = 0;
  double cond_ = 0;
  SecretBuffer<double> a_, inv_, null_;
};
/// The secrets of a call's virtual batches, in order.
using MixingList = std::vector<std::unique_ptr<Mixing>>;

/// Sizes of the virtual batches of a chunk of `items` inputs: K each, the last one smaller
/// when K does not divide `items` (it is then mixed with a smaller, fresh matrix).
std::vector<int> split_virtual_batches(int64_t items, int k);
/// Mixtures sent for those virtual batches: sum of (k_v + 1 + extra).
int64_t mixture_count(const std::vector<int>& sizes, int extra = 0);

/// A per-element transform applied to each decoded output row while it is hot in cache:
/// fn(row, begin, end) for the element range [begin, end) of one item.
using RowEpilogue = std::function<void(float* row, int64_t begin, int64_t end)>;

/// Receives mixtures as they are made: `rows` is [n, len], elements [e0, e0 + len) of
/// mixtures first .. first + n - 1.
template <typename T>
using MixtureSink = std::function<void(const BlindedT<T>& rows, int64_t first, int64_t e0)>;
/// Fills `rows` ([n, len]) with elements [e0, e0 + len) of outputs first .. first + n - 1.
template <typename T>
using OutputFetch = std::function<void(TensorT<T>& rows, int64_t first, int64_t e0)>;

/// Lengths of the pieces an item of `numel` elements is streamed in.
std::vector<int64_t> stream_pieces(int64_t numel, int64_t tile);
/// Elements per parallel work item of encoding and decoding.
inline constexpr int64_t kTile = 2048;

class SecretSource;
class DirectSource;

/// The inference encoder. Its generic mix/unmix also serve the training encoder. One of the
/// makers of accelerator data (protocol/blinded.h).
class Encoder : protected BlindingFactory {
 public:
  /// Draws coefficients and noise from `rng` when needed.
  Encoder(const CodecOptions& opts, Csprng& rng);
  /// Takes them from `secrets` (e.g. precomputed), which must outlive the encoder.
  Encoder(const CodecOptions& opts, SecretSource& secrets);
  ~Encoder();

  const CodecOptions& options() const { return opts_; }

  /// Mixes the items of `src` ([m, ...], f32 plaintext) in virtual batches of K, drawing
  /// fresh coefficients (appended to `secrets`) and noise for each, and hands the
  /// sum(k_v + 1) mixtures to `sink` piece by piece, virtual batch after virtual batch.
  template <typename T>
  void encode(const Tensor& src, MixingList& secrets, const MixtureSink<T>& sink);
  /// The same for items [first_item, first_item + items) of `src` only (a multiple of K
  /// unless it runs to the end); the sink's mixture indices count from 0.
  template <typename T>
  void encode(const Tensor& src, MixingList& secrets, const MixtureSink<T>& sink,
              int64_t first_item, int64_t items);
  /// The same, collecting every mixture into one tensor [sum(k_v + 1), ...].
  template <typename T>
  BlindedT<T> encode(const Tensor& src, MixingList& secrets);

  /// Decodes the outputs of the mixtures into `dst` ([m, ...] f32, items of `numel`
  /// elements), fetching them piece by piece and applying `epilogue` to each row.
  template <typename T>
  void decode(const MixingList& secrets, Tensor& dst, const OutputFetch<T>& fetch,
              const RowEpilogue& epilogue = {}) const;
  /// The same from one tensor holding every output [sum(k_v + 1), ...].
  template <typename T>
  void decode(const TensorT<T>& mixed, const MixingList& secrets, Tensor& dst,
              const RowEpilogue& epilogue = {}) const;
  /// The same from outputs in memory ([sum(k_v + 1), item] row-major) for the items from
  /// `first_item` on (encode's item range), read in place.
  template <typename T>
  void decode(std::span<const T> outputs, const MixingList& secrets, Tensor& dst,
              const RowEpilogue& epilogue, int64_t first_item) const;

 protected:
  /// For each virtual batch v, c[v].rows() outputs: output j = sum_i c[v](j, i) x_i over
  /// its inputs (c[v].cols() of them, or c[v].cols() - 1 and a fresh noise vector as the
  /// last input when `noise`), streamed to `sink`.
  template <typename T>
  void mix(const Tensor& src, const CoefficientList& c, bool noise, const MixtureSink<T>& sink,
           int64_t first_item = 0);
  /// For each virtual batch v, d[v].rows() items of dst: item i = sum_j d[v](i, j) y_j over
  /// its d[v].cols() fetched outputs; `epilogue` applied to each. Fills all of dst, or
  /// with `first_item` the items from there on that d covers.
  /// With `outputs`, reads them there ([sum(k_v + 1), item]) instead of fetching.
  template <typename T>
  void unmix(Tensor& dst, const CoefficientList& d, const OutputFetch<T>& fetch,
             const RowEpilogue& epilogue, std::optional<int64_t> first_item = {},
             const T* outputs = nullptr) const;

  CodecOptions opts_;
  std::unique_ptr<DirectSource> owned_;
  SecretSource* source_;
};

}  // namespace darknight::trusted
