#include "accel/remote/remote_backend.h"

#include <fmt/format.h>

#include <atomic>
#include <cstring>
#include <map>
#include <optional>

#include "accel/remote/wire.h"

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

}  // namespace

struct RemoteBackend::Impl {
  RemoteOptions opts;
  zmq::context_t ctx{1};
  zmq::socket_t sock{ctx, zmq::socket_type::dealer};
  zmq::socket_t monitor{ctx, zmq::socket_type::pair};
  uint64_t next_seq = 1, next_id = 1;
  uint64_t answered = 0;  ///< replies collected up to this request
  /// Downloads awaiting their reply: request number -> (host destination, bytes).
  std::map<uint64_t, std::pair<void*, size_t>> downloads;
  std::string worker;                 ///< the worker's description
  std::optional<std::string> broken;  ///< why the connection is unusable
};

RemoteBackend::RemoteBackend(const RemoteOptions& opts) : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.opts = opts;
  DK_CHECK(opts.timeout_s > 0, "accelerator timeout must be positive, got {}", opts.timeout_s);
  const int ms = static_cast<int>(std::min(opts.timeout_s * 1000, 2e9));
  m.sock.set(zmq::sockopt::linger, 0);
  m.sock.set(zmq::sockopt::sndtimeo, ms);
  const std::string mon = fmt::format("inproc://dk-monitor-{}", monitor_count++);
  DK_CHECK(zmq_socket_monitor(m.sock.handle(), mon.c_str(), ZMQ_EVENT_DISCONNECTED) == 0,
           "accelerator: cannot monitor the connection: {}", zmq_strerror(zmq_errno()));
  m.monitor.connect(mon);
  try {
    m.sock.connect(opts.endpoint);
  } catch (const zmq::error_t& e) {
    throw Error(fmt::format("accelerator endpoint '{}': {}", opts.endpoint, e.what()));
  }
  Message hello(Type::hello, 0, {kVersion, opts.mixtures_per_batch});
  try {
    m.worker = call(std::move(hello)).payload_text();
  } catch (const Error& e) {
    throw Error(
        fmt::format("{} (is `darknight worker --listen {}` running?)", e.what(), opts.endpoint));
  }
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
  return fmt::format("remote worker at {} ({})", impl_->opts.endpoint, impl_->worker);
}

void RemoteBackend::post(Message req) {
  Impl& m = *impl_;
  if (m.broken) throw Error(*m.broken);
  req.seq = m.next_seq++;
  std::vector<zmq::message_t> frames = req.frames();
  for (size_t i = 0; i < frames.size(); ++i) {
    const auto flags = i + 1 < frames.size() ? zmq::send_flags::sndmore : zmq::send_flags::none;
    if (!m.sock.send(frames[i], flags)) {
      m.broken = fmt::format("accelerator worker at {}: could not send {} within {} s",
                             m.opts.endpoint, type_name(req.type), m.opts.timeout_s);
      throw Error(*m.broken);
    }
  }
}

Message RemoteBackend::collect(uint64_t seq) {
  Impl& m = *impl_;
  std::optional<std::string> error;
  Message last;
  while (m.answered < seq) {
    if (m.broken) throw Error(*m.broken);
    zmq::pollitem_t items[] = {{m.sock.handle(), 0, ZMQ_POLLIN, 0},
                               {m.monitor.handle(), 0, ZMQ_POLLIN, 0}};
    zmq::poll(items, 2, std::chrono::milliseconds(static_cast<int64_t>(m.opts.timeout_s * 1000)));
    if (items[1].revents & ZMQ_POLLIN) {
      m.broken = fmt::format(
          "accelerator worker at {} disconnected (it died or was stopped); "
          "its buffers and weights are lost",
          m.opts.endpoint);
      throw Error(*m.broken);
    }
    if (!(items[0].revents & ZMQ_POLLIN)) {
      m.broken = fmt::format(
          "accelerator worker at {} sent no reply within {} s (see "
          "--accelerator-timeout)",
          m.opts.endpoint, m.opts.timeout_s);
      throw Error(*m.broken);
    }
    std::vector<zmq::message_t> frames;
    zmq::message_t f;
    do {
      (void)m.sock.recv(f);
      frames.push_back(std::move(f));
    } while (frames.back().more());
    Message r = Message::parse(frames);
    DK_CHECK(r.seq == m.answered + 1, "accelerator worker replied to request {}, expected {}",
             r.seq, m.answered + 1);
    m.answered = r.seq;
    if (r.type == Type::error && !error)
      error = fmt::format("accelerator worker: {}", r.payload_text());
    if (auto it = m.downloads.find(r.seq); it != m.downloads.end()) {
      const auto [dst, bytes] = it->second;
      m.downloads.erase(it);
      if (r.type == Type::ok && !error) {
        if (r.payload.size() != bytes)
          error = fmt::format("accelerator worker: download returned {} bytes, asked {}",
                              r.payload.size(), bytes);
        else
          std::memcpy(dst, r.payload.data(), bytes);
      }
    }
    last = std::move(r);
  }
  if (error) throw Error(*error);
  return last;
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
  DK_CHECK(r.ints.size() == 2, "accelerator worker: a stats reply needs 2 integers, got {}",
           r.ints.size());
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

void RemoteBackend::do_upload(const void* src, Buffer& dst, size_t offset, size_t bytes) {
  // `src` stays unchanged until wait() (Backend's contract), which collects the reply.
  Message req(Type::upload, 0, {id_of(dst), static_cast<int64_t>(offset)});
  req.borrow_payload(src, bytes);
  post(std::move(req));
}

void RemoteBackend::do_download(const Buffer& src, size_t offset, size_t bytes, void* dst) {
  // Valid after wait(), which copies the reply into `dst`.
  post(Message(Type::download, 0,
               {id_of(src), static_cast<int64_t>(offset), static_cast<int64_t>(bytes)}));
  impl_->downloads[impl_->next_seq - 1] = {dst, bytes};
}

WeightsPtr RemoteBackend::do_create_weights(const Tensor& weights) {
  const uint64_t id = impl_->next_id++;
  std::vector<int64_t> ints{static_cast<int64_t>(id)};
  put_shape(ints, weights.shape());
  Message req(Type::create_weights, 0, std::move(ints));
  req.set_payload(weights.data(), weights.bytes());
  post(std::move(req));
  return std::make_unique<RemoteWeights>(this, weights.shape(), id);
}

namespace {

/// A reply's tensor: the shape in its arguments, the elements in its payload.
template <typename T>
TensorT<T> tensor_of(Message& r) {
  Args a(r);
  if (a.integer("present", 0, 1) == 0) return {};
  const Shape s = a.shape("shape");
  DK_CHECK(r.payload.size() == static_cast<size_t>(s.numel()) * sizeof(T),
           "accelerator worker: {} bytes for a tensor of {}", r.payload.size(), s.str());
  auto t = TensorT<T>::uninitialized(s);
  std::memcpy(t.data(), r.payload.data(), t.bytes());
  return t;
}

}  // namespace

Tensor RemoteBackend::do_read_weights(const Weights& w) {
  Message r = call(Message(Type::read_weights, 0, {id_of(w)}));
  return tensor_of<float>(r);
}

void RemoteBackend::do_accumulate_grad(Weights& w, const Buffer& grad, double scale) {
  post(Message(Type::accumulate_grad, 0, {id_of(w), id_of(grad)}, {scale}));
}

void RemoteBackend::do_accumulate_grad_host(Weights& w, const double* piece, int64_t offset,
                                            int64_t count) {
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
  return tensor_of<float>(r);
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
  return tensor_of<double>(r);
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
