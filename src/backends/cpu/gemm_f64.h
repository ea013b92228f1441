// f64 linear operations for the CPU backend: im2col/col2im + OpenBLAS dgemm.
#pragma once

#include <cstdint>

#include "accel/backend.h"

namespace darknight::accel::f64 {

void conv_forward(const ConvDesc& d, const Shape& src_shape, const double* src, const double* w,
                  double* dst, int threads);
void conv_backward_data(const ConvDesc& d, const Shape& src_shape, const double* diff_dst,
                        const double* w, double* diff_src, int threads);
/// diff_w holds `parts` consecutive gradients, each summed over batch/parts items.
void conv_backward_weights(const ConvDesc& d, const Shape& src_shape, const double* src,
                           const double* diff_dst, double* diff_w, int64_t parts, int threads);

void dense_forward(int64_t n, int64_t in, int64_t out, const double* src, const double* w,
                   double* dst);
void dense_backward_data(int64_t n, int64_t in, int64_t out, const double* diff_dst,
                         const double* w, double* diff_src);
void dense_backward_weights(int64_t n, int64_t in, int64_t out, const double* src,
                            const double* diff_dst, double* diff_w, int64_t parts);

}  // namespace darknight::accel::f64
