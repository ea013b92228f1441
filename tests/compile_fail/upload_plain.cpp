// Must NOT compile: a plain tensor handed to the accelerator as data. Built with
// -DDK_CONTROL it takes the named unprotected path instead, and must compile (the control
// that shows the failure comes from the type rule, not from a broken snippet).
#include "accel/backend.h"
#ifdef DK_CONTROL
#include "baselines/unprotected.h"
#endif

void leak(darknight::accel::Backend& be, darknight::accel::Buffer& dst) {
  darknight::Tensor plaintext(darknight::Shape{1, 3, 4, 4});
#ifdef DK_CONTROL
  be.upload(darknight::baselines::Unprotected::expose(std::move(plaintext)), dst);
#else
  be.upload(plaintext, dst);
#endif
}
