#include "backends/remote/remote_backend.h"

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <deque>
#include <optional>

#include "backends/remote/curve.h"
#include "backends/remote/wire.h"

namespace darknight::accel::remote {

namespace {

/// A handle to memory on the worker.
class RemoteBuffer final : public Buffer {
 public:
  RemoteBuffer(RemoteBackend* owner, const Shape& shape, DType dtype, uint64_t id)
      : Buffer(owner, shape, dtype), be_(owner), id_(id) {}
  ~RemoteBuffer() override { be_->release(id_); }
  uint64_t id() const { return id_; }

 private:
  RemoteBackend* be_;
  uint64_t id_;
};

class RemoteWeights final : public Weights {
 public:
  RemoteWeights(RemoteBackend* owner, const Shape& shape, uint64_t id)
      : Weights(owner, shape), be_(owner), id_(id) {}
  ~RemoteWeights() override { be_->release(id_); }
  uint64_t id() const { return id_; }

 private:
  RemoteBackend* be_;
  uint64_t id_;
};

int64_t id_of(const Buffer& b) {
  return static_cast<int64_t>(static_cast<const RemoteBuffer&>(b).id());
}
int64_t id_of(const Weights& w) {
  return static_cast<int64_t>(static_cast<const RemoteWeights&>(w).id());
}

void put_conv(std::vector<int64_t>& v, const ConvDesc& d) {
  v.insert(v.end(), {d.in_channels, d.out_channels, d.kernel_h, d.kernel_w, d.stride_h, d.stride_w,
                     d.pad_top, d.pad_left, d.pad_bottom, d.pad_right, d.dilation_h, d.dilation_w,
                     d.groups});
}

std::atomic<int> monitor_count{0};

/// At most `max` bytes of a worker's text, with anything but printable ASCII as '?' (no
/// terminal control sequences reach the user's screen).
std::string printable(std::string_view s, size_t max) {
  std::string out(s.substr(0, max));
  for (char& c : out)
    if (c < 0x20 || c > 0x7e) c = '?';
  if (s.size() > max) out += "...";
  return out;
}

/// The longest worker description (hello reply) and error text kept.
constexpr size_t kMaxText = 4096;

}  // namespace

struct RemoteBackend::Impl {
  RemoteOptions opts;
  zmq::context_t ctx{1};
  zmq::socket_t sock{ctx, zmq::socket_type::dealer};
  zmq::socket_t monitor{ctx, zmq::socket_type::pair};
  int64_t max_frame = kMaxFrameBytes;
  uint64_t next_seq = 1, next_id = 1;
  uint64_t answered = 0;  ///< replies collected up to this request
  /// A request awaiting its reply; a download's host destination and size.
  struct Pending {
    Type type;
    void* dst = nullptr;
    size_t bytes = 0;
  };
  std::deque<Pending> pending;        ///< requests answered + 1, answered + 2, ...
  std::string worker;                 ///< the worker's description
  std::optional<std::string> broken;  ///< why the connection is unusable
  bool violated = false;              ///< a reply broke the protocol
  bool refused = false;               ///< the link's handshake failed (keys)

