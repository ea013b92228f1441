#include "backends/remote/curve.h"

#include <fmt/format.h>
#include <sys/stat.h>
#include <zmq.h>

#include <filesystem>
#include <fstream>
#include <sstream>

namespace darknight::accel::remote {
namespace {

constexpr size_t kKeyChars = 40;

Result<std::string> read_key(const std::filesystem::path& p) {
  std::ifstream f(p);
  if (!f) return Status::error("cannot read " + p.string());
  std::string key;
  f >> key;
  if (!valid_curve_key(key))
    return Status::error(p.string() + ": not a CurveZMQ key (40 Z85 characters)");
  return key;
}

}  // namespace

bool curve_available() {
  return zmq_has("curve") != 0;
}

bool valid_curve_key(const std::string& key) {
  static const std::string z85 =
      "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";
  uint8_t bytes[32];
  return key.size() == kKeyChars && key.find_first_not_of(z85) == std::string::npos &&
         zmq_z85_decode(bytes, key.c_str()) != nullptr;
}

Result<CurveKeys> generate_keys(const std::string& dir) {
  if (!curve_available()) return Status::error("this libzmq has no CurveZMQ (libsodium)");
  const std::filesystem::path d(dir), pub = d / "public.key", sec = d / "secret.key";
  if (std::filesystem::exists(pub) || std::filesystem::exists(sec))
    return Status::error(fmt::format("{} already holds keys: not overwritten", dir));
  std::error_code ec;
  std::filesystem::create_directories(d, ec);
  char p[kKeyChars + 1], s[kKeyChars + 1];
  if (zmq_curve_keypair(p, s) != 0) return Status::error("cannot draw a CurveZMQ key pair");
  {
    // The secret key: created readable by the owner only, before anything is written.
    const mode_t old = umask(077);
    std::ofstream f(sec);
    umask(old);
    f << s << '\n';
    if (!f) return Status::error("cannot write " + sec.string());
  }
  std::ofstream f(pub);
  f << p << '\n';
  if (!f) return Status::error("cannot write " + pub.string());
  return CurveKeys{p, s};
}

Result<CurveKeys> load_keys(const std::string& dir) {
  const std::filesystem::path d(dir);
  auto pub = read_key(d / "public.key");
  if (!pub.ok()) return pub.status();
  auto sec = read_key(d / "secret.key");
  if (!sec.ok()) return sec.status();
  char derived[kKeyChars + 1];
  if (zmq_curve_public(derived, sec.value().c_str()) != 0 || pub.value() != derived)
    return Status::error(dir + ": public.key is not secret.key's public key");
  return CurveKeys{pub.value(), sec.value()};
}

Result<std::map<std::string, std::string>> read_worker_keys(const std::string& path) {
  std::ifstream f(path);
  if (!f) return Status::error("cannot read " + path);
  std::map<std::string, std::string> keys;
  std::string line;
  for (int n = 1; std::getline(f, line); ++n) {
    std::istringstream in(line);
    std::string endpoint, key, extra;
    if (!(in >> endpoint) || endpoint[0] == '#') continue;
    if (!(in >> key) || (in >> extra) || !valid_curve_key(key))
      return Status::error(fmt::format(
          "{} line {}: expected `ENDPOINT KEY` (the worker's 40-character public key)", path, n));
    if (!keys.emplace(endpoint, key).second)
      return Status::error(fmt::format("{} line {}: {} is listed twice", path, n, endpoint));
  }
  return keys;
}

}  // namespace darknight::accel::remote
