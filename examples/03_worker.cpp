// Example 3: the accelerator in a worker.
//
//   03_worker
//
// The untrusted accelerator usually runs in another process or on another host
// (`darknight worker --listen tcp://HOST:PORT`, docs/protocol.md). Here a worker serving
// the CPU backend runs on a thread of this process, on a free loopback port; the trusted
// side connects to it by endpoint, exactly as it would to a remote host, and runs private
// inference of a zoo model through it. Only blinded mixtures and the model's weights cross
// the connection. It prints "OK: ..." when the results equal those of the same private run
// on an in-process CPU backend, bit for bit (same seed, same arithmetic), "MISMATCH: ..."
// otherwise.
#include <atomic>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>

#include "data/datasets.h"
#include "nn/zoo.h"
#include "registry/registry.h"
#include "session/session.h"
#include "trusted/runtime.h"
#include "worker/server.h"

using namespace darknight;

// Private inference of `model` on `images` through `accelerator`: a backend's name, or a
// worker's endpoint. The trusted generator is seeded so that two runs blind alike (a
// seeded generator is only as secret as its seed: real runs leave `seeds` unset, and it is
// keyed from the OS).
Tensor private_infer(const std::string& accelerator, nn::Graph model, const Tensor& images) {
  session::SessionOptions o;
  o.accelerator = accelerator;
  o.accelerator_timeout = 30;  // seconds to wait for one reply of a worker before failing
  o.k = 4;
  o.seeds = session::Seeds(7);
  session::Session s(o);
  std::printf("accelerator: %s\n", s.accelerator().describe().c_str());
  trusted::Runtime rt(std::move(model), s.engine(), s.runtime_options());
  return rt.infer(images);
}

// The untrusted side: a worker serving a CPU backend, on a thread of this process and a free
// loopback port (as `darknight worker --listen tcp://127.0.0.1:0` would in a process of its
// own).
class InProcessWorker {
 public:
  InProcessWorker() : backend_(accel::make_backend("cpu")), server_(*backend_, quiet()) {
    endpoint_ = server_.bind("tcp://127.0.0.1:0");  // port 0: a free one
    thread_ = std::thread([this] { server_.serve(stop_); });
  }
  ~InProcessWorker() { stop(); }
  void stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  const std::string& endpoint() const { return endpoint_; }
  const accel::remote::Server& server() const { return server_; }

 private:
  static accel::remote::ServerOptions quiet() {
    accel::remote::ServerOptions o;
    o.verbose = false;  // no log line per session
    return o;
  }
  std::unique_ptr<accel::Backend> backend_;
  accel::remote::Server server_;
  std::string endpoint_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

int main() try {
  const nn::Graph model = nn::build_model("fmnist-cnn", {.input_size = 28, .classes = 10});
  data::LoadOptions lo;
  lo.synthetic_item = model.input_shape();
  lo.synthetic_count = 8;
  const Tensor images = data::load("synthetic", lo).value().images;

  InProcessWorker worker;
  std::printf("worker listening at %s\n", worker.endpoint().c_str());
  // The trusted side: the endpoint instead of a backend's name. When the session ends, the
  // client says goodbye and the worker frees the session's buffers and weights.
  const Tensor remote_out = private_infer(worker.endpoint(), model.clone(), images);
  worker.stop();
  const int64_t requests = worker.server().requests(), errors = worker.server().errors();
  std::printf("the worker served %lld requests (%lld errors)\n", static_cast<long long>(requests),
              static_cast<long long>(errors));

  // The same private run with the accelerator in this process.
  const Tensor local_out = private_infer("cpu", model.clone(), images);
  int64_t differ = 0;
  for (int64_t i = 0; i < local_out.numel(); ++i) differ += remote_out[i] != local_out[i];
  std::printf("remote vs in-process: %lld of %lld outputs differ\n", static_cast<long long>(differ),
              static_cast<long long>(local_out.numel()));
  const bool ok = differ == 0 && errors == 0 && requests > 0;
  std::printf("%s: inference through the worker %s in-process inference\n", ok ? "OK" : "MISMATCH",
              ok ? "equals" : "differs from");
  return ok ? 0 : 1;
} catch (const std::exception& e) {
  std::fprintf(stderr, "03_worker: %s\n", e.what());
  return 1;
}
