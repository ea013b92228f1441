// Eigen over secret storage (protocol/storage.h), for the codecs' matrices (A, B, their
// inverses and factors) and the decompositions that make them.
//
// Eigen allocates its own buffers and frees them unwiped. Here a matrix that holds a secret
// is a SecretMatrix (an Eigen::Map over a SecretBuffer), a product that Eigen would
// evaluate into a temporary is evaluated into one (assign_via_secret), and each
// decomposition is a subclass that wipes Eigen's buffers before they are freed. Left
// unwiped: scalars and the packed blocks of Eigen's matrix-product kernels on the stack.
#pragma once

#include <Eigen/Dense>

#include "protocol/storage.h"

namespace darknight::trusted {

/// The codecs' matrices: row-major, as their coefficient lists.
using Mat = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// Overwrites the coefficients of a dense Eigen object (before Eigen frees them).
template <typename Dense>
void wipe(Dense& m) {
  darknight::detail::secure_zero(m.data(),
                                 sizeof(typename Dense::Scalar) * static_cast<size_t>(m.size()));
}

/// The storage of a SecretMatrix (a base class, so that it exists before the Map).
template <typename M>
struct SecretMatrixStorage {
  SecretBuffer<typename M::Scalar> buffer;
};

/// A rows x cols matrix in secret storage, used by Eigen as a plain matrix of type M (its
/// storage is 64-byte aligned, so Eigen takes the same paths as for M itself).
template <typename M = Mat>
class SecretMatrix : private SecretMatrixStorage<M>, public Eigen::Map<M, Eigen::AlignedMax> {
 public:
  using Map = Eigen::Map<M, Eigen::AlignedMax>;
  SecretMatrix(Eigen::Index rows, Eigen::Index cols)
      : SecretMatrixStorage<M>{SecretBuffer<typename M::Scalar>(rows * cols, Metered::no)},
        Map(this->buffer.data(), rows, cols) {}
  SecretMatrix(const SecretMatrix&) = delete;
  SecretMatrix& operator=(const SecretMatrix&) = delete;
  using Map::operator=;
  /// As Eigen's Map, for Eigen functions that take their destination's own type.
  Map& map() { return *this; }
};

/// dst = e, as Eigen evaluates a product (into a temporary of e's plain type, then copied:
/// the same rounding), with the temporary in secret storage.
template <typename Dst, typename Expr>
void assign_via_secret(Dst&& dst, const Expr& e) {
  SecretMatrix<typename Expr::PlainObject> tmp(e.rows(), e.cols());
  tmp.noalias() = e;
  dst = tmp;
}

/// Eigen's HouseholderQR, wiping its factors when destroyed.
class SecretQr : public Eigen::HouseholderQR<Mat> {
 public:
  template <typename In>
  explicit SecretQr(const Eigen::EigenBase<In>& a) : Eigen::HouseholderQR<Mat>(a) {}
  SecretQr(const SecretQr&) = delete;
  SecretQr& operator=(const SecretQr&) = delete;
  ~SecretQr() {
    wipe(m_qr);
    wipe(m_hCoeffs);
    wipe(m_temp);
  }
};

/// Eigen's LDLT of a matrix of type M, wiping its factors when destroyed.
template <typename M>
class SecretLdlt : public Eigen::LDLT<M> {
 public:
  template <typename In>
  explicit SecretLdlt(const Eigen::EigenBase<In>& a) : Eigen::LDLT<M>(a) {}
  SecretLdlt(const SecretLdlt&) = delete;
  SecretLdlt& operator=(const SecretLdlt&) = delete;
  ~SecretLdlt() {
    wipe(this->m_matrix);
    wipe(this->m_temporary);
    wipe(this->m_transpositions.indices());
  }
};

/// Eigen's JacobiSVD (with its default QR preconditioner) of a matrix with at least as many
/// rows as columns, wiping when destroyed every buffer it used: its copy of the input, U,
/// V, the singular values, the work matrices and the preconditioner's QR.
class SecretSvd : public Eigen::JacobiSVD<Mat> {
 public:
  SecretSvd(const Eigen::Ref<const Mat>& a, unsigned int options);
  SecretSvd(const SecretSvd&) = delete;
  SecretSvd& operator=(const SecretSvd&) = delete;
  ~SecretSvd();

 private:
  Mat input_;
};

}  // namespace darknight::trusted
