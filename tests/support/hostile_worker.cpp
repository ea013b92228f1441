// dk_hostile_worker: an accelerator worker that serves honestly (a real accel::remote::Server
// on a backend in this process, behind a relay) except for one misbehaviour, on the Nth
// request of one type. tests/hostile_worker_test.sh drives `darknight infer` and `train`
// against each kind: every one must end in a clear error on the trusted side, never a crash,
// a hang or a read out of bounds.
//
//   dk_hostile_worker --listen tcp://127.0.0.1:0 --misbehave KIND [--on TYPE] [--nth N]
//                     [--backend ref] [--max-seconds 120]
//
// KIND (applied to the reply of the chosen request):
//   honest        no misbehaviour
//   wrong-shape   read_*: a tensor of another shape (first dimension +-1), payload to match
//   reshape       read_*: the same elements as a flat vector (only a shape check sees it)
//   truncate      the payload cut to half (the header frame cut short when there is none)
//   oversize      a payload one element over the frame limit (wire.h kMaxFrameBytes)
//   bad-magic     the header's magic number changed
//   extra-frame   a third, empty frame
//   random-bytes  the header replaced by random bytes, the payload dropped
//   wrong-type    a reply type that does not exist
//   wrong-seq     the reply carries the next request's number
//   bad-stats     stats: more faults than operations
//   stall         no reply, to this request or any later one
//   exit          the process exits at once, without replying
// TYPE: a request type (read_weights, download, hello, stats, ...; wire.h) or "any".
// Prints "hostile worker: listening on ENDPOINT" when ready.
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <map>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "accel/backend.h"
#include "backends/remote/wire.h"
#include "registry/registry.h"
#include "worker/server.h"

namespace dk = darknight;
namespace remote = darknight::accel::remote;

namespace {

std::atomic<bool> stop_requested{false};
void on_signal(int) {
  stop_requested = true;
}

[[noreturn]] void usage(const std::string& why) {
  std::fprintf(stderr,
               "dk_hostile_worker: %s\nusage: dk_hostile_worker --listen ENDPOINT --misbehave "
               "KIND [--on TYPE] [--nth N] [--backend NAME] [--max-seconds S]\n",
               why.c_str());
  std::exit(2);
}

/// `n` zero bytes that cost no memory (never-written anonymous pages), sent without a copy.
zmq::message_t zero_pages(size_t n) {
  void* p = mmap(nullptr, n, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) usage("mmap failed");
  return zmq::message_t(
      p, n, [](void* data, void* hint) { munmap(data, reinterpret_cast<size_t>(hint)); },
      reinterpret_cast<void*>(n));
}

bool is_read(remote::Type t) {
  return t == remote::Type::read_weights || t == remote::Type::read_momentum ||
         t == remote::Type::read_grad;
}

/// A read_* reply's tensor replaced by one of `dims` (the payload resized to match, zeros
/// past the original elements).
void set_tensor(remote::Message& r, remote::Type req, const std::vector<int64_t>& dims) {
  const size_t elem = req == remote::Type::read_grad ? 8 : 4;
  int64_t numel = 1;
  for (int64_t d : dims) numel *= d;
  std::vector<char> bytes(static_cast<size_t>(numel) * elem, 0);
  std::memcpy(bytes.data(), r.payload.data(), std::min(bytes.size(), r.payload.size()));
  r.ints = {1, static_cast<int64_t>(dims.size())};
  r.ints.insert(r.ints.end(), dims.begin(), dims.end());
  r.set_payload(bytes.data(), bytes.size());
}

/// The reply's tensor dimensions (empty when it has none).
std::vector<int64_t> tensor_dims(const remote::Message& r) {
  if (r.ints.size() < 2 || r.ints[0] != 1) return {};
  return std::vector<int64_t>(r.ints.begin() + 2, r.ints.end());
}

/// Applies `kind` to the honest reply `r` to a request of type `req`; returns its frames.
std::vector<zmq::message_t> misbehave(const std::string& kind, remote::Type req,
                                      remote::Message r) {
  const auto warn_unfit = [&] {
    std::fprintf(stderr, "hostile worker: %s does not apply to a %s reply; sent as it was\n",
                 kind.c_str(), remote::type_name(req));
  };
  if (kind == "wrong-shape" || kind == "reshape") {
    if (!is_read(req) || r.type != remote::Type::ok) {
      warn_unfit();
    } else {
      std::vector<int64_t> dims = tensor_dims(r);
      if (dims.empty()) {
        dims = {1};  // a tensor where there was none (an empty momentum)
      } else if (kind == "wrong-shape") {
        dims[0] = dims[0] > 1 ? dims[0] - 1 : dims[0] + 1;
      } else {
        int64_t n = 1;
        for (int64_t d : dims) n *= d;
        dims = {n};
      }
      set_tensor(r, req, dims);
    }
  } else if (kind == "bad-stats") {
    if (req != remote::Type::stats) warn_unfit();
    r.ints = {1, 5};
  } else if (kind == "oversize") {
    r.payload = zero_pages(static_cast<size_t>(remote::kMaxFrameBytes) + 8);
    r.has_payload = true;
  } else if (kind == "wrong-seq") {
    r.seq += 1;
  } else if (kind == "wrong-type") {
    r.type = static_cast<remote::Type>(77);
  } else if (kind == "truncate" && r.has_payload && r.payload.size() > 0) {
    zmq::message_t half(r.payload.data(), r.payload.size() / 2);
    r.payload = std::move(half);
  }
  std::vector<zmq::message_t> frames = r.frames();
  std::string head = frames[0].to_string();
  if (kind == "truncate" && frames.size() == 1) {
    head.resize(head.size() - 1);
  } else if (kind == "bad-magic") {
    head[0] ^= 0x5a;
  } else if (kind == "random-bytes") {
    std::mt19937 rng(std::random_device{}());
    head.resize(1 + rng() % 64);
    for (char& c : head) c = static_cast<char>(rng());
    frames.resize(1);
  } else if (kind == "extra-frame") {
    frames.emplace_back();
  }
  frames[0] = zmq::message_t(head.data(), head.size());
  return frames;
}

}  // namespace

