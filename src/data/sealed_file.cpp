#include "data/sealed_file.h"

#include <sodium.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "protocol/checked.h"

namespace darknight::data {
namespace {

constexpr char kMagic[8] = {'D', 'K', 'S', 'E', 'A', 'L', 'D', '1'};
constexpr char kPayloadMagic[8] = {'D', 'K', 'D', 'A', 'T', 'A', '0', '1'};
constexpr char kKdfContext[crypto_kdf_CONTEXTBYTES] = {'D', 'K', 'S', 'E', 'A', 'L', 'D', '1'};
constexpr const char* kReportDomain = "DarKnight attestation report v1\n";
constexpr uint64_t kMaxChunkBytes = uint64_t{1} << 30;
constexpr uint64_t kMaxPlaintextBytes = uint64_t{1} << 40;

void init_sodium() {
  if (sodium_init() < 0) throw Error("libsodium failed to initialise");
}

void put_u64(unsigned char* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<unsigned char>(v >> (8 * i));
}
uint64_t get_u64(const unsigned char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= uint64_t{p[i]} << (8 * i);
  return v;
}

std::string short_hex(const Bytes32& k) {
  return to_hex(k.data(), 8) + "..";
}

/// Little-endian writer and bounds-checked reader of the payload.
struct Writer {
  std::vector<unsigned char>& out;
  void bytes(const void* p, size_t n) {
    const size_t at = out.size();
    out.resize(at + n);
    if (n) std::memcpy(out.data() + at, p, n);
  }
  void u(uint64_t v, int width) {
    for (int i = 0; i < width; ++i) out.push_back(static_cast<unsigned char>(v >> (8 * i)));
  }
};
struct Reader {
  const unsigned char* p;
  size_t n, at = 0;
  bool take(size_t k) {
    if (k > n - at) return false;
    at += k;
    return true;
  }
  bool u(uint64_t& v, int width) {
    if (!take(static_cast<size_t>(width))) return false;
    v = 0;
    for (int i = 0; i < width; ++i) v |= uint64_t{p[at - width + i]} << (8 * i);
    return true;
  }
};

/// Pixels stored as bytes when every value is exactly b / 255 (how the loaders make them).
bool pixels_are_bytes(const Tensor& t) {
  for (int64_t i = 0; i < t.numel(); ++i) {
    const float x = t[i];
    if (!(x >= 0.0f && x <= 1.0f)) return false;
    const auto b = static_cast<unsigned char>(std::lround(x * 255.0f));
    if (static_cast<float>(b) / 255.0f != x) return false;
  }
  return true;
}

}  // namespace

std::string to_hex(const unsigned char* p, size_t n) {
  std::string s(2 * n + 1, '\0');
  sodium_bin2hex(s.data(), s.size(), p, n);
  s.pop_back();
  return s;
}

Result<std::vector<unsigned char>> from_hex(const std::string& hex, const std::string& what) {
  std::vector<unsigned char> out(hex.size() / 2);
  if (hex.empty()) return out;  // sodium_hex2bin must not get a null buffer
  size_t len = 0;
  const char* end = nullptr;
  if (hex.size() % 2 != 0 ||
      sodium_hex2bin(out.data(), out.size(), hex.data(), hex.size(), nullptr, &len, &end) != 0 ||
      end != hex.data() + hex.size() || len != out.size())
    return Status::error(fmt::format("{}: '{}' is not hexadecimal bytes", what, hex));
  return out;
}

Result<Bytes32> from_hex32(const std::string& hex, const std::string& what) {
  auto v = from_hex(hex, what);
  if (!v.ok()) return v.status();
  if (v.value().size() != 32)
    return Status::error(
        fmt::format("{}: {} bytes, expected 32 (64 hex digits)", what, v.value().size()));
  Bytes32 b;
  std::memcpy(b.data(), v.value().data(), 32);
  return b;
}

// ---- Attestation report --------------------------------------------------------------

namespace {
nlohmann::json report_fields(const AttestationReport& r) {
  return {{"format", kReportFormat},
          {"tee", "simulated"},
          {"measurement", to_hex(r.measurement)},
          {"public_key", to_hex(r.public_key)},
          {"platform_key", to_hex(r.platform_key)},
          {"timestamp", r.timestamp},
          {"nonce", to_hex(r.nonce.data(), r.nonce.size())}};
}
}  // namespace

std::string report_signed_message(const AttestationReport& r) {
  return kReportDomain + report_fields(r).dump();
}

std::string report_to_json(const AttestationReport& r) {
  nlohmann::json j = report_fields(r);
  j["signature"] = to_hex(r.signature);
  return j.dump(2) + "\n";
}

Result<AttestationReport> parse_report(const std::string& json_text) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(json_text);
  } catch (const std::exception& e) {
    return Status::error(fmt::format("not an attestation report (invalid JSON: {})", e.what()));
  }
  if (!j.is_object()) return Status::error("not an attestation report (not a JSON object)");
  static const std::set<std::string> kFields{"format",     "tee",          "measurement",
                                             "public_key", "platform_key", "timestamp",
                                             "nonce",      "signature"};
  for (const auto& [key, value] : j.items())
    if (!kFields.count(key))
      return Status::error(fmt::format("attestation report: unexpected field '{}'", key));
  for (const auto& f : kFields)
    if (!j.contains(f)) return Status::error(fmt::format("attestation report: no '{}'", f));
  for (const auto& f : kFields)
    if (f != "timestamp" && !j[f].is_string())
      return Status::error(fmt::format("attestation report: '{}' is not a string", f));
  if (j["format"] != kReportFormat)
    return Status::error(fmt::format("attestation report: format '{}', expected '{}'",
                                     j["format"].get<std::string>(), kReportFormat));
  if (j["tee"] != "simulated")
    return Status::error(fmt::format("attestation report: tee '{}' is not supported (simulated)",
                                     j["tee"].get<std::string>()));
  if (!j["timestamp"].is_number_integer())
    return Status::error("attestation report: 'timestamp' is not an integer");
  AttestationReport r;
  r.timestamp = j["timestamp"].get<int64_t>();
  for (auto [field, dst] :
       {std::pair{"measurement", &r.measurement}, std::pair{"public_key", &r.public_key},
        std::pair{"platform_key", &r.platform_key}}) {
    auto v = from_hex32(j[field].get<std::string>(), std::string("attestation report: ") + field);
    if (!v.ok()) return v.status();
    *dst = v.value();
  }
  auto nonce = from_hex(j["nonce"].get<std::string>(), "attestation report: nonce");
  if (!nonce.ok()) return nonce.status();
  r.nonce = nonce.value();
  auto sig = from_hex(j["signature"].get<std::string>(), "attestation report: signature");
  if (!sig.ok()) return sig.status();
  if (sig.value().size() != r.signature.size())
    return Status::error("attestation report: signature is not 64 bytes");
  std::memcpy(r.signature.data(), sig.value().data(), r.signature.size());
  return r;
}

