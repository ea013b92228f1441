// Reusable accelerator memory for calls of varying shapes: one allocation per slot, grown
// when a call needs more, handed out as views of the shape asked for.
#pragma once

#include <vector>

#include "accel/backend.h"

namespace darknight::accel {

class BufferArena {
 public:
  BufferArena(Backend& backend, DType dtype) : be_(backend), dtype_(dtype) {}

  /// A buffer of `shape` in slot `slot`; valid until the next get() of the same slot.
  Buffer& get(int slot, const Shape& shape) {
    const auto i = static_cast<size_t>(slot);
    if (bases_.size() <= i) bases_.resize(i + 1), views_.resize(i + 1);
    if (!bases_[i] || bases_[i]->shape().numel() < shape.numel()) {
      views_[i].reset();
      bases_[i].reset();  // free before allocating the larger one
      bases_[i] = be_.alloc(Shape{shape.numel()}, dtype_);
    }
    views_[i] = be_.view(*bases_[i], shape);
    return *views_[i];
  }
  /// The buffer the last get() of `slot` returned.
  Buffer& current(int slot) {
    DK_CHECK(
        slot >= 0 && static_cast<size_t>(slot) < views_.size() && views_[static_cast<size_t>(slot)],
        "buffer arena: slot {} is empty", slot);
    return *views_[static_cast<size_t>(slot)];
  }

 private:
  Backend& be_;
  DType dtype_;
  std::vector<BufferPtr> bases_, views_;
};

}  // namespace darknight::accel
