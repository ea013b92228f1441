#include "worker/server.h"

#include <fmt/format.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <map>
#include <new>
#include <optional>
#include <unordered_map>

#include "backends/remote/wire.h"
#include "faults/faulty_backend.h"
#include "worker/capture.h"

namespace darknight::accel::remote {

namespace {

/// An allocation and how many uploads have written to it (for the capture). Its bytes count
/// against the memory limit while it lives: until its own handle and every view of it are
/// freed (a view owns no memory, but keeps its base's alive).
struct Base {
  std::unique_ptr<Buffer> buf;
  uint64_t writes = 0;
  int64_t bytes = 0;
  int64_t* used = nullptr;  ///< the server's count, which `bytes` are charged to

  Base() = default;
  Base(const Base&) = delete;
  Base& operator=(const Base&) = delete;
  ~Base() {
    buf.reset();
    if (used) *used -= bytes;
  }
};

/// A client's handle: an allocation or a view of part of one (which keeps it alive).
struct Handle {
  std::shared_ptr<Base> base;
  std::unique_ptr<Buffer> view;  ///< null for the allocation itself
  int64_t offset = 0;            ///< elements, into base
  Buffer& buf() { return view ? *view : *base->buf; }
};

struct WeightsHandle {
  WeightsPtr w;
  int64_t layer = 0;  ///< creation order: 0 for the first
  int64_t bytes = 0;
};

int64_t default_max_bytes() {
  return static_cast<int64_t>(sysconf(_SC_PHYS_PAGES)) * sysconf(_SC_PAGESIZE) / 2;
}

template <typename T>
void put_tensor(Message& r, const TensorT<T>& t) {
  r.ints.push_back(t.empty() ? 0 : 1);
  if (t.empty()) return;
  put_shape(r.ints, t.shape());
  r.set_payload(t.data(), t.bytes());
}

}  // namespace

struct Server::Impl {
  /// With --inject-faults, the backend decorated by the fault injector (which is made per
  /// session, for its mixtures per virtual batch); `be` is what the requests run on.
  std::unique_ptr<FaultyBackend> faulty;
  Backend& be;
  ServerOptions opts;
  zmq::context_t ctx{1};
  zmq::socket_t sock{ctx, zmq::socket_type::router};
  std::optional<std::string> client;  ///< the current session's client
  int group = 0;                      ///< mixtures per virtual batch, from the hello
  std::unordered_map<int64_t, Handle> buffers;
  std::unordered_map<int64_t, WeightsHandle> weights;
  int64_t used = 0, weight_count = 0;
  /// Per allocation, the ranges captured: (offset, elements, uploads seen then).
  std::map<const Base*, std::vector<std::tuple<int64_t, int64_t, uint64_t>>> captured;
  std::unique_ptr<Capture> capture;
  std::unique_ptr<FaultInjector> faults;
  int64_t requests = 0, errors = 0;

  Impl(Backend& b, ServerOptions o)
      : faulty(o.faults.empty() ? nullptr : std::make_unique<FaultyBackend>(b)),
        be(faulty ? *faulty : b),
        opts(std::move(o)) {
    if (opts.max_bytes <= 0) opts.max_bytes = default_max_bytes();
    if (opts.max_frame_bytes <= 0) opts.max_frame_bytes = kMaxFrameBytes;
    if (!opts.faults.empty()) FaultSpec::parse(opts.faults);  // fail early on a bad spec
    if (!opts.capture_dir.empty()) capture = std::make_unique<Capture>(opts.capture_dir);
  }

  void end_session() {
    if (client && opts.verbose)
      fmt::print(stderr, "worker: session ended ({} buffers, {} weights still held{})\n",
                 buffers.size(), weights.size(),
                 faults ? fmt::format("; {} of {} linear operations faulted", faults->injected(),
                                      faults->operations())
                        : "");
    if (faulty) faulty->set_injector(nullptr);
    faults.reset();
    buffers.clear();  // gives their bytes back
    weights.clear();
    captured.clear();
    used = 0, weight_count = 0;
    client.reset();
  }

  void charge(int64_t bytes, const char* what) {
    DK_CHECK(bytes <= opts.max_bytes - used,
             "{} of {:.1f} MiB would exceed the worker's memory limit ({:.1f} of {:.1f} MiB in "
             "use; darknight worker --max-memory)",
             what, bytes / 1048576.0, used / 1048576.0, opts.max_bytes / 1048576.0);
    used += bytes;
  }

