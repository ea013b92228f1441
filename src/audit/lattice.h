// Lattice reduction on field-masked mixtures (libfplll), an attack of `darknight audit`.
#pragma once

#include <Eigen/Dense>
#include <cstdint>

#include "protocol/error.h"

namespace darknight::audit {

struct LatticeOptions {
  int64_t p = 2147483647;  ///< the field (Slalom's 2^31 - 1)
  int window = 60;         ///< columns (pixels) the lattice is built on
  int bkz_block = 0;       ///< 0: LLL only; >= 2: BKZ with this block size after LLL
};

/// Plays the attacker on m masked vectors over F_p (the rows of `rows`: integers, centred
/// or in [0, p)) that may share masks: builds the lattice of all integer combinations of
/// the rows plus p Z^window on `window` columns (evenly spaced over the row: column
/// floor(w * cols / window) for w < window, so that a picture's border does not fill it),
/// reduces it (LLL, then BKZ when bkz_block >= 2), and returns the m shortest reduced
/// vectors' combinations applied to the whole rows (m x rows.cols(), centred in
/// (-p/2, p/2]; exact as f64 for p < 2^53). When the rows hide small vectors under fewer
/// than m independent masks, the hidden vectors or small combinations of them (x_i - x_j
/// where that is shorter, e.g. overlapping non-negative pictures) come out; under m
/// independent uniform masks the output is noise. When the rows restricted to the window
/// have rank r < m over F_p, only r vectors come out and the last m - r output rows are
/// zero. An error for non-integer or out-of-range (outside (-p, p)) values, no rows, rows
/// narrower than the window, or a window narrower than m. Throws darknight::Error when p
/// is outside [3, 2^62), window < 1 or bkz_block < 0; p must be prime (a composite one
/// throws only when the elimination meets a pivot with no inverse).
Result<Eigen::MatrixXd> lattice_short_vectors(const Eigen::MatrixXd& rows,
                                              const LatticeOptions& o = {});

}  // namespace darknight::audit
