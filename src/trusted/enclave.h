// The (simulated) enclave's identity and keys: its measurement, its X25519 key pair kept
// at rest under a sealing key bound to the measurement, attestation reports signed by the
// platform key, and opening sealed datasets, which are decrypted only here.
//
// Simulation (docs/SECURITY.md "Attestation and sealed data"): the measurement is
// BLAKE2b-256 of this executable (/proc/self/exe), as MRENCLAVE hashes an enclave's pages;
// the platform is a key file under DARKNIGHT_HOME (default ~/.darknight) holding an Ed25519
// signing key (for SGX, the quoting enclave's attestation key) and a sealing secret (for
// SGX, the CPU's root seal key that EGETKEY derives from). Real SGX/TDX attestation would
// replace Platform and measure_executable(); the report and file formats stay.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "data/sealed_file.h"
#include "protocol/storage.h"

namespace darknight::trusted {

using data::Bytes32;

/// Keys and decrypted data: secret storage (protocol/storage.h), wiped when freed, outside
/// the trusted memory meter.
using SecretBytes = SecretBuffer<unsigned char>;

/// DARKNIGHT_HOME, or ~/.darknight.
std::string default_home();

/// BLAKE2b-256 of the running executable, computed once per process. Any rebuild is a
/// different enclave: data sealed for one build cannot be opened by another.
const Bytes32& measure_executable();

/// The simulated platform: an Ed25519 signing key and a sealing secret, in
/// HOME/platform.key (mode 0600, created on first use). Refuses a key file that others
/// can read.
class Platform {
 public:
  /// Loads or creates the key file; throws Error when it is unreadable or malformed.
  explicit Platform(const std::string& home);
  ~Platform() = default;
  Platform(const Platform&) = delete;
  Platform& operator=(const Platform&) = delete;
  Platform(Platform&&) = delete;
  Platform& operator=(Platform&&) = delete;

  /// What the data owner pins.
  const Bytes32& public_key() const { return public_key_; }
  /// Ed25519 signature of `msg`.
  std::array<unsigned char, 64> sign(const std::string& msg) const;
  /// The sealing key of an enclave: keyed BLAKE2b-256 of the measurement under the
  /// platform's sealing secret (as SGX's EGETKEY with the MRENCLAVE policy).
  void sealing_key(const Bytes32& measurement, unsigned char out[32]) const;

 private:
  Bytes32 public_key_{};
  SecretBytes signing_key_{64, Metered::no};     ///< crypto_sign secret key (seed and public key)
  SecretBytes sealing_secret_{32, Metered::no};  ///< root of every enclave's sealing key
};

/// The enclave of one measurement on one platform.
class Enclave {
 public:
  /// The enclave of this executable. Its key pair is loaded from, or created and sealed
  /// into, HOME/enclave-<measurement>.key. Throws Error when that file cannot be
  /// unsealed (another platform key, or altered).
  explicit Enclave(const std::string& home = default_home());
  /// For tests: an enclave with the given measurement (another build of the runtime).
  Enclave(const std::string& home, const Bytes32& measurement);
  ~Enclave() = default;
  Enclave(const Enclave&) = delete;
  Enclave& operator=(const Enclave&) = delete;
  Enclave(Enclave&&) = delete;
  Enclave& operator=(Enclave&&) = delete;

  const Bytes32& measurement() const { return measurement_; }
  const Bytes32& public_key() const { return public_key_; }
  const Bytes32& platform_key() const { return platform_.public_key(); }

  /// A report of this enclave, now, with the data owner's nonce, signed by the platform.
  data::AttestationReport report(const std::vector<unsigned char>& nonce) const;

  /// Opens a file sealed by `data::seal_datasets`: checks that it was sealed for this
  /// enclave, reads and authenticates every chunk, in order, and only then decodes
  /// `split`, keeping its first `limit` examples (0: all). Any failure is an error naming
  /// what is wrong (another enclave, truncated, a chunk of another file, duplicated,
  /// reordered or altered); no example of a file that fails is used.
  Result<data::Dataset> open_sealed(const std::string& path, data::Split split,
                                    int64_t limit = 0) const;

 private:
  void load_or_create_key(const std::string& home);

  Bytes32 measurement_{};
  Platform platform_;
  Bytes32 public_key_{};
  SecretBytes secret_key_{32, Metered::no};  ///< X25519
};

}  // namespace darknight::trusted
