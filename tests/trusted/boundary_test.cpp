// The trust boundary byte for byte: the encoders' secrets (the coefficient matrices A, B,
// the training A and Gamma, the noise, the generator's seed and key) appear nowhere in what
// a capturing worker received, raw bytes searched in every form they are held in (float64
// values, consecutive float32 values). A control run leaking them through the same path is
// caught by the same search. (Plaintext inputs, activations and labels: tests/worker_test.sh.)
#include <gtest/gtest.h>
#include <sodium.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "baselines/unprotected.h"
#include "registry/registry.h"
#include "support/random.h"
#include "support/worker.h"
#include "trusted/codec.h"
#include "trusted/secrets.h"
#include "trusted/training_codec.h"

namespace darknight::trusted {
namespace {

namespace fs = std::filesystem;
using darknight::testing::random_tensor;
using darknight::testing::TestWorker;

constexpr uint64_t kSeed = 424242;

/// Byte patterns that must not appear in the capture, each with a name.
struct Secrets {
  std::vector<std::pair<std::string, std::string>> patterns;

  void f64(const std::string& what, double v) {
    patterns.emplace_back(what, std::string(reinterpret_cast<const char*>(&v), 8));
  }
  /// Consecutive values as float32 (how a leaked row of them would look in a mixture).
  void f32_run(const std::string& what, const std::vector<double>& v) {
    std::string s;
    for (double x : v) {
      const auto f = static_cast<float>(x);
      s.append(reinterpret_cast<const char*>(&f), 4);
    }
    patterns.emplace_back(what, s);
  }
  void mixing(const std::string& what, const Mixing& m) {
    for (int j = 0; j < m.mixtures(); ++j) {
      std::vector<double> row;
      for (int i = 0; i < m.n(); ++i) {
        f64(what + " A", m.a(j, i));
        f64(what + " A^-1", m.inv(i, j));
        row.push_back(m.a(j, i));
      }
      f32_run(what + " A row", row);
    }
  }
  void noise(const float* v, int64_t n) {
    for (int64_t at : {int64_t{0}, n / 2, n - 4})
      f32_run("noise", {v[at], v[at + 1], v[at + 2], v[at + 3]});
  }
};

/// Records every mixing matrix and noise vector it hands out.
class RecordingSource final : public SecretSource {
 public:
  RecordingSource(Csprng& rng, Secrets& s) : inner_(rng, NoiseSpec{}, 1.0), s_(s) {}
  std::unique_ptr<Mixing> next_mixing(int k) override {
    auto m = inner_.next_mixing(k);
    s_.mixing("inference", *m);
    return m;
  }
  void next_noise(Tensor& out) override {
    inner_.next_noise(out);
    s_.noise(out.data(), out.numel());
  }
  void next_noise(Tensor64& out) override { inner_.next_noise(out); }

