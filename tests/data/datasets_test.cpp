// Dataset loaders: real Fashion-MNIST, and damaged files refused whole.
#include "data/datasets.h"

#include <gtest/gtest.h>
#include <turbojpeg.h>
#include <zlib.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "support/fuzz_regressions.h"
#include "support/scratch.h"

namespace darknight::data {
namespace {
namespace fs = std::filesystem;

const char* kFmnist = "/usr/share/datasets/fashion-mnist";

TEST(FashionMnist, TestSplitLoadsWhole) {
  if (!fs::exists(kFmnist)) GTEST_SKIP() << "dataset-fashion-mnist not installed";
  LoadOptions o;
  o.limit = 100;
  Dataset d = load("fashion-mnist", o).value();
  EXPECT_EQ(d.images.shape(), (Shape{100, 1, 28, 28}));
  ASSERT_EQ(d.labels.size(), 100u);
  EXPECT_EQ(d.labels[0], 9);  // the first t10k label (ankle boot)
  float lo = 1, hi = 0;
  for (int64_t i = 0; i < d.images.numel(); ++i)
    lo = std::min(lo, d.images[i]), hi = std::max(hi, d.images[i]);
  EXPECT_EQ(lo, 0.0f);
  EXPECT_EQ(hi, 1.0f);
}

/// Writes a gzip file of `bytes` (optionally cut short).
void write_gz(const fs::path& p, const std::vector<unsigned char>& bytes, size_t cut = 0) {
  std::string out(compressBound(bytes.size()) + 64, '\0');
  z_stream z{};
  deflateInit2(&z, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY);
  z.next_in = const_cast<unsigned char*>(bytes.data());
  z.avail_in = static_cast<uInt>(bytes.size());
  z.next_out = reinterpret_cast<unsigned char*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  deflate(&z, Z_FINISH);
  out.resize(z.total_out - cut);
  deflateEnd(&z);
  std::ofstream(p, std::ios::binary | std::ios::trunc) << out;
}

std::vector<unsigned char> idx(uint32_t magic, std::vector<uint32_t> dims, size_t payload) {
  std::vector<unsigned char> b;
  for (uint32_t v : std::vector<uint32_t>{magic}) dims.insert(dims.begin(), v);
  for (uint32_t v : dims)
    for (int s = 24; s >= 0; s -= 8) b.push_back(static_cast<unsigned char>(v >> s));
  b.resize(b.size() + payload, 3);
  return b;
}

class Damaged : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = scratch_.path();
    write_gz(dir_ / "t10k-images-idx3-ubyte.gz", idx(0x803, {5, 28, 28}, 5 * 784));
    write_gz(dir_ / "t10k-labels-idx1-ubyte.gz", idx(0x801, {5}, 5));
  }
  std::string spec() const { return "fashion-mnist:" + dir_.string(); }
  testing::ScratchDir scratch_{"dk_fmnist"};
  fs::path dir_;
};

TEST_F(Damaged, GoodFilesLoad) {
  LoadOptions o;
  EXPECT_TRUE(load(spec(), o).ok());
}

TEST_F(Damaged, TruncatedGzipIsRefusedWhateverTheLimit) {
  write_gz(dir_ / "t10k-images-idx3-ubyte.gz", idx(0x803, {5, 28, 28}, 5 * 784), 6);
  LoadOptions o;
  o.limit = 1;
  auto r = load(spec(), o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("truncated"), std::string::npos) << r.status().message();
}

TEST_F(Damaged, CorruptCrcIsRefused) {
  const fs::path p = dir_ / "t10k-labels-idx1-ubyte.gz";
  std::ifstream in(p, std::ios::binary);
  std::string b((std::istreambuf_iterator<char>(in)), {});
  in.close();
  b[b.size() - 6] ^= 0x55;  // inside the CRC-32 of the trailer
  std::ofstream(p, std::ios::binary | std::ios::trunc) << b;
  auto r = load(spec(), LoadOptions{});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("CRC"), std::string::npos) << r.status().message();
}

