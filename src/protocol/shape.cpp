#include "protocol/shape.h"

#include <algorithm>

#include "protocol/error.h"

namespace darknight {

Shape::Shape(std::initializer_list<int64_t> dims) : Shape(std::span<const int64_t>(dims)) {}

Shape::Shape(std::span<const int64_t> dims) {
  DK_CHECK(dims.size() <= kMaxRank, "shape rank {} exceeds the maximum {}", dims.size(), kMaxRank);
  rank_ = static_cast<int>(dims.size());
  for (size_t i = 0; i < dims.size(); ++i) dims_[i] = dims[i];
  validate();
}

void Shape::validate() const {
  // The product of the non-zero dimensions is capped, not only the element count: a zero
  // dimension must not let the others overflow item_numel() or a stride ([0, 2^62, 2^34]).
  int64_t n = 1;
  for (int i = 0; i < rank_; ++i) {
    const int64_t d = dims_[static_cast<size_t>(i)];
    DK_CHECK(d >= 0, "negative dimension {} in shape {}", d, str());
    if (d == 0) continue;
    if (n > kMaxElements / d) {
      const bool empty = std::count(dims_.begin(), dims_.begin() + rank_, 0) > 0;
      throw Error(fmt::format("shape {} has more than {} elements{}", str(), kMaxElements,
                              empty ? " (not counting its zero dimensions)" : ""));
    }
    n *= d;
  }
}

int64_t Shape::numel() const {
  int64_t n = 1;
  for (int i = 0; i < rank_; ++i) n *= dims_[static_cast<size_t>(i)];
  return n;
}

int64_t Shape::item_numel() const {
  DK_CHECK(rank_ >= 1, "item_numel of a scalar shape");
  int64_t n = 1;
  for (int i = 1; i < rank_; ++i) n *= dims_[static_cast<size_t>(i)];
  return n;
}

Shape Shape::with_batch(int64_t n) const {
  DK_CHECK(rank_ >= 1, "with_batch of a scalar shape");
  Shape s = *this;
  s.dims_[0] = n;
  s.validate();
  return s;
}

int64_t Shape::dim4(int i) const {
  DK_CHECK(rank_ == 4, "NCHW accessor on shape {} of rank {}", str(), rank_);
  return dims_[static_cast<size_t>(i)];
}

bool Shape::operator==(const Shape& o) const {
  if (rank_ != o.rank_) return false;
  for (int i = 0; i < rank_; ++i)
    if (dims_[static_cast<size_t>(i)] != o.dims_[static_cast<size_t>(i)]) return false;
  return true;
}

std::string Shape::str() const {
  std::string s = "[";
  for (int i = 0; i < rank_; ++i) {
    if (i) s += ", ";
    s += std::to_string(dims_[static_cast<size_t>(i)]);
  }
  return s + "]";
}

}  // namespace darknight
