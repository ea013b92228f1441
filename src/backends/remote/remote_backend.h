// The accelerator in another process or on another host: a Backend whose calls are
// messages to `darknight worker` (docs/protocol.md). Calls that return nothing are sent
// without waiting; wait() and the calls that return data collect the replies, in order,
// and throw the first error a reply carries. A worker that sends no reply within the
// timeout, or whose connection drops, makes the call throw Error; the backend is then
// unusable (the worker's buffers and weights are gone with its session). Its buffers and
// weights tell the worker when they are freed, so they must not outlive it.
//
// Every reply is untrusted input: its form (frames, header, sequence number, type, argument
// counts) and its sizes are checked against the request before anything is used, and
// frames over the size limit are refused by the socket itself. A reply that breaks the
// protocol (or a result of the wrong shape: Backend::on_bad_result) throws Error naming the
// worker and what was wrong, and the backend stops using the connection, as for a dead
// worker.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "accel/backend.h"

namespace darknight::accel::remote {

struct Message;

struct RemoteOptions {
  std::string endpoint;        ///< tcp://HOST:PORT or ipc://PATH
  double timeout_s = 300;      ///< longest wait for one reply
  int mixtures_per_batch = 0;  ///< K + 1 (+ 1 with the redundant mixture); for the capture
  /// The largest frame sent or accepted (wire.h kMaxFrameBytes; smaller in tests).
  int64_t max_frame_bytes = 0;  ///< 0: kMaxFrameBytes
  /// The worker's CurveZMQ public key (Z85): the link is then encrypted and authenticated,
  /// and only the worker holding the matching secret key can answer. Empty: a plain link.
  std::string server_key = {};
};

class RemoteBackend final : public Backend {
 public:
  /// Connects and greets the worker; throws Error when it does not answer.
  explicit RemoteBackend(const RemoteOptions& opts);
  ~RemoteBackend() override;
  std::string name() const override { return "remote"; }
  std::string describe() const override;
  void wait() override;
  bool upload_copies() const override { return false; }  // zero-copy: sent at wait()
  void set_layer(int64_t layer) override { layer_ = layer; }

  /// Frees a worker-side handle (called by the buffers' and weights' destructors).
  void release(uint64_t id) noexcept;

  /// What the worker says its `--inject-faults` did in this session: linear operations
  /// seen and faults injected (0, 0 without injection). The worker's word, not verified.
  struct WorkerFaults {
    int64_t operations = 0, injected = 0;
  };
  WorkerFaults worker_faults();

 protected:
  void on_bad_result(const std::string& why) override;
  BufferPtr do_alloc(const Shape& shape, DType dtype) override;
  BufferPtr do_view(Buffer& base, const Shape& shape, int64_t offset) override;
  void do_upload(const void* src, Buffer& dst, size_t offset, size_t bytes) override;
  void do_download(const Buffer& src, size_t offset, size_t bytes, void* dst) override;
  WeightsPtr do_create_weights(const Tensor& weights) override;
  Tensor do_read_weights(const Weights& w) override;
  void do_accumulate_grad(Weights& w, const Buffer& grad, double scale) override;
  void do_accumulate_grad_host(Weights& w, const double* piece, int64_t offset,
                               int64_t count) override;
  void do_sgd_step(Weights& w, const SgdParams& p) override;
  Tensor do_read_momentum(const Weights& w) override;
  void do_write_momentum(Weights& w, const Tensor& momentum) override;
  Tensor64 do_read_grad(const Weights& w) override;
  void do_conv2d_forward(const ConvDesc& d, const Buffer& src, const Weights& w,
                         Buffer& dst) override;
  void do_conv2d_backward_data(const ConvDesc& d, const Buffer& diff_dst, const Weights& w,
                               Buffer& diff_src) override;
  void do_conv2d_backward_weights(const ConvDesc& d, const Buffer& src, const Buffer& diff_dst,
                                  Buffer& diff_weights, int64_t parts) override;
  void do_dense_forward(const DenseDesc& d, const Buffer& src, const Weights& w,
                        Buffer& dst) override;
  void do_dense_backward_data(const DenseDesc& d, const Buffer& diff_dst, const Weights& w,
                              Buffer& diff_src) override;
  void do_dense_backward_weights(const DenseDesc& d, const Buffer& src, const Buffer& diff_dst,
                                 Buffer& diff_weights, int64_t parts) override;

 private:
  struct Impl;
  /// Sends a request and returns its reply (throws Error on an error reply).
  Message call(Message req);
  void post(Message req);
  /// Collects replies up to request `seq`; throws the first error among them.
  Message collect(uint64_t seq);
  /// The next reply (in order), or throws: the worker gone, silent, or out of protocol.
  Message receive();
  /// Checks reply r against the request it answers (the oldest pending); keeps the first
  /// error reply's message in `error`; copies a download's payload unless an error came.
  void check_reply(const Message& r, std::optional<std::string>& error);
  /// Marks the connection broken and throws: the worker's reply broke the protocol.
  [[noreturn]] void violation(const std::string& what);
  /// A read_* reply's tensor (present flag, shape, elements), checked.
  template <typename T>
  TensorT<T> reply_tensor(Message& r, const char* op);
  void op(int type, std::vector<int64_t> ints);
  std::unique_ptr<Impl> impl_;
  int64_t layer_ = -1;
};

}  // namespace darknight::accel::remote
