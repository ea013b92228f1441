// The accelerator worker and its client (accel/remote): same results as in-process, bit for
// bit; bad messages refused without harm; a dead or absent worker fails the call clearly.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <functional>
#include <thread>

#include "backends/remote/remote_backend.h"
#include "backends/remote/wire.h"
#include "baselines/plain_io.h"
#include "registry/registry.h"
#include "support/random.h"
#include "support/worker.h"

namespace darknight::accel::remote {
namespace {

using darknight::testing::random_tensor;
using darknight::testing::TestWorker;

std::unique_ptr<Backend> connect(const std::string& endpoint, double timeout_s = 30) {
  BackendOptions o;
  o.timeout_s = timeout_s;
  o.mixtures_per_batch = 5;
  return make_backend(endpoint, o);
}

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && std::memcmp(a.data(), b.data(), a.bytes()) == 0;
}

/// A training step's worth of calls: forward, backward data and weights, SGD with momentum.
std::vector<Tensor> exercise(Backend& be) {
  baselines::PlainIo io(be, DType::f32);
  ConvDesc d;
  d.in_channels = 3, d.out_channels = 8, d.kernel_h = d.kernel_w = 3;
  d.pad_top = d.pad_left = d.pad_bottom = d.pad_right = 1;
  const Shape xs{5, 3, 12, 12};
  const Tensor x = random_tensor(xs, 1), w0 = random_tensor(d.weight_shape(), 2);
  auto w = be.create_weights(w0);
  auto xb = io.put(x);
  auto yb = be.alloc(d.dst_shape(xs), DType::f32);
  be.conv2d_forward(d, *xb, *w, *yb);
  const Tensor y = io.get(*yb);
  auto dxb = be.alloc(xs, DType::f32);
  be.conv2d_backward_data(d, *yb, *w, *dxb);
  auto gw = be.alloc(d.weight_shape(), DType::f32);
  auto part = be.view(*xb, xs.with_batch(2), 3 * xs.item_numel());
  auto dpart = be.view(*yb, d.dst_shape(xs).with_batch(2), 3 * d.dst_shape(xs).item_numel());
  be.conv2d_backward_weights(d, *part, *dpart, *gw);
  be.accumulate_grad(*w, *gw, 0.5);
  SgdParams p;
  p.lr = 0.1, p.momentum = 0.9, p.weight_decay = 1e-4;
  be.sgd_step(*w, p);
  be.sgd_step(*w, *gw, p);
  DenseDesc dd{3 * 12 * 12, 4};
  auto dw = be.create_weights(random_tensor(dd.weight_shape(), 3));
  auto out = be.alloc(Shape{5, 4}, DType::f32);
  be.dense_forward(dd, *xb, *dw, *out);
  be.accumulate_grad(*dw, Tensor64(dd.weight_shape()), 0);
  std::vector<Tensor> r;
  r.push_back(y.clone());
  r.push_back(io.get(*dxb));
  r.push_back(io.get(*gw));
  r.push_back(be.read_weights(*w));
  r.push_back(be.read_momentum(*w));
  r.push_back(be.read_grad(*dw).cast<float>());
  r.push_back(io.get(*out));
  return r;
}

TEST(Remote, SameResultsAsInProcessBitForBit) {
  TestWorker worker;
  auto local = make_backend("cpu");
  auto remote = connect(worker.endpoint());
  EXPECT_EQ(remote->name(), "remote");
  const auto want = exercise(*local), got = exercise(*remote);
  ASSERT_EQ(want.size(), got.size());
  for (size_t i = 0; i < want.size(); ++i)
    EXPECT_TRUE(same_bits(want[i], got[i])) << "result " << i;
}

/// A raw client: sends any frames and reads one reply.
class RawClient {
 public:
  explicit RawClient(const std::string& endpoint) {
    sock_.set(zmq::sockopt::linger, 0);
    sock_.set(zmq::sockopt::rcvtimeo, 10000);
    sock_.connect(endpoint);
  }
  Message send(std::vector<zmq::message_t> frames) {
    for (size_t i = 0; i < frames.size(); ++i)
      sock_.send(frames[i],
                 i + 1 < frames.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
    std::vector<zmq::message_t> reply;
    zmq::message_t f;
    do {
      EXPECT_TRUE(sock_.recv(f).has_value()) << "no reply";
      reply.push_back(std::move(f));
    } while (reply.back().more());
    return Message::parse(reply);
  }
  Message send(Message m) { return send(m.frames()); }

 private:
  zmq::context_t ctx_{1};
  zmq::socket_t sock_{ctx_, zmq::socket_type::dealer};
};

std::vector<zmq::message_t> frames_of(std::initializer_list<std::string> parts) {
  std::vector<zmq::message_t> out;
  for (const auto& p : parts) out.emplace_back(p.data(), p.size());
  return out;
}

TEST(Remote, BadMessagesAreRefusedAndTheWorkerKeepsServing) {
  ServerOptions opts;
  opts.max_bytes = int64_t{64} << 20;
  TestWorker worker(opts);
  RawClient c(worker.endpoint());
  auto expect_error = [&](const Message& reply, const std::string& says) {
    EXPECT_EQ(reply.type, Type::error);
    EXPECT_NE(reply.payload_text().find(says), std::string::npos) << reply.payload_text();
  };
  expect_error(c.send(Message(Type::alloc, 1, {1, 0, 1, 4})), "send hello first");
  EXPECT_EQ(c.send(Message(Type::hello, 1, {kVersion, 5})).type, Type::ok);

  Message good(Type::alloc, 2, {1, 0, 2, 4, 4});
  std::vector<zmq::message_t> f = good.frames();
  const std::string head(static_cast<const char*>(f[0].data()), f[0].size());
  expect_error(c.send(frames_of({head.substr(0, 10)})), "header of 10 bytes");
  expect_error(c.send(frames_of({head.substr(0, head.size() - 8)})), "header of");
  std::string bad_magic = head;
  bad_magic[0] ^= 1;
  expect_error(c.send(frames_of({bad_magic})), "bad magic");
  std::string bad_version = head;
  bad_version[4] = 9;
  expect_error(c.send(frames_of({bad_version})), "protocol version 9");
  expect_error(c.send(frames_of({head, "a", "b"})), "3 frames");
  expect_error(c.send(Message(static_cast<Type>(77), 3)), "unknown message type 77");
  expect_error(c.send(Message(Type::alloc, 4, {1, 0})), "argument 'shape' missing");
  expect_error(c.send(Message(Type::alloc, 5, {1, 0, 2, 4, 4, 9})), "left over");
  expect_error(c.send(Message(Type::alloc, 6, {1, 0, 3, 1 << 20, 1 << 20, 1 << 20})),
               "elements");  // 2^60 elements: refused before allocating
  expect_error(c.send(Message(Type::alloc, 7, {1, 0, 2, 1 << 20, 1 << 20})), "memory limit");
  expect_error(c.send(Message(Type::alloc, 8, {1, 0, 2, -4, 4})), "negative");
  expect_error(c.send(Message(Type::alloc, 9, {1, 7, 1, 4})), "dtype");
  ASSERT_EQ(c.send(Message(Type::alloc, 10, {1, 0, 2, 4, 4})).type, Type::ok);
  expect_error(c.send(Message(Type::alloc, 11, {1, 0, 1, 4})), "in use");
  Message up(Type::upload, 12, {1, 60});
  up.set_payload(std::string(8, 'x'));
  expect_error(c.send(std::move(up)), "do not fit");
  Message odd(Type::upload, 13, {1, 2});
  odd.set_payload(std::string(4, 'x'));
  expect_error(c.send(std::move(odd)), "whole elements");
  expect_error(c.send(Message(Type::upload, 14, {1, 0})), "without a payload");
  expect_error(c.send(Message(Type::download, 15, {1, 0, int64_t{1} << 40})), "do not fit");
  expect_error(c.send(Message(Type::download, 16, {99, 0, 4})), "no buffer 99");
  expect_error(c.send(Message(Type::view, 17, {2, 1, 10, 1, 10})), "does not fit");
  expect_error(c.send(Message(Type::dense_forward, 18, {0, 16, 2, 1, 42, 1})), "no weights 42");
  Message w(Type::create_weights, 19, {42, 2, 2, 16});
  w.set_payload(std::string(7, 'w'));
  expect_error(c.send(std::move(w)), "payload bytes");
  expect_error(c.send(Message(Type::sgd_step, 20, {1, 0}, {0.1, -1, 0, 0})), "no weights 1");
  expect_error(c.send(Message(Type::free, 21, {1234})), "no weights 1234");

  // Still serving, and nothing refused changed any state.
  Message put(Type::upload, 22, {1, 0});
  std::vector<float> v(16);
  for (int i = 0; i < 16; ++i) v[static_cast<size_t>(i)] = static_cast<float>(i);
  put.set_payload(v.data(), 64);
  EXPECT_EQ(c.send(std::move(put)).type, Type::ok);
  Message back = c.send(Message(Type::download, 23, {1, 0, 64}));
  ASSERT_EQ(back.type, Type::ok);
  ASSERT_EQ(back.payload.size(), 64u);
  EXPECT_EQ(std::memcmp(back.payload.data(), v.data(), 64), 0);
  EXPECT_GE(worker.server().errors(), 20);
}

TEST(Remote, AbsentWorkerFailsWithinTheTimeout) {
  TestWorker worker;
  const std::string endpoint = worker.endpoint();
  worker.stop();  // nobody listens there now
  const auto t0 = std::chrono::steady_clock::now();
  try {
    connect(endpoint, 0.5);
    FAIL() << "connected to nothing";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("darknight worker --listen"), std::string::npos)
        << e.what();
  }
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
}

TEST(Remote, AWorkerThatDiesFailsTheNextCallClearly) {
  TestWorker worker;
  auto be = connect(worker.endpoint(), 2);
  auto b = be->alloc(Shape{4}, DType::f32);
  be->wait();
  worker.stop();
  EXPECT_THROW(
      {
        baselines::PlainIo io(*be, DType::f32);
        io.get(*b);
      },
      Error);
  // The backend stays failed: no call hangs.
  EXPECT_THROW(be->wait(), Error);
}

TEST(Remote, ANewClientEndsTheOldSession) {
  TestWorker worker;
  auto first = connect(worker.endpoint());
  auto b = first->alloc(Shape{4}, DType::f32);
  first->wait();
  auto second = connect(worker.endpoint());
  auto c = first->alloc(Shape{4}, DType::f32);
  try {
    first->wait();
    FAIL() << "the old session still works";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no session"), std::string::npos) << e.what();
  }
  auto d = second->alloc(Shape{4}, DType::f32);
  EXPECT_NO_THROW(second->wait());
}

TEST(Remote, AViewKeepsItsBasesMemoryAccounted) {
  ServerOptions opts;
  opts.max_bytes = 4096;
  TestWorker worker(opts);
  RawClient c(worker.endpoint());
  uint64_t seq = 0;
  auto send = [&](Type t, std::vector<int64_t> ints) {
    return c.send(Message(t, ++seq, std::move(ints)));
  };
  ASSERT_EQ(send(Type::hello, {kVersion, 5}).type, Type::ok);
  ASSERT_EQ(send(Type::alloc, {1, 0, 1, 1024}).type, Type::ok);  // the whole limit
  ASSERT_EQ(send(Type::view, {2, 1, 512, 1, 256}).type, Type::ok);
  ASSERT_EQ(send(Type::view, {3, 2, 0, 1, 16}).type, Type::ok);  // a view of the view
  ASSERT_EQ(send(Type::free, {1}).type, Type::ok);
  // The views still hold the allocation: its bytes still count.
  Message r = send(Type::alloc, {4, 0, 1, 1});
  EXPECT_EQ(r.type, Type::error);
  EXPECT_NE(r.payload_text().find("memory limit"), std::string::npos) << r.payload_text();
  ASSERT_EQ(send(Type::free, {2}).type, Type::ok);
  EXPECT_EQ(send(Type::alloc, {4, 0, 1, 1}).type, Type::error);
  ASSERT_EQ(send(Type::free, {3}).type, Type::ok);  // the last handle: the memory is back
  EXPECT_EQ(send(Type::alloc, {4, 0, 1, 1024}).type, Type::ok);
  // A view's own free gives nothing back while its base lives.
  ASSERT_EQ(send(Type::view, {5, 4, 0, 1, 1024}).type, Type::ok);
  ASSERT_EQ(send(Type::free, {5}).type, Type::ok);
  EXPECT_EQ(send(Type::alloc, {6, 0, 1, 1}).type, Type::error);
  ASSERT_EQ(send(Type::free, {4}).type, Type::ok);
  EXPECT_EQ(send(Type::alloc, {6, 0, 1, 1024}).type, Type::ok);
}

TEST(Remote, TransfersAreSplitToFitTheFrameLimit) {
  ServerOptions so;
  so.max_frame_bytes = 4096;
  TestWorker worker(so);
  RemoteOptions ro;
  ro.endpoint = worker.endpoint();
  ro.timeout_s = 30;
  ro.max_frame_bytes = 4096;
  RemoteBackend be(ro);
  baselines::PlainIo io(be, DType::f64);
  const Tensor x = random_tensor(Shape{3, 1000}, 4);  // 24000 bytes as f64: 6 frames
  auto b = io.put(x);
  const Tensor back = io.get(*b);
  EXPECT_TRUE(same_bits(x, back));
  // Weights whose float64 copy would not fit one frame are refused up front, clearly.
  try {
    be.create_weights(Tensor(Shape{8, 65}));
    FAIL() << "weights over the frame limit were sent";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("frame limit"), std::string::npos) << e.what();
  }
  auto w = be.create_weights(random_tensor(Shape{8, 64}, 5));
  EXPECT_EQ(be.read_grad(*w).shape(), (Shape{8, 64}));
}

