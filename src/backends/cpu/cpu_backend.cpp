#include "backends/cpu/cpu_backend.h"

#include <cblas.h>
#include <omp.h>

#include <oneapi/dnnl/dnnl.hpp>
#include <unordered_map>
#include <utility>
#include <vector>

#include "backends/cpu/gemm_f64.h"
#include "backends/host/host_memory.h"

extern "C" char* openblas_get_config(void);

namespace darknight::accel {
namespace {

using dnnl::memory;
using tag = memory::format_tag;
using dt = memory::data_type;

memory::dims dims_of(const Shape& s) {
  return {s.dims().begin(), s.dims().end()};
}

memory::dims conv_weight_dims(const ConvDesc& d) {
  if (d.groups == 1) return {d.out_channels, d.in_channels, d.kernel_h, d.kernel_w};
  return {d.groups, d.out_channels / d.groups, d.in_channels / d.groups, d.kernel_h, d.kernel_w};
}
memory::desc conv_weight_user_md(const ConvDesc& d) {
  return {conv_weight_dims(d), dt::f32, d.groups == 1 ? tag::oihw : tag::goihw};
}
memory::desc any_md(const memory::dims& dims) {
  return {dims, dt::f32, tag::any};
}
memory::desc nchw_md(const Shape& s) {
  return {dims_of(s), dt::f32, tag::nchw};
}
memory::desc nc_md(int64_t n, int64_t c) {
  return {{n, c}, dt::f32, tag::nc};
}

/// A oneDNN convolution descriptor (forward, backward-data or backward-weights: their
/// arguments differ only in the leading propagation kind) of `d` on NCHW `src`, every
/// memory layout left to the primitive.
template <typename Desc, typename... Lead>
Desc conv_desc(const ConvDesc& d, const Shape& src, Lead... lead) {
  return Desc(lead..., dnnl::algorithm::convolution_direct, any_md(dims_of(src)),
              any_md(conv_weight_dims(d)), any_md(dims_of(d.dst_shape(src))),
              {d.stride_h, d.stride_w},
              {d.dilation_h - 1, d.dilation_w - 1},  // oneDNN: 0 means no dilation
              {d.pad_top, d.pad_left}, {d.pad_bottom, d.pad_right});
}

/// Weights kept in the layouts that primitives asked for, until the next update.
class CpuWeights final : public HostWeights {
 public:
  using HostWeights::HostWeights;
  memory in_layout(const memory::desc& user_md, const memory::desc& want, const dnnl::engine& eng,
                   dnnl::stream& strm) const {
    if (cached_version_ != version()) {
      layouts_.clear();
      cached_version_ = version();
    }
    for (auto& [md, mem] : layouts_)
      if (md == want) return mem;
    memory user(user_md, eng, const_cast<float*>(f32().data()));
    memory m = user;
    if (user_md != want) {
      m = memory(want, eng);
      dnnl::reorder(user, m).execute(strm, user, m);
    }
    layouts_.emplace_back(want, m);
    return m;
  }

 private:
  mutable std::vector<std::pair<memory::desc, memory>> layouts_;
  mutable uint64_t cached_version_ = ~uint64_t{0};
};

const CpuWeights& cpu(const Weights& w) {
  return static_cast<const CpuWeights&>(w);
}

/// A primitive and its descriptor, cached per shape.
template <typename PD, typename P>
struct Entry {
  PD pd;
  P prim;
};

/// Grow-only host memory, one per primitive argument, shared by every cached primitive:
/// where arguments are reordered to and from the primitive's preferred layout.
class Scratch {
 public:
  void* get(int arg, size_t bytes) {
    auto& [size, mem] = slots_[arg];
    if (size < bytes) {
      mem.reset();
      mem.reset(darknight::detail::aligned_alloc_bytes(bytes));
      size = bytes;
    }
    return mem.get();
  }

 private:
  std::unordered_map<int, std::pair<size_t, std::unique_ptr<void, darknight::detail::AlignedFree>>>
      slots_;
};

}  // namespace

struct CpuBackend::Impl {
  dnnl::engine eng{dnnl::engine::kind::cpu, 0};
  dnnl::stream strm{eng};
  Scratch scratch;

