// The audit's reader of captured .npy files: untrusted input, checked whole.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "audit/capture.h"

namespace darknight::audit {
namespace {

/// A .npy file (format 1.0) with `header` padded as NumPy does, then `payload`.
std::vector<unsigned char> npy(std::string header, const std::string& payload) {
  header.append(63 - (10 + header.size()) % 64, ' ');
  header += '\n';
  std::string b = std::string("\x93NUMPY\x01\x00", 8);
  b += static_cast<char>(header.size() & 0xff);
  b += static_cast<char>(header.size() >> 8);
  b += header + payload;
  return {b.begin(), b.end()};
}

std::string floats(const std::vector<float>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * 4);
}

TEST(Npy, ReadsRowsOfFloat32AndFloat64) {
  std::vector<int64_t> shape;
  auto m = parse_npy(npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 1, 3), }",
                         floats({1, 2, 3, 4, 5, 6})),
                     "a.npy", shape);
  ASSERT_TRUE(m.ok()) << m.status().message();
  EXPECT_EQ(shape, (std::vector<int64_t>{2, 1, 3}));
  ASSERT_EQ(m.value().rows(), 2);
  ASSERT_EQ(m.value().cols(), 3);
  EXPECT_EQ(m.value()(1, 0), 4.0);  // row-major
  const double d[2] = {0.5, -2.0};
  auto m64 = parse_npy(npy("{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }",
                           std::string(reinterpret_cast<const char*>(d), 16)),
                       "b.npy", shape);
  ASSERT_TRUE(m64.ok()) << m64.status().message();
  EXPECT_EQ(m64.value()(1, 0), -2.0);
}

TEST(Npy, DamagedFilesAreErrors) {
  std::vector<int64_t> shape;
  const auto why = [&](const std::vector<unsigned char>& b) {
    auto r = parse_npy(b, "x.npy", shape);
    return r.ok() ? std::string("accepted") : r.status().message();
  };
  const std::string h = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
  EXPECT_NE(why(npy(h, floats({1, 2, 3, 4, 5}))).find("its shape needs 24"), std::string::npos);
  EXPECT_NE(why(npy(h, floats({1, 2, 3, 4, 5, 6, 7}))).find("its shape needs"), std::string::npos);
  EXPECT_NE(why(npy("{'descr': '>f4', 'fortran_order': False, 'shape': (2, 3), }",
                    floats({1, 2, 3, 4, 5, 6})))
                .find("little-endian"),
            std::string::npos);
  EXPECT_NE(why(npy("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }",
                    floats({1, 2, 3, 4, 5, 6})))
                .find("C-order"),
            std::string::npos);
  EXPECT_NE(why(npy(h, floats({1, 2, NAN, 4, 5, 6}))).find("not finite"), std::string::npos);
  // 2^60 elements declared: refused from the header, before any allocation.
  EXPECT_NE(why(npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1073741824, "
                    "1073741824), }",
                    floats({1})))
                .find("its shape needs"),
            std::string::npos);
  EXPECT_NE(why(npy("{'descr': '<f4', 'fortran_order': False, 'shape': (9999999999999, 2), }",
                    ""))
                .find("unsupported shape"),
            std::string::npos);
  EXPECT_NE(why({'x', 'y'}).find("not a .npy"), std::string::npos);
  auto cut = npy(h, floats({1, 2, 3, 4, 5, 6}));
  cut.resize(12);
  EXPECT_NE(why(cut).find("header length"), std::string::npos);
}

TEST(Captures, AMissingOrMalformedIndexIsAnError) {
  EXPECT_NE(Captures::open({"/nonexistent"}).status().message().find("no index.jsonl"),
            std::string::npos);
  EXPECT_FALSE(Captures::open({}).ok());
}

}  // namespace
}  // namespace darknight::audit