  /// Stops using the connection for good. Closes the sockets and ends the context, which
  /// waits for ZeroMQ's I/O thread to let go of the requests still queued: their borrowed
  /// payloads (uploads, sent without a copy) may be freed as soon as the caller sees the
  /// error.
  void break_off(std::string why) {
    broken = std::move(why);
    monitor.close();
    sock.close();
    ctx.close();
  }
};

RemoteBackend::RemoteBackend(const RemoteOptions& opts) : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.opts = opts;
  DK_CHECK(opts.timeout_s > 0, "accelerator timeout must be positive, got {}", opts.timeout_s);
  DK_CHECK(opts.max_frame_bytes >= 0 && opts.max_frame_bytes % 8 == 0,
           "accelerator: frame limit {} must be a non-negative multiple of 8",
           opts.max_frame_bytes);
  if (opts.max_frame_bytes > 0) m.max_frame = std::max<int64_t>(opts.max_frame_bytes, 4096);
  const int ms = static_cast<int>(std::min(opts.timeout_s * 1000, 2e9));
  m.sock.set(zmq::sockopt::linger, 0);
  m.monitor.set(zmq::sockopt::linger, 0);
  m.sock.set(zmq::sockopt::sndtimeo, ms);
  // Frames over the limit are refused by ZeroMQ before they are read (the worker is then
  // disconnected); set before connecting, as the connection copies the socket's options.
  m.sock.set(zmq::sockopt::maxmsgsize, m.max_frame);
  if (!opts.server_key.empty()) {  // CurveZMQ: pin the worker's key, a fresh client key pair
    DK_CHECK(curve_available(), "accelerator: this libzmq has no CurveZMQ (libsodium)");
    DK_CHECK(valid_curve_key(opts.server_key), "accelerator {}: not a CurveZMQ public key: '{}'",
             opts.endpoint, opts.server_key);
    char pub[41], sec[41];
    DK_CHECK(zmq_curve_keypair(pub, sec) == 0, "accelerator: cannot draw a CurveZMQ key pair");
    m.sock.set(zmq::sockopt::curve_serverkey, opts.server_key);
    m.sock.set(zmq::sockopt::curve_publickey, std::string(pub));
    m.sock.set(zmq::sockopt::curve_secretkey, std::string(sec));
    explicit_bzero(sec, sizeof sec);
  }
  const std::string mon = fmt::format("inproc://dk-monitor-{}", monitor_count++);
  constexpr int kEvents = ZMQ_EVENT_DISCONNECTED | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL |
                          ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH;
  DK_CHECK(zmq_socket_monitor(m.sock.handle(), mon.c_str(), kEvents) == 0,
           "accelerator: cannot monitor the connection: {}", zmq_strerror(zmq_errno()));
  m.monitor.connect(mon);
  try {
    m.sock.connect(opts.endpoint);
  } catch (const zmq::error_t& e) {
    throw Error(fmt::format("accelerator endpoint '{}': {}", opts.endpoint, e.what()));
  }
  Message hello(Type::hello, 0, {kVersion, opts.mixtures_per_batch});
  Message r;
  try {
    r = call(std::move(hello));
  } catch (const Error& e) {
    if (m.answered > 0 || m.violated || m.refused)
      throw;  // a worker answered, wrongly, or the link was refused
    throw Error(
        fmt::format("{} (is `darknight worker --listen {}` running?)", e.what(), opts.endpoint));
  }
  if (!r.ints.empty() || !r.reals.empty() || r.payload.size() > kMaxText)
    violation(
        fmt::format("its hello reply has {} arguments and {} bytes (expected none and a "
                    "description of at most {})",
                    r.ints.size() + r.reals.size(), r.payload.size(), kMaxText));
  m.worker = printable(r.payload_text(), kMaxText);
}

RemoteBackend::~RemoteBackend() {
  if (!impl_->broken) {
    try {
      post(Message(Type::bye, 0));
      collect(impl_->next_seq - 1);
    } catch (...) {  // the worker drops the session anyway when the next client greets it
    }
  }
}

std::string RemoteBackend::describe() const {
  return fmt::format(
      "remote worker at {} ({}){}", impl_->opts.endpoint, impl_->worker,
      impl_->opts.server_key.empty() ? "" : ", encrypted and authenticated link (CurveZMQ)");
}

void RemoteBackend::violation(const std::string& what) {
  Impl& m = *impl_;
  m.violated = true;
  m.break_off(fmt::format(
      "accelerator worker at {} broke the protocol: {}; the connection is no longer used",
      m.opts.endpoint, what));
  throw Error(*m.broken);
}

void RemoteBackend::on_bad_result(const std::string& why) {
  impl_->violated = true;
  impl_->break_off(why + "; the connection to the worker is no longer used");
}

void RemoteBackend::post(Message req) {
  Impl& m = *impl_;
  if (m.broken) throw Error(*m.broken);
  DK_ASSERT(!req.has_payload || static_cast<int64_t>(req.payload.size()) <= m.max_frame);
  m.pending.push_back({req.type});
  req.seq = m.next_seq++;
  std::vector<zmq::message_t> frames = req.frames();
  for (size_t i = 0; i < frames.size(); ++i) {
    const auto flags = i + 1 < frames.size() ? zmq::send_flags::sndmore : zmq::send_flags::none;
    if (!m.sock.send(frames[i], flags)) {
      m.break_off(fmt::format("accelerator worker at {}: could not send {} within {} s",
                              m.opts.endpoint, type_name(req.type), m.opts.timeout_s));
      throw Error(*m.broken);
    }
  }
}

Message RemoteBackend::collect(uint64_t seq) {
  Impl& m = *impl_;
  std::optional<std::string> error;
  Message last;
  if (m.broken) throw Error(*m.broken);
  while (m.answered < seq) {
    Message r = receive();
    DK_ASSERT(!m.pending.empty());
    check_reply(r, error);
    m.pending.pop_front();
    m.answered = r.seq;
    last = std::move(r);
  }
  if (error) throw Error(*error);
  return last;
}

