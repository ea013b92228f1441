// Built as part of dk_trusted's link graph (tests/CMakeLists.txt): a trusted file may use the
// accelerator interface, never a backend. Without DK_CONTROL this must fail with "No such
// file": dk_trusted does not link dk_backend_cpu, so its include roots do not hold it.
#ifdef DK_CONTROL
#include "accel/backend.h"
#else
#include "backends/cpu/cpu_backend.h"
#endif
#include "trusted/codec.h"

int dk_layering_probe() {
  return 0;
}