  std::unordered_map<std::string,
                     Entry<dnnl::convolution_forward::primitive_desc, dnnl::convolution_forward>>
      conv_fwd;
  std::unordered_map<std::string, Entry<dnnl::convolution_backward_data::primitive_desc,
                                        dnnl::convolution_backward_data>>
      conv_bwd_data;
  std::unordered_map<std::string, Entry<dnnl::convolution_backward_weights::primitive_desc,
                                        dnnl::convolution_backward_weights>>
      conv_bwd_w;
  std::unordered_map<
      std::string, Entry<dnnl::inner_product_forward::primitive_desc, dnnl::inner_product_forward>>
      ip_fwd;
  std::unordered_map<std::string, Entry<dnnl::inner_product_backward_data::primitive_desc,
                                        dnnl::inner_product_backward_data>>
      ip_bwd_data;
  std::unordered_map<std::string, Entry<dnnl::inner_product_backward_weights::primitive_desc,
                                        dnnl::inner_product_backward_weights>>
      ip_bwd_w;

  /// One argument of a primitive call: the user's memory (plain layout) and the layout
  /// the primitive wants. Inputs are reordered before, outputs after the call.
  struct Arg {
    int arg;
    memory user;
    memory::desc want;
    bool output = false;
  };

  template <typename E>
  void run(E& e, std::initializer_list<Arg> args, int weights_arg = 0, memory weights = {}) {
    std::unordered_map<int, memory> exec;
    std::vector<std::pair<memory, memory>> after;
    for (const Arg& a : args) {
      if (a.user.get_desc() == a.want) {
        exec[a.arg] = a.user;
        continue;
      }
      memory s(a.want, eng, scratch.get(a.arg, a.want.get_size()));
      memory user = a.user;
      if (a.output)
        after.emplace_back(s, user);
      else
        dnnl::reorder(user, s).execute(strm, user, s);
      exec[a.arg] = s;
    }
    if (weights_arg) exec[weights_arg] = weights;
    e.prim.execute(strm, exec);
    for (auto& [from, to] : after) dnnl::reorder(from, to).execute(strm, from, to);
  }

  dnnl::convolution_forward::primitive_desc conv_hint(const ConvDesc& d, const Shape& src) {
    return {conv_desc<dnnl::convolution_forward::desc>(d, src, dnnl::prop_kind::forward_training),
            eng};
  }

  void conv_forward(const ConvDesc& d, const Shape& src_shape, float* src, const CpuWeights& w,
                    float* dst) {
    const Shape dst_shape = d.dst_shape(src_shape);
    auto& e = conv_fwd[d.str() + src_shape.str()];
    if (!e.prim) {
      e.pd = {conv_desc<dnnl::convolution_forward::desc>(d, src_shape,
                                                         dnnl::prop_kind::forward_inference),
              eng};
      e.prim = dnnl::convolution_forward(e.pd);
    }
    memory wm = w.in_layout(conv_weight_user_md(d), e.pd.weights_desc(), eng, strm);
    run(e,
        {{DNNL_ARG_SRC, memory(nchw_md(src_shape), eng, src), e.pd.src_desc()},
         {DNNL_ARG_DST, memory(nchw_md(dst_shape), eng, dst), e.pd.dst_desc(), true}},
        DNNL_ARG_WEIGHTS, wm);
  }

  void conv_backward_data(const ConvDesc& d, const Shape& src_shape, float* diff_dst,
                          const CpuWeights& w, float* diff_src) {
    const Shape dst_shape = d.dst_shape(src_shape);
    auto& e = conv_bwd_data[d.str() + src_shape.str()];
    if (!e.prim) {
      e.pd = {conv_desc<dnnl::convolution_backward_data::desc>(d, src_shape), eng,
              conv_hint(d, src_shape)};
      e.prim = dnnl::convolution_backward_data(e.pd);
    }
    memory wm = w.in_layout(conv_weight_user_md(d), e.pd.weights_desc(), eng, strm);
    run(e,
        {{DNNL_ARG_DIFF_DST, memory(nchw_md(dst_shape), eng, diff_dst), e.pd.diff_dst_desc()},
         {DNNL_ARG_DIFF_SRC, memory(nchw_md(src_shape), eng, diff_src), e.pd.diff_src_desc(),
          true}},
        DNNL_ARG_WEIGHTS, wm);
  }

