// Sealed data ingress, the data owner's side and the formats both sides agree on:
//  - the attestation report (what the enclave claims, signed by the platform key);
//  - the sealed dataset file (chunks under XChaCha20-Poly1305, keyed by X25519 between a
//    fresh key of the owner's and the enclave's key from a verified report);
//  - the plaintext layout inside it (splits of a Dataset, pixels as bytes when they are).
// Opening a sealed file needs the enclave's private key and happens only in the trusted
// runtime (trusted/enclave.h). Reports and sealed files are untrusted input: every field is
// validated. See docs/SECURITY.md "Attestation and sealed data".
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "data/datasets.h"
#include "protocol/error.h"

namespace darknight::data {

using Bytes32 = std::array<unsigned char, 32>;

std::string to_hex(const unsigned char* p, size_t n);
template <size_t N>
std::string to_hex(const std::array<unsigned char, N>& a) {
  return to_hex(a.data(), N);
}
/// Parses hex (upper or lower case) into bytes; `what` names it in the error.
Result<std::vector<unsigned char>> from_hex(const std::string& hex, const std::string& what);
/// Parses exactly 32 bytes of hex.
Result<Bytes32> from_hex32(const std::string& hex, const std::string& what);

// ---- Attestation report --------------------------------------------------------------

/// What the (simulated) enclave claims about itself, signed by the platform key.
struct AttestationReport {
  Bytes32 measurement{};             ///< hash of the trusted runtime's code identity
  Bytes32 public_key{};              ///< the enclave's X25519 key: data is sealed to it
  Bytes32 platform_key{};            ///< the Ed25519 key that signed (must match the pinned one)
  int64_t timestamp = 0;             ///< seconds since the Unix epoch, when the report was made
  std::vector<unsigned char> nonce;  ///< the data owner's freshness nonce (may be empty)
  std::array<unsigned char, 64> signature{};  ///< Ed25519 over signed_message()
};

/// The `format` field of every report.
inline constexpr const char* kReportFormat = "darknight-attestation-report/1";

/// The bytes the platform signs: "DarKnight attestation report v1\n" followed by the
/// report's JSON without `signature`, keys sorted, no whitespace (nlohmann::json::dump()).
std::string report_signed_message(const AttestationReport& r);
/// The report as JSON text: format, tee ("simulated"), measurement, public_key,
/// platform_key, timestamp, nonce, signature (byte strings as lowercase hex).
std::string report_to_json(const AttestationReport& r);
/// Parses a report strictly (every field present, no other field, right lengths). Does not
/// check the signature.
Result<AttestationReport> parse_report(const std::string& json_text);

/// What the data owner checks a report against.
struct ReportExpectations {
  Bytes32 platform_key{};  ///< pinned out of band (`darknight platform-key`)
  Bytes32 measurement{};   ///< the enclave the owner is willing to trust
  bool check_nonce = false;
  std::vector<unsigned char> nonce;
};

/// Parses and verifies a report: signed by the pinned platform key (a report signed by
/// the key it carries, or any other, is refused), then the measurement, then the nonce.
/// Each failure has its own message.
Result<AttestationReport> verify_report(const std::string& json_text, const ReportExpectations& e);

// ---- Sealed dataset file -------------------------------------------------------------
//
//   header  (kSealedHeaderBytes): magic "DKSEALD1", dataset id (16 random bytes),
//           measurement, enclave public key, owner's ephemeral X25519 public key (32 each),
//           chunk count, plaintext bytes per chunk, plaintext bytes (u64 little-endian)
//   chunks  (chunk count of them, in order): dataset id (16), chunk index (u64),
//           XChaCha20-Poly1305 ciphertext of the chunk (its length + 16), nonce = dataset
//           id || index (distinct per chunk; every file has its own key); associated
//           data = dataset id || index || chunk count || BLAKE2b-256(header).
//   key     crypto_kx session key of (owner's ephemeral key, enclave key), the owner's tx =
//           the enclave's rx, through crypto_kdf_derive_from_key(id 1, "DKSEALD1").
//
// The dataset id and index in front of each chunk are there to name what went wrong (a
// chunk of another file, a duplicate, a reordering); what protects the file is that the
// associated data holds the values the reader expects, not the ones written there.

inline constexpr size_t kSealedHeaderBytes = 8 + 16 + 32 * 3 + 8 * 3;
inline constexpr size_t kChunkFrameBytes = 16 + 8;  ///< id and index before each ciphertext
inline constexpr size_t kChunkTagBytes = 16;
inline constexpr int64_t kDefaultChunkBytes = int64_t{1} << 20;

struct SealedHeader {
  std::array<unsigned char, 16> dataset_id{};
  Bytes32 measurement{};
  Bytes32 enclave_public_key{};
  Bytes32 ephemeral_public_key{};
  uint64_t chunk_count = 0;
  uint64_t chunk_bytes = 0;      ///< plaintext bytes per chunk (the last may be shorter)
  uint64_t plaintext_bytes = 0;  ///< of the whole payload
  std::array<unsigned char, kSealedHeaderBytes> raw{};  ///< as read or written

  /// Plaintext bytes of chunk i.
  uint64_t plain_size(uint64_t i) const;
  /// Offset of chunk i's frame in the file.
  uint64_t frame_offset(uint64_t i) const;
  /// The file's size as the header describes it.
  uint64_t file_size() const;
  /// Associated data of chunk i.
  std::vector<unsigned char> associated_data(uint64_t i) const;
  /// XChaCha20 nonce of chunk i.
  std::array<unsigned char, 24> nonce(uint64_t i) const;
};

/// The file's AEAD key from a crypto_kx session key (32 bytes each): the owner's tx, which
/// is the enclave's rx.
void file_key_from_session(const unsigned char* session_key, unsigned char* file_key);

/// Parses and checks the header (magic, consistent sizes). Does not check the enclave.
Result<SealedHeader> parse_sealed_header(const unsigned char* p, size_t n);

/// Splits of one dataset to seal.
struct SealInput {
  Split split = Split::train;
  const Dataset* data = nullptr;
};

/// The data owner's side: seals `inputs` for the enclave of `report`, which the caller
/// has verified (verify_report), into `path` (written to a temporary file, then renamed).
Status seal_datasets(const std::vector<SealInput>& inputs, const AttestationReport& report,
                     const std::string& path, int64_t chunk_bytes = kDefaultChunkBytes);

/// The plaintext payload: "DKDATA01", the split count, then per split its kind, pixel
/// format (u8: value*255 exactly, else f32), name, classes, shape, labels, pixels.
std::vector<unsigned char> encode_payload(const std::vector<SealInput>& inputs);
/// Decodes `split` of an (authenticated) payload into a dataset, keeping the first `limit`
/// examples (0: all). Validates every length, shape and label.
Result<Dataset> decode_payload(const unsigned char* p, size_t n, Split split, int64_t limit);

}  // namespace darknight::data