TEST_F(Damaged, HeaderPayloadAndCountMismatchesAreRefused) {
  write_gz(dir_ / "t10k-images-idx3-ubyte.gz", idx(0x803, {6, 28, 28}, 5 * 784));
  EXPECT_NE(load(spec(), LoadOptions{}).status().message().find("header says 6"),
            std::string::npos);
  write_gz(dir_ / "t10k-images-idx3-ubyte.gz", idx(0x803, {4, 28, 28}, 4 * 784));
  EXPECT_NE(load(spec(), LoadOptions{}).status().message().find("4 images but 5 labels"),
            std::string::npos);
  write_gz(dir_ / "t10k-images-idx3-ubyte.gz", idx(0x802, {5, 28, 28}, 5 * 784));
  EXPECT_NE(load(spec(), LoadOptions{}).status().message().find("magic"), std::string::npos);
  auto labels = idx(0x801, {5}, 5);
  labels.back() = 10;
  write_gz(dir_ / "t10k-images-idx3-ubyte.gz", idx(0x803, {5, 28, 28}, 5 * 784));
  write_gz(dir_ / "t10k-labels-idx1-ubyte.gz", labels);
  EXPECT_NE(load(spec(), LoadOptions{}).status().message().find("not in 0..9"), std::string::npos);
}

TEST(Cifar, RecordsValidatedWhole) {
  const testing::ScratchDir scratch("dk_cifar");
  const fs::path& dir = scratch.path();
  fs::create_directories(dir / "cifar-10-batches-bin");
  std::string rec(3073, '\x10');
  rec[0] = 7;
  std::ofstream(dir / "cifar-10-batches-bin" / "test_batch.bin", std::ios::binary) << rec << rec;
  Dataset d = load("cifar10:" + dir.string(), LoadOptions{}).value();
  EXPECT_EQ(d.images.shape(), (Shape{2, 3, 32, 32}));
  EXPECT_EQ(d.labels, (std::vector<int>{7, 7}));
  std::ofstream(dir / "cifar-10-batches-bin" / "test_batch.bin", std::ios::binary) << rec << "x";
  EXPECT_FALSE(load("cifar10:" + dir.string(), LoadOptions{}).ok());
  EXPECT_FALSE(load("cifar10", LoadOptions{}).ok());
  EXPECT_FALSE(load("mnist", LoadOptions{}).ok());
}

/// Writes a w x h JPEG of one colour (quality 95) with libjpeg-turbo.
void write_jpeg(const fs::path& p, int w, int h, unsigned char r, unsigned char g,
                unsigned char b) {
  std::vector<unsigned char> rgb(static_cast<size_t>(w * h * 3));
  for (int i = 0; i < w * h; ++i) rgb[i * 3] = r, rgb[i * 3 + 1] = g, rgb[i * 3 + 2] = b;
  tjhandle tj = tjInitCompress();
  unsigned char* jpeg = nullptr;
  unsigned long size = 0;
  ASSERT_EQ(tjCompress2(tj, rgb.data(), w, 0, h, TJPF_RGB, &jpeg, &size, TJSAMP_444, 95, 0), 0);
  std::ofstream(p, std::ios::binary)
      .write(reinterpret_cast<char*>(jpeg), static_cast<std::streamsize>(size));
  tjFree(jpeg);
  tjDestroy(tj);
}

TEST(ImageFolder, DecodesResizesAndLabelsByFolder) {
  const testing::ScratchDir scratch("dk_imagefolder");
  const fs::path& dir = scratch.path();
  for (const char* split : {"train", "val"})
    for (const char* cls : {"cat", "dog"}) fs::create_directories(dir / split / cls);
  write_jpeg(dir / "train/cat/a.jpg", 40, 30, 250, 10, 10);
  write_jpeg(dir / "train/dog/b.JPEG", 30, 50, 10, 240, 10);
  write_jpeg(dir / "val/dog/c.jpg", 64, 64, 10, 10, 230);
  std::ofstream(dir / "train/dog/notes.txt") << "not an image";  // skipped
  LoadOptions o;
  o.image_size = 16;
  o.split = Split::train;
  Dataset d = load("imagefolder:" + dir.string(), o).value();
  EXPECT_EQ(d.images.shape(), (Shape{2, 3, 16, 16}));
  EXPECT_EQ(d.labels, (std::vector<int>{0, 1}));
  EXPECT_EQ(d.classes, 2);
  EXPECT_NEAR(d.images[0], 250 / 255.0, 0.03);              // cat: red channel
  EXPECT_NEAR(d.images[3 * 256 + 256], 240 / 255.0, 0.03);  // dog: green channel
  o.split = Split::test;
  Dataset v = load("imagefolder:" + dir.string(), o).value();
  EXPECT_EQ(v.labels, (std::vector<int>{1}));
  EXPECT_NEAR(v.images[2 * 256 + 5], 230 / 255.0, 0.03);
  // A damaged JPEG is an error naming the file.
  std::ofstream(dir / "val/dog/c.jpg", std::ios::trunc) << "\xff\xd8 not really";
  auto r = load("imagefolder:" + dir.string(), o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("c.jpg"), std::string::npos) << r.status().message();
  fs::remove_all(dir / "val");
  EXPECT_FALSE(load("imagefolder:" + dir.string(), o).ok());
}