Result<AttestationReport> verify_report(const std::string& json_text, const ReportExpectations& e) {
  init_sodium();
  auto parsed = parse_report(json_text);
  if (!parsed.ok()) return parsed.status();
  const AttestationReport& r = parsed.value();
  const std::string msg = report_signed_message(r);
  auto signed_by = [&](const Bytes32& key) {
    return crypto_sign_verify_detached(r.signature.data(),
                                       reinterpret_cast<const unsigned char*>(msg.data()),
                                       msg.size(), key.data()) == 0;
  };
  if (!signed_by(e.platform_key)) {
    if (r.platform_key != e.platform_key && signed_by(r.platform_key))
      return Status::error(fmt::format(
          "self-signed attestation report refused: it is signed by the key it carries ({}), "
          "not by the pinned platform key ({})",
          short_hex(r.platform_key), short_hex(e.platform_key)));
    return Status::error(fmt::format(
        "attestation report signature does not verify under the pinned platform key {}: the "
        "report was altered or not signed by that platform",
        short_hex(e.platform_key)));
  }
  if (r.measurement != e.measurement)
    return Status::error(fmt::format(
        "measurement mismatch: the report's enclave is {}, expected {} (another build or "
        "another program)",
        to_hex(r.measurement), to_hex(e.measurement)));
  if (e.check_nonce && r.nonce != e.nonce)
    return Status::error(fmt::format(
        "nonce mismatch: the report carries '{}', expected '{}' (a stale or replayed report)",
        to_hex(r.nonce.data(), r.nonce.size()), to_hex(e.nonce.data(), e.nonce.size())));
  return parsed;
}

// ---- Sealed dataset file -------------------------------------------------------------

