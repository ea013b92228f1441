#include "backends/cuda/kernels.h"

#include <cuda_runtime.h>

namespace darknight::accel::cuda {
namespace {

constexpr int kThreads = 256;

unsigned blocks(int64_t n) {
  const int64_t b = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(b < 65535 * 16 ? (b > 0 ? b : 1) : 65535 * 16);
}

#define DK_GRID_LOOP(i, n)                                                       \
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; \
       i < (n); i += static_cast<int64_t>(gridDim.x) * blockDim.x)

__global__ void cast_kernel(const float* src, double* dst, int64_t n) {
  DK_GRID_LOOP(i, n) dst[i] = static_cast<double>(src[i]);
}

template <typename G>
__global__ void accumulate_kernel(double* g, const G* x, int64_t n, double scale) {
  DK_GRID_LOOP(i, n) g[i] += scale * static_cast<double>(x[i]);
}

// The same arithmetic as protocol/sgd.h's sgd_update.
__global__ void sgd_kernel(float* w, float* velocity, const double* grad, int64_t n, double lr,
                           double momentum, double dampening, double weight_decay, bool nesterov,
                           bool first) {
  DK_GRID_LOOP(i, n) {
    double g = grad[i] + weight_decay * w[i];
    if (momentum != 0) {
      const double v = first ? g : momentum * velocity[i] + (1.0 - dampening) * g;
      velocity[i] = static_cast<float>(v);
      g = nesterov ? g + momentum * v : v;
    }
    w[i] = static_cast<float>(w[i] - lr * g);
  }
}

// dst plane (ph, pw) = src plane (h, w) at (top, left), zeros elsewhere.
template <typename T>
__global__ void pad_kernel(const T* src, T* dst, int64_t nc, int64_t h, int64_t w, int64_t top,
                           int64_t left, int64_t ph, int64_t pw) {
  DK_GRID_LOOP(i, nc * ph * pw) {
    const int64_t x = i % pw, y = (i / pw) % ph, p = i / (pw * ph);
    const int64_t sy = y - top, sx = x - left;
    dst[i] = (sy >= 0 && sy < h && sx >= 0 && sx < w) ? src[(p * h + sy) * w + sx] : T(0);
  }
}

template <typename T>
__global__ void crop_kernel(const T* src, T* dst, int64_t nc, int64_t h, int64_t w, int64_t top,
                            int64_t left, int64_t ph, int64_t pw) {
  DK_GRID_LOOP(i, nc * h * w) {
    const int64_t x = i % w, y = (i / w) % h, p = i / (w * h);
    dst[i] = src[(p * ph + y + top) * pw + x + left];
  }
}

int launched() {
  return static_cast<int>(cudaGetLastError());
}

}  // namespace

int cast_f32_f64(const float* src, double* dst, int64_t n, cudaStream_t s) {
  if (n == 0) return 0;
  cast_kernel<<<blocks(n), kThreads, 0, s>>>(src, dst, n);
  return launched();
}

int accumulate(double* g, const float* x, int64_t n, double scale, cudaStream_t s) {
  if (n == 0) return 0;
  accumulate_kernel<<<blocks(n), kThreads, 0, s>>>(g, x, n, scale);
  return launched();
}

int accumulate(double* g, const double* x, int64_t n, double scale, cudaStream_t s) {
  if (n == 0) return 0;
  accumulate_kernel<<<blocks(n), kThreads, 0, s>>>(g, x, n, scale);
  return launched();
}

int sgd(float* w, float* velocity, const double* grad, int64_t n, double lr, double momentum,
        double dampening, double weight_decay, bool nesterov, bool first, cudaStream_t s) {
  if (n == 0) return 0;
  sgd_kernel<<<blocks(n), kThreads, 0, s>>>(w, velocity, grad, n, lr, momentum, dampening,
                                            weight_decay, nesterov, first);
  return launched();
}

template <typename T>
int pad(const T* src, T* dst, int64_t nc, int64_t h, int64_t w, int64_t top, int64_t bottom,
        int64_t left, int64_t right, cudaStream_t s) {
  const int64_t ph = h + top + bottom, pw = w + left + right;
  if (nc * ph * pw == 0) return 0;
  pad_kernel<<<blocks(nc * ph * pw), kThreads, 0, s>>>(src, dst, nc, h, w, top, left, ph, pw);
  return launched();
}

template <typename T>
int crop(const T* src, T* dst, int64_t nc, int64_t h, int64_t w, int64_t top, int64_t bottom,
         int64_t left, int64_t right, cudaStream_t s) {
  const int64_t ph = h + top + bottom, pw = w + left + right;
  if (nc * h * w == 0) return 0;
  crop_kernel<<<blocks(nc * h * w), kThreads, 0, s>>>(src, dst, nc, h, w, top, left, ph, pw);
  return launched();
}

template int pad<float>(const float*, float*, int64_t, int64_t, int64_t, int64_t, int64_t,
                        int64_t, int64_t, cudaStream_t);
template int pad<double>(const double*, double*, int64_t, int64_t, int64_t, int64_t, int64_t,
                         int64_t, int64_t, cudaStream_t);
template int crop<float>(const float*, float*, int64_t, int64_t, int64_t, int64_t, int64_t,
                         int64_t, int64_t, cudaStream_t);
template int crop<double>(const double*, double*, int64_t, int64_t, int64_t, int64_t, int64_t,
                          int64_t, int64_t, cudaStream_t);

}  // namespace darknight::accel::cuda