TEST(DataOrder, EpochOrderAndAugmentation) {
  const auto a = epoch_order(100, 5, 0), b = epoch_order(100, 5, 0), c = epoch_order(100, 5, 1);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  std::vector<int64_t> sorted = a;
  std::sort(sorted.begin(), sorted.end());
  for (int64_t i = 0; i < 100; ++i) EXPECT_EQ(sorted[static_cast<size_t>(i)], i);
  Dataset d;
  d.images = Tensor(Shape{2, 1, 4, 4});
  for (int64_t i = 0; i < 32; ++i) d.images[i] = static_cast<float>(i + 1);
  d.labels = {3, 7};
  std::vector<int> labels;
  const std::vector<int64_t> order{1, 0};
  const Tensor same = gather(d, order, 0, 2, Augment{false, 4}, 1, labels);
  EXPECT_EQ(labels, (std::vector<int>{7, 3}));
  EXPECT_EQ(same[0], 17.0f);
  // Crop + flip moves pixels, keeps their values, pads with zeros.
  int moved = 0;
  for (uint64_t seed = 0; seed < 8; ++seed) {
    const Tensor aug = gather(d, order, 0, 2, Augment{true, 2}, seed, labels);
    for (int64_t i = 0; i < aug.numel(); ++i) {
      EXPECT_TRUE(aug[i] == 0.0f || (aug[i] >= 1.0f && aug[i] <= 32.0f));
      moved += aug[i] != same[i];
    }
  }
  EXPECT_GT(moved, 0);
}

TEST(Normalize, PerChannelAndErrors) {
  Dataset d;
  d.images = Tensor(Shape{1, 2, 1, 2}, std::vector<float>{1, 1, 1, 1});
  ASSERT_TRUE(normalize(d, "0.5,0:0.5,2").ok());
  EXPECT_FLOAT_EQ(d.images[0], 1.0f);
  EXPECT_FLOAT_EQ(d.images[2], 0.5f);
  EXPECT_FALSE(normalize(d, "0.5").ok());
  EXPECT_FALSE(normalize(d, "1,2,3:1").ok());
  EXPECT_FALSE(normalize(d, "a:1").ok());
  EXPECT_FALSE(normalize(d, "0:0").ok());
}

// ---- Parsers on bytes: sizes checked before allocating -------------------------------------

std::vector<unsigned char> gzip_of(const std::vector<unsigned char>& bytes) {
  const testing::ScratchDir scratch("dk_gzip_of");
  const fs::path p = scratch / "a.gz";
  write_gz(p, bytes);
  std::ifstream f(p, std::ios::binary);
  std::vector<unsigned char> out((std::istreambuf_iterator<char>(f)), {});
  return out;
}

TEST(Gzip, ABombIsRefusedAtTheCap) {
  // 8 MiB of zeros compress to about 8 KB.
  const std::vector<unsigned char> bomb = gzip_of(std::vector<unsigned char>(8 << 20, 0));
  ASSERT_LT(bomb.size(), 16000u);
  auto r = gunzip(bomb, 1 << 20, "bomb.gz");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("bomb.gz: decompresses to more than 1048576 bytes"),
            std::string::npos)
      << r.status().message();
  auto whole = gunzip(bomb, 8 << 20, "bomb.gz");  // exactly at the cap: accepted
  ASSERT_TRUE(whole.ok()) << whole.status().message();
  EXPECT_EQ(whole.value().size(), size_t{8} << 20);
  EXPECT_FALSE(gunzip(bomb, (8 << 20) - 1, "bomb.gz").ok());
  // The loaders' cap.
  static_assert(kMaxGzipBytes == size_t{1} << 30);
  EXPECT_FALSE(gunzip({}, 100, "empty.gz").ok());
}

