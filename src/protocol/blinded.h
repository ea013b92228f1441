// The only tensor type the accelerator accepts as data: a blinded mixture.
//
// Trust boundary in the types (docs/architecture.md): a BlindedT can only be made with a
// BlindingKey, and a BlindingKey can only be made by the trusted encoders and by the
// explicitly named unprotected baseline path (src/baselines/unprotected.h). Passing a plain
// Tensor where the accelerator expects data is therefore a compile error.
#pragma once

#include "protocol/tensor.h"

namespace darknight {

namespace trusted {
class Encoder;
class TrainingEncoder;
class SlalomEncoder;
}  // namespace trusted
namespace baselines {
struct Unprotected;
}  // namespace baselines

/// Permission to wrap a tensor as blinded. Constructible only by its friends.
class BlindingKey {
 private:
  BlindingKey() = default;
  friend class trusted::Encoder;
  friend class trusted::TrainingEncoder;
  friend class trusted::SlalomEncoder;
  friend struct baselines::Unprotected;
};

template <typename T>
class BlindedT {
 public:
  using value_type = T;
  static constexpr DType kDType = dtype_of<T>();

  BlindedT(BlindingKey, TensorT<T>&& mixtures) : t_(std::move(mixtures)) {}
  BlindedT(BlindedT&&) noexcept = default;
  BlindedT& operator=(BlindedT&&) noexcept = default;

  const Shape& shape() const { return t_.shape(); }
  int64_t numel() const { return t_.numel(); }
  size_t bytes() const { return t_.bytes(); }
  DType dtype() const { return kDType; }
  const T* data() const { return t_.data(); }
  std::span<const T> span() const { return t_.span(); }

 private:
  TensorT<T> t_;
};

using Blinded = BlindedT<float>;
using Blinded64 = BlindedT<double>;

}  // namespace darknight
