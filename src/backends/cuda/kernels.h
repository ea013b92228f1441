// Elementwise CUDA kernels of the CUDA backend (cuDNN and cuBLAS do the linear ops). Plain C
// signatures so that only kernels.cu goes through nvcc. Each launches on `stream` and
// returns the launch's cudaError_t as an int (0: success).
#pragma once

#include <cstdint>

typedef struct CUstream_st* cudaStream_t;

namespace darknight::accel::cuda {

int cast_f32_f64(const float* src, double* dst, int64_t n, cudaStream_t stream);
/// g[i] += scale * x[i].
int accumulate(double* g, const float* x, int64_t n, double scale, cudaStream_t stream);
int accumulate(double* g, const double* x, int64_t n, double scale, cudaStream_t stream);
/// torch.optim.SGD's step (protocol/sgd.h): `velocity` may be null when momentum is 0;
/// `first` initialises it.
int sgd(float* w, float* velocity, const double* grad, int64_t n, double lr, double momentum,
        double dampening, double weight_decay, bool nesterov, bool first, cudaStream_t stream);
/// NCHW [n, c, h, w] -> [n, c, h + top + bottom, w + left + right], zeros around.
template <typename T>
int pad(const T* src, T* dst, int64_t nc, int64_t h, int64_t w, int64_t top, int64_t bottom,
        int64_t left, int64_t right, cudaStream_t stream);
/// The inverse: the [h, w] window at (top, left) of each padded plane.
template <typename T>
int crop(const T* src, T* dst, int64_t nc, int64_t h, int64_t w, int64_t top, int64_t bottom,
         int64_t left, int64_t right, cudaStream_t stream);

}  // namespace darknight::accel::cuda
