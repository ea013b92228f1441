#include "trusted/enclave.h"

#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>

namespace darknight::trusted {
namespace fs = std::filesystem;
namespace {

constexpr char kPlatformMagic[8] = {'D', 'K', 'P', 'L', 'A', 'T', '0', '1'};
constexpr char kEnclaveKeyMagic[8] = {'D', 'K', 'E', 'N', 'C', 'K', '0', '1'};
constexpr size_t kPlatformFileBytes = 8 + 32 + 32;
constexpr size_t kEnclaveKeyFileBytes = 8 + 32 + crypto_aead_xchacha20poly1305_ietf_NPUBBYTES + 32 +
                                        crypto_aead_xchacha20poly1305_ietf_ABYTES;

void init_sodium() {
  if (sodium_init() < 0) throw Error("libsodium failed to initialise");
}

std::string short_hex(const Bytes32& k) {
  return data::to_hex(k.data(), 8) + "..";
}

/// Secret bytes, zeroed.
SecretBytes secret_bytes(size_t n) {
  return SecretBytes(static_cast<int64_t>(n), Metered::no);
}

/// The whole of `path`, in a std::vector, or in secret storage for a file that holds keys.
template <typename Bytes>
Result<Bytes> read_all(const std::string& path) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  if (!f) return Status::error(fmt::format("cannot open {}", path));
  const auto n = static_cast<size_t>(f.tellg());
  Bytes bytes = [&] {
    if constexpr (std::is_same_v<Bytes, SecretBytes>)
      return secret_bytes(n);
    else
      return Bytes(n);
  }();
  f.seekg(0);
  if (!f.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(n)))
    return Status::error(fmt::format("cannot read {}", path));
  return bytes;
}

void ensure_home(const std::string& home) {
  std::error_code ec;
  if (fs::create_directories(home, ec)) fs::permissions(home, fs::perms::owner_all, ec);
  DK_CHECK(fs::is_directory(home), "cannot create the key directory {}", home);
}

/// Creates `path` with mode 0600 holding `bytes`, atomically: false when it already
/// exists (another process made it first); throws Error on I/O failure.
bool create_exclusive(const std::string& path, const unsigned char* bytes, size_t n) {
  std::string tmp = path + ".XXXXXX";
  const int fd = mkstemp(tmp.data());
  DK_CHECK(fd >= 0, "cannot create {}: {}", tmp, std::strerror(errno));
  bool ok =
      fchmod(fd, 0600) == 0 && write(fd, bytes, n) == static_cast<ssize_t>(n) && fsync(fd) == 0;
  ok = close(fd) == 0 && ok;
  const int linked = ok ? link(tmp.c_str(), path.c_str()) : -1;
  const int err = errno;
  unlink(tmp.c_str());
  DK_CHECK(ok, "cannot write {}", tmp);
  if (linked == 0) return true;
  DK_CHECK(err == EEXIST, "cannot create {}: {}", path, std::strerror(err));
  return false;
}

}  // namespace

std::string default_home() {
  if (const char* h = std::getenv("DARKNIGHT_HOME"); h && *h) return h;
  const char* home = std::getenv("HOME");
  DK_CHECK(home && *home, "neither DARKNIGHT_HOME nor HOME is set: no place for the keys");
  return std::string(home) + "/.darknight";
}

const Bytes32& measure_executable() {
  static const Bytes32 m = [] {
    init_sodium();
    std::ifstream f("/proc/self/exe", std::ios::binary);
    DK_CHECK(f, "cannot read /proc/self/exe to measure the trusted runtime");
    crypto_generichash_state st;
    crypto_generichash_init(&st, nullptr, 0, 32);
    std::vector<char> buf(1 << 20);
    while (f) {
      f.read(buf.data(), static_cast<std::streamsize>(buf.size()));
      crypto_generichash_update(&st, reinterpret_cast<const unsigned char*>(buf.data()),
                                static_cast<unsigned long long>(f.gcount()));
    }
    Bytes32 out;
    crypto_generichash_final(&st, out.data(), out.size());
    return out;
  }();
  return m;
}

// ---- Platform ------------------------------------------------------------------------

