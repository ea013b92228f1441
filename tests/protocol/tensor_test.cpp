#include "protocol/tensor.h"

#include <gtest/gtest.h>

#include "baselines/unprotected.h"
#include "protocol/blinded.h"

namespace darknight {
namespace {

TEST(Shape, BasicsAndAccessors) {
  Shape s{2, 3, 4, 5};
  EXPECT_EQ(s.rank(), 4);
  EXPECT_EQ(s.numel(), 120);
  EXPECT_EQ(s.n(), 2);
  EXPECT_EQ(s.c(), 3);
  EXPECT_EQ(s.h(), 4);
  EXPECT_EQ(s.w(), 5);
  EXPECT_EQ(s.item_numel(), 60);
  EXPECT_EQ(s.with_batch(7), (Shape{7, 3, 4, 5}));
  EXPECT_EQ(s.str(), "[2, 3, 4, 5]");
  EXPECT_NE(s, (Shape{2, 3, 4}));
  EXPECT_EQ(Shape{}.numel(), 1);  // a scalar
}

TEST(Shape, RejectsInvalid) {
  EXPECT_THROW((Shape{2, -1}), Error);
  EXPECT_THROW((Shape{1, 2, 3, 4, 5, 6, 7}), Error);
  // Absurd sizes are refused before any allocation (2^21 * 2^21 > 2^40 elements).
  EXPECT_THROW((Shape{int64_t{1} << 21, int64_t{1} << 21}), Error);
  EXPECT_THROW((Shape{int64_t{1} << 62, 4}), Error);  // would overflow int64
  EXPECT_THROW((Shape{2, 3}.n()), Error);             // NCHW accessor on rank 2
}

TEST(Tensor, ZeroFilledAlignedAndMoveOnly) {
  for (int64_t n : {1, 3, 17, 1000}) {
    Tensor t(Shape{n});
    EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data()) % 64, 0u) << n;
    for (int64_t i = 0; i < n; ++i) EXPECT_EQ(t[i], 0.0f);
  }
  static_assert(!std::is_copy_constructible_v<Tensor>);
  static_assert(std::is_nothrow_move_constructible_v<Tensor>);
  Tensor a(Shape{2, 2});
  a[3] = 5;
  Tensor b = std::move(a);
  EXPECT_EQ(b[3], 5);
  Tensor c = b.clone();
  c[3] = 6;
  EXPECT_EQ(b[3], 5);
}

TEST(Tensor, ValuesCastReshapeItems) {
  const float v[] = {1, 2, 3, 4, 5, 6};
  Tensor t(Shape{3, 2}, v);
  Tensor64 d = t.cast<double>();
  EXPECT_EQ(d.dtype(), DType::f64);
  EXPECT_DOUBLE_EQ(d[5], 6.0);
  auto rows = t.items(1, 2);
  ASSERT_EQ(rows.size(), 4u);
  EXPECT_EQ(rows[0], 3);
  EXPECT_THROW(t.items(2, 2), Error);
  t.reshape(Shape{2, 3});
  EXPECT_EQ(t.shape(), (Shape{2, 3}));
  EXPECT_THROW(t.reshape(Shape{4, 2}), Error);
  EXPECT_THROW((Tensor(Shape{2, 2}, v)), Error);  // 6 values for 4 elements
}

TEST(Tensor, EmptyTensor) {
  EXPECT_TRUE(Tensor().empty());
  EXPECT_EQ(Tensor().numel(), 0);
  Tensor t(Shape{0, 3});
  EXPECT_TRUE(t.empty());
  EXPECT_EQ(t.bytes(), 0u);
  Tensor u = t.clone();
  EXPECT_TRUE(u.empty());
}

TEST(Blinded, OnlyABlindingFactoryMakesOne) {
  static_assert(!std::is_constructible_v<Blinded, Tensor&&>);
  static_assert(!std::is_default_constructible_v<BlindingFactory>);
  static_assert(std::is_base_of_v<BlindingFactory, baselines::Unprotected>);
  Tensor t(Shape{2, 2});
  t[1] = 3;
  Blinded b = baselines::Unprotected::expose(std::move(t));
  EXPECT_EQ(b.shape(), (Shape{2, 2}));
  EXPECT_EQ(b.data()[1], 3);
}

TEST(Secrets, TheWipeMarkSurvivesCloneCastAndMove) {
  const float v[] = {1, 2, 3, 4};
  Tensor plain(Shape{2, 2}, v);
  EXPECT_FALSE(plain.wipes_on_free());
  EXPECT_FALSE(plain.clone().wipes_on_free());
  EXPECT_FALSE(plain.cast<double>().wipes_on_free());
  Tensor secret(Shape{2, 2}, v);
  secret.set_wipe_on_free();
  EXPECT_TRUE(secret.wipes_on_free());
  Tensor copy = secret.clone();
  EXPECT_TRUE(copy.wipes_on_free());
  EXPECT_EQ(copy[3], 4);
  Tensor64 wide = secret.cast<double>();
  EXPECT_TRUE(wide.wipes_on_free());
  EXPECT_TRUE(wide.cast<float>().wipes_on_free());
  Tensor moved = std::move(copy);
  EXPECT_TRUE(moved.wipes_on_free());
  Tensor empty;
  EXPECT_TRUE(empty.clone().empty());
}

TEST(Secrets, SecretBufferIsZeroedMoveOnlyAndChargedOnlyWhenMetered) {
  static_assert(!std::is_copy_constructible_v<SecretBuffer<double>>);
  static_assert(std::is_nothrow_move_constructible_v<SecretBuffer<double>>);
  MemoryMeter meter;
  const MeterScope scope(&meter);
  {
    SecretBuffer<uint32_t> charged(10, Metered::yes);
    EXPECT_EQ(meter.live_bytes(), 40);
    for (int64_t i = 0; i < charged.size(); ++i) EXPECT_EQ(charged[i], 0u);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(charged.data()) % 64, 0u);
    auto unset = SecretBuffer<double>::uninitialized(3, Metered::yes);
    EXPECT_EQ(meter.live_bytes(), 40 + 24);
    SecretBuffer<unsigned char> key(32, Metered::no);
    EXPECT_EQ(meter.live_bytes(), 40 + 24);
    EXPECT_EQ(key.bytes(), 32u);
    SecretBuffer<uint32_t> taken = std::move(charged);
    EXPECT_EQ(charged.size(), 0);
    EXPECT_EQ(charged.data(), nullptr);
    EXPECT_EQ(taken.size(), 10);
    EXPECT_EQ(meter.live_bytes(), 40 + 24);
  }
  EXPECT_EQ(meter.live_bytes(), 0);
  EXPECT_EQ(meter.peak_bytes(), 64);
}

}  // namespace
}  // namespace darknight
