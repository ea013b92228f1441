// The only tensor type the accelerator accepts as data: a blinded mixture.
//
// Trust boundary in the types (docs/architecture.md): a BlindedT is made only by a
// BlindingFactory, and only a class derived from BlindingFactory can use it. This layer
// names no layer above it: deriving is how a class declares that it makes accelerator
// data, and only three do: the codec's encoders (trusted/codec.h), Slalom's encoder
// (baselines/slalom.h), and the explicitly named unprotected baseline path
// (baselines/unprotected.h). Passing a plain Tensor where the accelerator expects data is
// therefore a compile error.
#pragma once

#include "protocol/tensor.h"

namespace darknight {

class BlindingFactory;

template <typename T>
class BlindedT {
 public:
  using value_type = T;
  static constexpr DType kDType = dtype_of<T>();

  BlindedT(BlindedT&&) noexcept = default;
  BlindedT& operator=(BlindedT&&) noexcept = default;

  const Shape& shape() const { return t_.shape(); }
  int64_t numel() const { return t_.numel(); }
  size_t bytes() const { return t_.bytes(); }
  DType dtype() const { return kDType; }
  const T* data() const { return t_.data(); }
  std::span<const T> span() const { return t_.span(); }

 private:
  friend class BlindingFactory;
  explicit BlindedT(TensorT<T>&& mixtures) : t_(std::move(mixtures)) {}
  TensorT<T> t_;
};

using Blinded = BlindedT<float>;
using Blinded64 = BlindedT<double>;

/// The one maker of BlindedT, for the classes derived from it (see the top of this file).
class BlindingFactory {
 protected:
  BlindingFactory() = default;
  ~BlindingFactory() = default;
  /// Wraps `mixtures`, which the derived class has blinded (or, on the unprotected path,
  /// says by its name that it has not), as accelerator data.
  template <typename T>
  static BlindedT<T> make_blinded(TensorT<T>&& mixtures) {
    return BlindedT<T>(std::move(mixtures));
  }
};

}  // namespace darknight
