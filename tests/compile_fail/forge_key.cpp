// Must NOT compile: code that is not a BlindingFactory (the encoders, or the unprotected
// path) making a BlindedT. Built with -DDK_CONTROL it uses the unprotected path and must
// compile.
#include "protocol/blinded.h"
#ifdef DK_CONTROL
#include "baselines/unprotected.h"
#endif

darknight::Blinded forge(darknight::Tensor&& t) {
#ifdef DK_CONTROL
  return darknight::baselines::Unprotected::expose(std::move(t));
#else
  return darknight::BlindingFactory::make_blinded(std::move(t));
#endif
}