Message RemoteBackend::receive() {
  Impl& m = *impl_;
  zmq::pollitem_t items[] = {{m.sock.handle(), 0, ZMQ_POLLIN, 0},
                             {m.monitor.handle(), 0, ZMQ_POLLIN, 0}};
  zmq::poll(items, 2, std::chrono::milliseconds(static_cast<int64_t>(m.opts.timeout_s * 1000)));
  if (items[1].revents & ZMQ_POLLIN) {
    zmq::message_t event;  // a monitor event: its number (16 bits), then a value
    uint16_t id = 0;
    if (m.monitor.recv(event, zmq::recv_flags::dontwait) && event.size() >= 2)
      std::memcpy(&id, event.data(), 2);
    m.refused = id != ZMQ_EVENT_DISCONNECTED;
    if (m.refused)
      m.break_off(fmt::format(
          "accelerator worker at {}: the link's handshake failed ({} error): {}", m.opts.endpoint,
          id == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH ? "authentication" : "protocol",
          m.opts.server_key.empty()
              ? "the worker serves encrypted links only (--key) and no key is pinned for it; "
                "pin its public key with --worker-keys"
              : "the key pinned for it in --worker-keys is not its key, or it serves plain "
                "links (no --key)"));
    else
      m.break_off(fmt::format(
          "accelerator worker at {} disconnected (it died or was stopped, or sent a frame over "
          "the {}-byte limit); its buffers and weights are lost",
          m.opts.endpoint, m.max_frame));
    throw Error(*m.broken);
  }
  if (!(items[0].revents & ZMQ_POLLIN)) {
    m.break_off(
        fmt::format("accelerator worker at {} sent no reply within {} s (see "
                    "--accelerator-timeout)",
                    m.opts.endpoint, m.opts.timeout_s));
    throw Error(*m.broken);
  }
  // A message's frames arrive together; more than a header and a payload is malformed
  // (the rest are read and dropped, each within the frame limit).
  std::vector<zmq::message_t> frames;
  for (bool more = true; more;) {
    zmq::message_t f;
    if (!m.sock.recv(f, zmq::recv_flags::dontwait)) violation("a reply ended early");
    more = f.more();
    if (frames.size() < 3) frames.push_back(std::move(f));
  }
  Message r;
  try {
    r = Message::parse(frames);
  } catch (const Error& e) {
    violation(fmt::format("a malformed reply ({})", e.what()));
  }
  if (r.seq != m.answered + 1)
    violation(
        fmt::format("a reply to request {} where one to request {} was due (replies "
                    "come in order)",
                    r.seq, m.answered + 1));
  return r;
}

void RemoteBackend::check_reply(const Message& r, std::optional<std::string>& error) {
  const Impl::Pending p = impl_->pending.front();
  const char* what = type_name(p.type);
  if (r.type == Type::error) {
    if (!r.ints.empty() || !r.reals.empty())
      violation(fmt::format("an error reply to {} with arguments", what));
    if (!error)
      error = fmt::format("accelerator worker: {}", printable(r.payload_text(), kMaxText));
    return;
  }
  if (r.type != Type::ok)
    violation(fmt::format("a reply of type {} to {}", static_cast<int>(r.type), what));
  switch (p.type) {
    case Type::hello:  // checked by the constructor
    case Type::stats:  // by worker_faults
    case Type::read_weights:
    case Type::read_momentum:
    case Type::read_grad:  // by reply_tensor
      break;
    case Type::download:
      if (!r.ints.empty() || !r.reals.empty() || !r.has_payload || r.payload.size() != p.bytes)
        violation(fmt::format("a download reply of {} bytes and {} arguments (asked {} bytes)",
                              r.payload.size(), r.ints.size() + r.reals.size(), p.bytes));
      if (!error) std::memcpy(p.dst, r.payload.data(), p.bytes);
      break;
    default:
      if (!r.ints.empty() || !r.reals.empty() || r.has_payload)
        violation(
            fmt::format("an ok reply to {} with {} arguments and a payload of {} bytes "
                        "(expected neither)",
                        what, r.ints.size() + r.reals.size(), r.payload.size()));
  }
}

Message RemoteBackend::call(Message req) {
  post(std::move(req));
  return collect(impl_->next_seq - 1);
}

void RemoteBackend::wait() {
  collect(impl_->next_seq - 1);
}

