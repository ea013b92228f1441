// CurveZMQ keys of worker links (docs/protocol.md, "Encrypted links"): the worker's key pair
// (`darknight worker --keygen DIR`, `--key DIR`) and the public keys the trusted side pins
// (`--worker-keys FILE`).
#pragma once

#include <map>
#include <string>

#include "protocol/error.h"

namespace darknight::accel::remote {

/// A CurveZMQ key pair, each key in Z85 (40 characters).
struct CurveKeys {
  std::string public_key, secret_key;
};

/// Whether this libzmq was built with CurveZMQ (libsodium).
bool curve_available();
/// Whether `key` is a Z85-encoded 32-byte key (40 characters of the Z85 alphabet).
bool valid_curve_key(const std::string& key);

/// Draws a key pair and writes DIR/public.key and DIR/secret.key (readable by the owner
/// only); refuses to overwrite existing keys.
Result<CurveKeys> generate_keys(const std::string& dir);
/// Reads DIR's key pair; the public key must be the secret key's.
Result<CurveKeys> load_keys(const std::string& dir);
/// Reads a --worker-keys file: one `ENDPOINT KEY` per line (blank lines and lines starting
/// with '#' skipped); the worker's public key for each endpoint.
Result<std::map<std::string, std::string>> read_worker_keys(const std::string& path);

}  // namespace darknight::accel::remote