 private:
  DirectSource inner_;
  Secrets& s_;
};

/// Uploads what a sink receives into `dst`, as the engine's uploader does.
MixtureSink<float> uploader(accel::Backend& be, accel::Buffer& dst) {
  return [&be, &dst](const Blinded& rows, int64_t first, int64_t e0) {
    const int64_t n = rows.shape()[0], len = rows.shape()[1], item = dst.shape().item_numel();
    for (int64_t r = 0; r < n; ++r) be.upload(rows, r * len, len, dst, (first + r) * item + e0);
    be.wait();
  };
}

/// Runs one conv layer's inference and training encodings through `be` (a remote worker),
/// recording the secrets; with `leak`, also sends them as a mixture would travel.
void run_layer(accel::Backend& be, Secrets& s, bool leak) {
  accel::ConvDesc d;
  d.in_channels = 1, d.out_channels = 4, d.kernel_h = d.kernel_w = 3;
  const Shape xs{8, 1, 12, 12};
  const Tensor x = random_tensor(xs, 5, 0.0f, 1.0f);
  auto w = be.create_weights(random_tensor(d.weight_shape(), 6));
  CodecOptions opts;  // K = 4, noise N(0, 100^2)
  Csprng rng(kSeed);

  // Inference: 2 virtual batches, 10 mixtures.
  RecordingSource source(rng, s);
  Encoder enc(opts, source);
  MixingList secrets;
  auto in = be.alloc(xs.with_batch(10), DType::f32);
  enc.encode<float>(x, secrets, uploader(be, *in));
  auto out = be.alloc(d.dst_shape(in->shape()), DType::f32);
  be.conv2d_forward(d, *in, *w, *out);
  be.wait();

  // Training: forward mixtures (B and noise), deltas mixed by A and by Gamma A (folded).
  TrainingEncoder tenc(opts, rng);
  TrainingMixingList ts;
  auto tin = be.alloc(xs.with_batch(10), DType::f32);
  tenc.encode_inputs<float>(x, ts, uploader(be, *tin));
  auto tout = be.alloc(d.dst_shape(tin->shape()), DType::f32);
  be.conv2d_forward(d, *tin, *w, *tout);
  const Tensor deltas = random_tensor(d.dst_shape(xs), 7);
  for (bool folded : {false, true}) {
    auto dd = be.alloc(tout->shape(), DType::f32);
    tenc.encode_deltas<float>(deltas, ts, folded, uploader(be, *dd));
    auto dx = be.alloc(tin->shape(), DType::f32);
    be.conv2d_backward_data(d, *dd, *w, *dx);
    auto gw = be.alloc(d.weight_shape(), DType::f32);
    be.conv2d_backward_weights(d, *tin, *dd, *gw);
    be.wait();
  }
  for (const auto& t : ts) {
    s.mixing("training B", t->forward());
    std::vector<double> gammas;
    for (int j = 0; j <= t->k(); ++j) {
      s.f64("training Gamma", t->gamma(j));
      gammas.push_back(t->gamma(j));
      std::vector<double> row;
      for (int i = 0; i < t->k(); ++i) {
        s.f64("training A", t->a(j, i));
        row.push_back(t->a(j, i));
      }
      s.f32_run("training A row", row);
    }
    s.f32_run("training Gamma", gammas);
  }

  // The generator's seed and the key derived from it (as trusted/random.cpp derives it).
  const uint64_t seed = kSeed;
  s.patterns.emplace_back("seed", std::string(reinterpret_cast<const char*>(&seed), 8));
  unsigned char key[32];
  static const unsigned char kContext[] = "darknight.seeded-csprng.v1";
  crypto_generichash(key, sizeof key, reinterpret_cast<const unsigned char*>(&seed), 8, kContext,
                     sizeof kContext - 1);
  s.patterns.emplace_back("key", std::string(reinterpret_cast<const char*>(key), 32));

  if (leak) {
    // A leaking encoder: its first virtual batch's matrix and first noise vector go out
    // as float32 rows, as a mixture would.
    const Mixing& m = *secrets[0];
    Tensor a(Shape{m.mixtures(), m.n()});
    for (int j = 0; j < m.mixtures(); ++j)
      for (int i = 0; i < m.n(); ++i) a[j * m.n() + i] = static_cast<float>(m.a(j, i));
    Tensor r(Shape{1, xs.item_numel()});
    source.next_noise(r);
    for (const Tensor* t : {&a, &r}) {
      const Blinded leaked = baselines::Unprotected::expose(t->clone());
      auto b = be.alloc(t->shape(), DType::f32);
      be.upload(leaked, *b);
      accel::DenseDesc dd{t->shape()[1], 1};
      auto lw = be.create_weights(Tensor(dd.weight_shape()));
      auto o = be.alloc(Shape{t->shape()[0], 1}, DType::f32);
      be.dense_forward(dd, *b, *lw, *o);
      be.wait();
    }
  }
}

/// The names of the patterns found in any file of `dir`.
std::set<std::string> search(const fs::path& dir, const Secrets& s, int64_t& bytes) {
  std::set<std::string> found;
  bytes = 0;
  for (const auto& f : fs::directory_iterator(dir)) {
    std::ifstream in(f.path(), std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    const std::string data = ss.str();
    bytes += static_cast<int64_t>(data.size());
    for (const auto& [name, p] : s.patterns)
      if (data.find(p) != std::string::npos) found.insert(name);
  }
  return found;
}

std::set<std::string> run(const std::string& name, bool leak, Secrets& s, int64_t& bytes) {
  const fs::path dir = fs::path(::testing::TempDir()) / ("dk_boundary_" + name);
  fs::remove_all(dir);
  {
    accel::remote::ServerOptions o;
    o.capture_dir = dir.string();
    TestWorker worker(o);
    auto be = accel::make_backend(worker.endpoint());
    run_layer(*be, s, leak);
  }
  auto found = search(dir, s, bytes);
  fs::remove_all(dir);
  return found;
}

TEST(Boundary, NoSecretReachesTheWorker) {
  Secrets s;
  int64_t bytes = 0;
  const auto found = run("clean", false, s, bytes);
  EXPECT_GT(bytes, 40000);  // mixtures of inputs and deltas, weights, index
  EXPECT_GT(s.patterns.size(), 250u);
  for (const auto& name : found) ADD_FAILURE() << name << " found in what the worker received";
}

TEST(Boundary, ALeakingEncoderIsCaught) {
  Secrets s;
  int64_t bytes = 0;
  const auto found = run("leak", true, s, bytes);
  EXPECT_TRUE(found.count("inference A row")) << "the leaked matrix was not found";
  EXPECT_TRUE(found.count("noise")) << "the leaked noise was not found";
}

}  // namespace
}  // namespace darknight::trusted
