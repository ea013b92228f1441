// Which accelerator backends this binary has, and making one by name: the only code that
// knows every backend. Linked by the apps, tests and benchmarks, never by the trusted
// runtime or the models (docs/architecture.md).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "accel/backend.h"

namespace darknight::accel {

/// Names of the backends built into this binary, fastest first ("cuda" when built with
/// CUDA, "cpu", "ref").
std::vector<std::string> backend_names();
/// Why the named backend cannot run on this machine (a "cuda" build with no GPU), or "".
std::string unavailable_reason(const std::string& name);
/// True for an endpoint of a remote worker (tcp://HOST:PORT or ipc://PATH).
bool is_remote(const std::string& name);
/// Makes a backend by name, or connects to the worker at an endpoint (is_remote); throws
/// Error naming the available ones when unknown.
std::unique_ptr<Backend> make_backend(const std::string& name, const BackendOptions& opts = {});

}  // namespace darknight::accel
