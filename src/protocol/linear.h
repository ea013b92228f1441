// Linear operations as both sides of the boundary describe them: the convolution and dense
// descriptions of the accelerator interface, one convolution geometry over items, and the
// host reference convolution (plain loops, f64 accumulation) shared by the ref backend, the
// CPU backend's f64 path, Slalom and the trusted runtime's fallback.
//
// Non-secret code: it reads and writes only the memory it is given, except the reference
// backward passes, which allocate f64 accumulators they do not wipe (the untrusted side's;
// callers holding secrets use the forward pass only).
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "protocol/shape.h"

namespace darknight {

/// 2-D convolution, PyTorch/ONNX conventions: weights [O, I/groups, KH, KW], NCHW data,
/// dilation 1 means none, padding may be asymmetric. No bias: biases are added after
/// decoding, in the trusted runtime.
struct ConvDesc {
  int64_t in_channels = 0, out_channels = 0;
  int64_t kernel_h = 1, kernel_w = 1;
  int64_t stride_h = 1, stride_w = 1;
  int64_t pad_top = 0, pad_left = 0, pad_bottom = 0, pad_right = 0;
  int64_t dilation_h = 1, dilation_w = 1;
  int64_t groups = 1;

  /// Throws Error when the description is inconsistent.
  void validate() const;
  Shape weight_shape() const;
  /// Output shape [N, O, OH, OW] for an NCHW src; throws Error when src does not fit.
  Shape dst_shape(const Shape& src) const;
  /// Multiply-adds per output element (the dot-product length).
  int64_t fan_in() const { return in_channels / groups * kernel_h * kernel_w; }
  std::string str() const;
};

/// Dense (inner product): dst[n, o] = sum_i src[n, i] * weights[o, i]. src may have any
/// rank >= 2; its items are flattened ([N, C, H, W] -> [N, C*H*W]). No bias.
struct DenseDesc {
  int64_t in_features = 0, out_features = 0;

  void validate() const;
  Shape weight_shape() const { return Shape{out_features, in_features}; }
  Shape dst_shape(const Shape& src) const;
  int64_t fan_in() const { return in_features; }
  std::string str() const;
};

/// One convolution over items, in plain integers: input item [C, H, W], output item
/// [O, OH, OW], weights [O, C/groups, KH, KW]. A dense layer is a 1x1 convolution of a
/// [I, 1, 1] item.
struct ConvGeometry {
  int64_t c = 0, h = 1, w = 1;    ///< input item
  int64_t o = 0, oh = 1, ow = 1;  ///< output item
  int64_t kh = 1, kw = 1, sh = 1, sw = 1, dh = 1, dw = 1;
  int64_t pt = 0, pl = 0, pb = 0, pr = 0;  ///< padding: top, left, bottom, right
  int64_t groups = 1;

  ConvGeometry() = default;
  /// `src`: an NCHW shape (its batch is ignored) or a [C, H, W] item. Throws Error when it
  /// does not fit `d`.
  ConvGeometry(const ConvDesc& d, const Shape& src);
  explicit ConvGeometry(const DenseDesc& d);

  int64_t ig() const { return c / groups; }  ///< input channels per group
  int64_t og() const { return o / groups; }  ///< output channels per group
  int64_t fan_in() const { return ig() * kh * kw; }
  int64_t in_numel() const { return c * h * w; }
  int64_t out_numel() const { return o * oh * ow; }
  /// One input and one output channel per group.
  bool depthwise() const { return ig() == 1 && og() == 1; }
  /// 1x1, stride 1, no padding: each group's input item is already its im2col matrix.
  bool pointwise() const {
    return kh == 1 && kw == 1 && sh == 1 && sw == 1 && pt == 0 && pl == 0 && pb == 0 && pr == 0;
  }