TEST(Remote, AClientOverTheWorkersFrameLimitIsCutOff) {
  ServerOptions so;
  so.max_frame_bytes = 4096;
  TestWorker worker(so);
  auto be = connect(worker.endpoint(), 5);  // the default limit: sends 8000-byte frames
  baselines::PlainIo io(*be, DType::f64);
  auto b = io.put(random_tensor(Shape{1000}, 6));
  try {
    be->wait();
    FAIL() << "an oversized request was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("disconnected"), std::string::npos) << e.what();
  }
}

/// A relay in front of a worker that lets a test rewrite the worker's replies: `tamper` gets
/// the request's type and the honest reply and returns the frames to send.
class TamperingRelay {
 public:
  using Tamper = std::function<std::vector<zmq::message_t>(Type, Message)>;
  TamperingRelay(const std::string& worker, Tamper tamper) : tamper_(std::move(tamper)) {
    front_.set(zmq::sockopt::linger, 0);
    back_.set(zmq::sockopt::linger, 0);
    front_.bind("tcp://127.0.0.1:0");
    endpoint_ = front_.get(zmq::sockopt::last_endpoint);
    back_.connect(worker);
    thread_ = std::thread([this] { relay(); });
  }
  ~TamperingRelay() {
    stop_ = true;
    thread_.join();
  }
  const std::string& endpoint() const { return endpoint_; }

