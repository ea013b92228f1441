#include "trusted/secret_eigen.h"

#include "protocol/error.h"

namespace darknight::trusted {
namespace {

// JacobiSVD keeps its QR preconditioner's buffers (the QR of the input) private to the
// preconditioner. An explicit instantiation may name private members ([temp.spec]), and
// is the one standard way to reach them: each Expose<Tag, member> defines member(Tag).
template <typename Tag, typename Tag::type Member>
struct Expose {
  friend typename Tag::type member(Tag) { return Member; }
};

using Preconditioner =
    Eigen::internal::qr_preconditioner_impl<Mat, Eigen::ColPivHouseholderQRPreconditioner,
                                            Eigen::internal::PreconditionIfMoreRowsThanCols>;
using PreconditionerQr = Eigen::ColPivHouseholderQR<Mat>;

struct QrOf {
  using type = PreconditionerQr Preconditioner::*;
  friend type member(QrOf);
};
struct WorkspaceOf {
  using type = Eigen::Matrix<double, Eigen::Dynamic, 1> Preconditioner::*;
  friend type member(WorkspaceOf);
};
template struct Expose<QrOf, &Preconditioner::m_qr>;
template struct Expose<WorkspaceOf, &Preconditioner::m_workspace>;

/// Wipes a ColPivHouseholderQR's buffers, which it keeps protected.
struct ColPivWipe : PreconditionerQr {
  static void wipe_all(PreconditionerQr& qr) {
    wipe(qr.*&ColPivWipe::m_qr);
    wipe(qr.*&ColPivWipe::m_hCoeffs);
    wipe((qr.*&ColPivWipe::m_colsPermutation).indices());
    wipe(qr.*&ColPivWipe::m_colsTranspositions);
    wipe(qr.*&ColPivWipe::m_temp);
    wipe(qr.*&ColPivWipe::m_colNormsUpdated);
    wipe(qr.*&ColPivWipe::m_colNormsDirect);
  }
};

}  // namespace

SecretSvd::SecretSvd(const Eigen::Ref<const Mat>& a, unsigned int options) : input_(a) {
  DK_ASSERT(a.rows() >= a.cols(), "SecretSvd wipes the preconditioner of rows >= cols only");
  compute(input_, options);
}

SecretSvd::~SecretSvd() {
  wipe(input_);
  wipe(m_matrixU);
  wipe(m_matrixV);
  wipe(m_singularValues);
  wipe(m_workMatrix);
  wipe(m_scaledMatrix);
  ColPivWipe::wipe_all(m_qr_precond_morerows.*member(QrOf{}));
  wipe(m_qr_precond_morerows.*member(WorkspaceOf{}));
}

}  // namespace darknight::trusted
