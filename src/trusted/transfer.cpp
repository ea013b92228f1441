#include "trusted/transfer.h"

namespace darknight::trusted {

template <typename T>
void Transfer::send(const BlindedT<T>& rows, accel::Buffer& dst, int64_t item, int64_t first,
                    int64_t e0, RunStats& stats) {
  const int64_t n = rows.shape()[0], len = rows.shape()[1];
  if (len == item) {
    be_.upload(rows, 0, n * len, dst, first * item);
  } else {
    for (int64_t r = 0; r < n; ++r) be_.upload(rows, r * len, len, dst, (first + r) * item + e0);
  }
  stats.bytes_to_accelerator += static_cast<int64_t>(rows.bytes());
}

template <typename T>
MixtureSink<T> Transfer::uploader(accel::Buffer& dst, int64_t item, double& seconds,
                                  RunStats& stats) {
  return [this, &dst, item, &seconds, &stats](const BlindedT<T>& rows, int64_t first, int64_t e0) {
    const double t0 = now();
    send(rows, dst, item, first, e0, stats);
    be_.wait();  // `rows` is freed when this returns
    seconds += now() - t0;
  };
}

template <typename T>
OutputFetch<T> Transfer::downloader(const accel::Buffer& src, int64_t item, double& seconds,
                                    RunStats& stats) {
  return [this, &src, item, &seconds, &stats](TensorT<T>& rows, int64_t first, int64_t e0) {
    const double t0 = now();
    const int64_t n = rows.shape()[0], len = rows.shape()[1];
    if (len == item) {
      be_.download(src, first * item, n * len, rows, 0);
    } else {
      for (int64_t r = 0; r < n; ++r)
        be_.download(src, (first + r) * item + e0, len, rows, r * len);
    }
    be_.wait();
    stats.bytes_from_accelerator += static_cast<int64_t>(rows.bytes());
    seconds += now() - t0;
  };
}

template <typename T>
Tensor64 Transfer::fetch_f64(const accel::Buffer& src, int64_t offset, int64_t numel,
                             double& seconds, RunStats& stats) {
  const double t0 = now();
  auto piece = TensorT<T>::uninitialized(Shape{numel});
  be_.download(src, offset, numel, piece, 0);
  be_.wait();
  stats.bytes_from_accelerator += static_cast<int64_t>(piece.bytes());
  seconds += now() - t0;
  return piece.template cast<double>();
}

template <typename T>
TensorT<T> Transfer::fetch_blocks(const accel::Buffer& src, int n, int64_t block, int64_t e0,
                                  int64_t len, double& seconds, RunStats& stats) {
  const double t0 = now();
  auto rows = TensorT<T>::uninitialized(Shape{n, len});
  for (int j = 0; j < n; ++j) be_.download(src, j * block + e0, len, rows, j * len);
  be_.wait();
  stats.bytes_from_accelerator += static_cast<int64_t>(rows.bytes());
  seconds += now() - t0;
  return rows;
}

template <typename T>
TensorT<T>& Transfer::stage(int i, int64_t numel) {
  TensorT<T>& s = [&]() -> TensorT<T>& {
    if constexpr (std::is_same_v<T, float>)
      return stage32_[static_cast<size_t>(i)];
    else
      return stage64_[static_cast<size_t>(i)];
  }();
  if (s.numel() < numel) {
    s = TensorT<T>();
    s = TensorT<T>::uninitialized(Shape{numel});
  }
  return s;
}

#define DK_INSTANTIATE(T)                                                                     \
  template void Transfer::send(const BlindedT<T>&, accel::Buffer&, int64_t, int64_t, int64_t, \
                               RunStats&);                                                    \
  template MixtureSink<T> Transfer::uploader<T>(accel::Buffer&, int64_t, double&, RunStats&); \
  template OutputFetch<T> Transfer::downloader<T>(const accel::Buffer&, int64_t, double&,     \
                                                  RunStats&);                                 \
  template Tensor64 Transfer::fetch_f64<T>(const accel::Buffer&, int64_t, int64_t, double&,   \
                                           RunStats&);                                        \
  template TensorT<T> Transfer::fetch_blocks<T>(const accel::Buffer&, int, int64_t, int64_t,  \
                                                int64_t, double&, RunStats&);                 \
  template TensorT<T>& Transfer::stage<T>(int, int64_t);
DK_INSTANTIATE(float)
DK_INSTANTIATE(double)
#undef DK_INSTANTIATE

}  // namespace darknight::trusted