int main(int argc, char** argv) {
  std::string listen = "tcp://127.0.0.1:0", kind, on = "any", backend = "ref";
  int64_t nth = 1;
  double max_seconds = 120;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (i + 1 >= argc) usage("missing value for " + a);
    const std::string v = argv[++i];
    if (a == "--listen")
      listen = v;
    else if (a == "--misbehave")
      kind = v;
    else if (a == "--on")
      on = v;
    else if (a == "--nth")
      nth = std::stoll(v);
    else if (a == "--backend")
      backend = v;
    else if (a == "--max-seconds")
      max_seconds = std::stod(v);
    else
      usage("unknown option " + a);
  }
  static const std::set<std::string> kinds = {
      "honest",    "wrong-shape", "reshape",      "truncate",   "oversize",
      "bad-magic", "extra-frame", "random-bytes", "wrong-type", "wrong-seq",
      "bad-stats", "stall",       "exit"};
  if (!kinds.count(kind)) usage("unknown --misbehave '" + kind + "'");
  if (nth < 1) usage("--nth must be at least 1");
  bool known_type = on == "any";
  for (int t = 1; t <= 22 && !known_type; ++t)
    known_type = on == remote::type_name(static_cast<remote::Type>(t));
  if (!known_type) usage("unknown request type '" + on + "'");

  try {
    // The honest worker, on a loopback port of its own; this process relays to it.
    auto be = dk::accel::make_backend(backend);
    remote::ServerOptions so;
    so.verbose = false;
    remote::Server server(*be, so);
    const std::string inner = server.bind("tcp://127.0.0.1:0");
    std::atomic<bool> stop_inner{false};
    std::thread serving([&] { server.serve(stop_inner); });

    zmq::context_t ctx(1);
    zmq::socket_t front(ctx, zmq::socket_type::router), back(ctx, zmq::socket_type::dealer);
    front.set(zmq::sockopt::linger, 0);
    back.set(zmq::sockopt::linger, 0);
    front.bind(listen);
    back.connect(inner);
    std::signal(SIGINT, on_signal);
    std::signal(SIGTERM, on_signal);
    std::printf("hostile worker: listening on %s (%s on %s #%lld, backend %s)\n",
                front.get(zmq::sockopt::last_endpoint).c_str(), kind.c_str(), on.c_str(),
                static_cast<long long>(nth), backend.c_str());
    std::fflush(stdout);

    const auto t0 = std::chrono::steady_clock::now();
    std::map<std::string, int64_t> seen, all;
    bool stalled = false;
    while (!stop_requested &&
           std::chrono::steady_clock::now() - t0 < std::chrono::duration<double>(max_seconds)) {
      zmq::pollitem_t item{front.handle(), 0, ZMQ_POLLIN, 0};
      try {
        zmq::poll(&item, 1, std::chrono::milliseconds(100));
      } catch (const zmq::error_t& e) {
        if (e.num() == EINTR) continue;
        throw;
      }
      if (!(item.revents & ZMQ_POLLIN)) continue;
      std::vector<zmq::message_t> frames;
      for (bool more = true; more;) {
        zmq::message_t f;
        if (!front.recv(f)) break;
        more = f.more();
        frames.push_back(std::move(f));
      }
      if (frames.size() < 2 || stalled) continue;
      // The request's type (the client is honest: its messages parse).
      std::vector<zmq::message_t> head;
      head.emplace_back(frames[1].data(), frames[1].size());
      const remote::Type type = remote::Message::parse(head).type;
      const std::string name = remote::type_name(type);
      ++all[name];
      const bool fire = (on == "any" || on == name) && ++seen[on == "any" ? "any" : name] == nth;
      if (fire)
        std::fprintf(stderr, "hostile worker: FIRED %s on %s #%lld (%s)\n", kind.c_str(),
                     on.c_str(), static_cast<long long>(nth), name.c_str());
      if (fire && kind == "exit") {
        std::fflush(stderr);
        _exit(3);
      }
      if (fire && kind == "stall") {
        stalled = true;
        continue;
      }
      // Relay to the honest worker and take its reply.
      for (size_t i = 1; i < frames.size(); ++i)
        back.send(frames[i],
                  i + 1 < frames.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
      std::vector<zmq::message_t> reply;
      for (bool more = true; more;) {
        zmq::message_t f;
        if (!back.recv(f)) break;
        more = f.more();
        reply.push_back(std::move(f));
      }
      if (fire && kind != "honest") reply = misbehave(kind, type, remote::Message::parse(reply));
      front.send(frames[0], zmq::send_flags::sndmore);
      for (size_t i = 0; i < reply.size(); ++i)
        front.send(reply[i],
                   i + 1 < reply.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
    }
    stop_inner = true;
    serving.join();
    std::string counts;
    for (const auto& [name, n] : all) counts += " " + name + ":" + std::to_string(n);
    std::fprintf(stderr, "hostile worker: stopped; requests seen:%s\n", counts.c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "hostile worker: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
