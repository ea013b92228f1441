// `darknight worker`: serves one Backend to a trusted runtime in another process or on
// another host (docs/protocol.md). One session at a time: a client's hello ends the previous
// session and frees its buffers and weights. A bad request gets an error reply and changes
// nothing; the worker keeps serving.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "accel/backend.h"

namespace darknight::accel::remote {

struct Message;

struct ServerOptions {
  /// Write every tensor received (as the operations consume it) to this directory as .npy,
  /// with index.jsonl (docs/protocol.md "Capture"); empty: no capture.
  std::string capture_dir;
  /// Memory the clients may allocate (buffers and weights), bytes; 0: half the machine's.
  int64_t max_bytes = 0;
  /// KIND:RATE[:SEED] faults to inject into the linear operations (faults/faults.h).
  std::string faults;
  /// Log each session's start and end on stderr.
  bool verbose = true;
  /// The largest frame accepted or sent (wire.h kMaxFrameBytes; smaller in tests): a client
  /// that sends a larger one is disconnected by ZeroMQ before it is read.
  int64_t max_frame_bytes = 0;  ///< 0: kMaxFrameBytes
  /// The worker's CurveZMQ secret key (Z85): only encrypted links, from clients that pinned
  /// the matching public key, are served. Empty: plain links.
  std::string curve_secret_key;
};

class Server {
 public:
  Server(Backend& be, ServerOptions opts);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  /// Binds tcp://HOST:PORT or ipc://PATH (tcp port 0 or *: a free port); returns the
  /// endpoint bound.
  std::string bind(const std::string& endpoint);
  /// Serves requests until `stop` is set (checked every 100 ms).
  void serve(const std::atomic<bool>& stop);

  int64_t requests() const;
  int64_t errors() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  /// Handles one request. Never throws: errors become replies.
  Message handle(Message& req, const std::string& client);
};

}  // namespace darknight::accel::remote
