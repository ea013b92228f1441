// Attestation and sealed data ingress: the simulated platform and enclave keys, reports
// and their verification, sealing and opening, and every kind of damage refused with its
// own message before any example is used.
#include "trusted/enclave.h"

#include <gtest/gtest.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <type_traits>

#include "baselines/engines.h"
#include "data/sealed_file.h"
#include "nn/zoo.h"
#include "registry/registry.h"
#include "support/scratch.h"
#include "trusted/codec.h"
#include "trusted/integrity.h"
#include "trusted/random.h"
#include "trusted/trainer.h"
#include "trusted/training_codec.h"

namespace darknight::trusted {
namespace {
namespace fs = std::filesystem;
using data::Split;

using Bytes = std::vector<unsigned char>;

Bytes read_bytes(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return Bytes((std::istreambuf_iterator<char>(f)), {});
}
void write_bytes(const fs::path& p, const Bytes& b) {
  std::ofstream(p, std::ios::binary | std::ios::trunc)
      .write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

Bytes32 measurement_of(unsigned char v) {
  Bytes32 m;
  m.fill(v);
  return m;
}

/// A small labelled dataset whose pixels are bytes / 255, as the loaders make them.
data::Dataset small_dataset(int64_t n, unsigned char salt) {
  data::Dataset d;
  d.name = "tiny";
  d.classes = 10;
  d.images = Tensor(Shape{n, 1, 6, 6});
  for (int64_t i = 0; i < d.images.numel(); ++i)
    d.images[i] = static_cast<float>((i * 7 + salt) % 256) / 255.0f;
  for (int64_t i = 0; i < n; ++i) d.labels.push_back(static_cast<int>((i + salt) % 10));
  return d;
}

void expect_same(const data::Dataset& a, const data::Dataset& b, int64_t n) {
  ASSERT_EQ(a.images.shape()[0], n);
  ASSERT_EQ(a.images.shape().with_batch(1), b.images.shape().with_batch(1));
  for (int64_t i = 0; i < a.images.shape().item_numel() * n; ++i)
    ASSERT_EQ(a.images[i], b.images[i]) << i;
  EXPECT_EQ(a.labels, std::vector<int>(b.labels.begin(), b.labels.begin() + n));
  EXPECT_EQ(a.classes, b.classes);
}

class EnclaveTest : public ::testing::Test {
 protected:
  void SetUp() override { home_ = (dir_ / "home").string(); }

  data::ReportExpectations expect(const Enclave& e) const {
    data::ReportExpectations x;
    x.platform_key = e.platform_key();
    x.measurement = e.measurement();
    return x;
  }
  /// Seals train and test splits for `e` (through a verified report) into `name`.
  fs::path seal(const Enclave& e, const std::string& name, int64_t chunk = 100) {
    const std::string json = data::report_to_json(e.report({}));
    const data::AttestationReport r = data::verify_report(json, expect(e)).value();
    const fs::path p = dir_ / name;
    data::seal_datasets({{Split::train, &train_}, {Split::test, &test_}}, r, p.string(), chunk)
        .throw_if_error();
    return p;
  }
  /// The error of opening `p` (the train split, first `limit` examples).
  std::string refusal(const Enclave& e, const fs::path& p, int64_t limit = 0) {
    auto d = e.open_sealed(p.string(), Split::train, limit);
    EXPECT_FALSE(d.ok()) << p << " was accepted";
    return d.ok() ? "" : d.status().message();
  }
  static data::SealedHeader header(const Bytes& b) {
    return data::parse_sealed_header(b.data(), b.size()).value();
  }
  /// Chunk i's frame (id, index, ciphertext) in a sealed file.
  static Bytes frame(const Bytes& b, uint64_t i) {
    const auto h = header(b);
    const auto at = b.begin() + static_cast<int64_t>(h.frame_offset(i));
    return Bytes(at, at + static_cast<int64_t>(data::kChunkFrameBytes + data::kChunkTagBytes +
                                               h.plain_size(i)));
  }
  static void put_frame(Bytes& b, uint64_t i, const Bytes& f) {
    std::copy(f.begin(), f.end(), b.begin() + static_cast<int64_t>(header(b).frame_offset(i)));
  }

  testing::ScratchDir scratch_{"dk_enclave_test"};
  fs::path dir_ = scratch_.path();
  std::string home_;
  data::Dataset train_ = small_dataset(40, 1), test_ = small_dataset(12, 2);
};

TEST_F(EnclaveTest, PlatformKeyIsCreatedOncePrivateAndKept) {
  Bytes32 first;
  {
    Platform p(home_);
    first = p.public_key();
  }
  struct stat st {};
  ASSERT_EQ(stat((home_ + "/platform.key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(Platform(home_).public_key(), first);
  EXPECT_NE(Platform((dir_ / "other").string()).public_key(), first);
  chmod((home_ + "/platform.key").c_str(), 0644);
  try {
    Platform p(home_);
    FAIL() << "a platform key readable by others was used";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("readable by others"), std::string::npos) << e.what();
  }
}

TEST_F(EnclaveTest, EnclaveKeyOutlivesTheProcessAndIsBoundToMeasurementAndPlatform) {
  const Bytes32 m1 = measurement_of(1), m2 = measurement_of(2);
  Bytes32 pk;
  {
    Enclave e(home_, m1);
    pk = e.public_key();
  }
  EXPECT_EQ(Enclave(home_, m1).public_key(), pk);  // "tomorrow": the same key, unsealed
  EXPECT_NE(Enclave(home_, m2).public_key(), pk);  // another enclave, another key
  const std::string f1 = home_ + "/enclave-" + data::to_hex(m1) + ".key";
  const std::string f2 = home_ + "/enclave-" + data::to_hex(m2) + ".key";
  // The key at rest is encrypted: the secret never appears in the file.
  const Bytes sealed = read_bytes(f1);
  EXPECT_EQ(std::search(sealed.begin(), sealed.end(), pk.begin(), pk.end()) - sealed.begin(), 8);
  // Sealed under m1's key: neither another measurement nor another platform can unseal it.
  fs::copy_file(f1, f2, fs::copy_options::overwrite_existing);
  EXPECT_THROW(Enclave(home_, m2), Error);
  const std::string other = (dir_ / "other").string();
  fs::create_directories(other);
  fs::copy_file(f1, other + "/enclave-" + data::to_hex(m1) + ".key");
  try {
    Enclave e(other, m1);
    FAIL() << "an enclave key was unsealed on another platform";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cannot unseal"), std::string::npos) << e.what();
  }
}

TEST_F(EnclaveTest, MeasurementIsTheExecutablesHash) {
  const Bytes32& m = measure_executable();
  EXPECT_EQ(&m, &measure_executable());
  const Bytes exe = read_bytes("/proc/self/exe");
  Bytes32 h;
  crypto_generichash(h.data(), h.size(), exe.data(), exe.size(), nullptr, 0);
  EXPECT_EQ(m, h);
  EXPECT_EQ(Enclave(home_).measurement(), m);
}

TEST_F(EnclaveTest, ReportVerifiesAndEachFalsificationIsRefused) {
  Enclave e(home_, measurement_of(3));
  const Bytes nonce{1, 2, 3, 4};
  const std::string json = data::report_to_json(e.report(nonce));
  data::ReportExpectations x = expect(e);
  x.check_nonce = true;
  x.nonce = nonce;
  const data::AttestationReport r = data::verify_report(json, x).value();
  EXPECT_EQ(r.public_key, e.public_key());
  EXPECT_EQ(r.nonce, nonce);
  EXPECT_GT(r.timestamp, 1600000000);
  const nlohmann::json j = nlohmann::json::parse(json);
  for (const char* f : {"measurement", "public_key", "timestamp", "signature"})
    EXPECT_TRUE(j.contains(f)) << f;

  auto refused = [&](const std::string& text, const data::ReportExpectations& xx,
                     const std::string& why) {
    auto v = data::verify_report(text, xx);
    ASSERT_FALSE(v.ok()) << why;
    EXPECT_NE(v.status().message().find(why), std::string::npos) << v.status().message();
  };
  // Any signed field altered: the signature no longer verifies.
  for (const char* field : {"measurement", "public_key", "nonce"}) {
    nlohmann::json k = j;
    std::string v = k[field];
    v[0] = v[0] == '0' ? '1' : '0';
    k[field] = v;
    refused(k.dump(), x, "signature does not verify");
  }
  nlohmann::json later = j;
  later["timestamp"] = r.timestamp + 1;
  refused(later.dump(), x, "signature does not verify");
  // Self-signed: a report made and signed with a key of the forger's own, which it carries.
  {
    data::AttestationReport forged = r;
    unsigned char sk[crypto_sign_SECRETKEYBYTES];
    crypto_sign_keypair(forged.platform_key.data(), sk);
    const std::string msg = data::report_signed_message(forged);
    crypto_sign_detached(forged.signature.data(), nullptr,
                         reinterpret_cast<const unsigned char*>(msg.data()), msg.size(), sk);
    refused(data::report_to_json(forged), x, "self-signed");
  }
  // A genuine report of another platform is self-signed as far as this pin is concerned.
  Enclave elsewhere((dir_ / "other").string(), measurement_of(3));
  refused(data::report_to_json(elsewhere.report(nonce)), x, "self-signed");
  data::ReportExpectations wrong_m = x;
  wrong_m.measurement = measurement_of(4);
  refused(json, wrong_m, "measurement mismatch");
  data::ReportExpectations wrong_n = x;
  wrong_n.nonce = {9};
  refused(json, wrong_n, "nonce mismatch");
  nlohmann::json extra = j;
  extra["debug"] = true;
  refused(extra.dump(), x, "unexpected field 'debug'");
  refused("{\"measurement\": ", x, "invalid JSON");
}

TEST_F(EnclaveTest, SealedDataRoundTripsAndLimitApplies) {
  Enclave e(home_, measurement_of(5));
  const fs::path p = seal(e, "a.sealed", 100);
  EXPECT_GT(header(read_bytes(p)).chunk_count, 10u);
  expect_same(e.open_sealed(p.string(), Split::train).value(), train_, 40);
  expect_same(e.open_sealed(p.string(), Split::test).value(), test_, 12);
  expect_same(e.open_sealed(p.string(), Split::train, 7).value(), train_, 7);
  EXPECT_EQ(e.open_sealed(p.string(), Split::train).value().name, "sealed:tiny");
  // Pixels that are not bytes are sealed as float32, exactly.
  train_.images[3] = 0.123456789f;
  const fs::path q = seal(e, "b.sealed", 1000);
  expect_same(e.open_sealed(q.string(), Split::train).value(), train_, 40);
  // The ciphertext holds no run of plaintext pixels.
  const Bytes b = read_bytes(p);
  Bytes run;
  for (int i = 0; i < 16; ++i) run.push_back(static_cast<unsigned char>((i * 7 + 1) % 256));
  EXPECT_EQ(std::search(b.begin(), b.end(), run.begin(), run.end()), b.end());
}

TEST_F(EnclaveTest, EachKindOfDamageIsRefusedWithItsOwnMessage) {
  Enclave e(home_, measurement_of(6));
  const fs::path good = seal(e, "good.sealed");
  const Bytes g = read_bytes(good);
  const uint64_t n = header(g).chunk_count;
  ASSERT_GT(n, 5u);
  const fs::path bad = dir_ / "bad.sealed";
  auto refused = [&](const Bytes& b, const std::string& why, int64_t limit = 0) {
    write_bytes(bad, b);
    const std::string m = refusal(e, bad, limit);
    EXPECT_NE(m.find(why), std::string::npos) << "expected '" << why << "', got: " << m;
  };
  // Tampered: one bit of chunk 3's ciphertext, of the last chunk (with --limit 1: the
  // whole file is authenticated whatever the limit), of the header.
  Bytes b = g;
  b[header(g).frame_offset(3) + data::kChunkFrameBytes + 5] ^= 1;
  refused(b, "authentication failed at chunk 3 of");
  b = g;
  b[b.size() - 1] ^= 0x80;
  refused(b, fmt::format("authentication failed at chunk {} of", n - 1), 1);
  b = g;
  b[8 + 16 + 64 + 2] ^= 1;  // the ephemeral public key
  refused(b, "authentication failed at chunk 0 of");
  // Truncated, at a chunk boundary and inside a chunk; a chunk appended.
  refused(Bytes(g.begin(), g.begin() + static_cast<int64_t>(header(g).frame_offset(n - 1))),
          "truncated");
  refused(Bytes(g.begin(), g.end() - 3), "truncated");
  refused(Bytes(g.begin(), g.begin() + 50), "truncated");
  b = g;
  const Bytes f2 = frame(g, 2);
  b.insert(b.end(), f2.begin(), f2.end());
  refused(b, "unexpected bytes after the last");
  // Reordered: chunks 2 and 4 swapped.
  b = g;
  put_frame(b, 2, frame(g, 4));
  put_frame(b, 4, frame(g, 2));
  refused(b, "chunk 2 of " + std::to_string(n) + " is out of order: it holds chunk 4");
  // Replayed: chunk 1 again in place of chunk 2; chunk 2 of another file.
  b = g;
  put_frame(b, 2, frame(g, 1));
  refused(b, "chunk 2 of " + std::to_string(n) + " is a replay of chunk 1");
  const Bytes other = read_bytes(seal(e, "other.sealed"));
  b = g;
  put_frame(b, 2, frame(other, 2));
  refused(b, "chunk 2 of " + std::to_string(n) + " belongs to another sealed dataset");
  // A forged frame header (this file's id and index on another file's ciphertext) does not
  // help: the associated data holds what the reader expects.
  Bytes forged = frame(other, 2);
  std::copy(g.begin() + 8, g.begin() + 24, forged.begin());
  b = g;
  put_frame(b, 2, forged);
  refused(b, "authentication failed at chunk 2 of");
  // Sealed for another enclave: another measurement, or the same measurement elsewhere.
  Enclave m7(home_, measurement_of(7));
  EXPECT_NE(refusal(m7, good).find("sealed for another enclave: the file is for measurement"),
            std::string::npos);
  Enclave elsewhere((dir_ / "other-platform").string(), measurement_of(6));
  EXPECT_NE(refusal(elsewhere, good).find("sealed for another enclave key"), std::string::npos);
  refused(Bytes(g.begin() + 1, g.end()), "not a sealed DarKnight dataset");
  // The original still opens.
  EXPECT_TRUE(e.open_sealed(good.string(), Split::train).ok());
}

TEST(SecretHygiene, SecretHoldingClassesAreNeitherCopyableNorMovable) {
  // Keys are secret storage: moving hands the storage over, and no copy can be made.
  static_assert(std::is_same_v<SecretBytes, SecretBuffer<unsigned char>>);
  static_assert(!std::is_copy_constructible_v<SecretBytes>);
  static_assert(!std::is_copy_assignable_v<SecretBytes>);
  auto pinned = [](auto tag) {
    using T = typename decltype(tag)::type;
    return !std::is_copy_constructible_v<T> && !std::is_copy_assignable_v<T> &&
           !std::is_move_constructible_v<T> && !std::is_move_assignable_v<T>;
  };
  EXPECT_TRUE(pinned(std::type_identity<Platform>{}));
  EXPECT_TRUE(pinned(std::type_identity<Enclave>{}));
  EXPECT_TRUE(pinned(std::type_identity<Csprng>{}));
  EXPECT_TRUE(pinned(std::type_identity<Mixing>{}));
  EXPECT_TRUE(pinned(std::type_identity<Coefficients>{}));
  EXPECT_TRUE(pinned(std::type_identity<TrainingMixing>{}));
  EXPECT_TRUE(pinned(std::type_identity<WeightDigest>{}));
  EXPECT_TRUE(pinned(std::type_identity<TrainDigest>{}));
}

// A training engine that records whether every activation and delta handed to it by the
// trainer is marked as a secret (wiped when freed).
class MarkRecorder : public baselines::PlainEngine {
 public:
  using PlainEngine::PlainEngine;
  Tensor forward_train(const nn::Node& node, Tensor& src, RunStats& stats) override {
    ++inputs;
    unmarked += !src.wipes_on_free();
    return PlainEngine::forward_train(node, src, stats);
  }
  Tensor backward(const nn::Node& node, const Tensor& delta, bool input_grad,
                  RunStats& stats) override {
    ++deltas;
    unmarked += !delta.wipes_on_free();
    return PlainEngine::backward(node, delta, input_grad, stats);
  }
  int inputs = 0, deltas = 0, unmarked = 0;
};

TEST(SecretHygiene, TrainerActivationsDeltasAndGradientsWipeOnFree) {
  auto be = accel::make_backend("cpu");
  MarkRecorder engine(*be);
  nn::ModelOptions o;
  o.input_size = 28;
  Trainer t(nn::build_model("fmnist-cnn", o), engine, {});
  Tensor x(Shape{4, 1, 28, 28});
  for (int64_t i = 0; i < x.numel(); ++i) x[i] = static_cast<float>(i % 7) / 7.0f;
  SgdParams p;
  p.momentum = 0.9;
  t.step(x, {0, 1, 2, 3}, p);
  EXPECT_GT(engine.inputs, 0);
  EXPECT_EQ(engine.deltas, engine.inputs);
  EXPECT_EQ(engine.unmarked, 0);
  ASSERT_FALSE(t.params().empty());
  for (const TrustedParam& tp : t.params()) {
    EXPECT_TRUE(tp.grad.wipes_on_free()) << tp.name;
    EXPECT_TRUE(tp.momentum.wipes_on_free()) << tp.name;
  }
}

}  // namespace
}  // namespace darknight::trusted