Platform::Platform(const std::string& home) {
  init_sodium();
  ensure_home(home);
  const std::string path = home + "/platform.key";
  if (!fs::exists(path)) {
    SecretBytes fresh = secret_bytes(kPlatformFileBytes);
    std::memcpy(fresh.data(), kPlatformMagic, 8);
    randombytes_buf(fresh.data() + 8, 64);
    create_exclusive(path, fresh.data(), fresh.bytes());  // or another process won the race
  }
  struct stat st {};
  DK_CHECK(stat(path.c_str(), &st) == 0, "cannot open {}", path);
  DK_CHECK((st.st_mode & 077) == 0,
           "{} is readable by others (mode {:o}): the platform key must be private (chmod 600)",
           path, st.st_mode & 0777);
  auto bytes = read_all<SecretBytes>(path);
  DK_CHECK(bytes.ok(), "{}", bytes.status().message());
  const SecretBytes& b = bytes.value();
  DK_CHECK(b.bytes() == kPlatformFileBytes && std::memcmp(b.data(), kPlatformMagic, 8) == 0,
           "{} is not a DarKnight platform key file", path);
  crypto_sign_seed_keypair(public_key_.data(), signing_key_.data(), b.data() + 8);
  std::memcpy(sealing_secret_.data(), b.data() + 40, 32);
}

std::array<unsigned char, 64> Platform::sign(const std::string& msg) const {
  std::array<unsigned char, 64> sig{};
  crypto_sign_detached(sig.data(), nullptr, reinterpret_cast<const unsigned char*>(msg.data()),
                       msg.size(), signing_key_.data());
  return sig;
}

void Platform::sealing_key(const Bytes32& measurement, unsigned char out[32]) const {
  static const char kDomain[] = "DarKnight sealing key v1";
  crypto_generichash_state st;
  crypto_generichash_init(&st, sealing_secret_.data(), 32, 32);
  crypto_generichash_update(&st, reinterpret_cast<const unsigned char*>(kDomain),
                            sizeof kDomain - 1);
  crypto_generichash_update(&st, measurement.data(), measurement.size());
  crypto_generichash_final(&st, out, 32);
  sodium_memzero(&st, sizeof st);
}

// ---- Enclave -------------------------------------------------------------------------

Enclave::Enclave(const std::string& home) : Enclave(home, measure_executable()) {}

Enclave::Enclave(const std::string& home, const Bytes32& measurement)
    : measurement_(measurement), platform_(home) {
  load_or_create_key(home);
}

void Enclave::load_or_create_key(const std::string& home) {
  const std::string path = home + "/enclave-" + data::to_hex(measurement_) + ".key";
  SecretBytes key = secret_bytes(32);
  platform_.sealing_key(measurement_, key.data());
  auto ad = [&](const unsigned char* pk) {
    std::vector<unsigned char> a(8 + measurement_.size() + 32);
    std::memcpy(a.data(), kEnclaveKeyMagic, 8);
    std::memcpy(a.data() + 8, measurement_.data(), measurement_.size());
    std::memcpy(a.data() + 8 + measurement_.size(), pk, 32);
    return a;
  };
  if (!fs::exists(path)) {  // first use: a fresh key pair, sealed
    unsigned char file[kEnclaveKeyFileBytes];
    unsigned char pk[32];
    SecretBytes sk = secret_bytes(32);
    crypto_kx_keypair(pk, sk.data());
    std::memcpy(file, kEnclaveKeyMagic, 8);
    std::memcpy(file + 8, pk, 32);
    unsigned char* nonce = file + 40;
    randombytes_buf(nonce, crypto_aead_xchacha20poly1305_ietf_NPUBBYTES);
    const auto a = ad(pk);
    crypto_aead_xchacha20poly1305_ietf_encrypt(nonce + crypto_aead_xchacha20poly1305_ietf_NPUBBYTES,
                                               nullptr, sk.data(), sk.bytes(), a.data(), a.size(),
                                               nullptr, nonce, key.data());
    create_exclusive(path, file, sizeof file);  // or another process won the race
  }
  auto bytes = read_all<std::vector<unsigned char>>(path);
  DK_CHECK(bytes.ok(), "{}", bytes.status().message());
  const std::vector<unsigned char>& b = bytes.value();
  DK_CHECK(b.size() == kEnclaveKeyFileBytes && std::memcmp(b.data(), kEnclaveKeyMagic, 8) == 0,
           "{} is not a sealed DarKnight enclave key", path);
  const unsigned char* pk = b.data() + 8;
  const unsigned char* nonce = b.data() + 40;
  const auto a = ad(pk);
  unsigned long long len = 0;
  DK_CHECK(
      crypto_aead_xchacha20poly1305_ietf_decrypt(
          secret_key_.data(), &len, nullptr, nonce + crypto_aead_xchacha20poly1305_ietf_NPUBBYTES,
          32 + crypto_aead_xchacha20poly1305_ietf_ABYTES, a.data(), a.size(), nonce,
          key.data()) == 0 &&
          len == 32,
      "cannot unseal the enclave key {}: it was sealed under another platform key, or "
      "altered",
      path);
  std::memcpy(public_key_.data(), pk, 32);
  Bytes32 derived;
  crypto_scalarmult_base(derived.data(), secret_key_.data());
  DK_CHECK(derived == public_key_, "{}: the public key does not match the sealed secret key", path);
}

