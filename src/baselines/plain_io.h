// Moving plaintext to and from an accelerator on the unprotected path: for the `plain`
// baseline, the accelerator's own conformance tests and its benchmarks. Never for the
// trusted runtime (see unprotected.h).
#pragma once

#include <deque>

#include "accel/backend.h"
#include "baselines/unprotected.h"

namespace darknight::baselines {

class PlainIo {
 public:
  /// Buffers made here hold elements of type `dtype`; f32 host tensors are converted.
  PlainIo(accel::Backend& backend, DType dtype) : be_(backend), dt_(dtype) {}

  accel::Backend& backend() { return be_; }
  DType dtype() const { return dt_; }

  /// A new buffer holding `t` (the upload is complete at the next sync()).
  accel::BufferPtr put(const Tensor& t) {
    accel::BufferPtr b = be_.alloc(t.shape(), dt_);
    put(t, *b);
    return b;
  }
  /// Copies `t` into `dst` (a buffer of this dtype; complete at the next sync()).
  void put(const Tensor& t, accel::Buffer& dst) {
    if (dt_ == DType::f32) {
      keep32_.push_back(Unprotected::expose(t.clone()));
      be_.upload(keep32_.back(), dst);
    } else {
      keep64_.push_back(Unprotected::expose(t.cast<double>()));
      be_.upload(keep64_.back(), dst);
    }
  }
  accel::BufferPtr make(const Shape& s) { return be_.alloc(s, dt_); }
  /// Waits for everything submitted, then returns the buffer's contents as f32.
  Tensor get(const accel::Buffer& b) {
    if (b.dtype() == DType::f32) {
      Tensor out = Tensor::uninitialized(b.shape());
      be_.download(b, out);
      sync();
      return out;
    }
    auto t = Tensor64::uninitialized(b.shape());
    be_.download(b, t);
    sync();
    return t.cast<float>();
  }
  /// Waits for everything submitted; the host copies of uploads are then released.
  void sync() {
    be_.wait();
    keep32_.clear();
    keep64_.clear();
  }

 private:
  accel::Backend& be_;
  DType dt_;
  std::deque<Blinded> keep32_;  // uploads stay alive until the next wait()
  std::deque<Blinded64> keep64_;
};

}  // namespace darknight::baselines
