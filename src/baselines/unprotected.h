// The explicitly named unprotected path across the trust boundary.
//
// Everything that sends plaintext to the accelerator goes through here: the `plain`
// baseline (no protection, by design), conformance tests and benchmarks of the accelerator
// itself. Trusted-runtime code must never include this header (checked by the layering
// test, tests/layering_test.sh).
#pragma once

#include "protocol/blinded.h"

namespace darknight::baselines {

struct Unprotected : private BlindingFactory {
  /// Hands `plaintext` to the accelerator as-is. Provides no protection whatsoever.
  template <typename T>
  static BlindedT<T> expose(TensorT<T>&& plaintext) {
    return make_blinded(std::move(plaintext));
  }
};

}  // namespace darknight::baselines
