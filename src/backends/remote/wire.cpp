#include "backends/remote/wire.h"

#include <cstring>

#include "protocol/error.h"

namespace darknight::accel::remote {

namespace {

/// The fixed part of a header frame; the arguments follow it.
struct Fixed {
  uint32_t magic;
  uint16_t version;
  uint16_t type;
  uint64_t seq;
  uint32_t ints;
  uint32_t reals;
};
static_assert(sizeof(Fixed) == 24);

}  // namespace

const char* type_name(Type t) {
  switch (t) {
    case Type::hello:
      return "hello";
    case Type::bye:
      return "bye";
    case Type::alloc:
      return "alloc";
    case Type::view:
      return "view";
    case Type::free:
      return "free";
    case Type::upload:
      return "upload";
    case Type::download:
      return "download";
    case Type::create_weights:
      return "create_weights";
    case Type::read_weights:
      return "read_weights";
    case Type::accumulate_grad:
      return "accumulate_grad";
    case Type::accumulate_grad_host:
      return "accumulate_grad_host";
    case Type::sgd_step:
      return "sgd_step";
    case Type::read_momentum:
      return "read_momentum";
    case Type::write_momentum:
      return "write_momentum";
    case Type::read_grad:
      return "read_grad";
    case Type::conv2d_forward:
      return "conv2d_forward";
    case Type::conv2d_backward_data:
      return "conv2d_backward_data";
    case Type::conv2d_backward_weights:
      return "conv2d_backward_weights";
    case Type::dense_forward:
      return "dense_forward";
    case Type::dense_backward_data:
      return "dense_backward_data";
    case Type::dense_backward_weights:
      return "dense_backward_weights";
    case Type::stats:
      return "stats";
    case Type::ok:
      return "ok";
    case Type::error:
      return "error";
  }
  return "unknown";
}

void Message::set_payload(const void* data, size_t bytes) {
  payload.rebuild(data, bytes);
  has_payload = true;
}

void Message::borrow_payload(const void* data, size_t bytes) {
  payload = zmq::message_t(const_cast<void*>(data), bytes, nullptr, nullptr);
  has_payload = true;
}

std::vector<zmq::message_t> Message::frames() {
  DK_CHECK(ints.size() + reals.size() <= kMaxArgs, "{}: {} arguments (at most {})", type_name(type),
           ints.size() + reals.size(), kMaxArgs);
  const Fixed f{kMagic,
                kVersion,
                static_cast<uint16_t>(type),
                seq,
                static_cast<uint32_t>(ints.size()),
                static_cast<uint32_t>(reals.size())};
  zmq::message_t head(sizeof f + 8 * (ints.size() + reals.size()));
  auto* p = static_cast<char*>(head.data());
  std::memcpy(p, &f, sizeof f);
  if (!ints.empty()) std::memcpy(p + sizeof f, ints.data(), 8 * ints.size());
  if (!reals.empty()) std::memcpy(p + sizeof f + 8 * ints.size(), reals.data(), 8 * reals.size());
  std::vector<zmq::message_t> out;
  out.push_back(std::move(head));
  if (has_payload) out.push_back(std::move(payload));
  has_payload = false;
  return out;
}

Message Message::parse(std::vector<zmq::message_t>& frames) {
  DK_CHECK(!frames.empty() && frames.size() <= 2,
           "malformed message: {} frames (a header and at most one payload)", frames.size());
  const zmq::message_t& head = frames[0];
  Fixed f{};
  DK_CHECK(head.size() >= sizeof f, "malformed message: header of {} bytes (at least {})",
           head.size(), sizeof f);
  std::memcpy(&f, head.data(), sizeof f);
  DK_CHECK(f.magic == kMagic, "malformed message: bad magic {:#x}", f.magic);
  DK_CHECK(f.version == kVersion, "protocol version {} (this build speaks {})", f.version,
           kVersion);
  DK_CHECK(f.ints <= kMaxArgs && f.reals <= kMaxArgs && f.ints + f.reals <= kMaxArgs,
           "malformed message: {} + {} arguments (at most {})", f.ints, f.reals, kMaxArgs);
  DK_CHECK(head.size() == sizeof f + 8 * (size_t{f.ints} + f.reals),
           "malformed message: header of {} bytes for {} + {} arguments", head.size(), f.ints,
           f.reals);
  Message m;
  m.type = static_cast<Type>(f.type);
  m.seq = f.seq;
  m.ints.resize(f.ints);
  m.reals.resize(f.reals);
  const auto* p = static_cast<const char*>(head.data()) + sizeof f;
  if (f.ints) std::memcpy(m.ints.data(), p, 8 * size_t{f.ints});
  if (f.reals) std::memcpy(m.reals.data(), p + 8 * size_t{f.ints}, 8 * size_t{f.reals});
  if (frames.size() == 2) {
    DK_CHECK(frames[1].size() <= static_cast<size_t>(kMaxFrameBytes),
             "malformed message: payload of {} bytes (at most {})", frames[1].size(),
             kMaxFrameBytes);
    m.payload = std::move(frames[1]);
    m.has_payload = true;
  }
  return m;
}

int64_t Args::integer(const char* what) {
  DK_CHECK(i_ < m_.ints.size(), "{}: argument '{}' missing", type_name(m_.type), what);
  return m_.ints[i_++];
}

int64_t Args::integer(const char* what, int64_t lo, int64_t hi) {
  const int64_t v = integer(what);
  DK_CHECK(v >= lo && v <= hi, "{}: argument '{}' is {}, outside [{}, {}]", type_name(m_.type),
           what, v, lo, hi);
  return v;
}

double Args::real(const char* what) {
  DK_CHECK(r_ < m_.reals.size(), "{}: argument '{}' missing", type_name(m_.type), what);
  return m_.reals[r_++];
}

Shape Args::shape(const char* what) {
  const int64_t rank = integer(what, 0, Shape::kMaxRank);
  std::vector<int64_t> dims;
  for (int64_t i = 0; i < rank; ++i) dims.push_back(integer(what));
  try {
    return Shape(std::span<const int64_t>(dims));
  } catch (const Error& e) {
    throw Error(fmt::format("{}: {}: {}", type_name(m_.type), what, e.what()));
  }
}

DType Args::dtype(const char* what) {
  return static_cast<DType>(integer(what, 0, 1));
}

void Args::done() const {
  DK_CHECK(i_ == m_.ints.size() && r_ == m_.reals.size(), "{}: {} arguments left over",
           type_name(m_.type), m_.ints.size() - i_ + m_.reals.size() - r_);
}

ConvDesc Args::conv(const char* what) {
  ConvDesc d;
  for (int64_t* f : {&d.in_channels, &d.out_channels, &d.kernel_h, &d.kernel_w, &d.stride_h,
                     &d.stride_w, &d.pad_top, &d.pad_left, &d.pad_bottom, &d.pad_right,
                     &d.dilation_h, &d.dilation_w, &d.groups})
    *f = integer(what, 0, int64_t{1} << 32);
  d.validate();
  return d;
}

DenseDesc Args::dense() {
  DenseDesc d;
  d.in_features = integer("in_features", 1, Shape::kMaxElements);
  d.out_features = integer("out_features", 1, Shape::kMaxElements);
  return d;
}

void put_shape(std::vector<int64_t>& ints, const Shape& s) {
  ints.push_back(s.rank());
  for (int64_t d : s.dims()) ints.push_back(d);
}

}  // namespace darknight::accel::remote