  void conv_backward_weights(const ConvDesc& d, const Shape& src_shape, float* src, float* diff_dst,
                             float* diff_w, int64_t parts) {
    const Shape part_src = src_shape.with_batch(src_shape.n() / parts);
    const Shape part_dst = d.dst_shape(part_src);
    auto& e = conv_bwd_w[d.str() + part_src.str()];
    if (!e.prim) {
      e.pd = {conv_desc<dnnl::convolution_backward_weights::desc>(d, part_src), eng,
              conv_hint(d, part_src)};
      e.prim = dnnl::convolution_backward_weights(e.pd);
    }
    const int64_t wn = d.weight_shape().numel();
    for (int64_t p = 0; p < parts; ++p) {
      run(e, {{DNNL_ARG_SRC, memory(nchw_md(part_src), eng, src + p * part_src.numel()),
               e.pd.src_desc()},
              {DNNL_ARG_DIFF_DST, memory(nchw_md(part_dst), eng, diff_dst + p * part_dst.numel()),
               e.pd.diff_dst_desc()},
              {DNNL_ARG_DIFF_WEIGHTS, memory(conv_weight_user_md(d), eng, diff_w + p * wn),
               e.pd.diff_weights_desc(), true}});
    }
  }

  dnnl::inner_product_forward::primitive_desc ip_hint(int64_t n, const DenseDesc& d) {
    dnnl::inner_product_forward::desc fd(
        dnnl::prop_kind::forward_training, any_md({n, d.in_features}),
        any_md({d.out_features, d.in_features}), any_md({n, d.out_features}));
    return {fd, eng};
  }

  memory::desc ip_weight_user_md(const DenseDesc& d) {
    return {{d.out_features, d.in_features}, dt::f32, tag::oi};
  }

  void dense_forward(const DenseDesc& d, int64_t n, float* src, const CpuWeights& w, float* dst) {
    auto& e = ip_fwd[d.str() + "|" + std::to_string(n)];
    if (!e.prim) {
      dnnl::inner_product_forward::desc fd(
          dnnl::prop_kind::forward_inference, any_md({n, d.in_features}),
          any_md({d.out_features, d.in_features}), any_md({n, d.out_features}));
      e.pd = {fd, eng};
      e.prim = dnnl::inner_product_forward(e.pd);
    }
    memory wm = w.in_layout(ip_weight_user_md(d), e.pd.weights_desc(), eng, strm);
    run(e,
        {{DNNL_ARG_SRC, memory(nc_md(n, d.in_features), eng, src), e.pd.src_desc()},
         {DNNL_ARG_DST, memory(nc_md(n, d.out_features), eng, dst), e.pd.dst_desc(), true}},
        DNNL_ARG_WEIGHTS, wm);
  }

  void dense_backward_data(const DenseDesc& d, int64_t n, float* diff_dst, const CpuWeights& w,
                           float* diff_src) {
    auto& e = ip_bwd_data[d.str() + "|" + std::to_string(n)];
    if (!e.prim) {
      dnnl::inner_product_backward_data::desc bd(any_md({n, d.in_features}),
                                                 any_md({d.out_features, d.in_features}),
                                                 any_md({n, d.out_features}));
      e.pd = {bd, eng, ip_hint(n, d)};
      e.prim = dnnl::inner_product_backward_data(e.pd);
    }
    memory wm = w.in_layout(ip_weight_user_md(d), e.pd.weights_desc(), eng, strm);
    run(e,
        {{DNNL_ARG_DIFF_DST, memory(nc_md(n, d.out_features), eng, diff_dst), e.pd.diff_dst_desc()},
         {DNNL_ARG_DIFF_SRC, memory(nc_md(n, d.in_features), eng, diff_src), e.pd.diff_src_desc(),
          true}},
        DNNL_ARG_WEIGHTS, wm);
  }

