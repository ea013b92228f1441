// The accelerator interface's contract: validation, ownership, weights, SGD.
#include <gtest/gtest.h>

#include "accel/backend.h"
#include "baselines/plain_io.h"
#include "registry/registry.h"
#include "support/available.h"
#include "support/random.h"

namespace darknight::accel {
namespace {

using baselines::PlainIo;
using darknight::testing::random_tensor;

class Api : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    DK_SKIP_IF_UNAVAILABLE(GetParam());
    be_ = make_backend(GetParam());
  }
  std::unique_ptr<Backend> be_;
};

TEST_P(Api, RejectsMisuseWithClearErrors) {
  PlainIo io(*be_, DType::f32);
  ConvDesc d{3, 4, 3, 3};
  auto w = be_->create_weights(random_tensor(d.weight_shape(), 1));
  auto x = io.put(random_tensor(Shape{2, 3, 5, 5}, 2));
  auto y = io.make(Shape{2, 4, 3, 3});
  EXPECT_NO_THROW(be_->conv2d_forward(d, *x, *w, *y));

  auto wrong_dst = io.make(Shape{2, 4, 5, 5});
  EXPECT_THROW(be_->conv2d_forward(d, *x, *w, *wrong_dst), Error);
  auto f64_dst = be_->alloc(Shape{2, 4, 3, 3}, DType::f64);
  EXPECT_THROW(be_->conv2d_forward(d, *x, *w, *f64_dst), Error);
  auto wrong_c = io.make(Shape{2, 2, 5, 5});
  EXPECT_THROW(be_->conv2d_forward(d, *wrong_c, *w, *y), Error);
  auto wrong_w = be_->create_weights(random_tensor(Shape{4, 3, 1, 1}, 3));
  EXPECT_THROW(be_->conv2d_forward(d, *x, *wrong_w, *y), Error);

  ConvDesc bad_groups{3, 4, 3, 3};
  bad_groups.groups = 2;
  EXPECT_THROW(be_->conv2d_forward(bad_groups, *x, *w, *y), Error);
  ConvDesc huge_kernel{3, 4, 9, 9};
  EXPECT_THROW(huge_kernel.dst_shape(Shape{2, 3, 5, 5}), Error);
  ConvDesc neg_pad{3, 4, 3, 3};
  neg_pad.pad_top = -1;
  EXPECT_THROW(neg_pad.validate(), Error);

  // Backward-weights parts must divide the batch.
  auto dy = io.put(random_tensor(Shape{2, 4, 3, 3}, 4));
  auto dw3 = io.make(Shape{3, 4, 3, 3, 3});
  EXPECT_THROW(be_->conv2d_backward_weights(d, *x, *dy, *dw3), Error);
  auto dw_bad = io.make(Shape{4, 3, 3, 2});
  EXPECT_THROW(be_->conv2d_backward_weights(d, *x, *dy, *dw_bad), Error);

  // Transfers must match the buffer.
  Tensor host(Shape{2, 4, 3, 4});
  EXPECT_THROW(be_->download(*y, host), Error);
  Tensor64 host64(Shape{2, 4, 3, 3});
  EXPECT_THROW(be_->download(*y, host64), Error);

  // Dense.
  DenseDesc dd{75, 10};
  auto dw = be_->create_weights(random_tensor(dd.weight_shape(), 5));
  auto dout = io.make(Shape{2, 10});
  EXPECT_NO_THROW(be_->dense_forward(dd, *x, *dw, *dout));  // [2,3,5,5] flattens to [2,75]
  DenseDesc dd_wrong{74, 10};
  EXPECT_THROW(be_->dense_forward(dd_wrong, *x, *dw, *dout), Error);
  EXPECT_THROW(be_->create_weights(Tensor(Shape{0, 3})), Error);
}

TEST_P(Api, RejectsBuffersAndWeightsOfAnotherBackend) {
  auto other = make_backend(GetParam());
  PlainIo mine(*be_, DType::f32), theirs(*other, DType::f32);
  DenseDesc d{4, 2};
  auto w = be_->create_weights(random_tensor(d.weight_shape(), 1));
  auto w_other = other->create_weights(random_tensor(d.weight_shape(), 1));
  auto x = mine.put(random_tensor(Shape{3, 4}, 2));
  auto x_other = theirs.put(random_tensor(Shape{3, 4}, 2));
  auto y = mine.make(Shape{3, 2});
  EXPECT_THROW(be_->dense_forward(d, *x_other, *w, *y), Error);
  EXPECT_THROW(be_->dense_forward(d, *x, *w_other, *y), Error);
  EXPECT_THROW(be_->read_weights(*w_other), Error);
}