TEST(Idx, HeaderSizesAreCheckedAgainstThePayload) {
  const auto labels = idx(0x801, {2}, 2);
  EXPECT_TRUE(decode_idx(idx(0x803, {2, 3, 3}, 18), labels, "i", "l").ok());
  // 2^32 - 1 images of 4096 x 4096 declared (2^56 bytes), 18 present.
  auto r = decode_idx(idx(0x803, {0xffffffffu, 4096, 4096}, 18), labels, "i", "l");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("header says 4294967295 images"), std::string::npos)
      << r.status().message();
  EXPECT_FALSE(decode_idx(idx(0x803, {2, 3, 3}, 18), idx(0x801, {0xffffffffu}, 2), "i", "l").ok());
  EXPECT_FALSE(decode_idx(idx(0x803, {2, 3, 3}, 18), {}, "i", "l").ok());
  EXPECT_FALSE(decode_idx({}, labels, "i", "l").ok());
}

TEST(Cifar, BatchBytesAreValidatedWhole) {
  std::vector<unsigned char> b(2 * 3074, 200);
  b[0] = 3, b[1] = 99, b[3074] = 19, b[3075] = 5;  // CIFAR-100: coarse, fine labels
  auto d = decode_cifar_batch(b, 100, "train.bin");
  ASSERT_TRUE(d.ok()) << d.status().message();
  EXPECT_EQ(d.value().labels, (std::vector<int>{99, 5}));
  EXPECT_FALSE(decode_cifar_batch(b, 10, "train.bin").ok());  // not 3073-byte records
  b[1] = 100;
  EXPECT_NE(decode_cifar_batch(b, 100, "train.bin").status().message().find("label 100"),
            std::string::npos);
  EXPECT_FALSE(decode_cifar_batch({}, 10, "empty.bin").ok());
}

TEST(Jpeg, DeclaredSizeIsCheckedBeforeDecoding) {
  const testing::ScratchDir scratch("dk_jpeg_size");
  const fs::path p = scratch / "a.jpg";
  write_jpeg(p, 64, 48, 10, 200, 30);
  std::ifstream f(p, std::ios::binary);
  const std::vector<unsigned char> bytes((std::istreambuf_iterator<char>(f)), {});
  auto ok = decode_jpeg(bytes, 8, "a.jpg");
  ASSERT_TRUE(ok.ok()) << ok.status().message();
  EXPECT_EQ(ok.value().shape(), (Shape{3, 8, 8}));
  auto big = decode_jpeg(bytes, 8, "a.jpg", 1000);
  ASSERT_FALSE(big.ok());
  EXPECT_NE(big.status().message().find("64x48 is more than 1000 pixels"), std::string::npos)
      << big.status().message();
  EXPECT_FALSE(decode_jpeg({bytes.data(), 100}, 8, "cut.jpg").ok());
}

TEST(DataParsers, FuzzRegressionsAreCleanErrors) {
  using darknight::testing::fuzz_regressions;
  auto bytes = [](const std::string& s) {
    return std::span<const unsigned char>(reinterpret_cast<const unsigned char*>(s.data()),
                                          s.size());
  };
  for (const auto& [name, in] : fuzz_regressions("gzip"))
    EXPECT_FALSE(gunzip(bytes(in), 1 << 20, name).ok()) << name;
  for (const auto& [name, in] : fuzz_regressions("jpeg"))
    EXPECT_FALSE(decode_jpeg(bytes(in), 16, name, 1 << 22).ok()) << name;
  for (const auto& [name, in] : fuzz_regressions("cifar"))  // layout: fuzz/fuzz_cifar.cpp
    EXPECT_FALSE(!in.empty() &&
                 decode_cifar_batch(bytes(in).subspan(1), in[0] % 2 ? 100 : 10, name).ok())
        << name;
  for (const auto& [name, in] : fuzz_regressions("idx")) {  // layout: fuzz/fuzz_idx.cpp
    if (in.size() < 2) continue;
    const auto b = bytes(in);
    const size_t l = std::min<size_t>(b.size() - 2, size_t{b[0]} | size_t{b[1]} << 8);
    EXPECT_FALSE(decode_idx(b.subspan(2 + l), b.subspan(2, l), "i", "l").ok()) << name;
  }
}

}  // namespace
}  // namespace darknight::data