uint64_t SealedHeader::plain_size(uint64_t i) const {
  return i + 1 < chunk_count ? chunk_bytes : plaintext_bytes - chunk_bytes * (chunk_count - 1);
}

uint64_t SealedHeader::frame_offset(uint64_t i) const {
  return kSealedHeaderBytes + i * (kChunkFrameBytes + kChunkTagBytes + chunk_bytes);
}

uint64_t SealedHeader::file_size() const {
  return kSealedHeaderBytes + chunk_count * (kChunkFrameBytes + kChunkTagBytes) + plaintext_bytes;
}

std::vector<unsigned char> SealedHeader::associated_data(uint64_t i) const {
  std::vector<unsigned char> ad(16 + 8 + 8 + 32);
  std::memcpy(ad.data(), dataset_id.data(), 16);
  put_u64(ad.data() + 16, i);
  put_u64(ad.data() + 24, chunk_count);
  crypto_generichash(ad.data() + 32, 32, raw.data(), raw.size(), nullptr, 0);
  return ad;
}

std::array<unsigned char, 24> SealedHeader::nonce(uint64_t i) const {
  std::array<unsigned char, 24> n{};
  std::memcpy(n.data(), dataset_id.data(), 16);
  put_u64(n.data() + 16, i);
  return n;
}

void file_key_from_session(const unsigned char* session_key, unsigned char* file_key) {
  crypto_kdf_derive_from_key(file_key, crypto_aead_xchacha20poly1305_ietf_KEYBYTES, 1, kKdfContext,
                             session_key);
}

Result<SealedHeader> parse_sealed_header(const unsigned char* p, size_t n) {
  if (n < sizeof kMagic || std::memcmp(p, kMagic, sizeof kMagic) != 0)
    return Status::error("not a sealed DarKnight dataset (bad magic)");
  if (n < kSealedHeaderBytes)
    return Status::error(
        fmt::format("truncated: {} bytes, shorter than the {}-byte header", n, kSealedHeaderBytes));
  SealedHeader h;
  std::memcpy(h.raw.data(), p, kSealedHeaderBytes);
  const unsigned char* q = p + 8;
  std::memcpy(h.dataset_id.data(), q, 16), q += 16;
  std::memcpy(h.measurement.data(), q, 32), q += 32;
  std::memcpy(h.enclave_public_key.data(), q, 32), q += 32;
  std::memcpy(h.ephemeral_public_key.data(), q, 32), q += 32;
  h.chunk_count = get_u64(q), h.chunk_bytes = get_u64(q + 8), h.plaintext_bytes = get_u64(q + 16);
  if (h.chunk_bytes == 0 || h.chunk_bytes > kMaxChunkBytes || h.plaintext_bytes == 0 ||
      h.plaintext_bytes > kMaxPlaintextBytes ||
      h.chunk_count != (h.plaintext_bytes + h.chunk_bytes - 1) / h.chunk_bytes)
    return Status::error(
        fmt::format("sealed file header is inconsistent ({} chunks of {} bytes for {} bytes)",
                    h.chunk_count, h.chunk_bytes, h.plaintext_bytes));
  return h;
}