data::AttestationReport Enclave::report(const std::vector<unsigned char>& nonce) const {
  data::AttestationReport r;
  r.measurement = measurement_;
  r.public_key = public_key_;
  r.platform_key = platform_.public_key();
  r.timestamp = static_cast<int64_t>(std::time(nullptr));
  r.nonce = nonce;
  r.signature = platform_.sign(data::report_signed_message(r));
  return r;
}

Result<data::Dataset> Enclave::open_sealed(const std::string& path, data::Split split,
                                           int64_t limit) const {
  auto read = read_all<std::vector<unsigned char>>(path);
  if (!read.ok()) return read.status();
  const std::vector<unsigned char>& file = read.value();
  auto fail = [&](const std::string& why) { return Status::error(path + ": " + why); };
  auto parsed = data::parse_sealed_header(file.data(), file.size());
  if (!parsed.ok()) return fail(parsed.status().message());
  const data::SealedHeader& h = parsed.value();
  if (h.measurement != measurement_)
    return fail(fmt::format(
        "sealed for another enclave: the file is for measurement {}, this enclave is {} "
        "(seal it again from this enclave's report)",
        short_hex(h.measurement), short_hex(measurement_)));
  if (h.enclave_public_key != public_key_)
    return fail(fmt::format(
        "sealed for another enclave key: the file is for {}, this enclave's key is {} (same "
        "measurement, another platform or key)",
        short_hex(h.enclave_public_key), short_hex(public_key_)));
  if (file.size() < h.file_size())
    return fail(fmt::format("truncated: {} bytes, the header promises {} chunks in {} bytes",
                            file.size(), h.chunk_count, h.file_size()));
  if (file.size() > h.file_size())
    return fail(fmt::format("{} unexpected bytes after the last of {} chunks (an appended chunk?)",
                            file.size() - h.file_size(), h.chunk_count));

  SecretBytes key = secret_bytes(crypto_aead_xchacha20poly1305_ietf_KEYBYTES);
  {
    SecretBytes rx = secret_bytes(crypto_kx_SESSIONKEYBYTES);
    SecretBytes tx = secret_bytes(crypto_kx_SESSIONKEYBYTES);
    if (crypto_kx_server_session_keys(rx.data(), tx.data(), public_key_.data(), secret_key_.data(),
                                      h.ephemeral_public_key.data()) != 0)
      return fail("the sealer's public key is not a usable X25519 key");
    data::file_key_from_session(rx.data(), key.data());
  }
  // Every chunk is authenticated before any byte of the payload is decoded.
  SecretBytes plain = secret_bytes(static_cast<size_t>(h.plaintext_bytes));
  for (uint64_t i = 0; i < h.chunk_count; ++i) {
    const unsigned char* frame = file.data() + h.frame_offset(i);
    uint64_t index = 0;
    for (int b = 0; b < 8; ++b) index |= uint64_t{frame[16 + b]} << (8 * b);
    if (std::memcmp(frame, h.dataset_id.data(), 16) != 0)
      return fail(fmt::format(
          "chunk {} of {} belongs to another sealed dataset (id {}, this file is {}): a "
          "replayed chunk",
          i, h.chunk_count, data::to_hex(frame, 16), data::to_hex(h.dataset_id)));
    if (index < i)
      return fail(fmt::format("chunk {} of {} is a replay of chunk {} (a duplicated chunk)", i,
                              h.chunk_count, index));
    if (index != i)
      return fail(fmt::format("chunk {} of {} is out of order: it holds chunk {} (reordered)", i,
                              h.chunk_count, index));
    const auto ad = h.associated_data(i);
    const auto nonce = h.nonce(i);
    const uint64_t size = h.plain_size(i);
    if (crypto_aead_xchacha20poly1305_ietf_decrypt(
            plain.data() + i * h.chunk_bytes, nullptr, nullptr, frame + data::kChunkFrameBytes,
            size + data::kChunkTagBytes, ad.data(), ad.size(), nonce.data(), key.data()) != 0)
      return fail(fmt::format(
          "authentication failed at chunk {} of {}: the file was altered (tampered), or was "
          "not sealed with this enclave's key",
          i, h.chunk_count));
  }
  auto d = data::decode_payload(plain.data(), plain.bytes(), split, limit);
  if (!d.ok()) return fail(d.status().message());
  return d;
}

}  // namespace darknight::trusted