  /// Calls f(src, dst, weight), the element indices in an [N, C, H, W] src, an
  /// [N, O, OH, OW] dst and the weights, for every multiply-add that lands in dst element
  /// (b, oc, y, x): input channels of oc's group, kernel rows, kernel columns, in that
  /// order; taps that read padding are skipped.
  template <typename F>
  void for_taps(int64_t b, int64_t oc, int64_t y, int64_t x, F&& f) const {
    const int64_t ig = this->ig(), ch0 = oc / og() * ig;
    const int64_t di = ((b * o + oc) * oh + y) * ow + x;
    for (int64_t ic = 0; ic < ig; ++ic)
      for (int64_t ky = 0; ky < kh; ++ky) {
        const int64_t iy = y * sh - pt + ky * dh;
        if (iy < 0 || iy >= h) continue;
        for (int64_t kx = 0; kx < kw; ++kx) {
          const int64_t ix = x * sw - pl + kx * dw;
          if (ix < 0 || ix >= w) continue;
          f(((b * c + ch0 + ic) * h + iy) * w + ix, di, ((oc * ig + ic) * kh + ky) * kw + kx);
        }
      }
  }

  /// The multiply-adds between one input plane and one output plane, in runs along rows:
  /// for each output row y and tap (ky, kx), calls f(src0, dst0, count, tap), meaning
  /// dst[dst0 + i] += src[src0 + i * sw] * weight[tap] for i in [0, count) (indices in the
  /// planes, tap = ky * kw + kx). Order: kernel column, output row, kernel row. A depthwise
  /// convolution's loops, vectorisable along the runs.
  template <typename F>
  void for_tap_runs(F&& f) const {
    for (int64_t kx = 0; kx < kw; ++kx) {
      // Output columns whose input column x*sw - pl + kx*dw lies inside [0, w).
      const int64_t off = kx * dw - pl;
      const int64_t x0 = off >= 0 ? 0 : (-off + sw - 1) / sw;
      const int64_t x1 = w - 1 - off < 0 ? 0 : std::min(ow, (w - 1 - off) / sw + 1);
      if (x0 >= x1) continue;
      for (int64_t y = 0; y < oh; ++y)
        for (int64_t ky = 0; ky < kh; ++ky) {
          const int64_t iy = y * sh - pt + ky * dh;
          if (iy < 0 || iy >= h) continue;
          f(iy * w + x0 * sw + off, y * ow + x0, x1 - x0, ky * kw + kx);
        }
    }
  }

  /// Which kernel taps connect input and output rows (or columns), as lists per row:
  /// at[start[i]..start[i+1]) holds (kernel row, other row) pairs for row i, where
  /// out * stride - pad + k * dilation == in. From the input side (for each input row the
  /// output rows it reaches) or the output side.
  struct Taps {
    std::vector<int64_t> start;
    std::vector<std::array<int64_t, 2>> at;
  };
  Taps taps(bool rows, bool from_input) const;
};

/// im2col of one item's group (`src`: its C/groups input planes) for output rows [y0, y1):
/// col[(ic*KH + ky)*KW + kx][(y - y0)*OW + x] = src[ic][y*sh - pt + ky*dh][x*sw - pl + kx*dw]
/// (0 in the padding). With `parallel`, over the rows of col with OpenMP.
void im2col(const ConvGeometry& g, const double* src, int64_t y0, int64_t y1, double* col,
            bool parallel = false);
/// The adjoint of im2col: diff_src += scatter(col).
void col2im(const ConvGeometry& g, const double* col, int64_t y0, int64_t y1, double* diff_src);

/// The host reference convolution of n items: plain loops in ConvGeometry::for_taps order,
/// accumulated in f64 and rounded once to T. The oracle other backends are tested against.
namespace reference {
/// dst = conv(src, w). `parallel`: over items and output channels with OpenMP (the same
/// result).
template <typename T>
void conv_forward(const ConvGeometry& g, int64_t n, const T* src, const T* w, T* dst,
                  bool parallel = false);
/// diff_src = the transposed convolution of diff_dst with w.
template <typename T>
void conv_backward_data(const ConvGeometry& g, int64_t n, const T* diff_dst, const T* w,
                        T* diff_src);
/// diff_w: `parts` weight gradients, each summed over n / parts consecutive items.
template <typename T>
void conv_backward_weights(const ConvGeometry& g, int64_t n, int64_t parts, const T* src,
                           const T* diff_dst, T* diff_w);
}  // namespace reference

}  // namespace darknight
