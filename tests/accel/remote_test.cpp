// The accelerator worker and its client (accel/remote): same results as in-process, bit for
// bit; bad messages refused without harm; a dead or absent worker fails the call clearly.
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>

#include "accel/remote/remote_backend.h"
#include "accel/remote/wire.h"
#include "baselines/plain_io.h"
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

}  // namespace
}  // namespace darknight::accel::remote
