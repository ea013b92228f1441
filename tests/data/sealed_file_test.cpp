// The sealed-file formats as untrusted bytes: the header (before any key is used) and the
// payload decoder (after authentication; validated all the same).
#include "data/sealed_file.h"

#include <gtest/gtest.h>

#include <cstring>

#include "support/fuzz_regressions.h"

namespace darknight::data {
namespace {

using Bytes = std::vector<unsigned char>;

void put(Bytes& b, uint64_t v, int width) {
  for (int i = 0; i < width; ++i) b.push_back(static_cast<unsigned char>(v >> (8 * i)));
}

/// A payload of one train split: u8 pixels, name "toy", `classes`, dims, labels, pixels.
Bytes payload(uint64_t classes, std::array<uint64_t, 4> dims, std::vector<uint32_t> labels,
              size_t pixels) {
  Bytes b{'D', 'K', 'D', 'A', 'T', 'A', '0', '1'};
  put(b, 1, 4);  // one split
  put(b, 0, 1);  // train
  put(b, 0, 1);  // u8 pixels
  put(b, 3, 2);  // name length
  b.insert(b.end(), {'t', 'o', 'y'});
  put(b, classes, 4);
  for (uint64_t d : dims) put(b, d, 8);
  put(b, labels.empty() ? 0 : 1, 1);
  for (uint32_t l : labels) put(b, l, 4);
  b.resize(b.size() + pixels, 51);
  return b;
}

TEST(SealedPayload, RoundTripAndLimit) {
  Dataset d;
  d.name = "toy";
  d.classes = 3;
  d.images = Tensor(Shape{3, 1, 2, 2});
  for (int64_t i = 0; i < 12; ++i) d.images[i] = static_cast<float>(i) / 255.0f;
  d.labels = {0, 2, 1};
  const Bytes p = encode_payload({SealInput{Split::test, &d}});
  auto back = decode_payload(p.data(), p.size(), Split::test, 2);
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_EQ(back.value().images.shape(), (Shape{2, 1, 2, 2}));
  EXPECT_EQ(back.value().labels, (std::vector<int>{0, 2}));
  EXPECT_EQ(back.value().images[5], 5 / 255.0f);
  EXPECT_NE(
      decode_payload(p.data(), p.size(), Split::train, 0).status().message().find("no train split"),
      std::string::npos);
}

TEST(SealedPayload, OverflowingDimsProductIsRefused) {
  // 2^32 in each of the four dimensions: the product (2^128) used to wrap to 0.
  const uint64_t big = uint64_t{1} << 32;
  const Bytes p = payload(3, {big, big, big, big}, {}, 0);
  auto r = decode_payload(p.data(), p.size(), Split::train, 0);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("shape (too many elements)"), std::string::npos)
      << r.status().message();
  // Within the cap but more than the bytes present.
  const Bytes q = payload(3, {1 << 20, 1, 1 << 10, 1 << 10}, {}, 16);
  EXPECT_NE(decode_payload(q.data(), q.size(), Split::train, 0).status().message().find("pixels"),
            std::string::npos);
  const Bytes ok = payload(3, {2, 1, 2, 2}, {1, 2}, 8);
  EXPECT_TRUE(decode_payload(ok.data(), ok.size(), Split::train, 0).ok());
  const Bytes no_classes = payload(0, {1, 1, 1, 1}, {0}, 1);
  EXPECT_NE(decode_payload(no_classes.data(), no_classes.size(), Split::train, 0)
                .status()
                .message()
                .find("not below the class count 0"),
            std::string::npos);
}

TEST(SealedHeader, InconsistentSizesAreRefused) {
  Bytes h{'D', 'K', 'S', 'E', 'A', 'L', 'D', '1'};
  h.resize(8 + 16 + 96, 0);
  auto with = [&](uint64_t count, uint64_t chunk, uint64_t plain) {
    Bytes b = h;
    put(b, count, 8), put(b, chunk, 8), put(b, plain, 8);
    return parse_sealed_header(b.data(), b.size());
  };
  auto ok = with(2, 64, 100);
  ASSERT_TRUE(ok.ok()) << ok.status().message();
  EXPECT_EQ(ok.value().plain_size(1), 36u);
  EXPECT_EQ(ok.value().file_size(), kSealedHeaderBytes + 2 * 40 + 100);
  EXPECT_FALSE(with(3, 64, 100).ok());
  EXPECT_FALSE(with(0, 0, 100).ok());
  EXPECT_FALSE(with(uint64_t{1} << 41, 1, uint64_t{1} << 41).ok());  // past the 2^40 cap
  EXPECT_FALSE(parse_sealed_header(h.data(), h.size()).ok());        // truncated
}

TEST(SealedFile, FuzzRegressionsAreCleanErrors) {
  for (const auto& [name, in] : darknight::testing::fuzz_regressions("sealed")) {
    SCOPED_TRACE(name);
    const auto* p = reinterpret_cast<const unsigned char*>(in.data());
    EXPECT_FALSE(parse_sealed_header(p, in.size()).ok() &&
                 decode_payload(p, in.size(), Split::train, 0).ok());
  }
}

}  // namespace
}  // namespace darknight::data
