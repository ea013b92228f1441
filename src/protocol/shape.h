// Tensor shapes: up to kMaxRank dimensions, NCHW for images.
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>

namespace darknight {

class Shape {
 public:
  static constexpr int kMaxRank = 6;
  /// The largest element count a shape may describe (2^40, a few TiB of floats): anything
  /// larger is rejected as absurd before any allocation is attempted.
  static constexpr int64_t kMaxElements = int64_t{1} << 40;

  Shape() = default;
  /// Throws Error when a dimension is negative, the rank exceeds kMaxRank, or the element
  /// count exceeds kMaxElements.
  Shape(std::initializer_list<int64_t> dims);
  explicit Shape(std::span<const int64_t> dims);

  int rank() const { return rank_; }
  int64_t operator[](int i) const { return dims_[static_cast<size_t>(i)]; }
  int64_t numel() const;
  std::span<const int64_t> dims() const { return {dims_.data(), static_cast<size_t>(rank_)}; }

  /// NCHW accessors; require rank 4.
  int64_t n() const { return dim4(0); }
  int64_t c() const { return dim4(1); }
  int64_t h() const { return dim4(2); }
  int64_t w() const { return dim4(3); }

  /// Elements of one item along the first dimension (C*H*W for NCHW).
  int64_t item_numel() const;
  /// The same shape with the first dimension replaced.
  Shape with_batch(int64_t n) const;

  bool operator==(const Shape& o) const;
  bool operator!=(const Shape& o) const { return !(*this == o); }
  std::string str() const;

 private:
  int64_t dim4(int i) const;
  void validate() const;
  std::array<int64_t, kMaxRank> dims_{};
  int rank_ = 0;
};

}  // namespace darknight