TEST_P(Api, WeightsRoundTripAndUpdateChangesResults) {
  const Tensor w0 = random_tensor(Shape{5, 3}, 9);
  auto w = be_->create_weights(w0);
  const Tensor back = be_->read_weights(*w);
  ASSERT_EQ(back.shape(), w0.shape());
  for (int64_t i = 0; i < w0.numel(); ++i) EXPECT_EQ(back[i], w0[i]);

  // A forward pass after an update uses the updated weights (no stale cached layout).
  PlainIo io(*be_, DType::f32);
  DenseDesc d{3, 5};
  auto x = io.put(random_tensor(Shape{2, 3}, 10));
  auto y = io.make(Shape{2, 5});
  be_->dense_forward(d, *x, *w, *y);
  const Tensor before = io.get(*y);
  Tensor grad(w0.shape());
  grad.fill(1.0f);
  be_->sgd_step(*w, grad, SgdParams{.lr = 0.5});
  be_->dense_forward(d, *x, *w, *y);
  const Tensor after = io.get(*y);
  const Tensor xs = random_tensor(Shape{2, 3}, 10);
  for (int64_t n = 0; n < 2; ++n)
    for (int64_t o = 0; o < 5; ++o) {
      const float shift = -0.5f * (xs[n * 3] + xs[n * 3 + 1] + xs[n * 3 + 2]);
      EXPECT_NEAR(after[n * 5 + o], before[n * 5 + o] + shift, 1e-5);
    }
}

// Golden values from torch.optim.SGD (PyTorch 1.13), w0 = [0.5, -1.25, 2, 0.75] and three
// gradients; see tests/accel/sgd_golden.py.
TEST_P(Api, SgdMatchesTorch) {
  const float w0[] = {0.5f, -1.25f, 2.0f, 0.75f};
  const float g[3][4] = {
      {0.1f, -0.2f, 0.3f, -0.4f}, {-0.5f, 0.25f, 0.125f, 1.0f}, {2.0f, -1.0f, 0.5f, 0.0f}};
  struct Case {
    SgdParams p;
    float expected[4];
  };
  const Case cases[] = {
      {{.lr = 0.1, .momentum = 0.9, .weight_decay = 0.01},
       {0.3650853931903839f, -1.1363445520401f, 1.8338661193847656f, 0.6641441583633423f}},
      {{.lr = 0.1, .momentum = 0.9, .weight_decay = 0.01, .nesterov = true},
       {0.2170148491859436f, -1.049041748046875f, 1.7522386312484741f, 0.6104830503463745f}},
      {{.lr = 0.05, .momentum = 0.5, .dampening = 0.25},
       {0.44437500834465027f, -1.2090624570846558f, 1.94796884059906f, 0.7287499904632568f}},
  };
  for (const auto& c : cases) {
    for (bool on_device : {false, true}) {
      auto w = be_->create_weights(Tensor(Shape{4}, w0));
      PlainIo io(*be_, DType::f64);  // device gradients in f64 exercise the mixed path
      for (const auto& gi : g) {
        const Tensor gt(Shape{4}, gi);
        if (on_device) {
          auto gb = io.put(gt);
          io.sync();
          be_->sgd_step(*w, *gb, c.p);
        } else {
          be_->sgd_step(*w, gt, c.p);
        }
      }
      const Tensor got = be_->read_weights(*w);
      for (int i = 0; i < 4; ++i)
        EXPECT_NEAR(got[i], c.expected[i], 2e-7) << "element " << i << " device " << on_device;
    }
  }
  auto w = be_->create_weights(Tensor(Shape{4}, w0));
  EXPECT_THROW(be_->sgd_step(*w, Tensor(Shape{4}), SgdParams{.lr = -1}), Error);
  EXPECT_THROW(be_->sgd_step(*w, Tensor(Shape{4}), SgdParams{.nesterov = true}), Error);
  EXPECT_THROW(be_->sgd_step(*w, Tensor(Shape{5}), SgdParams{}), Error);
}

// Gradients split into parts add up to the gradient over the whole batch.
TEST_P(Api, BackwardWeightsPartsSumToTheWhole) {
  for (DType dt : {DType::f32, DType::f64}) {
    PlainIo io(*be_, dt);
    ConvDesc d{2, 3, 3, 3, 1, 1, 1, 1, 1, 1};
    const Shape src{6, 2, 5, 5};
    auto x = io.put(random_tensor(src, 1));
    auto dy = io.put(random_tensor(d.dst_shape(src), 2));
    auto whole = io.make(d.weight_shape());
    auto parts = io.make(Shape{3, 3, 2, 3, 3});
    be_->conv2d_backward_weights(d, *x, *dy, *whole);
    be_->conv2d_backward_weights(d, *x, *dy, *parts);
    const Tensor a = io.get(*whole), b = io.get(*parts);
    for (int64_t i = 0; i < a.numel(); ++i)
      EXPECT_NEAR(a[i], b[i] + b[i + a.numel()] + b[i + 2 * a.numel()], 1e-4) << i;
  }
}

