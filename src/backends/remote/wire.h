// The accelerator worker's message format (docs/protocol.md): ZeroMQ multipart messages of
// one header frame (a fixed binary record, then integer and real arguments) and at most one
// payload frame (tensor bytes, raw, row-major, little-endian; or an error text).
#pragma once

#include <bit>
#include <cstdint>
#include <string>
#include <vector>

#include <zmq.hpp>

#include "accel/backend.h"
#include "protocol/shape.h"
#include "protocol/tensor.h"

namespace darknight::accel::remote {

static_assert(std::endian::native == std::endian::little, "the wire format is little-endian");

constexpr uint32_t kMagic = 0x574b4144;  // "DAKW" in memory order
constexpr uint16_t kVersion = 1;
/// Arguments per message, at most (the longest, a convolution, has 17).
constexpr uint32_t kMaxArgs = 32;
/// The largest frame either side accepts (ZMQ_MAXMSGSIZE on both sockets: a peer that sends
/// a larger one is disconnected before it is read). The client splits uploads and downloads
/// into pieces of at most this size, and refuses weights whose float64 copy (read_grad's
/// reply) would not fit in one frame.
constexpr int64_t kMaxFrameBytes = int64_t{1} << 30;

enum class Type : uint16_t {
  // requests
  hello = 1,
  bye = 2,
  alloc = 3,
  view = 4,
  free = 5,
  upload = 6,
  download = 7,
  create_weights = 8,
  read_weights = 9,
  accumulate_grad = 10,
  accumulate_grad_host = 11,
  sgd_step = 12,
  read_momentum = 13,
  write_momentum = 14,
  read_grad = 15,
  conv2d_forward = 16,
  conv2d_backward_data = 17,
  conv2d_backward_weights = 18,
  dense_forward = 19,
  dense_backward_data = 20,
  dense_backward_weights = 21,
  stats = 22,  ///< the session's fault-injection counts (reply ints: operations, injected)
  // replies
  ok = 100,
  error = 101,
};
/// "conv2d_forward", ...; "unknown" for a value that names no type.
const char* type_name(Type t);

/// One message: its header's fields and the payload frame (empty when there is none).
struct Message {
  Type type = Type::ok;
  uint64_t seq = 0;  ///< the request's number; a reply carries its request's
  std::vector<int64_t> ints;
  std::vector<double> reals;
  zmq::message_t payload;
  bool has_payload = false;

  Message() = default;
  Message(Type t, uint64_t s, std::vector<int64_t> i = {}, std::vector<double> r = {})
      : type(t), seq(s), ints(std::move(i)), reals(std::move(r)) {}

  /// Sets the payload to a copy of `bytes` bytes at `data`.
  void set_payload(const void* data, size_t bytes);
  /// Sets the payload to `bytes` bytes at `data`, not copied: they must stay unchanged until
  /// the message has been sent (for the client: until the request's reply has arrived).
  void borrow_payload(const void* data, size_t bytes);
  void set_payload(const std::string& text) { set_payload(text.data(), text.size()); }
  std::string payload_text() const { return payload.to_string(); }

  /// The frames to send, after any routing frames; moves the payload into them. Throws
  /// Error past kMaxArgs.
  std::vector<zmq::message_t> frames();
  /// Parses frames (after routing frames); throws Error naming what is wrong.
  static Message parse(std::vector<zmq::message_t>& frames);
};

/// Reads a message's arguments in order; throws Error when one is missing or out of range.
class Args {
 public:
  explicit Args(const Message& m) : m_(m) {}
  int64_t integer(const char* what);
  /// An integer in [lo, hi].
  int64_t integer(const char* what, int64_t lo, int64_t hi);
  double real(const char* what);
  /// A rank, then that many dimensions (validated by Shape: no negative dimension, rank and
  /// element count within Shape's limits).
  Shape shape(const char* what);
  DType dtype(const char* what);
  /// A convolution's 13 integers, validated (ConvDesc::validate).
  ConvDesc conv(const char* what);
  /// A dense layer's in_features and out_features.
  DenseDesc dense();
  /// Throws when arguments are left over.
  void done() const;

 private:
  const Message& m_;
  size_t i_ = 0, r_ = 0;
};

/// Appends a shape as a rank and its dimensions.
void put_shape(std::vector<int64_t>& ints, const Shape& s);

}  // namespace darknight::accel::remote
