// Must NOT compile: code other than the encoders or the unprotected path minting a
// BlindingKey. Built with -DDK_CONTROL it uses the unprotected path and must compile.
#include "protocol/blinded.h"
#ifdef DK_CONTROL
#include "baselines/unprotected.h"
#endif

darknight::Blinded forge(darknight::Tensor&& t) {
#ifdef DK_CONTROL
  return darknight::baselines::Unprotected::expose(std::move(t));
#else
  return darknight::Blinded(darknight::BlindingKey{}, std::move(t));
#endif
}
