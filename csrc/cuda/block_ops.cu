// CUDA implementation of pydiffusion::norm_film_silu and its backward (float32 and float64; schemas and autograd in
// ../block_ops.cpp, per-element math in ../block_math.h, the same formulas as the CPU kernels).
//
// Forward, two launches: one block per (sample, group) for its mean and rstd (two passes over the group, block
// reductions in the working precision), then a grid-stride elementwise kernel that folds each element's channel
// into o = x * a + c and writes silu(o). Backward, three: one warp per (sample, channel) for the sums over its
// positions (d shift, d scale, and the two that d weight, d bias and GroupNorm's input gradient need), one thread per
// (sample, group) for the group means of dxhat and dxhat * xhat, then the elementwise input gradient. A channels-last
// x keeps its layout; any other is made contiguous.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <optional>

#include "../block_math.h"
#include "../checks.h"

namespace pydiffusion {

namespace {

constexpr int kBlockThreads = 256;

struct Shape {
  int64_t B, C, L, G;
  bool channels_last;
};

// Where element i of a [B, C, L] tensor (channels-last, [B, L, C], or contiguous) belongs: its channel, its
// (sample, channel) row of scale and shift, its (sample, group) of mean and rstd, and its FiLM factors.
template <typename T>
struct Site {
  int64_t c, bc, bg;
  T s1, sh;
};

template <typename T>
__device__ __forceinline__ Site<T> site_of(int64_t i, const Shape& s, const T* scale, const T* shift) {
  const int64_t c = s.channels_last ? i % s.C : (i / s.L) % s.C, b = i / (s.C * s.L);
  const int64_t bc = b * s.C + c;
  return Site<T>{c, bc, b * s.G + c / (s.C / s.G), scale ? T(1) + scale[bc] : T(1), shift ? shift[bc] : T(0)};
}

template <typename T>
__device__ __forceinline__ T block_sum(T v, T* shared) {
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  v = threadIdx.x < blockDim.x / 32 ? shared[lane] : T(0);
  if (warp == 0) {
    for (int offset = 16; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset);
  }
  __syncthreads();
  return v;  // the total, in thread 0
}

// The k-th element of group g of sample b (k < per * L).
__device__ __forceinline__ int64_t group_element(int64_t b, int64_t g, int64_t k, const Shape& s) {
  const int64_t per = s.C / s.G, c = g * per + k % per, l = k / per;
  return s.channels_last ? (b * s.L + l) * s.C + c : (b * s.C + c) * s.L + l;
}

template <typename T>
__global__ void group_stats_kernel(const T* __restrict__ x, Shape s, double eps, T* __restrict__ mean,
                                   T* __restrict__ rstd) {
  __shared__ T shared[32];
  const int64_t b = blockIdx.x / s.G, g = blockIdx.x % s.G, n = s.C / s.G * s.L;
  T sum = T(0);
  for (int64_t k = threadIdx.x; k < n; k += blockDim.x) sum += x[group_element(b, g, k, s)];
  __shared__ T m;
  sum = block_sum(sum, shared);
  if (threadIdx.x == 0) m = sum / static_cast<T>(n);
  __syncthreads();
  T sq = T(0);
  for (int64_t k = threadIdx.x; k < n; k += blockDim.x) {
    const T d = x[group_element(b, g, k, s)] - m;
    sq += d * d;
  }
  sq = block_sum(sq, shared);
  if (threadIdx.x == 0) {
    mean[blockIdx.x] = m;
    rstd[blockIdx.x] = static_cast<T>(1.0 / sqrt(static_cast<double>(sq) / static_cast<double>(n) + eps));
  }
}

template <typename T>
__global__ void forward_kernel(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ bias,
                               const T* __restrict__ scale, const T* __restrict__ shift, const T* __restrict__ mean,
                               const T* __restrict__ rstd, Shape s, T* __restrict__ y) {
  const int64_t n = s.B * s.C * s.L;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const Site<T> e = site_of(i, s, scale, shift);
    const ChannelAffine<T> f = channel_affine(mean[e.bg], rstd[e.bg], w[e.c], bias[e.c], e.s1, e.sh);
    y[i] = silu_affine_elem(x[i], f.a, f.c);
  }
}

// One warp per (sample, channel): sums[k][b][c] for k = d shift, d scale, d bias part, d weight part.
template <typename T>
__global__ void channel_sums_kernel(const T* __restrict__ dy, const T* __restrict__ x, const T* __restrict__ w,
                                    const T* __restrict__ bias, const T* __restrict__ scale,
                                    const T* __restrict__ shift, const T* __restrict__ mean,
                                    const T* __restrict__ rstd, Shape s, T* __restrict__ sums) {
  const int64_t warp = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (warp >= s.B * s.C) return;
  const int64_t b = warp / s.C, c = warp % s.C, bg = b * s.G + c / (s.C / s.G);
  const T s1 = scale ? T(1) + scale[warp] : T(1), sh = shift ? shift[warp] : T(0);
  T acc[4] = {T(0), T(0), T(0), T(0)};
  for (int64_t l = lane; l < s.L; l += 32) {
    const int64_t i = s.channels_last ? (b * s.L + l) * s.C + c : warp * s.L + l;
    const ElemGrad<T> e = norm_film_silu_grad_elem(dy[i], x[i], mean[bg], rstd[bg], w[c], bias[c], s1, sh);
    acc[0] += e.d_o;
    acc[1] += e.d_o * e.g;
    acc[2] += e.dg;
    acc[3] += e.dg * e.xhat;
  }
  for (int k = 0; k < 4; ++k) {
    for (int offset = 16; offset > 0; offset /= 2) acc[k] += __shfl_down_sync(0xffffffffu, acc[k], offset);
    if (lane == 0) sums[k * s.B * s.C + warp] = acc[k];
  }
}

// One thread per (sample, group): m[0] = mean of dxhat = dg * w, m[1] = mean of dxhat * xhat.
template <typename T>
__global__ void group_means_kernel(const T* __restrict__ sums, const T* __restrict__ w, Shape s, T* __restrict__ m) {
  const int64_t bg = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (bg >= s.B * s.G) return;
  const int64_t b = bg / s.G, g = bg % s.G, per = s.C / s.G, BC = s.B * s.C;
  T m1 = T(0), m2 = T(0);
  for (int64_t c = g * per; c < (g + 1) * per; ++c) {
    m1 += w[c] * sums[2 * BC + b * s.C + c];
    m2 += w[c] * sums[3 * BC + b * s.C + c];
  }
  const T n = static_cast<T>(per * s.L);
  m[2 * bg] = m1 / n;
  m[2 * bg + 1] = m2 / n;
}

template <typename T>
__global__ void input_grad_kernel(const T* __restrict__ dy, const T* __restrict__ x, const T* __restrict__ w,
                                  const T* __restrict__ bias, const T* __restrict__ scale,
                                  const T* __restrict__ shift, const T* __restrict__ mean, const T* __restrict__ rstd,
                                  const T* __restrict__ m, Shape s, T* __restrict__ dx) {
  const int64_t n = s.B * s.C * s.L;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const Site<T> e = site_of(i, s, scale, shift);
    const T mu = mean[e.bg], r = rstd[e.bg];
    const ElemGrad<T> g = norm_film_silu_grad_elem(dy[i], x[i], mu, r, w[e.c], bias[e.c], e.s1, e.sh);
    dx[i] = norm_input_grad_elem(g.dg, x[i], mu, r, w[e.c], m[2 * e.bg], m[2 * e.bg + 1]);
  }
}

