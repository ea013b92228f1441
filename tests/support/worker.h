// An accelerator worker (worker/server.h) on a thread of the test process, serving a
// CPU backend on a free loopback port.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "accel/backend.h"
#include "registry/registry.h"
#include "support/available.h"
#include "worker/server.h"

namespace darknight::testing {

class TestWorker {
 public:
  explicit TestWorker(accel::remote::ServerOptions opts = {}, const std::string& backend = "cpu")
      : be_(accel::make_backend(backend)) {
    opts.verbose = false;
    server_ = std::make_unique<accel::remote::Server>(*be_, opts);
    endpoint_ = server_->bind("tcp://127.0.0.1:0");
    thread_ = std::thread([this] { server_->serve(stop_); });
  }
  ~TestWorker() { stop(); }
  /// Stops serving (as if the worker died: no goodbye to the client).
  void stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    server_.reset();
  }
  const std::string& endpoint() const { return endpoint_; }
  accel::remote::Server& server() { return *server_; }

 private:
  std::unique_ptr<accel::Backend> be_;
  std::unique_ptr<accel::remote::Server> server_;
  std::string endpoint_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

/// A backend by name; "remote" is a RemoteBackend connected to a worker shared by the tests
/// of this process (its sessions follow each other: one client at a time).
inline std::unique_ptr<accel::Backend> make_test_backend(const std::string& name) {
  if (name != "remote") return accel::make_backend(name);
  static TestWorker worker;
  return accel::make_backend(worker.endpoint());
}

}  // namespace darknight::testing