Status seal_datasets(const std::vector<SealInput>& inputs, const AttestationReport& report,
                     const std::string& path, int64_t chunk_bytes) {
  init_sodium();
  DK_CHECK(chunk_bytes > 0 && static_cast<uint64_t>(chunk_bytes) <= kMaxChunkBytes,
           "chunk size {} is not in 1..{}", chunk_bytes, kMaxChunkBytes);
  std::vector<unsigned char> payload = encode_payload(inputs);
  struct Wipe {  // the owner's plaintext and keys, wiped however this returns
    std::vector<unsigned char>& v;
    unsigned char key[crypto_aead_xchacha20poly1305_ietf_KEYBYTES];
    ~Wipe() {
      sodium_memzero(v.data(), v.size());
      sodium_memzero(key, sizeof key);
    }
  } wipe{payload, {}};

  SealedHeader h;
  randombytes_buf(h.dataset_id.data(), h.dataset_id.size());
  h.measurement = report.measurement;
  h.enclave_public_key = report.public_key;
  {
    unsigned char sk[crypto_kx_SECRETKEYBYTES], rx[crypto_kx_SESSIONKEYBYTES],
        tx[crypto_kx_SESSIONKEYBYTES];
    crypto_kx_keypair(h.ephemeral_public_key.data(), sk);
    const int rc = crypto_kx_client_session_keys(rx, tx, h.ephemeral_public_key.data(), sk,
                                                 report.public_key.data());
    if (rc == 0) file_key_from_session(tx, wipe.key);
    sodium_memzero(sk, sizeof sk), sodium_memzero(rx, sizeof rx), sodium_memzero(tx, sizeof tx);
    if (rc != 0) return Status::error("the report's public key is not a usable X25519 key");
  }
  h.chunk_bytes = static_cast<uint64_t>(chunk_bytes);
  h.plaintext_bytes = payload.size();
  h.chunk_count = (h.plaintext_bytes + h.chunk_bytes - 1) / h.chunk_bytes;
  unsigned char* q = h.raw.data();
  std::memcpy(q, kMagic, 8), q += 8;
  std::memcpy(q, h.dataset_id.data(), 16), q += 16;
  std::memcpy(q, h.measurement.data(), 32), q += 32;
  std::memcpy(q, h.enclave_public_key.data(), 32), q += 32;
  std::memcpy(q, h.ephemeral_public_key.data(), 32), q += 32;
  put_u64(q, h.chunk_count), put_u64(q + 8, h.chunk_bytes), put_u64(q + 16, h.plaintext_bytes);

  const std::string tmp = path + ".partial";
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) return Status::error(fmt::format("cannot write {}", tmp));
  bool ok = std::fwrite(h.raw.data(), 1, h.raw.size(), f) == h.raw.size();
  std::vector<unsigned char> frame(kChunkFrameBytes + h.chunk_bytes + kChunkTagBytes);
  for (uint64_t i = 0; ok && i < h.chunk_count; ++i) {
    std::memcpy(frame.data(), h.dataset_id.data(), 16);
    put_u64(frame.data() + 16, i);
    const auto ad = h.associated_data(i);
    const auto nonce = h.nonce(i);
    unsigned long long clen = 0;
    crypto_aead_xchacha20poly1305_ietf_encrypt(
        frame.data() + kChunkFrameBytes, &clen, payload.data() + i * h.chunk_bytes, h.plain_size(i),
        ad.data(), ad.size(), nullptr, nonce.data(), wipe.key);
    const size_t bytes = kChunkFrameBytes + static_cast<size_t>(clen);
    ok = std::fwrite(frame.data(), 1, bytes, f) == bytes;
  }
  ok = std::fclose(f) == 0 && ok;
  std::error_code ec;
  if (ok) std::filesystem::rename(tmp, path, ec);
  if (!ok || ec) {
    std::filesystem::remove(tmp, ec);
    return Status::error(fmt::format("cannot write {}", path));
  }
  return {};
}

std::vector<unsigned char> encode_payload(const std::vector<SealInput>& inputs) {
  DK_CHECK(!inputs.empty(), "nothing to seal");
  std::vector<unsigned char> out;
  Writer w{out};
  w.bytes(kPayloadMagic, sizeof kPayloadMagic);
  w.u(inputs.size(), 4);
  for (const SealInput& in : inputs) {
    const Dataset& d = *in.data;
    const Shape& s = d.images.shape();
    DK_CHECK(s.rank() == 4 && s[0] > 0, "a dataset to seal has images [N, C, H, W], not {}",
             s.str());
    DK_CHECK(d.labels.empty() || static_cast<int64_t>(d.labels.size()) == s[0],
             "{} images but {} labels", s[0], d.labels.size());
    const bool bytes = pixels_are_bytes(d.images);
    w.u(in.split == Split::train ? 0 : 1, 1);
    w.u(bytes ? 0 : 1, 1);
    w.u(d.name.size(), 2);
    w.bytes(d.name.data(), d.name.size());
    w.u(static_cast<uint64_t>(d.classes), 4);
    for (int a = 0; a < 4; ++a) w.u(static_cast<uint64_t>(s[a]), 8);
    w.u(d.labels.empty() ? 0 : 1, 1);
    for (int label : d.labels) w.u(static_cast<uint32_t>(label), 4);
    const size_t at = out.size();
    if (bytes) {
      out.resize(at + static_cast<size_t>(d.images.numel()));
      for (int64_t i = 0; i < d.images.numel(); ++i)
        out[at + static_cast<size_t>(i)] =
            static_cast<unsigned char>(std::lround(d.images[i] * 255.0f));
    } else {
      out.resize(at + static_cast<size_t>(d.images.numel()) * 4);
      std::memcpy(out.data() + at, d.images.data(), static_cast<size_t>(d.images.numel()) * 4);
    }
  }
  return out;
}