  void dense_backward_weights(const DenseDesc& d, int64_t n, float* src, float* diff_dst,
                              float* diff_w, int64_t parts) {
    const int64_t m = n / parts;
    auto& e = ip_bwd_w[d.str() + "|" + std::to_string(m)];
    if (!e.prim) {
      dnnl::inner_product_backward_weights::desc bw(any_md({m, d.in_features}),
                                                    any_md({d.out_features, d.in_features}),
                                                    any_md({m, d.out_features}));
      e.pd = {bw, eng, ip_hint(m, d)};
      e.prim = dnnl::inner_product_backward_weights(e.pd);
    }
    const int64_t wn = d.in_features * d.out_features;
    for (int64_t p = 0; p < parts; ++p) {
      run(e, {{DNNL_ARG_SRC, memory(nc_md(m, d.in_features), eng, src + p * m * d.in_features),
               e.pd.src_desc()},
              {DNNL_ARG_DIFF_DST,
               memory(nc_md(m, d.out_features), eng, diff_dst + p * m * d.out_features),
               e.pd.diff_dst_desc()},
              {DNNL_ARG_DIFF_WEIGHTS, memory(ip_weight_user_md(d), eng, diff_w + p * wn),
               e.pd.diff_weights_desc(), true}});
    }
  }
};

// ---------------------------------------------------------------- CpuBackend

namespace {
/// Runs this backend's calls on its own thread count (oneDNN and the OpenMP build of
/// OpenBLAS follow the OpenMP setting), leaving the caller's setting as it was.
class ThreadScope {
 public:
  explicit ThreadScope(int n) : previous_(omp_get_max_threads()) { omp_set_num_threads(n); }
  ~ThreadScope() { omp_set_num_threads(previous_); }

