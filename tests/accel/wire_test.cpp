// The worker's message format as untrusted bytes: Message::parse and Args refuse anything
// malformed with darknight::Error (the server answers with an error reply), and the
// convolution geometry a message describes cannot overflow.
#include "backends/remote/wire.h"

#include <gtest/gtest.h>

#include <cstring>

#include "accel/backend.h"
#include "fuzz/wire_input.h"
#include "support/fuzz_regressions.h"

namespace darknight::accel::remote {
namespace {

std::string parse_error(std::vector<zmq::message_t> frames) {
  try {
    Message::parse(frames);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(Wire, RoundTripAndMalformedHeaders) {
  Message m(Type::alloc, 7, {1, 0, 2, 3, 4}, {0.5});
  std::vector<zmq::message_t> frames = m.frames();
  Message back = Message::parse(frames);
  EXPECT_EQ(back.type, Type::alloc);
  EXPECT_EQ(back.seq, 7u);
  EXPECT_EQ(back.ints, (std::vector<int64_t>{1, 0, 2, 3, 4}));
  Args a(back);
  EXPECT_EQ(a.integer("id"), 1);
  EXPECT_EQ(a.dtype("dtype"), DType::f32);
  EXPECT_EQ(a.shape("shape"), (Shape{3, 4}));
  EXPECT_EQ(a.real("lr"), 0.5);
  a.done();

  std::vector<zmq::message_t> none;
  EXPECT_NE(parse_error(std::move(none)).find("0 frames"), std::string::npos);
  std::vector<zmq::message_t> shorter;
  shorter.emplace_back(10);
  EXPECT_NE(parse_error(std::move(shorter)).find("header of 10 bytes"), std::string::npos);
  // A header claiming more arguments than it holds, and more than allowed.
  Message two(Type::hello, 1, {1, 2});
  std::vector<zmq::message_t> f = two.frames();
  std::vector<zmq::message_t> cut;
  cut.emplace_back(f[0].data(), f[0].size() - 8);
  EXPECT_NE(parse_error(std::move(cut)).find("for 2 + 0 arguments"), std::string::npos);
  std::string head(static_cast<const char*>(f[0].data()), f[0].size());
  const uint32_t many = 1000;
  std::memcpy(head.data() + 16, &many, 4);
  std::vector<zmq::message_t> lots;
  lots.emplace_back(head.data(), head.size());
  EXPECT_NE(parse_error(std::move(lots)).find("1000 + 0 arguments"), std::string::npos);
}

TEST(Wire, ArgsRefuseMissingAndOutOfRangeValues) {
  Message m(Type::alloc, 1, {1, 5, 7});
  Args a(m);
  a.integer("id");
  EXPECT_THROW(a.dtype("dtype"), Error);                // 5 is no dtype
  Message s(Type::alloc, 1, {3, 1 << 20, 1 << 20, 2});  // 2^41 elements
  Args b(s);
  try {
    b.shape("shape");
    ADD_FAILURE() << "a shape past Shape::kMaxElements was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("more than"), std::string::npos) << e.what();
  }
  Message r(Type::alloc, 1, {7, -1});
  Args c(r);
  EXPECT_THROW(c.shape("shape"), Error);  // rank 7
  Args d(r);
  d.integer("x");
  EXPECT_THROW(d.done(), Error);  // one left over
  EXPECT_THROW(Args(Message(Type::bye, 1)).real("lr"), Error);
}

TEST(Wire, ConvGeometryOverflowIsRefused) {
  // Fields the worker accepts from a message (each in [0, 2^32]) whose effective kernel
  // (k - 1) * d + 1 overflows int64.
  ConvDesc d;
  d.in_channels = 1, d.out_channels = 1;
  d.kernel_h = int64_t{1} << 32, d.dilation_h = int64_t{1} << 32;
  try {
    (void)d.dst_shape(Shape{1, 1, 8, 8});
    ADD_FAILURE() << "an overflowing window was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("overflow"), std::string::npos) << e.what();
  }
  d.kernel_h = 3, d.dilation_h = 1;
  d.pad_top = d.pad_bottom = std::numeric_limits<int64_t>::max() / 2 + 1;
  EXPECT_THROW((void)d.dst_shape(Shape{1, 1, 8, 8}), Error);
  d.pad_top = d.pad_bottom = 1;
  EXPECT_EQ(d.dst_shape(Shape{2, 1, 8, 8}), (Shape{2, 1, 8, 8}));
}

TEST(Wire, ShapesWithAZeroDimensionCannotHideOverflowingOthers) {
  // [0, 2^62, 2^34] has no elements, but its item size (2^96) overflows int64.
  EXPECT_THROW((Shape{0, int64_t{1} << 62, int64_t{1} << 34}), Error);
  EXPECT_EQ((Shape{0, 3, 4}.item_numel()), 12);
  Message m(Type::dense_forward, 1, {0, 12, 2, 3, 0, int64_t{1} << 62, int64_t{1} << 34});
  EXPECT_THROW(darknight::fuzz::read_args(m), Error);
}

TEST(Wire, FuzzRegressionsAreCleanErrors) {
  const auto inputs = darknight::testing::fuzz_regressions("wire");
  EXPECT_FALSE(inputs.empty());
  for (const auto& [name, in] : inputs) {
    // Layout: fuzz/fuzz_wire.cpp (frame count, first frame's length, frames).
    ASSERT_GE(in.size(), 3u) << name;
    size_t first = 0;
    std::vector<zmq::message_t> frames = darknight::fuzz::wire_frames(
        reinterpret_cast<const uint8_t*>(in.data()), in.size(), first);
    bool refused = false;
    try {
      darknight::fuzz::read_args(Message::parse(frames));
    } catch (const Error& e) {
      refused = std::string(e.what()).find("shape") != std::string::npos ||
                std::string(e.what()).find("malformed") != std::string::npos;
      EXPECT_TRUE(refused) << name << ": " << e.what();
    }
    EXPECT_TRUE(refused) << name;
  }
}

}  // namespace
}  // namespace darknight::accel::remote