  Handle& buffer(int64_t id) {
    auto it = buffers.find(id);
    DK_CHECK(it != buffers.end(), "no buffer {}", id);
    return it->second;
  }
  WeightsHandle& weight(int64_t id) {
    auto it = weights.find(id);
    DK_CHECK(it != weights.end(), "no weights {}", id);
    return it->second;
  }
  void fresh(int64_t id) {
    DK_CHECK(id > 0 && !buffers.count(id) && !weights.count(id), "handle {} is in use or invalid",
             id);
  }

  /// Checks a byte range of a buffer: whole elements, inside it.
  static void check_bytes(const Buffer& b, int64_t offset, int64_t n, const char* op) {
    const auto e = static_cast<int64_t>(dtype_size(b.dtype()));
    DK_CHECK(offset >= 0 && n >= 0 && offset % e == 0 && n % e == 0 &&
                 offset <= static_cast<int64_t>(b.bytes()) - n,
             "{}: {} bytes at byte {} do not fit a {} {} buffer in whole elements", op, n, offset,
             dtype_name(b.dtype()), b.shape().str());
  }

  /// Captures an operation's input when uploads have changed it since it was last captured.
  void consume(const std::string& type, int64_t layer, Handle& h) {
    if (!capture || h.base->writes == 0) return;
    Buffer& b = h.buf();
    const int64_t n = b.shape().numel();
    auto& ranges = captured[h.base.get()];
    for (const auto& [offset, count, writes] : ranges)
      if (writes == h.base->writes && offset <= h.offset && h.offset + n <= offset + count)
        return;  // captured already, and not written since
    std::erase_if(ranges, [&](const auto& r) { return std::get<2>(r) != h.base->writes; });
    ranges.emplace_back(h.offset, n, h.base->writes);
    std::vector<char> bytes(b.bytes());
    RawTransfer::download(be, b, 0, b.bytes(), bytes.data());
    be.wait();
    capture->write(type, layer, group, b.shape(), b.dtype(), bytes.data());
  }