Result<Dataset> decode_payload(const unsigned char* p, size_t n, Split split, int64_t limit) {
  auto bad = [](const std::string& what) {
    return Status::error("sealed payload is malformed: " + what);
  };
  // First the whole layout, every split, then the one asked for.
  struct Part {
    std::string name;
    uint64_t classes = 0, format = 0, dims[4] = {}, numel = 1;
    bool has_labels = false;
    size_t labels_at = 0, pixels_at = 0;
  };
  std::vector<Part> parts(2);
  std::vector<bool> seen(2, false);
  Reader r{p, n};
  if (n < sizeof kPayloadMagic || std::memcmp(p, kPayloadMagic, sizeof kPayloadMagic) != 0)
    return bad("bad magic");
  r.take(sizeof kPayloadMagic);
  uint64_t count = 0;
  if (!r.u(count, 4) || count == 0 || count > 2) return bad("split count");
  for (uint64_t k = 0; k < count; ++k) {
    uint64_t kind = 0, name_len = 0, has_labels = 0;
    Part part;
    if (!r.u(kind, 1) || !r.u(part.format, 1) || kind > 1 || part.format > 1 || seen[kind])
      return bad("split kind");
    if (!r.u(name_len, 2) || !r.take(name_len)) return bad("name");
    part.name.assign(reinterpret_cast<const char*>(p + r.at - name_len), name_len);
    if (!r.u(part.classes, 4) || part.classes > 1000000) return bad("class count");
    for (auto& d : part.dims) {
      if (!r.u(d, 8) || d == 0 || d > (uint64_t{1} << 32)) return bad("shape");
      const auto numel = checked_mul(part.numel, d);
      if (!numel || *numel > kMaxPlaintextBytes) return bad("shape (too many elements)");
      part.numel = *numel;
    }
    if (!r.u(has_labels, 1) || has_labels > 1) return bad("labels flag");
    part.has_labels = has_labels == 1;
    part.labels_at = r.at;
    if (part.has_labels && !r.take(part.dims[0] * 4)) return bad("labels");
    part.pixels_at = r.at;
    if (!r.take(part.numel * (part.format == 0 ? 1 : 4))) return bad("pixels");
    seen[kind] = true;
    parts[kind] = std::move(part);
  }
  if (r.at != n) return bad("trailing bytes");
  const size_t want = split == Split::train ? 0 : 1;
  if (!seen[want])
    return Status::error(
        fmt::format("the sealed file holds no {} split", want == 0 ? "train" : "test"));

  const Part& part = parts[want];
  const uint64_t keep = limit > 0 ? std::min<uint64_t>(part.dims[0], limit) : part.dims[0];
  const uint64_t values = keep * (part.numel / part.dims[0]);
  Dataset d;
  d.name = "sealed:" + part.name;
  d.classes = static_cast<int>(part.classes);
  d.images = Tensor::uninitialized(
      Shape{static_cast<int64_t>(keep), static_cast<int64_t>(part.dims[1]),
            static_cast<int64_t>(part.dims[2]), static_cast<int64_t>(part.dims[3])});
  d.images.set_wipe_on_free();  // plaintext inside the trusted runtime
  for (uint64_t i = 0; part.has_labels && i < keep; ++i) {
    const uint32_t label = static_cast<uint32_t>(p[part.labels_at + 4 * i]) |
                           static_cast<uint32_t>(p[part.labels_at + 4 * i + 1]) << 8 |
                           static_cast<uint32_t>(p[part.labels_at + 4 * i + 2]) << 16 |
                           static_cast<uint32_t>(p[part.labels_at + 4 * i + 3]) << 24;
    if (label >= part.classes)
      return bad(fmt::format("label {} of example {} is not below the class count {}", label, i,
                             part.classes));
    d.labels.push_back(static_cast<int>(label));
  }
  float* dst = d.images.data();
  if (part.format == 0) {
    for (uint64_t i = 0; i < values; ++i)
      dst[i] = static_cast<float>(p[part.pixels_at + i]) / 255.0f;
  } else {
    std::memcpy(dst, p + part.pixels_at, values * 4);
    for (uint64_t i = 0; i < values; ++i)
      if (!std::isfinite(dst[i])) return bad("a pixel is not finite");
  }
  return d;
}

}  // namespace darknight::data
