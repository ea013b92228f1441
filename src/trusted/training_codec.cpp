#include "trusted/training_codec.h"

#include "trusted/secret_eigen.h"

namespace darknight::trusted {

std::unique_ptr<TrainingMixing> TrainingMixing::draw(int k, double scale, Csprng& rng, int extra) {
  return std::unique_ptr<TrainingMixing>(new TrainingMixing(k, scale, rng, extra));
}

TrainingMixing::TrainingMixing(int k, double scale, Csprng& rng, int extra)
    : b_(Mixing::draw(k, scale, rng, extra)),
      a_(k + 1 + extra, k),
      pinv_(k, k + 1 + extra),
      null_(std::make_unique<Coefficients>(1 + extra, k + 1 + extra)),
      gamma_(k + 1 + extra, Metered::no) {
  const int n = k + 1 + extra;
  for (int j = 0; j < n; ++j) {
    const uint64_t r = rng.next_u64();
    const double u = 0.5 + static_cast<double>(r >> 11) * 0x1p-53;  // [0.5, 1.5)
    gamma_[j] = (r & 1) ? -u : u;
  }
  // Gamma A = B^+T [I_k; 0] + c v^T: (Gamma A)[j][i] = (B^+)[i][j] + c_j v_i.
  SecretBuffer<double> v(2 * k, Metered::no);
  if (extra) {
    rng.gaussian(v.data(), 2 * k, 0.0, 1.0 / scale);
    second_ = std::make_unique<Coefficients>(n, k);
  }
  SecretMatrix<> f(n, k), a(n, k);
  for (int j = 0; j < n; ++j)
    for (int i = 0; i < k; ++i) {
      const double c = extra ? b_->null(0, j) : 0.0;
      f(j, i) = b_->inv(i, j) + c * v[i];
      a_(j, i) = a(j, i) = f(j, i) / gamma_[j];
      if (second_) (*second_)(j, i) = b_->inv(i, j) + c * v[k + i];
    }
  // Left inverse of A, (A^T A)^-1 A^T; null vectors of (Gamma A)^T: its left singular
  // vectors beyond its rank k.
  const auto gram = a.transpose() * a;
  SecretMatrix<decltype(gram)::PlainObject> ata(k, k);
  ata.noalias() = gram;
  const SecretLdlt<decltype(gram)::PlainObject> ldlt(ata);
  SecretMatrix<> pinv(k, n);
  pinv.noalias() = ldlt.solve(a.transpose());
  for (int i = 0; i < k; ++i)
    for (int j = 0; j < n; ++j) pinv_(i, j) = pinv(i, j);
  const SecretSvd svd(f, Eigen::ComputeFullU);
  delta_cond_ = svd.singularValues()(0) / svd.singularValues()(k - 1);
  for (int r = 0; r <= extra; ++r)
    for (int j = 0; j < n; ++j) (*null_)(r, j) = svd.matrixU()(j, k + r);
}

std::unique_ptr<Coefficients> TrainingMixing::delta_mixing(bool folded) const {
  auto c = std::make_unique<Coefficients>(mixtures(), k());
  for (int j = 0; j < mixtures(); ++j)
    for (int i = 0; i < k(); ++i) (*c)(j, i) = (folded ? gamma(j) : 1.0) * a(j, i);
  return c;
}

std::unique_ptr<Coefficients> TrainingMixing::second_delta_mixing() const {
  DK_CHECK(second_, "a second delta mixing needs the redundant mixture");
  auto c = std::make_unique<Coefficients>(mixtures(), k());
  for (int j = 0; j < mixtures(); ++j)
    for (int i = 0; i < k(); ++i) (*c)(j, i) = (*second_)(j, i);
  return c;
}

std::unique_ptr<Coefficients> TrainingMixing::delta_unmixing(bool folded) const {
  // (Gamma A)^+ = A^+ Gamma^-1.
  auto c = std::make_unique<Coefficients>(k(), mixtures());
  for (int i = 0; i < k(); ++i)
    for (int j = 0; j < mixtures(); ++j) (*c)(i, j) = pinv_(i, j) / (folded ? gamma(j) : 1.0);
  return c;
}

double TrainingMixing::identity(int i, int c) const {
  double s = 0;
  for (int j = 0; j < mixtures(); ++j) s += a(j, i) * gamma(j) * b_->a(j, c);
  return s;
}

TrainingEncoder::TrainingEncoder(const CodecOptions& opts, Csprng& rng)
    : Encoder(opts, rng), rng_(rng) {}

template <typename T>
void TrainingEncoder::encode_inputs(const Tensor& src, TrainingMixingList& secrets,
                                    const MixtureSink<T>& sink) {
  CoefficientList c;
  for (int kv : split_virtual_batches(src.shape()[0], opts_.k)) {
    secrets.push_back(TrainingMixing::draw(kv, opts_.mixing_scale, rng_, opts_.redundancy));
    c.push_back(secrets.back()->forward().mixing());
  }
  mix<T>(src, c, true, sink);
}

template <typename T>
void TrainingEncoder::decode_outputs(const TrainingMixingList& secrets, Tensor& dst,
                                     const OutputFetch<T>& fetch,
                                     const RowEpilogue& epilogue) const {
  CoefficientList d;
  for (const auto& t : secrets) d.push_back(t->forward().unmixing());
  unmix<T>(dst, d, fetch, epilogue);
}

template <typename T>
void TrainingEncoder::encode_deltas(const Tensor& deltas, const TrainingMixingList& secrets,
                                    bool folded, const MixtureSink<T>& sink, bool second) {
  CoefficientList c;
  for (const auto& t : secrets)
    c.push_back(second ? t->second_delta_mixing() : t->delta_mixing(folded));
  mix<T>(deltas, c, false, sink);
}

template <typename T>
void TrainingEncoder::decode_input_grads(const TrainingMixingList& secrets, Tensor& dst,
                                         const OutputFetch<T>& fetch, bool folded) const {
  CoefficientList d;
  for (const auto& t : secrets) d.push_back(t->delta_unmixing(folded));
  unmix<T>(dst, d, fetch, {});
}

#define DK_INSTANTIATE(T)                                                                         \
  template void TrainingEncoder::encode_inputs<T>(const Tensor&, TrainingMixingList&,             \
                                                  const MixtureSink<T>&);                         \
  template void TrainingEncoder::decode_outputs<T>(                                               \
      const TrainingMixingList&, Tensor&, const OutputFetch<T>&, const RowEpilogue&) const;       \
  template void TrainingEncoder::encode_deltas<T>(const Tensor&, const TrainingMixingList&, bool, \
                                                  const MixtureSink<T>&, bool);                   \
  template void TrainingEncoder::decode_input_grads<T>(const TrainingMixingList&, Tensor&,        \
                                                       const OutputFetch<T>&, bool) const;
DK_INSTANTIATE(float)
DK_INSTANTIATE(double)

}  // namespace darknight::trusted
