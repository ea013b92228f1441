#include "backends/cuda/cuda_backend.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <vector>

#include "backends/cuda/kernels.h"

namespace darknight::accel {
namespace {

#define DK_CUDA(expr)                                                                           \
  do {                                                                                          \
    const cudaError_t dk_e_ = (expr);                                                           \
    if (dk_e_ != cudaSuccess)                                                                   \
      throw Error(fmt::format("cuda backend: {} failed: {}", #expr, cudaGetErrorString(dk_e_))); \
  } while (0)
#define DK_KERNEL(expr)                                                                \
  do {                                                                                 \
    const int dk_e_ = (expr);                                                          \
    if (dk_e_ != 0)                                                                    \
      throw Error(fmt::format("cuda backend: kernel {} failed: {}", #expr,             \
                              cudaGetErrorString(static_cast<cudaError_t>(dk_e_)))); \
  } while (0)
#define DK_CUDNN(expr)                                                                          \
  do {                                                                                          \
    const cudnnStatus_t dk_e_ = (expr);                                                         \
    if (dk_e_ != CUDNN_STATUS_SUCCESS)                                                          \
      throw Error(fmt::format("cuda backend: {} failed: {}", #expr, cudnnGetErrorString(dk_e_))); \
  } while (0)
#define DK_CUBLAS(expr)                                                                      \
  do {                                                                                       \
    const cublasStatus_t dk_e_ = (expr);                                                     \
    if (dk_e_ != CUBLAS_STATUS_SUCCESS)                                                      \
      throw Error(fmt::format("cuda backend: {} failed: {}", #expr, cublasGetStatusString(dk_e_))); \
  } while (0)

/// Device memory (cudaMalloc), freed on destruction.
class DeviceMem {
 public:
  DeviceMem() = default;
  explicit DeviceMem(size_t bytes) { resize(bytes); }
  ~DeviceMem() { reset(); }
  DeviceMem(const DeviceMem&) = delete;
  DeviceMem& operator=(const DeviceMem&) = delete;
  void reset() {
    if (p_) cudaFree(p_);
    p_ = nullptr;
    bytes_ = 0;
  }
  /// Grows to at least `bytes` (contents lost when it grows).
  void* at_least(size_t bytes) {
    if (bytes > bytes_) resize(bytes);
    return p_;
  }
  void* get() const { return p_; }
  size_t bytes() const { return bytes_; }

 private:
  void resize(size_t bytes) {
    reset();
    if (bytes == 0) return;
    const cudaError_t e = cudaMalloc(&p_, bytes);
    if (e != cudaSuccess) {
      p_ = nullptr;
      size_t free_b = 0, total = 0;
      cudaMemGetInfo(&free_b, &total);
      throw Error(fmt::format("cuda backend: cannot allocate {:.1f} MiB on the GPU ({}; {:.0f} of "
                              "{:.0f} MiB free)",
                              bytes / 1048576.0, cudaGetErrorString(e), free_b / 1048576.0,
                              total / 1048576.0));
    }
    bytes_ = bytes;
  }
  void* p_ = nullptr;
  size_t bytes_ = 0;
};

class CudaBuffer final : public Buffer {
 public:
  CudaBuffer(const Backend* owner, const Shape& shape, DType dtype)
      : Buffer(owner, shape, dtype), mem_(std::make_unique<DeviceMem>(bytes())), p_(mem_->get()) {}
  CudaBuffer(const Backend* owner, CudaBuffer& base, const Shape& shape, int64_t offset)
      : Buffer(owner, shape, base.dtype()),
        p_(static_cast<char*>(base.p_) + static_cast<size_t>(offset) * dtype_size(base.dtype())) {}
  void* ptr() const { return p_; }

 private:
  std::unique_ptr<DeviceMem> mem_;  // null for a view
  void* p_;
};

void* dev(const Buffer& b) {
  return static_cast<const CudaBuffer&>(b).ptr();
}
template <typename T>
T* dev(const Buffer& b) {
  return static_cast<T*>(dev(b));
}

class CudaWeights final : public Weights {
 public:
  CudaWeights(const Backend* owner, const Shape& shape) : Weights(owner, shape) {}
  size_t n() const { return static_cast<size_t>(shape().numel()); }
  DeviceMem w, w64, grad, momentum;
  uint64_t w64_version = ~uint64_t{0};
  using Weights::bump_version;
};

CudaWeights& cw(Weights& w) {
  return static_cast<CudaWeights&>(w);
}
const CudaWeights& cw(const Weights& w) {
  return static_cast<const CudaWeights&>(w);
}

/// Pinned host memory (cudaHostAlloc) for asynchronous transfers.
struct Pinned {
  void* p = nullptr;
  size_t bytes = 0;
  bool busy = false;
  uint64_t epoch = 0;  // the mark that covers its copy
  size_t used = 0;
};

/// A download waiting for wait() or wait_for(): from pinned memory to the caller's
/// destination.
struct PendingCopy {
  size_t pinned;
  void* dst;
  size_t bytes;
  uint64_t epoch;
};

template <typename T>
cudnnDataType_t cudnn_type() {
  return std::is_same_v<T, float> ? CUDNN_DATA_FLOAT : CUDNN_DATA_DOUBLE;
}

/// Descriptors and the chosen algorithm of one convolution (per op, shape and dtype).
struct ConvPlan {
  cudnnTensorDescriptor_t x = nullptr, y = nullptr;
  cudnnFilterDescriptor_t w = nullptr;
  cudnnConvolutionDescriptor_t conv = nullptr;
  int algo = 0;
  size_t workspace = 0;
  bool padded = false;  // asymmetric padding: src is padded explicitly, cuDNN pads nothing
  Shape padded_src;
  ConvPlan() = default;
  ConvPlan(const ConvPlan&) = delete;
  ConvPlan& operator=(const ConvPlan&) = delete;
  ~ConvPlan() {
    if (x) cudnnDestroyTensorDescriptor(x);
    if (y) cudnnDestroyTensorDescriptor(y);
    if (w) cudnnDestroyFilterDescriptor(w);
    if (conv) cudnnDestroyConvolutionDescriptor(conv);
  }
};

enum class ConvOp { forward, backward_data, backward_weights };

/// memcpy, on the calling thread's OpenMP threads when large: one thread does not reach the
/// bandwidth of the transfers staged through pinned memory.
void copy(void* dst, const void* src, size_t bytes) {
  constexpr size_t kBlock = size_t{1} << 20;
  if (bytes < 4 * kBlock) {
    std::memcpy(dst, src, bytes);
    return;
  }
  const auto blocks = static_cast<int64_t>((bytes + kBlock - 1) / kBlock);
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < blocks; ++b) {
    const size_t o = static_cast<size_t>(b) * kBlock;
    std::memcpy(static_cast<char*>(dst) + o, static_cast<const char*>(src) + o,
                std::min(kBlock, bytes - o));
  }
}

constexpr size_t kMaxWorkspace = size_t{4} << 30;
constexpr size_t kMaxPendingPinned = size_t{512} << 20;

}  // namespace

struct CudaBackend::Impl {
  BackendOptions opts;
  int device = 0;
  cudaDeviceProp prop{};
  cudaStream_t stream = nullptr;
  cublasHandle_t blas = nullptr;
  cudnnHandle_t dnn = nullptr;
  DeviceMem workspace, pad_src, pad_diff, host_piece;
  std::vector<Pinned> pinned;
  std::vector<PendingCopy> pending;
  size_t pending_bytes = 0;
  uint64_t epoch = 0;                                  // marks made so far
  std::vector<std::pair<uint64_t, cudaEvent_t>> marks;  // not yet waited for
  std::vector<cudaEvent_t> spare_events;
  std::map<std::string, std::unique_ptr<ConvPlan>> plans;

  ~Impl() {
    if (stream) cudaStreamSynchronize(stream);
    for (Pinned& p : pinned) cudaFreeHost(p.p);
    for (auto& [id, e] : marks) cudaEventDestroy(e);
    for (cudaEvent_t e : spare_events) cudaEventDestroy(e);
    plans.clear();
    if (dnn) cudnnDestroy(dnn);
    if (blas) cublasDestroy(blas);
    if (stream) cudaStreamDestroy(stream);
  }

  /// A free pinned buffer of at least `bytes`, marked busy until finish().
  size_t take_pinned(size_t bytes) {
    if (pending_bytes + bytes > kMaxPendingPinned && pending_bytes > 0) finish();
    size_t best = pinned.size();
    for (size_t i = 0; i < pinned.size(); ++i)
      if (!pinned[i].busy && pinned[i].bytes >= bytes &&
          (best == pinned.size() || pinned[i].bytes < pinned[best].bytes))
        best = i;
    if (best == pinned.size()) {
      Pinned p;
      DK_CUDA(cudaHostAlloc(&p.p, std::max<size_t>(bytes, 1), cudaHostAllocDefault));
      p.bytes = std::max<size_t>(bytes, 1);
      pinned.push_back(p);
    }
    Pinned& p = pinned[best];
    p.busy = true;
    p.epoch = epoch;
    p.used = bytes;
    pending_bytes += bytes;
    return best;
  }

  /// Completes the pending downloads of marks up to `upto` (all: ~0), frees their pinned
  /// buffers. The copies must have finished.
  void complete(uint64_t upto) {
    std::vector<PendingCopy> later;
    for (const PendingCopy& c : pending)
      if (c.epoch <= upto)
        copy(c.dst, pinned[c.pinned].p, c.bytes);
      else
        later.push_back(c);
    pending = std::move(later);
    for (Pinned& p : pinned)
      if (p.busy && p.epoch <= upto) {
        p.busy = false;
        pending_bytes -= p.used;
      }
  }

  /// Waits for the stream, completes every pending download, frees the pinned buffers.
  void finish() {
    DK_CUDA(cudaStreamSynchronize(stream));
    complete(~uint64_t{0});
    for (auto& [id, e] : marks) spare_events.push_back(e);
    marks.clear();
  }

  void sync_copy_to_device(void* dst, const void* src, size_t bytes) {
    if (bytes == 0) return;
    DK_CUDA(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream));
    DK_CUDA(cudaStreamSynchronize(stream));
  }
  void sync_copy_to_host(void* dst, const void* src, size_t bytes) {
    if (bytes == 0) return;
    finish();
    DK_CUDA(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream));
    DK_CUDA(cudaStreamSynchronize(stream));
  }

  const double* weights64(const CudaWeights& w) {
    auto& m = const_cast<CudaWeights&>(w);
    if (m.w64_version != w.version()) {
      m.w64.at_least(w.n() * sizeof(double));
      DK_KERNEL(cuda::cast_f32_f64(static_cast<const float*>(m.w.get()),
                                   static_cast<double*>(m.w64.get()),
                                   static_cast<int64_t>(w.n()), stream));
      m.w64_version = w.version();
    }
    return static_cast<const double*>(m.w64.get());
  }
  template <typename T>
  const T* weights(const Weights& w) {
    if constexpr (std::is_same_v<T, float>)
      return static_cast<const float*>(cw(w).w.get());
    else
      return weights64(cw(w));
  }

  double* grad(CudaWeights& w) {
    if (!w.grad.get()) {
      w.grad.at_least(w.n() * sizeof(double));
      DK_CUDA(cudaMemsetAsync(w.grad.get(), 0, w.n() * sizeof(double), stream));
    }
    return static_cast<double*>(w.grad.get());
  }

  // --- cuDNN ------------------------------------------------------------------------------

  template <typename T>
  ConvPlan& plan(ConvOp op, const ConvDesc& d, const Shape& src) {
    const std::string key = fmt::format("{}|{}|{}|{}", static_cast<int>(op), d.str(), src.str(),
                                        sizeof(T));
    auto& slot = plans[key];
    if (slot) return *slot;
    auto p = std::make_unique<ConvPlan>();
    const cudnnDataType_t t = cudnn_type<T>();
    p->padded = d.pad_top != d.pad_bottom || d.pad_left != d.pad_right;
    const Shape x = p->padded ? Shape{src.n(), src.c(), src.h() + d.pad_top + d.pad_bottom,
                                      src.w() + d.pad_left + d.pad_right}
                              : src;
    p->padded_src = x;
    const Shape y = d.dst_shape(src);
    DK_CUDNN(cudnnCreateTensorDescriptor(&p->x));
    DK_CUDNN(cudnnSetTensor4dDescriptor(p->x, CUDNN_TENSOR_NCHW, t, static_cast<int>(x.n()),
                                        static_cast<int>(x.c()), static_cast<int>(x.h()),
                                        static_cast<int>(x.w())));
    DK_CUDNN(cudnnCreateTensorDescriptor(&p->y));
    DK_CUDNN(cudnnSetTensor4dDescriptor(p->y, CUDNN_TENSOR_NCHW, t, static_cast<int>(y.n()),
                                        static_cast<int>(y.c()), static_cast<int>(y.h()),
                                        static_cast<int>(y.w())));
    DK_CUDNN(cudnnCreateFilterDescriptor(&p->w));
    DK_CUDNN(cudnnSetFilter4dDescriptor(p->w, t, CUDNN_TENSOR_NCHW,
                                        static_cast<int>(d.out_channels),
                                        static_cast<int>(d.in_channels / d.groups),
                                        static_cast<int>(d.kernel_h), static_cast<int>(d.kernel_w)));
    DK_CUDNN(cudnnCreateConvolutionDescriptor(&p->conv));
    DK_CUDNN(cudnnSetConvolution2dDescriptor(
        p->conv, p->padded ? 0 : static_cast<int>(d.pad_top),
        p->padded ? 0 : static_cast<int>(d.pad_left), static_cast<int>(d.stride_h),
        static_cast<int>(d.stride_w), static_cast<int>(d.dilation_h),
        static_cast<int>(d.dilation_w), CUDNN_CROSS_CORRELATION, t));
    DK_CUDNN(cudnnSetConvolutionGroupCount(p->conv, static_cast<int>(d.groups)));
    const bool f32 = std::is_same_v<T, float>, tf32 = opts.tf32 && f32;
    // f32 without TF32: FMA kernels only (CUDNN_DEFAULT_MATH lets Ampere and later GPUs
    // round f32 inputs to TF32).
    const cudnnMathType_t math = f32 && !tf32 ? CUDNN_FMA_MATH : CUDNN_DEFAULT_MATH;
    DK_CUDNN(cudnnSetConvolutionMathType(p->conv, math));
    // cuDNN's heuristics rank the algorithms; take the first that works within the
    // workspace limit and, without TF32, uses no tensor cores.
    auto choose = [&](auto* perf, int n) {
      for (int i = 0; i < n; ++i) {
        if (perf[i].status != CUDNN_STATUS_SUCCESS || perf[i].memory > kMaxWorkspace) continue;
        const bool tensor_ops = perf[i].mathType == CUDNN_TENSOR_OP_MATH ||
                                perf[i].mathType == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION;
        if (tensor_ops && !tf32) continue;
        p->algo = static_cast<int>(perf[i].algo);
        p->workspace = perf[i].memory;
        DK_CUDNN(cudnnSetConvolutionMathType(p->conv, tensor_ops ? perf[i].mathType : math));
        return;
      }
      throw Error(fmt::format("cuda backend: cuDNN offers no {} algorithm for {} on {} ({}){}",
                              op == ConvOp::forward         ? "forward"
                              : op == ConvOp::backward_data ? "backward-data"
                                                            : "backward-weights",
                              d.str(), src.str(), std::is_same_v<T, float> ? "f32" : "f64",
                              tf32 ? "" : " without TF32"));
    };
    int n = 0;
    if (op == ConvOp::forward) {
      cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
      DK_CUDNN(cudnnGetConvolutionForwardAlgorithm_v7(dnn, p->x, p->w, p->conv, p->y,
                                                      CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &n, perf));
      choose(perf, n);
    } else if (op == ConvOp::backward_data) {
      cudnnConvolutionBwdDataAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
      DK_CUDNN(cudnnGetConvolutionBackwardDataAlgorithm_v7(
          dnn, p->w, p->y, p->conv, p->x, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &n, perf));
      choose(perf, n);
    } else {
      cudnnConvolutionBwdFilterAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
      DK_CUDNN(cudnnGetConvolutionBackwardFilterAlgorithm_v7(
          dnn, p->x, p->y, p->conv, p->w, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &n, perf));
      choose(perf, n);
    }
    slot = std::move(p);
    return *slot;
  }

  /// src, padded explicitly when the plan needs it.
  template <typename T>
  const T* padded(const ConvPlan& p, const ConvDesc& d, const Shape& src, const T* x) {
    if (!p.padded) return x;
    T* out = static_cast<T*>(pad_src.at_least(p.padded_src.numel() * sizeof(T)));
    DK_KERNEL(cuda::pad<T>(x, out, src.n() * src.c(), src.h(), src.w(), d.pad_top, d.pad_bottom,
                           d.pad_left, d.pad_right, stream));
    return out;
  }

  template <typename T>
  void conv_forward(const ConvDesc& d, const Shape& src, const T* x, const T* w, T* y) {
    ConvPlan& p = plan<T>(ConvOp::forward, d, src);
    const T* xp = padded(p, d, src, x);
    const T one = 1, zero = 0;
    DK_CUDNN(cudnnConvolutionForward(dnn, &one, p.x, xp, p.w, w, p.conv,
                                     static_cast<cudnnConvolutionFwdAlgo_t>(p.algo),
                                     workspace.at_least(p.workspace), p.workspace, &zero, p.y, y));
  }

  template <typename T>
  void conv_backward_data(const ConvDesc& d, const Shape& src, const T* dy, const T* w, T* dx) {
    ConvPlan& p = plan<T>(ConvOp::backward_data, d, src);
    T* out = p.padded ? static_cast<T*>(pad_diff.at_least(p.padded_src.numel() * sizeof(T))) : dx;
    const T one = 1, zero = 0;
    DK_CUDNN(cudnnConvolutionBackwardData(dnn, &one, p.w, w, p.y, dy, p.conv,
                                          static_cast<cudnnConvolutionBwdDataAlgo_t>(p.algo),
                                          workspace.at_least(p.workspace), p.workspace, &zero, p.x,
                                          out));
    if (p.padded)
      DK_KERNEL(cuda::crop<T>(out, dx, src.n() * src.c(), src.h(), src.w(), d.pad_top,
                              d.pad_bottom, d.pad_left, d.pad_right, stream));
  }

  template <typename T>
  void conv_backward_weights(const ConvDesc& d, const Shape& src, const T* x, const T* dy, T* dw,
                             int64_t parts) {
    const Shape part = src.with_batch(src.n() / parts);
    ConvPlan& p = plan<T>(ConvOp::backward_weights, d, part);
    const int64_t xn = part.numel(), yn = d.dst_shape(part).numel(),
                  wn = d.weight_shape().numel();
    const T one = 1, zero = 0;
    for (int64_t i = 0; i < parts; ++i) {
      const T* xp = padded(p, d, part, x + i * xn);
      DK_CUDNN(cudnnConvolutionBackwardFilter(
          dnn, &one, p.x, xp, p.y, dy + i * yn, p.conv,
          static_cast<cudnnConvolutionBwdFilterAlgo_t>(p.algo), workspace.at_least(p.workspace),
          p.workspace, &zero, p.w, dw + i * wn));
    }
  }

  // --- cuBLAS (column-major: a row-major [r, c] matrix is a column-major c x r one) -------

  template <typename T>
  void gemm(cublasOperation_t ta, cublasOperation_t tb, int64_t m, int64_t n, int64_t k,
            const T* a, int64_t lda, int64_t stride_a, const T* b, int64_t ldb, int64_t stride_b,
            T* c, int64_t ldc, int64_t stride_c, int64_t batch) {
    const T one = 1, zero = 0;
    const auto i = [](int64_t v) { return static_cast<int>(v); };
    if constexpr (std::is_same_v<T, float>)
      DK_CUBLAS(cublasSgemmStridedBatched(blas, ta, tb, i(m), i(n), i(k), &one, a, i(lda),
                                          stride_a, b, i(ldb), stride_b, &zero, c, i(ldc),
                                          stride_c, i(batch)));
    else
      DK_CUBLAS(cublasDgemmStridedBatched(blas, ta, tb, i(m), i(n), i(k), &one, a, i(lda),
                                          stride_a, b, i(ldb), stride_b, &zero, c, i(ldc),
                                          stride_c, i(batch)));
  }

  // dst[n, o] = src[n, i] W[o, i]^T  <=>  dst^T (o x n) = W^T^T (o x i) src^T (i x n).
  template <typename T>
  void dense_forward(const DenseDesc& d, int64_t n, const T* x, const T* w, T* y) {
    gemm<T>(CUBLAS_OP_T, CUBLAS_OP_N, d.out_features, n, d.in_features, w, d.in_features, 0, x,
            d.in_features, 0, y, d.out_features, 0, 1);
  }
  // diff_src[n, i] = diff_dst[n, o] W[o, i]  <=>  diff_src^T (i x n) = W^T (i x o) dy^T.
  template <typename T>
  void dense_backward_data(const DenseDesc& d, int64_t n, const T* dy, const T* w, T* dx) {
    gemm<T>(CUBLAS_OP_N, CUBLAS_OP_N, d.in_features, n, d.out_features, w, d.in_features, 0, dy,
            d.out_features, 0, dx, d.in_features, 0, 1);
  }
  // dW[o, i] = sum_n dy[n, o] src[n, i]  <=>  dW^T (i x o) = src^T (i x n) dy (n x o), per part.
  template <typename T>
  void dense_backward_weights(const DenseDesc& d, int64_t n, const T* x, const T* dy, T* dw,
                              int64_t parts) {
    const int64_t m = n / parts, in = d.in_features, out = d.out_features;
    gemm<T>(CUBLAS_OP_N, CUBLAS_OP_T, in, out, m, x, in, m * in, dy, out, m * out, dw, in,
            in * out, parts);
  }
};

std::string CudaBackend::unavailable_reason() {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess)
    return fmt::format("no usable CUDA device: {} ({})", cudaGetErrorString(e),
                       cudaGetErrorName(e));
  if (count == 0) return "no CUDA device on this machine";
  return "";
}

CudaBackend::CudaBackend(const BackendOptions& opts) : impl_(std::make_unique<Impl>()) {
  const std::string why = unavailable_reason();
  if (!why.empty())
    throw Error(fmt::format("cuda backend: {}; use --accelerator cpu, or run on a machine with "
                            "an NVIDIA GPU and its driver",
                            why));
  Impl& m = *impl_;
  m.opts = opts;
  DK_CUDA(cudaSetDevice(m.device));
  DK_CUDA(cudaGetDeviceProperties(&m.prop, m.device));
  DK_CUDA(cudaStreamCreateWithFlags(&m.stream, cudaStreamNonBlocking));
  DK_CUBLAS(cublasCreate(&m.blas));
  DK_CUBLAS(cublasSetStream(m.blas, m.stream));
  DK_CUBLAS(cublasSetMathMode(m.blas, opts.tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
  DK_CUDNN(cudnnCreate(&m.dnn));
  DK_CUDNN(cudnnSetStream(m.dnn, m.stream));
}

CudaBackend::~CudaBackend() = default;

std::string CudaBackend::describe() const {
  int driver = 0, runtime = 0, blas = 0;
  cudaDriverGetVersion(&driver);
  cudaRuntimeGetVersion(&runtime);
  cublasGetVersion(impl_->blas, &blas);
  const size_t cudnn = cudnnGetVersion();
  return fmt::format(
      "cuda: {} (sm_{}{}, {:.0f} GiB), driver {}.{}, runtime {}.{}, cuDNN {}.{}.{}, cuBLAS {}, "
      "TF32 {}",
      impl_->prop.name, impl_->prop.major, impl_->prop.minor,
      impl_->prop.totalGlobalMem / 1073741824.0, driver / 1000, driver % 1000 / 10,
      runtime / 1000, runtime % 1000 / 10, cudnn / 10000, cudnn % 10000 / 100, cudnn % 100, blas,
      impl_->opts.tf32 ? "on" : "off");
}

void CudaBackend::wait() {
  impl_->finish();
}

uint64_t CudaBackend::mark() {
  Impl& m = *impl_;
  cudaEvent_t e = nullptr;
  if (m.spare_events.empty()) {
    DK_CUDA(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  } else {
    e = m.spare_events.back();
    m.spare_events.pop_back();
  }
  DK_CUDA(cudaEventRecord(e, m.stream));
  m.marks.emplace_back(m.epoch, e);
  return m.epoch++;
}

void CudaBackend::wait_for(uint64_t id) {
  Impl& m = *impl_;
  auto it = std::find_if(m.marks.begin(), m.marks.end(),
                         [id](const auto& x) { return x.first == id; });
  if (it == m.marks.end()) return;  // already waited for (by this or a full wait)
  DK_CUDA(cudaEventSynchronize(it->second));
  m.complete(id);
  for (auto j = m.marks.begin(); j != m.marks.end() && j->first <= id; ++j)
    m.spare_events.push_back(j->second);
  m.marks.erase(m.marks.begin(), std::find_if(m.marks.begin(), m.marks.end(),
                                              [id](const auto& x) { return x.first > id; }));
}

BufferPtr CudaBackend::do_alloc(const Shape& shape, DType dtype) {
  auto b = std::make_unique<CudaBuffer>(this, shape, dtype);
  if (b->bytes() > 0) DK_CUDA(cudaMemsetAsync(b->ptr(), 0, b->bytes(), impl_->stream));
  return b;
}

BufferPtr CudaBackend::do_view(Buffer& base, const Shape& shape, int64_t offset) {
  return std::make_unique<CudaBuffer>(this, static_cast<CudaBuffer&>(base), shape, offset);
}

void CudaBackend::do_upload(const void* src, Buffer& dst, size_t offset, size_t bytes) {
  if (bytes == 0) return;
  Impl& m = *impl_;
  const size_t i = m.take_pinned(bytes);
  copy(m.pinned[i].p, src, bytes);
  DK_CUDA(cudaMemcpyAsync(static_cast<char*>(dev(dst)) + offset, m.pinned[i].p, bytes,
                          cudaMemcpyHostToDevice, m.stream));
}

void CudaBackend::do_download(const Buffer& src, size_t offset, size_t bytes, void* dst) {
  if (bytes == 0) return;
  Impl& m = *impl_;
  const size_t i = m.take_pinned(bytes);
  DK_CUDA(cudaMemcpyAsync(m.pinned[i].p, static_cast<const char*>(dev(src)) + offset, bytes,
                          cudaMemcpyDeviceToHost, m.stream));
  m.pending.push_back({i, dst, bytes, m.epoch});
}

WeightsPtr CudaBackend::do_create_weights(const Tensor& weights) {
  auto w = std::make_unique<CudaWeights>(this, weights.shape());
  w->w.at_least(w->n() * sizeof(float));
  impl_->sync_copy_to_device(w->w.get(), weights.data(), w->n() * sizeof(float));
  return w;
}

Tensor CudaBackend::do_read_weights(const Weights& w) {
  Tensor out(w.shape());
  impl_->sync_copy_to_host(out.data(), cw(w).w.get(), cw(w).n() * sizeof(float));
  return out;
}

void CudaBackend::do_accumulate_grad(Weights& w, const Buffer& grad, double scale) {
  double* g = impl_->grad(cw(w));
  const int64_t n = grad.shape().numel();
  if (grad.dtype() == DType::f32)
    DK_KERNEL(cuda::accumulate(g, dev<float>(grad), n, scale, impl_->stream));
  else
    DK_KERNEL(cuda::accumulate(g, dev<double>(grad), n, scale, impl_->stream));
}

void CudaBackend::do_accumulate_grad_host(Weights& w, const double* piece, int64_t offset,
                                          int64_t count) {
  Impl& m = *impl_;
  double* g = m.grad(cw(w));
  auto* tmp = static_cast<double*>(m.host_piece.at_least(static_cast<size_t>(count) * 8));
  m.sync_copy_to_device(tmp, piece, static_cast<size_t>(count) * 8);
  DK_KERNEL(cuda::accumulate(g + offset, tmp, count, 1.0, m.stream));
}

void CudaBackend::do_sgd_step(Weights& weights, const SgdParams& p) {
  Impl& m = *impl_;
  CudaWeights& w = cw(weights);
  const double* g = m.grad(w);  // a step with no gradient still decays
  const bool first = !w.momentum.get();
  if (p.momentum != 0 && first) w.momentum.at_least(w.n() * sizeof(float));
  DK_KERNEL(cuda::sgd(static_cast<float*>(w.w.get()), static_cast<float*>(w.momentum.get()), g,
                      static_cast<int64_t>(w.n()), p.lr, p.momentum, p.dampening, p.weight_decay,
                      p.nesterov, first, m.stream));
  DK_CUDA(cudaMemsetAsync(w.grad.get(), 0, w.n() * sizeof(double), m.stream));
  w.bump_version();
}

Tensor CudaBackend::do_read_momentum(const Weights& w) {
  if (!cw(w).momentum.get()) return Tensor();
  Tensor out(w.shape());
  impl_->sync_copy_to_host(out.data(), cw(w).momentum.get(), cw(w).n() * sizeof(float));
  return out;
}

void CudaBackend::do_write_momentum(Weights& weights, const Tensor& momentum) {
  CudaWeights& w = cw(weights);
  if (momentum.empty()) {
    impl_->finish();
    w.momentum.reset();
    return;
  }
  w.momentum.at_least(w.n() * sizeof(float));
  impl_->sync_copy_to_device(w.momentum.get(), momentum.data(), w.n() * sizeof(float));
}

Tensor64 CudaBackend::do_read_grad(const Weights& w) {
  Tensor64 out(w.shape());
  if (cw(w).grad.get())
    impl_->sync_copy_to_host(out.data(), cw(w).grad.get(), cw(w).n() * sizeof(double));
  return out;
}

void CudaBackend::do_conv2d_forward(const ConvDesc& d, const Buffer& src, const Weights& w,
                                    Buffer& dst) {
  if (src.dtype() == DType::f32)
    impl_->conv_forward<float>(d, src.shape(), dev<float>(src), impl_->weights<float>(w),
                               dev<float>(dst));
  else
    impl_->conv_forward<double>(d, src.shape(), dev<double>(src), impl_->weights<double>(w),
                                dev<double>(dst));
}

void CudaBackend::do_conv2d_backward_data(const ConvDesc& d, const Buffer& diff_dst,
                                          const Weights& w, Buffer& diff_src) {
  if (diff_src.dtype() == DType::f32)
    impl_->conv_backward_data<float>(d, diff_src.shape(), dev<float>(diff_dst),
                                     impl_->weights<float>(w), dev<float>(diff_src));
  else
    impl_->conv_backward_data<double>(d, diff_src.shape(), dev<double>(diff_dst),
                                      impl_->weights<double>(w), dev<double>(diff_src));
}

void CudaBackend::do_conv2d_backward_weights(const ConvDesc& d, const Buffer& src,
                                             const Buffer& diff_dst, Buffer& diff_weights,
                                             int64_t parts) {
  if (src.dtype() == DType::f32)
    impl_->conv_backward_weights<float>(d, src.shape(), dev<float>(src), dev<float>(diff_dst),
                                        dev<float>(diff_weights), parts);
  else
    impl_->conv_backward_weights<double>(d, src.shape(), dev<double>(src), dev<double>(diff_dst),
                                         dev<double>(diff_weights), parts);
}

void CudaBackend::do_dense_forward(const DenseDesc& d, const Buffer& src, const Weights& w,
                                   Buffer& dst) {
  const int64_t n = src.shape()[0];
  if (src.dtype() == DType::f32)
    impl_->dense_forward<float>(d, n, dev<float>(src), impl_->weights<float>(w), dev<float>(dst));
  else
    impl_->dense_forward<double>(d, n, dev<double>(src), impl_->weights<double>(w),
                                 dev<double>(dst));
}

void CudaBackend::do_dense_backward_data(const DenseDesc& d, const Buffer& diff_dst,
                                         const Weights& w, Buffer& diff_src) {
  const int64_t n = diff_src.shape()[0];
  if (diff_src.dtype() == DType::f32)
    impl_->dense_backward_data<float>(d, n, dev<float>(diff_dst), impl_->weights<float>(w),
                                      dev<float>(diff_src));
  else
    impl_->dense_backward_data<double>(d, n, dev<double>(diff_dst), impl_->weights<double>(w),
                                       dev<double>(diff_src));
}

void CudaBackend::do_dense_backward_weights(const DenseDesc& d, const Buffer& src,
                                            const Buffer& diff_dst, Buffer& diff_weights,
                                            int64_t parts) {
  const int64_t n = src.shape()[0];
  if (src.dtype() == DType::f32)
    impl_->dense_backward_weights<float>(d, n, dev<float>(src), dev<float>(diff_dst),
                                         dev<float>(diff_weights), parts);
  else
    impl_->dense_backward_weights<double>(d, n, dev<double>(src), dev<double>(diff_dst),
                                          dev<double>(diff_weights), parts);
}

}  // namespace darknight::accel