RemoteBackend::WorkerFaults RemoteBackend::worker_faults() {
  const Message r = call(Message(Type::stats, 0));
  if (r.ints.size() != 2 || !r.reals.empty() || r.has_payload)
    violation(
        fmt::format("a stats reply of {} integers, {} reals and {} payload bytes "
                    "(expected 2 integers)",
                    r.ints.size(), r.reals.size(), r.payload.size()));
  if (r.ints[0] < 0 || r.ints[1] < 0 || r.ints[1] > r.ints[0])
    violation(fmt::format("a stats reply of {} faults in {} operations", r.ints[1], r.ints[0]));
  return {r.ints[0], r.ints[1]};
}

void RemoteBackend::release(uint64_t id) noexcept {
  try {
    if (!impl_->broken) post(Message(Type::free, 0, {static_cast<int64_t>(id)}));
  } catch (...) {  // the session is gone; nothing to free
  }
}

BufferPtr RemoteBackend::do_alloc(const Shape& shape, DType dtype) {
  const uint64_t id = impl_->next_id++;
  std::vector<int64_t> ints{static_cast<int64_t>(id), static_cast<int64_t>(dtype)};
  put_shape(ints, shape);
  post(Message(Type::alloc, 0, std::move(ints)));
  return std::make_unique<RemoteBuffer>(this, shape, dtype, id);
}

BufferPtr RemoteBackend::do_view(Buffer& base, const Shape& shape, int64_t offset) {
  const uint64_t id = impl_->next_id++;
  std::vector<int64_t> ints{static_cast<int64_t>(id), id_of(base), offset};
  put_shape(ints, shape);
  post(Message(Type::view, 0, std::move(ints)));
  return std::make_unique<RemoteBuffer>(this, shape, base.dtype(), id);
}

// Transfers go in pieces of at most the frame limit (a multiple of 8: whole elements).

void RemoteBackend::do_upload(const void* src, Buffer& dst, size_t offset, size_t bytes) {
  // `src` stays unchanged until wait() (Backend's contract), which collects the reply.
  const auto piece = static_cast<size_t>(impl_->max_frame);
  size_t done = 0;
  do {
    const size_t n = std::min(piece, bytes - done);
    Message req(Type::upload, 0, {id_of(dst), static_cast<int64_t>(offset + done)});
    req.borrow_payload(static_cast<const char*>(src) + done, n);
    post(std::move(req));
    done += n;
  } while (done < bytes);
}

void RemoteBackend::do_download(const Buffer& src, size_t offset, size_t bytes, void* dst) {
  // Valid after wait(), which copies the replies into `dst`.
  const auto piece = static_cast<size_t>(impl_->max_frame);
  size_t done = 0;
  do {
    const size_t n = std::min(piece, bytes - done);
    post(Message(Type::download, 0,
                 {id_of(src), static_cast<int64_t>(offset + done), static_cast<int64_t>(n)}));
    impl_->pending.back().dst = static_cast<char*>(dst) + done;
    impl_->pending.back().bytes = n;
    done += n;
  } while (done < bytes);
}

WeightsPtr RemoteBackend::do_create_weights(const Tensor& weights) {
  // read_grad's reply carries them as float64, in one frame.
  DK_CHECK(weights.numel() <= impl_->max_frame / 8,
           "create_weights: weights of {} are too large for a remote worker ({} bytes as "
           "float64, over the protocol's {}-byte frame limit)",
           weights.shape().str(), weights.numel() * 8, impl_->max_frame);
  const uint64_t id = impl_->next_id++;
  std::vector<int64_t> ints{static_cast<int64_t>(id)};
  put_shape(ints, weights.shape());
  Message req(Type::create_weights, 0, std::move(ints));
  req.set_payload(weights.data(), weights.bytes());
  post(std::move(req));
  return std::make_unique<RemoteWeights>(this, weights.shape(), id);
}

template <typename T>
TensorT<T> RemoteBackend::reply_tensor(Message& r, const char* op) {
  // The elements' shape is compared with the weights' by Backend's read_* (a wrong one
  // reaches on_bad_result); here the reply's own consistency, before allocating.
  Shape s;
  try {
    Args a(r);
    const bool present = a.integer("present", 0, 1) == 1;
    if (present) s = a.shape("shape");
    a.done();
    if (!present) {
      DK_CHECK(!r.has_payload, "{} payload bytes for no tensor", r.payload.size());
      return {};
    }
  } catch (const Error& e) {
    violation(fmt::format("a {} reply: {}", op, e.what()));
  }
  if (!r.has_payload || r.payload.size() != static_cast<size_t>(s.numel()) * sizeof(T))
    violation(fmt::format("a {} reply of {} payload bytes for a {} tensor of {} ({} bytes)", op,
                          r.payload.size(), dtype_name(dtype_of<T>()), s.str(),
                          s.numel() * static_cast<int64_t>(sizeof(T))));
  auto t = TensorT<T>::uninitialized(s);
  if (t.bytes()) std::memcpy(t.data(), r.payload.data(), t.bytes());
  return t;
}