  Message dispatch(Message& req, const std::string& from);
  // One request type each (dispatch has checked the session).
  Message hello(Args& a, const std::string& from);
  Message alloc(Args& a);
  Message view(Args& a);
  Message free(Args& a);
  Message upload(Args& a, const Message& req, std::string_view payload);
  Message download(Args& a);
  Message create_weights(Args& a, std::string_view payload);
  Message read(Args& a, Type type);  ///< read_weights, read_momentum, read_grad
  Message accumulate_grad(Args& a);
  Message accumulate_grad_host(Args& a, std::string_view payload);
  Message sgd_step(Args& a);
  Message write_momentum(Args& a, std::string_view payload);
  Message op(Message& req);  ///< the linear operations
};

Server::Server(Backend& be, ServerOptions opts)
    : impl_(std::make_unique<Impl>(be, std::move(opts))) {
  impl_->sock.set(zmq::sockopt::linger, 0);
  impl_->sock.set(zmq::sockopt::maxmsgsize, impl_->opts.max_frame_bytes);
  if (!impl_->opts.curve_secret_key.empty()) {
    impl_->sock.set(zmq::sockopt::curve_server, true);
    impl_->sock.set(zmq::sockopt::curve_secretkey, impl_->opts.curve_secret_key);
  }
}

Server::~Server() {
  impl_->end_session();
}

int64_t Server::requests() const {
  return impl_->requests;
}
int64_t Server::errors() const {
  return impl_->errors;
}

std::string Server::bind(const std::string& endpoint) {
  try {
    impl_->sock.bind(endpoint);
  } catch (const zmq::error_t& e) {
    throw Error(fmt::format("worker: cannot listen on '{}': {}", endpoint, e.what()));
  }
  return impl_->sock.get(zmq::sockopt::last_endpoint);
}

void Server::serve(const std::atomic<bool>& stop) {
  Impl& m = *impl_;
  while (!stop) {
    zmq::pollitem_t item{m.sock.handle(), 0, ZMQ_POLLIN, 0};
    try {
      zmq::poll(&item, 1, std::chrono::milliseconds(100));
    } catch (const zmq::error_t& e) {
      if (e.num() == EINTR) continue;  // a signal: check `stop`
      throw;
    }
    if (!(item.revents & ZMQ_POLLIN)) continue;
    std::vector<zmq::message_t> frames;
    zmq::message_t f;
    do {
      if (!m.sock.recv(f)) break;
      frames.push_back(std::move(f));
    } while (frames.back().more());
    if (frames.empty()) continue;
    // The first frame is the client's routing id (added by ZeroMQ); the rest is its message.
    zmq::message_t id = std::move(frames.front());
    frames.erase(frames.begin());
    Message reply;
    try {
      Message req = Message::parse(frames);
      reply = handle(req, id.to_string());
    } catch (const Error& e) {
      ++m.requests, ++m.errors;
      reply = Message(Type::error, 0);
      reply.set_payload(std::string(e.what()));
    }
    std::vector<zmq::message_t> out = reply.frames();
    m.sock.send(id, zmq::send_flags::sndmore);
    for (size_t i = 0; i < out.size(); ++i)
      m.sock.send(out[i], i + 1 < out.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
  }
}

Message Server::handle(Message& req, const std::string& client) {
  Impl& m = *impl_;
  ++m.requests;
  try {
    Message r = m.dispatch(req, client);
    r.seq = req.seq;
    return r;
  } catch (const std::bad_alloc&) {
    ++m.errors;
    Message r(Type::error, req.seq);
    r.set_payload(fmt::format("{}: the worker ran out of memory", type_name(req.type)));
    return r;
  } catch (const std::exception& e) {
    ++m.errors;
    Message r(Type::error, req.seq);
    const std::string what = e.what();
    r.set_payload(what.rfind(type_name(req.type), 0) == 0
                      ? what
                      : fmt::format("{}: {}", type_name(req.type), what));
    return r;
  }
}

Message Server::Impl::dispatch(Message& req, const std::string& from) {
  Args a(req);
  if (req.type == Type::hello) return hello(a, from);
  DK_CHECK(client && *client == from,
           "no session: send hello first (a newer client's hello "
           "ends an older client's session)");
  const std::string_view payload(static_cast<const char*>(req.payload.data()),
                                 req.has_payload ? req.payload.size() : 0);
  switch (req.type) {
    case Type::bye:
      a.done();
      end_session();
      return Message(Type::ok, 0);
    case Type::stats: {
      a.done();
      Message ok(Type::ok, 0);
      ok.ints = {faults ? faults->operations() : 0, faults ? faults->injected() : 0};
      return ok;
    }
    case Type::alloc:
      return alloc(a);
    case Type::view:
      return view(a);
    case Type::free:
      return free(a);
    case Type::upload:
      return upload(a, req, payload);
    case Type::download:
      return download(a);
    case Type::create_weights:
      return create_weights(a, payload);
    case Type::read_weights:
    case Type::read_momentum:
    case Type::read_grad:
      return read(a, req.type);
    case Type::accumulate_grad:
      return accumulate_grad(a);
    case Type::accumulate_grad_host:
      return accumulate_grad_host(a, payload);
    case Type::sgd_step:
      return sgd_step(a);
    case Type::write_momentum:
      return write_momentum(a, payload);
    case Type::conv2d_forward:
    case Type::conv2d_backward_data:
    case Type::conv2d_backward_weights:
    case Type::dense_forward:
    case Type::dense_backward_data:
    case Type::dense_backward_weights:
      return op(req);
    default:
      throw Error(fmt::format("unknown message type {}", static_cast<int>(req.type)));
  }
}

Message Server::Impl::hello(Args& a, const std::string& from) {
  Message ok(Type::ok, 0);
  const int64_t version = a.integer("version");
  DK_CHECK(version == kVersion, "client speaks protocol version {}, this worker {}", version,
           kVersion);
  const int64_t g = a.integer("mixtures_per_batch", 0, 1 << 20);
  a.done();
  end_session();
  client = from;
  group = static_cast<int>(g);
  if (!opts.faults.empty()) {
    faults = std::make_unique<FaultInjector>(FaultSpec::parse(opts.faults), group, false);
    faulty->set_injector(faults.get());
  }
  if (opts.verbose) fmt::print(stderr, "worker: session started\n");
  ok.set_payload(be.describe());
  return ok;
}

Message Server::Impl::alloc(Args& a) {
  Message ok(Type::ok, 0);
  const int64_t id = a.integer("id");
  const DType dtype = a.dtype("dtype");
  const Shape shape = a.shape("shape");
  a.done();
  fresh(id);
  const auto bytes = static_cast<int64_t>(shape.numel() * dtype_size(dtype));
  auto base = std::make_shared<Base>();
  charge(bytes, "alloc");
  base->bytes = bytes, base->used = &used;  // given back when the base goes
  base->buf = be.alloc(shape, dtype);
  buffers[id] = Handle{std::move(base), nullptr, 0};
  return ok;
}

Message Server::Impl::view(Args& a) {
  Message ok(Type::ok, 0);
  const int64_t id = a.integer("id"), of = a.integer("base");
  const int64_t offset = a.integer("offset");
  const Shape shape = a.shape("shape");
  a.done();
  fresh(id);
  Handle& h = buffer(of);
  auto v = be.view(h.buf(), shape, offset);
  buffers[id] = Handle{h.base, std::move(v), h.offset + offset};
  return ok;
}

Message Server::Impl::free(Args& a) {
  Message ok(Type::ok, 0);
  const int64_t id = a.integer("id");
  a.done();
  if (auto it = buffers.find(id); it != buffers.end()) {
    // The last handle on an allocation frees it (and its bytes): forget its captures,
    // lest a new allocation at the same address pass for it.
    if (it->second.base.use_count() == 1) captured.erase(it->second.base.get());
    buffers.erase(it);
  } else {
    used -= weight(id).bytes;
    weights.erase(id);
  }
  return ok;
}

Message Server::Impl::upload(Args& a, const Message& req, std::string_view payload) {
  Message ok(Type::ok, 0);
  Handle& h = buffer(a.integer("id"));
  const int64_t offset = a.integer("offset");
  a.done();
  DK_CHECK(req.has_payload, "upload without a payload");
  check_bytes(h.buf(), offset, static_cast<int64_t>(payload.size()), "upload");
  RawTransfer::upload(be, payload.data(), h.buf(), static_cast<size_t>(offset), payload.size());
  be.wait();
  h.base->writes += 1;
  return ok;
}

Message Server::Impl::download(Args& a) {
  Message ok(Type::ok, 0);
  Handle& h = buffer(a.integer("id"));
  const int64_t offset = a.integer("offset"), bytes = a.integer("bytes");
  a.done();
  check_bytes(h.buf(), offset, bytes, "download");
  DK_CHECK(bytes <= opts.max_frame_bytes, "download: {} bytes in one reply (at most {})", bytes,
           opts.max_frame_bytes);
  ok.payload.rebuild(static_cast<size_t>(bytes));
  ok.has_payload = true;
  RawTransfer::download(be, h.buf(), static_cast<size_t>(offset), static_cast<size_t>(bytes),
                        ok.payload.data());
  be.wait();
  return ok;
}

Message Server::Impl::create_weights(Args& a, std::string_view payload) {
  Message ok(Type::ok, 0);
  const int64_t id = a.integer("id");
  const Shape shape = a.shape("shape");
  a.done();
  fresh(id);
  DK_CHECK(payload.size() == static_cast<size_t>(shape.numel()) * sizeof(float),
           "{} payload bytes for f32 weights {}", payload.size(), shape.str());
  DK_CHECK(shape.numel() <= opts.max_frame_bytes / 8,
           "weights {} too large: read_grad's float64 reply would exceed the {}-byte frame "
           "limit",
           shape.str(), opts.max_frame_bytes);
  // The f32 weights, the momentum, an f64 pending gradient and an f64 copy.
  const int64_t bytes = shape.numel() * 24;
  charge(bytes, "create_weights");
  try {
    auto t = Tensor::uninitialized(shape);
    std::memcpy(t.data(), payload.data(), payload.size());
    if (capture) capture->write("weights", weight_count, 0, shape, DType::f32, t.data());
    weights[id] = WeightsHandle{be.create_weights(t), weight_count++, bytes};
  } catch (...) {
    used -= bytes;
    throw;
  }
  return ok;
}

Message Server::Impl::accumulate_grad(Args& a) {
  Message ok(Type::ok, 0);
  WeightsHandle& w = weight(a.integer("weights"));
  Handle& g = buffer(a.integer("grad"));
  const double scale = a.real("scale");
  a.done();
  be.accumulate_grad(*w.w, g.buf(), scale);
  return ok;
}

Message Server::Impl::accumulate_grad_host(Args& a, std::string_view payload) {
  Message ok(Type::ok, 0);
  WeightsHandle& w = weight(a.integer("weights"));
  const int64_t offset = a.integer("offset");
  a.done();
  DK_CHECK(payload.size() % sizeof(double) == 0, "a gradient piece of {} bytes", payload.size());
  auto piece = Tensor64::uninitialized(Shape{static_cast<int64_t>(payload.size() / 8)});
  std::memcpy(piece.data(), payload.data(), payload.size());
  if (capture) capture->write("gradient", w.layer, 0, piece.shape(), DType::f64, piece.data());
  be.accumulate_grad(*w.w, piece, offset);
  return ok;
}

Message Server::Impl::sgd_step(Args& a) {
  Message ok(Type::ok, 0);
  WeightsHandle& w = weight(a.integer("weights"));
  SgdParams p;
  p.nesterov = a.integer("nesterov", 0, 1) == 1;
  p.lr = a.real("lr"), p.momentum = a.real("momentum"), p.dampening = a.real("dampening");
  p.weight_decay = a.real("weight_decay");
  a.done();
  be.sgd_step(*w.w, p);
  return ok;
}

Message Server::Impl::write_momentum(Args& a, std::string_view payload) {
  Message ok(Type::ok, 0);
  WeightsHandle& w = weight(a.integer("id"));
  Tensor t;
  if (a.integer("present", 0, 1) == 1) {
    const Shape shape = a.shape("shape");
    DK_CHECK(payload.size() == static_cast<size_t>(shape.numel()) * sizeof(float),
             "{} payload bytes for an f32 momentum {}", payload.size(), shape.str());
    DK_CHECK(shape == w.w->shape(), "momentum {} for weights {}", shape.str(), w.w->shape().str());
    t = Tensor::uninitialized(shape);
    std::memcpy(t.data(), payload.data(), payload.size());
    if (capture) capture->write("momentum", w.layer, 0, shape, DType::f32, t.data());
  }
  a.done();
  be.write_momentum(*w.w, t);
  return ok;
}

Message Server::Impl::read(Args& a, Type type) {
  Message ok(Type::ok, 0);
  WeightsHandle& w = weight(a.integer("id"));
  a.done();
  if (type == Type::read_weights)
    put_tensor(ok, be.read_weights(*w.w));
  else if (type == Type::read_momentum)
    put_tensor(ok, be.read_momentum(*w.w));
  else
    put_tensor(ok, be.read_grad(*w.w));
  return ok;
}

Message Server::Impl::op(Message& req) {
  Args a(req);
  const int64_t layer = a.integer("layer", -1, int64_t{1} << 32);
  const bool conv = req.type == Type::conv2d_forward || req.type == Type::conv2d_backward_data ||
                    req.type == Type::conv2d_backward_weights;
  std::optional<ConvDesc> cd;
  std::optional<DenseDesc> dd;
  if (conv)
    cd = a.conv("conv");
  else
    dd = a.dense();
  Handle& x = buffer(a.integer("src"));
  const std::string name = type_name(req.type);
  if (req.type == Type::conv2d_backward_weights || req.type == Type::dense_backward_weights) {
    Handle& dy = buffer(a.integer("diff_dst"));
    Handle& dw = buffer(a.integer("diff_weights"));
    a.done();
    consume(name + ".src", layer, x);
    consume(name + ".diff_dst", layer, dy);
    if (conv)
      be.conv2d_backward_weights(*cd, x.buf(), dy.buf(), dw.buf());
    else
      be.dense_backward_weights(*dd, x.buf(), dy.buf(), dw.buf());
  } else {
    WeightsHandle& w = weight(a.integer("weights"));
    Handle& y = buffer(a.integer("dst"));
    a.done();
    const bool forward = req.type == Type::conv2d_forward || req.type == Type::dense_forward;
    consume(name + (forward ? ".src" : ".diff_dst"), layer < 0 ? w.layer : layer, x);
    switch (req.type) {
      case Type::conv2d_forward:
        be.conv2d_forward(*cd, x.buf(), *w.w, y.buf());
        break;
      case Type::conv2d_backward_data:
        be.conv2d_backward_data(*cd, x.buf(), *w.w, y.buf());
        break;
      case Type::dense_forward:
        be.dense_forward(*dd, x.buf(), *w.w, y.buf());
        break;
      default:
        be.dense_backward_data(*dd, x.buf(), *w.w, y.buf());
        break;
    }
  }
  be.wait();
  return Message(Type::ok, 0);
}

}  // namespace darknight::accel::remote