 private:
  int previous_;
};

}  // namespace

CpuBackend::CpuBackend(const BackendOptions& opts) : impl_(std::make_unique<Impl>()) {
  DK_CHECK(opts.threads >= 0, "cpu backend: threads must be >= 0, got {}", opts.threads);
  threads_ = opts.threads > 0 ? opts.threads : omp_get_max_threads();
}

CpuBackend::~CpuBackend() = default;

std::string CpuBackend::describe() const {
  const dnnl_version_t* v = dnnl_version();
  return fmt::format("cpu: oneDNN {}.{}.{} (f32), OpenBLAS (f64; {}), {} threads", v->major,
                     v->minor, v->patch, openblas_get_config(), threads_);
}

void CpuBackend::wait() {
  impl_->strm.wait();
}

BufferPtr CpuBackend::do_view(Buffer& base, const Shape& shape, int64_t offset) {
  return host_view(this, base, shape, offset);
}

BufferPtr CpuBackend::do_alloc(const Shape& shape, DType dtype) {
  return std::make_unique<HostBuffer>(this, shape, dtype);
}
void CpuBackend::do_upload(const void* src, Buffer& dst, size_t offset, size_t bytes) {
  impl_->strm.wait();  // a submitted primitive may still read the buffer
  host_upload(src, dst, offset, bytes);
}
void CpuBackend::do_download(const Buffer& src, size_t offset, size_t bytes, void* dst) {
  impl_->strm.wait();
  host_download(src, offset, bytes, dst);
}
WeightsPtr CpuBackend::do_create_weights(const Tensor& weights) {
  return std::make_unique<CpuWeights>(this, weights);
}
Tensor CpuBackend::do_read_weights(const Weights& w) {
  impl_->strm.wait();
  return cpu(w).f32().clone();
}
void CpuBackend::do_accumulate_grad(Weights& w, const Buffer& grad, double scale) {
  const ThreadScope threads(threads_);
  impl_->strm.wait();
  host_accumulate_grad(w, grad, scale);
}
void CpuBackend::do_accumulate_grad_host(Weights& w, const double* piece, int64_t offset,
                                         int64_t count) {
  const ThreadScope threads(threads_);
  impl_->strm.wait();
  static_cast<HostWeights&>(w).accumulate(piece, offset, count, 1.0);
}
void CpuBackend::do_sgd_step(Weights& w, const SgdParams& p) {
  const ThreadScope threads(threads_);
  impl_->strm.wait();
  static_cast<HostWeights&>(w).sgd(p);
}
Tensor64 CpuBackend::do_read_grad(const Weights& w) {
  impl_->strm.wait();
  return static_cast<const HostWeights&>(w).grad();
}
Tensor CpuBackend::do_read_momentum(const Weights& w) {
  impl_->strm.wait();
  return static_cast<const HostWeights&>(w).momentum().clone();
}
void CpuBackend::do_write_momentum(Weights& w, const Tensor& momentum) {
  static_cast<HostWeights&>(w).set_momentum(momentum);
}

namespace {
float* f32(const Buffer& b) {
  return const_cast<float*>(host(b).as<float>());
}
double* f64p(const Buffer& b) {
  return const_cast<double*>(host(b).as<double>());
}
}  // namespace

void CpuBackend::do_conv2d_forward(const ConvDesc& d, const Buffer& src, const Weights& w,
                                   Buffer& dst) {
  const ThreadScope threads(threads_);
  if (src.dtype() == DType::f32)
    impl_->conv_forward(d, src.shape(), f32(src), cpu(w), f32(dst));
  else
    f64::conv_forward(d, src.shape(), f64p(src), cpu(w).f64().data(), f64p(dst), threads_);
}

void CpuBackend::do_conv2d_backward_data(const ConvDesc& d, const Buffer& diff_dst,
                                         const Weights& w, Buffer& diff_src) {
  const ThreadScope threads(threads_);
  if (diff_src.dtype() == DType::f32)
    impl_->conv_backward_data(d, diff_src.shape(), f32(diff_dst), cpu(w), f32(diff_src));
  else
    f64::conv_backward_data(d, diff_src.shape(), f64p(diff_dst), cpu(w).f64().data(),
                            f64p(diff_src), threads_);
}

void CpuBackend::do_conv2d_backward_weights(const ConvDesc& d, const Buffer& src,
                                            const Buffer& diff_dst, Buffer& diff_weights,
                                            int64_t parts) {
  const ThreadScope threads(threads_);
  if (src.dtype() == DType::f32)
    impl_->conv_backward_weights(d, src.shape(), f32(src), f32(diff_dst), f32(diff_weights), parts);
  else
    f64::conv_backward_weights(d, src.shape(), f64p(src), f64p(diff_dst), f64p(diff_weights), parts,
                               threads_);
}

void CpuBackend::do_dense_forward(const DenseDesc& d, const Buffer& src, const Weights& w,
                                  Buffer& dst) {
  const ThreadScope threads(threads_);
  const int64_t n = src.shape()[0];
  if (src.dtype() == DType::f32)
    impl_->dense_forward(d, n, f32(src), cpu(w), f32(dst));
  else
    f64::dense_forward(n, d.in_features, d.out_features, f64p(src), cpu(w).f64().data(), f64p(dst));
}

void CpuBackend::do_dense_backward_data(const DenseDesc& d, const Buffer& diff_dst,
                                        const Weights& w, Buffer& diff_src) {
  const ThreadScope threads(threads_);
  const int64_t n = diff_src.shape()[0];
  if (diff_src.dtype() == DType::f32)
    impl_->dense_backward_data(d, n, f32(diff_dst), cpu(w), f32(diff_src));
  else
    f64::dense_backward_data(n, d.in_features, d.out_features, f64p(diff_dst), cpu(w).f64().data(),
                             f64p(diff_src));
}

void CpuBackend::do_dense_backward_weights(const DenseDesc& d, const Buffer& src,
                                           const Buffer& diff_dst, Buffer& diff_weights,
                                           int64_t parts) {
  const ThreadScope threads(threads_);
  const int64_t n = src.shape()[0];
  if (src.dtype() == DType::f32)
    impl_->dense_backward_weights(d, n, f32(src), f32(diff_dst), f32(diff_weights), parts);
  else
    f64::dense_backward_weights(n, d.in_features, d.out_features, f64p(src), f64p(diff_dst),
                                f64p(diff_weights), parts);
}

}  // namespace darknight::accel
