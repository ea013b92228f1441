#include "registry/registry.h"

#include <fmt/format.h>

#include "backends/cpu/cpu_backend.h"
#ifdef DARKNIGHT_HAVE_CUDA
#include "backends/cuda/cuda_backend.h"
#endif
#include "backends/ref/ref_backend.h"
#include "backends/remote/remote_backend.h"

namespace darknight::accel {

std::vector<std::string> backend_names() {
#ifdef DARKNIGHT_HAVE_CUDA
  return {"cuda", "cpu", "ref"};
#else
  return {"cpu", "ref"};
#endif
}

std::string unavailable_reason(const std::string& name) {
#ifdef DARKNIGHT_HAVE_CUDA
  if (name == "cuda") return CudaBackend::unavailable_reason();
#else
  if (name == "cuda")
    return "this darknight was built without the CUDA backend (DARKNIGHT_CUDA=off, or no CUDA "
           "toolkit and cuDNN at build time)";
#endif
  return "";
}

bool is_remote(const std::string& name) {
  return name.rfind("tcp://", 0) == 0 || name.rfind("ipc://", 0) == 0;
}

std::unique_ptr<Backend> make_backend(const std::string& name, const BackendOptions& opts) {
  if (is_remote(name))
    return std::make_unique<remote::RemoteBackend>(
        remote::RemoteOptions{name, opts.timeout_s, opts.mixtures_per_batch, 0, opts.worker_key});
  if (name == "cpu") return std::make_unique<CpuBackend>(opts);
#ifdef DARKNIGHT_HAVE_CUDA
  if (name == "cuda") return std::make_unique<CudaBackend>(opts);
#else
  if (name == "cuda") throw Error("cuda backend: " + unavailable_reason(name));
#endif
  if (name == "ref") return std::make_unique<RefBackend>();
  throw Error(
      fmt::format("unknown accelerator backend '{}' (available: {}, or a worker's "
                  "tcp://HOST:PORT or ipc://PATH)",
                  name, fmt::join(backend_names(), ", ")));
}

}  // namespace darknight::accel