int grid_for(int64_t n) {
  int sms = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, c10::cuda::current_device()));
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>((n + kBlockThreads - 1) / kBlockThreads,
                                                                  static_cast<int64_t>(sms) * 32)));
}

void check_cuda(const at::Tensor& x) {
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "pydiffusion::norm_film_silu on CUDA supports float32 and float64, got ", x.scalar_type());
}

std::optional<at::Tensor> dense_or_none(const std::optional<at::Tensor>& t) {
  return t.has_value() ? std::optional<at::Tensor>(t->contiguous()) : std::nullopt;
}

template <typename T>
const T* ptr_or_null(const std::optional<at::Tensor>& t) {
  return t.has_value() ? t->data_ptr<T>() : nullptr;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> norm_film_silu_cuda(const at::Tensor& x_in, const at::Tensor& weight_in,
                                                                   const at::Tensor& bias_in,
                                                                   const std::optional<at::Tensor>& scale_in,
                                                                   const std::optional<at::Tensor>& shift_in,
                                                                   int64_t groups, double eps) {
  check_norm_film_silu(x_in, weight_in, bias_in, scale_in, shift_in, groups, eps);
  check_cuda(x_in);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const bool cl = keeps_channels_last(x_in);
  const auto x = cl ? x_in : x_in.contiguous(), weight = weight_in.contiguous(), bias = bias_in.contiguous();
  const auto scale = dense_or_none(scale_in), shift = dense_or_none(shift_in);
  const int64_t B = x.size(0), C = x.size(1);
  const Shape s{B, C, x.numel() / (B * C), groups, cl};
  auto y = at::empty_like(x), mean = at::empty({B, groups}, x.options()), rstd = at::empty({B, groups}, x.options());
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "norm_film_silu_cuda", [&] {
    group_stats_kernel<scalar_t><<<B * groups, kBlockThreads, 0, stream>>>(x.data_ptr<scalar_t>(), s, eps,
                                                                            mean.data_ptr<scalar_t>(),
                                                                            rstd.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    forward_kernel<scalar_t><<<grid_for(x.numel()), kBlockThreads, 0, stream>>>(
        x.data_ptr<scalar_t>(), weight.data_ptr<scalar_t>(), bias.data_ptr<scalar_t>(), ptr_or_null<scalar_t>(scale),
        ptr_or_null<scalar_t>(shift), mean.data_ptr<scalar_t>(), rstd.data_ptr<scalar_t>(), s,
        y.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {y, mean, rstd};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> norm_film_silu_backward_cuda(
    const at::Tensor& grad_in, const at::Tensor& x_in, const at::Tensor& weight_in, const at::Tensor& bias_in,
    const std::optional<at::Tensor>& scale_in, const std::optional<at::Tensor>& shift_in, const at::Tensor& mean_in,
    const at::Tensor& rstd_in, int64_t groups) {
  check_norm_film_silu_backward(grad_in, x_in, weight_in, bias_in, scale_in, shift_in, mean_in, rstd_in, groups);
  check_cuda(x_in);
  const int64_t B = x_in.size(0), C = x_in.size(1);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const bool cl = keeps_channels_last(x_in);
  const auto x = cl ? x_in : x_in.contiguous();
  const auto grad = cl ? grad_in.contiguous(at::MemoryFormat::ChannelsLast) : grad_in.contiguous();
  const auto weight = weight_in.contiguous(), bias = bias_in.contiguous();
  const auto mean = mean_in.contiguous(), rstd = rstd_in.contiguous();
  const auto scale = dense_or_none(scale_in), shift = dense_or_none(shift_in);
  const Shape s{B, C, x.numel() / (B * C), groups, cl};
  auto dx = at::empty_like(x);
  const auto sums = at::empty({4, B, C}, x.options()), means = at::empty({B, groups, 2}, x.options());
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "norm_film_silu_backward_cuda", [&] {
    const scalar_t *pg = grad.data_ptr<scalar_t>(), *px = x.data_ptr<scalar_t>();
    const scalar_t *pw = weight.data_ptr<scalar_t>(), *pb = bias.data_ptr<scalar_t>();
    const scalar_t *psc = ptr_or_null<scalar_t>(scale), *psh = ptr_or_null<scalar_t>(shift);
    const scalar_t *pm = mean.data_ptr<scalar_t>(), *pr = rstd.data_ptr<scalar_t>();
    const int64_t warps_per_block = kBlockThreads / 32;
    channel_sums_kernel<scalar_t><<<(B * C + warps_per_block - 1) / warps_per_block, kBlockThreads, 0, stream>>>(
        pg, px, pw, pb, psc, psh, pm, pr, s, sums.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    group_means_kernel<scalar_t><<<(B * groups + kBlockThreads - 1) / kBlockThreads, kBlockThreads, 0, stream>>>(
        sums.data_ptr<scalar_t>(), pw, s, means.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    input_grad_kernel<scalar_t><<<grid_for(x.numel()), kBlockThreads, 0, stream>>>(
        pg, px, pw, pb, psc, psh, pm, pr, means.data_ptr<scalar_t>(), s, dx.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  const auto totals = sums.slice(0, 2, 4).sum(1);
  return {dx, totals[1], totals[0], sums[1], sums[0]};
}

}  // namespace

TORCH_LIBRARY_IMPL(pydiffusion, CUDA, m) {
  m.impl("norm_film_silu", &norm_film_silu_cuda);
  m.impl("norm_film_silu_backward", &norm_film_silu_backward_cuda);
}

}  // namespace pydiffusion
