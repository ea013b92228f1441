// DarKnight model files (.dkm) as untrusted bytes: CRC, header, and tensors that must lie
// one after the other in the data (nothing allocated for bytes the file does not hold).
#include "nn/model_file.h"

#include <gtest/gtest.h>
#include <zlib.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "support/fuzz_regressions.h"
#include "support/random.h"
#include "support/scratch.h"

namespace darknight::nn {
namespace {

/// A file of the given header JSON and data, with its CRC.
std::string file_of(const std::string& header, const std::string& data,
                    uint32_t version = kModelFileVersion) {
  std::string f("DKMODEL\0", 8);
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
  const testing::ScratchDir scratch("dk_model_file");
  const auto path = (scratch / "m.dkm").string();
  ASSERT_TRUE(save_tensor_file(path, f).ok());
  auto back = load_tensor_file(path);
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

std::string read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(f)), {});
}

TEST(ModelFile, HeaderFieldsAreChecked) {
  EXPECT_NE(
      why(file_of(R"({"meta":{},"tensors":[]})", "", 2)).find("version 2 (this build reads 1)"),
      std::string::npos);
  // A header length beyond the file.
  std::string f = file_of(R"({"meta":{},"tensors":[]})", "");
  const uint64_t huge = uint64_t{1} << 40;
  std::memcpy(f.data() + 12, &huge, 8);
  const auto crc =
      static_cast<uint32_t>(crc32_z(0L, reinterpret_cast<const Bytef*>(f.data()), f.size() - 4));
  std::memcpy(f.data() + f.size() - 4, &crc, 4);
  EXPECT_NE(why(f).find("header length past the end"), std::string::npos) << why(f);
  EXPECT_NE(why(file_of(R"({"tensors":[]})", "")).find("malformed header"), std::string::npos);
}

// Every truncation of a saved file, and a file with bytes appended, is refused by name.
TEST(ModelFile, TruncatedOrExtendedFilesAreRefused) {
  TensorFile t;
  t.meta = {{"model", "m"}};
  t.tensors.emplace_back("w", testing::random_tensor(Shape{3, 4}, 1));
  const testing::ScratchDir scratch("dk_model_file");
  const std::string path = (scratch / "truncated.dkm").string();
  ASSERT_TRUE(save_tensor_file(path, t).ok());
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));  // renamed into place
  const std::string bytes = read_bytes(path);
  ASSERT_TRUE(load_tensor_file(path).ok());
  for (size_t n = 0; n < bytes.size(); ++n) {
    std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes.substr(0, n);
    auto r = load_tensor_file(path);
    ASSERT_FALSE(r.ok()) << n << " bytes";
    EXPECT_EQ(r.status().message().rfind(path + ": not a valid DarKnight model file: ", 0), 0u)
        << r.status().message();
  }
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes + "x";
  EXPECT_NE(load_tensor_file(path).status().message().find("CRC mismatch"), std::string::npos);
  std::filesystem::remove(path);
  EXPECT_NE(load_tensor_file(path).status().message().find("cannot open"), std::string::npos);
  EXPECT_FALSE(save_tensor_file("/nonexistent-dir/m.dkm", t).ok());
}

/// conv (with bias) -> batch norm with statistics -> dense (with bias), weights from `seed`.
Graph small_model(uint64_t seed) {
  Graph g(Shape{2, 4, 4});
  accel::ConvDesc d;
  d.in_channels = 2, d.out_channels = 3, d.kernel_h = d.kernel_w = 3;
  const int c = g.conv(0, d, testing::random_tensor(d.weight_shape(), seed),
                       testing::random_tensor(Shape{3}, seed + 1), "conv");
  BatchNormParams bn{testing::random_tensor(Shape{3}, seed + 2),
                     testing::random_tensor(Shape{3}, seed + 3),
                     testing::random_tensor(Shape{3}, seed + 4),
                     testing::random_tensor(Shape{3}, seed + 5, 0.5f, 1.0f)};
  const int b = g.batch_norm(c, std::move(bn), "bn");
  g.dense(b, 2, testing::random_tensor(Shape{2, 12}, seed + 6),
          testing::random_tensor(Shape{2}, seed + 7), "fc");
  return g;
}

void expect_equal(const Tensor& a, const Tensor& b) {
  ASSERT_EQ(a.shape(), b.shape());
  for (int64_t i = 0; i < a.numel(); ++i) EXPECT_EQ(a[i], b[i]) << i;
}

TEST(ModelFile, ModelParametersRoundTrip) {
  Graph trained = small_model(1);
  TensorFile file;
  add_model_tensors(
      trained, [&](int i) { return trained.weights()[static_cast<size_t>(i)].clone(); }, file);
  std::vector<std::string> names;
  for (const auto& [name, t] : file.tensors) names.push_back(name);
  EXPECT_EQ(names, (std::vector<std::string>{"conv.weight", "conv.bias", "bn.weight", "bn.bias",
                                             "bn.running_mean", "bn.running_var", "fc.weight",
                                             "fc.bias"}));
  const testing::ScratchDir scratch("dk_model_file");
  const std::string path = (scratch / "params.dkm").string();
  ASSERT_TRUE(save_tensor_file(path, file).ok());
  auto back = load_tensor_file(path);
  ASSERT_TRUE(back.ok()) << back.status().message();
  Graph fresh = small_model(100);  // other weights, same architecture
  ASSERT_TRUE(apply_model_tensors(fresh, back.value()).ok());
  for (size_t i = 0; i < 2; ++i) expect_equal(fresh.weights()[i], trained.weights()[i]);
  expect_equal(fresh.node(1).epilogue.shift, trained.node(1).epilogue.shift);
  expect_equal(fresh.node(2).bn.var, trained.node(2).bn.var);
  // The batch norm's affine map is recomputed from the loaded statistics.
  expect_equal(fresh.node(2).scale, trained.node(2).scale);
  expect_equal(fresh.node(2).shift, trained.node(2).shift);
}

TEST(ModelFile, MissingOrMisshapenParametersAreErrors) {
  Graph trained = small_model(1);
  TensorFile file;
  add_model_tensors(
      trained, [&](int i) { return trained.weights()[static_cast<size_t>(i)].clone(); }, file);
  Graph g = small_model(2);
  TensorFile missing;
  for (auto& [name, t] : file.tensors)
    if (name != "bn.running_var") missing.tensors.emplace_back(name, t.clone());
  const Status m = apply_model_tensors(g, missing);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.message(), "the model file has no tensor 'bn.running_var'");
  file.tensors[6].second = Tensor(Shape{2, 11});
  const Status s = apply_model_tensors(g, file);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.message(), "tensor 'fc.weight' is [2, 11] in the file, the model needs [2, 12]");
  // Same element count, another shape: taken in the model's shape.
  file.tensors[6].second = testing::random_tensor(Shape{24}, 3);
  ASSERT_TRUE(apply_model_tensors(g, file).ok());
  EXPECT_EQ(g.weights()[1].shape(), (Shape{2, 12}));
  EXPECT_EQ(g.weights()[1][23], file.tensors[6].second[23]);
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
