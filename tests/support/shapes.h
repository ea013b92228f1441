// Layer geometries shared by the tests.
#pragma once

#include "accel/backend.h"

namespace darknight::testing {

/// A convolution with every geometric option: stride, dilation, asymmetric padding and
/// groups, on [4, 11, 9] items (to [6, 5, 9]).
inline accel::ConvDesc odd_conv_desc() {
  accel::ConvDesc d;
  d.in_channels = 4, d.out_channels = 6, d.kernel_h = 3, d.kernel_w = 2;
  d.stride_h = 2, d.stride_w = 1, d.dilation_h = 2, d.dilation_w = 1;
  d.pad_top = 2, d.pad_bottom = 1, d.pad_left = 0, d.pad_right = 1, d.groups = 2;
  return d;
}

}  // namespace darknight::testing