// Gradients accumulate from device buffers and host pieces until a step applies them;
// momentum can be read back and restored (checkpoints).
TEST_P(Api, GradientsAccumulateUntilAStepAndMomentumRoundTrips) {
  const Tensor w0 = random_tensor(Shape{2, 3}, 1);
  auto w = be_->create_weights(w0);
  PlainIo io(*be_, DType::f64);
  auto g = io.put(Tensor(Shape{2, 3}, std::vector<float>{1, 2, 3, 4, 5, 6}));
  io.sync();
  be_->accumulate_grad(*w, *g, 0.5);
  Tensor64 piece(Shape{2}, std::vector<double>{10, 20});
  be_->accumulate_grad(*w, piece, 3);
  const Tensor64 pending = be_->read_grad(*w);
  const double want[] = {0.5, 1, 1.5, 12, 22.5, 3};
  for (int i = 0; i < 6; ++i) EXPECT_DOUBLE_EQ(pending[i], want[i]);
  EXPECT_THROW(be_->accumulate_grad(*w, piece, 5), Error);  // past the end
  be_->sgd_step(*w, SgdParams{.lr = 0.1, .momentum = 0.9});
  const Tensor after = be_->read_weights(*w);
  for (int i = 0; i < 6; ++i) EXPECT_NEAR(after[i], w0[i] - 0.1 * want[i], 1e-6);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(be_->read_grad(*w)[i], 0.0);  // cleared
  const Tensor m = be_->read_momentum(*w);
  ASSERT_EQ(m.numel(), 6);
  EXPECT_FLOAT_EQ(m[3], 12.0f);
  // A restored momentum continues the same trajectory as the original.
  auto w2 = be_->create_weights(after);
  be_->write_momentum(*w2, m);
  be_->sgd_step(*w, SgdParams{.lr = 0.1, .momentum = 0.9});
  be_->sgd_step(*w2, SgdParams{.lr = 0.1, .momentum = 0.9});
  const Tensor a = be_->read_weights(*w), b = be_->read_weights(*w2);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(a[i], b[i]);
}

// wait_for(mark) completes the work submitted before the mark (its downloads filled), and
// a second wait for the same mark, or one after wait(), is harmless.
TEST_P(Api, WaitForAMarkCompletesTheWorkBeforeIt) {
  PlainIo io(*be_, DType::f32);
  const DenseDesc d{64, 32};
  auto w = be_->create_weights(random_tensor(d.weight_shape(), 1));
  auto x1 = io.put(random_tensor(Shape{8, 64}, 2)), x2 = io.put(random_tensor(Shape{8, 64}, 3));
  auto y1 = io.make(Shape{8, 32}), y2 = io.make(Shape{8, 32});
  Tensor got1(Shape{8, 32}), got2(Shape{8, 32});
  be_->dense_forward(d, *x1, *w, *y1);
  be_->download(*y1, got1);
  const uint64_t m1 = be_->mark();
  be_->dense_forward(d, *x2, *w, *y2);
  be_->download(*y2, got2);
  const uint64_t m2 = be_->mark();
  be_->wait_for(m1);
  const Tensor first = got1.clone();
  be_->wait_for(m1);
  be_->wait_for(m2);
  be_->wait();
  be_->wait_for(m2);
  const Tensor want1 = io.get(*y1), want2 = io.get(*y2);
  for (int64_t i = 0; i < want1.numel(); ++i) {
    ASSERT_EQ(first[i], want1[i]) << i;
    ASSERT_EQ(got2[i], want2[i]) << i;
  }
}

TEST_P(Api, ViewsAliasTheirBaseAndRangesAreChecked) {
  PlainIo io(*be_, DType::f32);
  auto base = io.make(Shape{24});
  auto v = be_->view(*base, Shape{2, 3, 2});
  EXPECT_EQ(v->shape(), (Shape{2, 3, 2}));
  EXPECT_THROW(be_->view(*base, Shape{5, 5}), Error);
  EXPECT_THROW(be_->view(*base, Shape{2, 3, 2}, 13), Error);
  auto tail = be_->view(*base, Shape{4}, 20);  // the last 4 elements
  // A range upload through the view lands in the base.
  Blinded src = baselines::Unprotected::expose(random_tensor(Shape{12}, 3));
  be_->upload(src, 2, 5, *v, 7);
  Tensor all(Shape{24});
  be_->download(*base, all);
  be_->wait();
  for (int64_t i = 0; i < 5; ++i) EXPECT_EQ(all[7 + i], src.data()[2 + i]);
  EXPECT_EQ(all[6], 0.0f);
  EXPECT_EQ(all[12], 0.0f);
  Blinded four = baselines::Unprotected::expose(random_tensor(Shape{4}, 4));
  be_->upload(four, *tail);
  be_->download(*base, all);
  be_->wait();
  EXPECT_EQ(all[20], four.data()[0]);
  EXPECT_EQ(all[23], four.data()[3]);
  EXPECT_THROW(be_->upload(src, 10, 5, *v, 0), Error);  // past the host tensor
  EXPECT_THROW(be_->upload(src, 0, 5, *v, 10), Error);  // past the view
  Tensor part(Shape{4});
  EXPECT_THROW(be_->download(*v, 0, 5, part, 0), Error);
}

TEST(Registry, UnknownBackendNamesTheAvailableOnes) {
  try {
    make_backend("tpu");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cpu"), std::string::npos) << e.what();
  }
  EXPECT_THROW(make_backend("cpu", BackendOptions{.threads = -1}), Error);
}

INSTANTIATE_TEST_SUITE_P(AllBackends, Api, ::testing::ValuesIn(backend_names()),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace darknight::accel
