// Moving the DarKnight engine's mixtures to the accelerator and their results back, piece by
// piece as the codec streams them, every copy counted in RunStats; and the overlapped path's
// two download areas. Mixtures are BlindedT (protocol/blinded.h): nothing else goes out.
#pragma once

#include <array>

#include "accel/backend.h"
#include "trusted/codec.h"
#include "trusted/runtime.h"

namespace darknight::trusted {

class Transfer {
 public:
  explicit Transfer(accel::Backend& backend) : be_(backend) {}

  /// Hands `rows` ([n, len]: elements [e0, e0 + len) of items first .. first + n - 1, of
  /// `item` elements each in `dst`) to the backend and counts them. The copy may still run
  /// when this returns, unless the backend's uploads copy (Backend::upload_copies).
  template <typename T>
  void send(const BlindedT<T>& rows, accel::Buffer& dst, int64_t item, int64_t first, int64_t e0,
            RunStats& stats);
  /// A MixtureSink that sends to `dst` (items of `item` elements) and waits for the copy,
  /// adding its time to `seconds`.
  template <typename T>
  MixtureSink<T> uploader(accel::Buffer& dst, int64_t item, double& seconds, RunStats& stats);
  /// An OutputFetch from `src` (items of `item` elements), timed likewise.
  template <typename T>
  OutputFetch<T> downloader(const accel::Buffer& src, int64_t item, double& seconds,
                            RunStats& stats);
  /// Elements [offset, offset + numel) of `src` (of element type T) as f64, timed.
  template <typename T>
  Tensor64 fetch_f64(const accel::Buffer& src, int64_t offset, int64_t numel, double& seconds,
                     RunStats& stats);
  /// [n, len]: elements [e0, e0 + len) of each of the `n` blocks of `block` elements that
  /// `src` holds, timed.
  template <typename T>
  TensorT<T> fetch_blocks(const accel::Buffer& src, int n, int64_t block, int64_t e0, int64_t len,
                          double& seconds, RunStats& stats);

  /// Download area `i` (0 or 1) of at least `numel` elements: trusted memory, counted in
  /// the engine's scratch_bytes, grown when a layer needs more and kept (fresh ones for
  /// each chunk would cost a page fault per 4 KiB).
  template <typename T>
  TensorT<T>& stage(int i, int64_t numel);

 private:
  accel::Backend& be_;
  std::array<Tensor, 2> stage32_;
  std::array<Tensor64, 2> stage64_;
};

}  // namespace darknight::trusted