Tensor RemoteBackend::do_read_weights(const Weights& w) {
  Message r = call(Message(Type::read_weights, 0, {id_of(w)}));
  return reply_tensor<float>(r, "read_weights");
}

void RemoteBackend::do_accumulate_grad(Weights& w, const Buffer& grad, double scale) {
  post(Message(Type::accumulate_grad, 0, {id_of(w), id_of(grad)}, {scale}));
}

void RemoteBackend::do_accumulate_grad_host(Weights& w, const double* piece, int64_t offset,
                                            int64_t count) {
  // At most the weights' size: fits a frame (do_create_weights).
  Message req(Type::accumulate_grad_host, 0, {id_of(w), offset});
  req.set_payload(piece, static_cast<size_t>(count) * sizeof(double));
  post(std::move(req));
}

void RemoteBackend::do_sgd_step(Weights& w, const SgdParams& p) {
  post(Message(Type::sgd_step, 0, {id_of(w), p.nesterov ? 1 : 0},
               {p.lr, p.momentum, p.dampening, p.weight_decay}));
}

Tensor RemoteBackend::do_read_momentum(const Weights& w) {
  Message r = call(Message(Type::read_momentum, 0, {id_of(w)}));
  return reply_tensor<float>(r, "read_momentum");
}

void RemoteBackend::do_write_momentum(Weights& w, const Tensor& momentum) {
  std::vector<int64_t> ints{id_of(w), momentum.empty() ? 0 : 1};
  if (!momentum.empty()) put_shape(ints, momentum.shape());
  Message req(Type::write_momentum, 0, std::move(ints));
  if (!momentum.empty()) req.set_payload(momentum.data(), momentum.bytes());
  post(std::move(req));
}

Tensor64 RemoteBackend::do_read_grad(const Weights& w) {
  Message r = call(Message(Type::read_grad, 0, {id_of(w)}));
  return reply_tensor<double>(r, "read_grad");
}

void RemoteBackend::op(int type, std::vector<int64_t> ints) {
  ints.insert(ints.begin(), layer_);
  post(Message(static_cast<Type>(type), 0, std::move(ints)));
}

void RemoteBackend::do_conv2d_forward(const ConvDesc& d, const Buffer& src, const Weights& w,
                                      Buffer& dst) {
  std::vector<int64_t> v;
  put_conv(v, d);
  v.insert(v.end(), {id_of(src), id_of(w), id_of(dst)});
  op(static_cast<int>(Type::conv2d_forward), std::move(v));
}

void RemoteBackend::do_conv2d_backward_data(const ConvDesc& d, const Buffer& diff_dst,
                                            const Weights& w, Buffer& diff_src) {
  std::vector<int64_t> v;
  put_conv(v, d);
  v.insert(v.end(), {id_of(diff_dst), id_of(w), id_of(diff_src)});
  op(static_cast<int>(Type::conv2d_backward_data), std::move(v));
}

void RemoteBackend::do_conv2d_backward_weights(const ConvDesc& d, const Buffer& src,
                                               const Buffer& diff_dst, Buffer& diff_weights,
                                               int64_t) {
  std::vector<int64_t> v;
  put_conv(v, d);
  v.insert(v.end(), {id_of(src), id_of(diff_dst), id_of(diff_weights)});
  op(static_cast<int>(Type::conv2d_backward_weights), std::move(v));
}

void RemoteBackend::do_dense_forward(const DenseDesc& d, const Buffer& src, const Weights& w,
                                     Buffer& dst) {
  op(static_cast<int>(Type::dense_forward),
     {d.in_features, d.out_features, id_of(src), id_of(w), id_of(dst)});
}

void RemoteBackend::do_dense_backward_data(const DenseDesc& d, const Buffer& diff_dst,
                                           const Weights& w, Buffer& diff_src) {
  op(static_cast<int>(Type::dense_backward_data),
     {d.in_features, d.out_features, id_of(diff_dst), id_of(w), id_of(diff_src)});
}

void RemoteBackend::do_dense_backward_weights(const DenseDesc& d, const Buffer& src,
                                              const Buffer& diff_dst, Buffer& diff_weights,
                                              int64_t) {
  op(static_cast<int>(Type::dense_backward_weights),
     {d.in_features, d.out_features, id_of(src), id_of(diff_dst), id_of(diff_weights)});
}

}  // namespace darknight::accel::remote
