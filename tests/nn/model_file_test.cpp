// DarKnight model files (.dkm) as untrusted bytes: CRC, header, and tensors that must lie
// one after the other in the data (nothing allocated for bytes the file does not hold).
#include "nn/model_file.h"

#include <gtest/gtest.h>
#include <zlib.h>

#include <cstring>
#include <filesystem>

#include "support/fuzz_regressions.h"

namespace darknight::nn {
namespace {

/// A file of the given header JSON and data, with its CRC.
std::string file_of(const std::string& header, const std::string& data) {
  std::string f("DKMODEL\0", 8);
  const uint32_t version = kModelFileVersion;
  const uint64_t hlen = header.size();
  f.append(reinterpret_cast<const char*>(&version), 4);
  f.append(reinterpret_cast<const char*>(&hlen), 8);
  f += header + data;
  const auto crc =
      static_cast<uint32_t>(crc32_z(0L, reinterpret_cast<const Bytef*>(f.data()), f.size()));
  f.append(reinterpret_cast<const char*>(&crc), 4);
  return f;
}

std::string why(const std::string& bytes) {
  auto r = parse_tensor_file(bytes, "m.dkm");
  return r.ok() ? "" : r.status().message();
}

TEST(ModelFile, SaveLoadRoundTrip) {
  TensorFile f;
  f.meta = {{"epoch", 3}};
  f.tensors.emplace_back("a", Tensor(Shape{2, 3}, std::vector<float>{1, 2, 3, 4, 5, 6}));
  f.tensors.emplace_back("b", Tensor(Shape{1}, std::vector<float>{7}));
  const auto path = (std::filesystem::temp_directory_path() / "dk_model_file_test.dkm").string();
  ASSERT_TRUE(save_tensor_file(path, f).ok());
  auto back = load_tensor_file(path);
  std::filesystem::remove(path);
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_EQ(back.value().meta["epoch"], 3);
  ASSERT_NE(back.value().find("a"), nullptr);
  EXPECT_EQ((*back.value().find("a"))[5], 6.0f);
  EXPECT_EQ((*back.value().find("b"))[0], 7.0f);
}

TEST(ModelFile, TensorsMustFillTheDataOnceEach) {
  const std::string data(8, '\0');  // two floats
  const std::string good =
      R"({"meta":{},"tensors":[{"name":"a","shape":[1],"offset":0},{"name":"b","shape":[1],"offset":4}]})";
  EXPECT_EQ(why(file_of(good, data)), "");
  // Both tensors on the same bytes (a thousand such entries would allocate a thousand
  // copies of the data).
  const std::string twice =
      R"({"meta":{},"tensors":[{"name":"a","shape":[2],"offset":0},{"name":"b","shape":[2],"offset":0}]})";
  EXPECT_NE(why(file_of(twice, data)).find("tensor 'b' starts at byte 0 of the data, expected 8"),
            std::string::npos)
      << why(file_of(twice, data));
  const std::string past = R"({"meta":{},"tensors":[{"name":"a","shape":[3],"offset":0}]})";
  EXPECT_NE(why(file_of(past, data)).find("past the end"), std::string::npos);
  const std::string short_ = R"({"meta":{},"tensors":[{"name":"a","shape":[1],"offset":0}]})";
  EXPECT_NE(why(file_of(short_, data)).find("4 bytes of data follow the last tensor"),
            std::string::npos);
  // 2^40 elements declared, 8 bytes present; and more than Shape allows.
  const std::string huge =
      R"({"meta":{},"tensors":[{"name":"a","shape":[1048576,1048576],"offset":0}]})";
  EXPECT_NE(why(file_of(huge, data)).find("past the end"), std::string::npos);
  const std::string huger =
      R"({"meta":{},"tensors":[{"name":"a","shape":[1048577,1048576],"offset":0}]})";
  EXPECT_NE(why(file_of(huger, data)).find("more than"), std::string::npos);
  EXPECT_NE(why(file_of(R"({"meta":{},"tensors":{}})", "")).find("not a list"), std::string::npos);
  EXPECT_NE(why(file_of(R"({"meta":{},"tensors":[{"name":"a","shape":[-1],"offset":0}]})", ""))
                .find("negative"),
            std::string::npos);
}

TEST(ModelFile, DamagedBytesAreRefused) {
  std::string f = file_of(R"({"meta":{},"tensors":[]})", "");
  EXPECT_EQ(why(f), "");
  std::string bad = f;
  bad[20] ^= 1;
  EXPECT_NE(why(bad).find("CRC mismatch"), std::string::npos);
  EXPECT_NE(why(f.substr(0, 10)).find("bad magic"), std::string::npos);
  EXPECT_NE(why(file_of("not json", "")).find("header is not JSON"), std::string::npos);
  EXPECT_NE(why(file_of("[1]", "")).find("malformed header"), std::string::npos);
}

TEST(ModelFile, FuzzRegressionsAreCleanErrors) {
  for (const auto& [name, in] : darknight::testing::fuzz_regressions("model_file")) {
    // The fuzz target's input is a file without its CRC (fuzz/fuzz_model_file.cpp).
    std::string f = in;
    const auto crc =
        static_cast<uint32_t>(crc32_z(0L, reinterpret_cast<const Bytef*>(in.data()), in.size()));
    f.append(reinterpret_cast<const char*>(&crc), 4);
    EXPECT_FALSE(parse_tensor_file(f, name).ok()) << name;
  }
}

}  // namespace
}  // namespace darknight::nn