 private:
  static std::vector<zmq::message_t> receive(zmq::socket_t& s) {
    std::vector<zmq::message_t> frames;
    for (bool more = true; more;) {
      zmq::message_t f;
      if (!s.recv(f)) break;
      more = f.more();
      frames.push_back(std::move(f));
    }
    return frames;
  }
  void relay() {
    while (!stop_) {
      zmq::pollitem_t item{front_.handle(), 0, ZMQ_POLLIN, 0};
      zmq::poll(&item, 1, std::chrono::milliseconds(20));
      if (!(item.revents & ZMQ_POLLIN)) continue;
      std::vector<zmq::message_t> req = receive(front_);
      std::vector<zmq::message_t> head;
      head.emplace_back(req[1].data(), req[1].size());
      const Type type = Message::parse(head).type;
      for (size_t i = 1; i < req.size(); ++i)
        back_.send(req[i], i + 1 < req.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
      std::vector<zmq::message_t> reply = receive(back_);
      std::vector<zmq::message_t> out = tamper_(type, Message::parse(reply));
      front_.send(req[0], zmq::send_flags::sndmore);
      for (size_t i = 0; i < out.size(); ++i)
        front_.send(out[i], i + 1 < out.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
    }
  }
  Tamper tamper_;
  zmq::context_t ctx_{1};
  zmq::socket_t front_{ctx_, zmq::socket_type::router}, back_{ctx_, zmq::socket_type::dealer};
  std::string endpoint_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

/// The reply of a read_* of `of` as a flat tensor of its elements (the same payload).
TamperingRelay::Tamper flatten(Type of) {
  return [of](Type t, Message r) {
    if (t == of && r.ints.size() > 2 && r.ints[0] == 1) {
      int64_t n = 1;
      for (size_t i = 2; i < r.ints.size(); ++i) n *= r.ints[i];
      r.ints = {1, 1, n};
    }
    return r.frames();
  };
}

void expect_error(const std::function<void()>& f, const std::string& says) {
  try {
    f();
    ADD_FAILURE() << "no error; expected one saying '" << says << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(says), std::string::npos) << e.what();
  }
}

TEST(Remote, ReadsOfAnotherShapeAreRefusedAndEndTheConnection) {
  TestWorker worker;
  for (Type t : {Type::read_weights, Type::read_momentum, Type::read_grad}) {
    SCOPED_TRACE(type_name(t));
    TamperingRelay relay(worker.endpoint(), flatten(t));
    auto be = connect(relay.endpoint(), 10);
    auto w = be->create_weights(random_tensor(Shape{4, 3, 2, 2}, 7));
    SgdParams p;
    p.lr = 0.1, p.momentum = 0.9;
    be->sgd_step(*w, random_tensor(Shape{4, 3, 2, 2}, 8), p);  // a momentum to read
    be->wait();
    expect_error(
        [&] {
          if (t == Type::read_weights) be->read_weights(*w);
          if (t == Type::read_momentum) be->read_momentum(*w);
          if (t == Type::read_grad) be->read_grad(*w);
        },
        fmt::format("{}: the accelerator (remote worker at {}", type_name(t), relay.endpoint()));
    // No further use of that connection.
    expect_error([&] { be->wait(); }, "returned a tensor of [48] for weights of [4, 3, 2, 2]");
    expect_error([&] { be->alloc(Shape{4}, DType::f32); }, "no longer used");
  }
}

TEST(Remote, MalformedRepliesEndTheConnection) {
  TestWorker worker;
  const Tensor x = random_tensor(Shape{64}, 9);
  struct Case {
    const char* says;
    TamperingRelay::Tamper tamper;
  };
  const std::vector<Case> cases = {
      {"a reply to request",
       [](Type t, Message r) {
         if (t == Type::download) r.seq += 1;
         return r.frames();
       }},
      {"a download reply of 128 bytes",
       [](Type t, Message r) {
         if (t == Type::download) r.payload = zmq::message_t(r.payload.data(), 128);
         return r.frames();
       }},
      {"an ok reply to upload with 1 arguments",
       [](Type t, Message r) {
         if (t == Type::upload) r.ints = {7};
         return r.frames();
       }},
      {"a reply of type 3 to",
       [](Type t, Message r) {
         if (t == Type::download) r.type = Type::alloc;
         return r.frames();
       }},
      {"malformed reply",
       [](Type t, Message r) {
         std::vector<zmq::message_t> f = r.frames();
         if (t == Type::download) static_cast<char*>(f[0].data())[1] ^= 1;
         return f;
       }},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.says);
    TamperingRelay relay(worker.endpoint(), c.tamper);
    auto be = connect(relay.endpoint(), 10);
    baselines::PlainIo io(*be, DType::f32);
    auto b = io.put(x);
    expect_error([&] { io.get(*b); }, c.says);
    expect_error([&] { be->wait(); }, "broke the protocol");
  }
}

TEST(Remote, WorkerTextIsCheckedAndMadePrintable) {
  TestWorker worker;
  {
    TamperingRelay relay(worker.endpoint(), [](Type t, Message r) {
      if (t == Type::hello) r.set_payload(std::string("evil\x1b[2J\nworker"));
      if (t == Type::stats) r.ints = {3, 4};  // more faults than operations
      return r.frames();
    });
    RemoteBackend be(RemoteOptions{relay.endpoint(), 10});
    EXPECT_NE(be.describe().find("evil?[2J?worker"), std::string::npos) << be.describe();
    expect_error([&] { be.worker_faults(); }, "a stats reply of 4 faults in 3 operations");
  }
  TamperingRelay relay(worker.endpoint(), [](Type t, Message r) {
    if (t == Type::hello) r.set_payload(std::string(100000, 'x'));
    return r.frames();
  });
  expect_error([&] { RemoteBackend be(RemoteOptions{relay.endpoint(), 10}); }, "hello reply");
}

}  // namespace
}  // namespace darknight::accel::remote
