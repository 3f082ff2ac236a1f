// CUDA implementations of pydiffusion::q_sample and pydiffusion::posterior_step.
// float32/float64/float16/bfloat16, with the math in float32 for the half types (opmath), exactly
// like pydiffusion/reference.py; the per-element formulas come from ../diffusion_math.h.
//
// Each op is two launches on the current stream:
//  1. a per-sample pre-pass that checks every timestep (0 <= t <= T, or 1 <= t <= T and
//     0 <= s < t) and computes that sample's coefficients once (a_t, s_t; or the StepCoef of the
//     step t -> s). Bad timesteps set a flag instead of indexing the tables, and the host reads the
//     flag (one 4-byte device-to-host copy, a stream sync) so bad input is a RuntimeError with a
//     clear message, never an out-of-bounds read or a device-side assert.
//  2. the elementwise kernel: a grid-stride loop over packs of N elements (16-byte loads and stores
//     when every row length is a multiple of N and the pointers are 16-byte aligned, else N = 1),
//     the sample of a pack found with a 32-bit magic-number division when the sizes allow.
// Inputs that are not contiguous are copied to contiguous memory; outputs are contiguous.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/detail/IntegerDivider.cuh>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cstdint>
#include <limits>

#include "../checks.h"
#include "../diffusion_math.h"

namespace pydiffusion {

namespace {

constexpr int kThreads = 256;

// A grid of at most 32 blocks of 256 threads per SM; the grid-stride loops cover the rest.
int blocks_for(int64_t n) {
  int sms = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, c10::cuda::current_device()));
  const int64_t want = (n + kThreads - 1) / kThreads;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(want, static_cast<int64_t>(sms) * 32)));
}

// N consecutive elements moved as one aligned load or store.
template <typename T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// ---- pre-pass: per-sample coefficients and the timestep check -------------------------------------

template <typename opmath_t>
__global__ void q_coef_kernel(const int64_t* __restrict__ t, const double* __restrict__ a,
                              const double* __restrict__ s, int64_t B, int64_t T, opmath_t* __restrict__ coef,
                              int* __restrict__ bad) {
  for (int64_t b = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; b < B;
       b += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int64_t ti = t[b];
    if (ti < 0 || ti > T) {
      *bad = 1;
      continue;
    }
    coef[2 * b] = static_cast<opmath_t>(a[ti]);
    coef[2 * b + 1] = static_cast<opmath_t>(s[ti]);
  }
}

template <typename opmath_t>
__global__ void step_coef_kernel(const int64_t* __restrict__ t, const int64_t* __restrict__ s_idx,
                                 const double* __restrict__ a, const double* __restrict__ s, int64_t B, int64_t T,
                                 opmath_t eta, StepCoef<opmath_t>* __restrict__ coef, int* __restrict__ bad) {
  for (int64_t b = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; b < B;
       b += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int64_t ti = t[b], si = s_idx[b];
    if (ti < 1 || ti > T || si < 0 || si >= ti) {
      *bad = 1;
      continue;
    }
    coef[b] = step_coef<opmath_t>(static_cast<opmath_t>(a[ti]), static_cast<opmath_t>(s[ti]),
                                  static_cast<opmath_t>(a[si]), static_cast<opmath_t>(s[si]), eta);
  }
}

// ---- elementwise kernels ------------------------------------------------------------------------

template <typename scalar_t, int N, typename index_t>
__global__ void q_sample_kernel(const scalar_t* __restrict__ x0, const scalar_t* __restrict__ eps,
                                const at::opmath_type<scalar_t>* __restrict__ coef, scalar_t* __restrict__ out,
                                index_t n_packs, at::cuda::detail::IntDivider<index_t> packs_per_row) {
  using opmath_t = at::opmath_type<scalar_t>;
  using pack_t = Pack<scalar_t, N>;
  const pack_t* __restrict__ px = reinterpret_cast<const pack_t*>(x0);
  const pack_t* __restrict__ pe = reinterpret_cast<const pack_t*>(eps);
  pack_t* __restrict__ po = reinterpret_cast<pack_t*>(out);
  const index_t stride = static_cast<index_t>(blockDim.x) * gridDim.x;
  for (index_t i = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n_packs; i += stride) {
    const index_t b = packs_per_row.div(i);
    const opmath_t ab = coef[2 * b], sb = coef[2 * b + 1];
    const pack_t x = px[i], e = pe[i];
    pack_t o;
#pragma unroll
    for (int k = 0; k < N; ++k) {
      o.v[k] = static_cast<scalar_t>(
          q_sample_elem<opmath_t>(static_cast<opmath_t>(x.v[k]), static_cast<opmath_t>(e.v[k]), ab, sb));
    }
    po[i] = o;
  }
}

template <typename scalar_t, int N, typename index_t>
__global__ void posterior_kernel(const scalar_t* __restrict__ x_t, const scalar_t* __restrict__ net,
                                 const scalar_t* __restrict__ z,
                                 const StepCoef<at::opmath_type<scalar_t>>* __restrict__ coef, int prediction,
                                 at::opmath_type<scalar_t> clip, scalar_t* __restrict__ x_s,
                                 scalar_t* __restrict__ x0_hat, index_t n_packs,
                                 at::cuda::detail::IntDivider<index_t> packs_per_row) {
  using opmath_t = at::opmath_type<scalar_t>;
  using pack_t = Pack<scalar_t, N>;
  const pack_t* __restrict__ px = reinterpret_cast<const pack_t*>(x_t);
  const pack_t* __restrict__ pn = reinterpret_cast<const pack_t*>(net);
  const pack_t* __restrict__ pz = reinterpret_cast<const pack_t*>(z);
  pack_t* __restrict__ pxs = reinterpret_cast<pack_t*>(x_s);
  pack_t* __restrict__ px0 = reinterpret_cast<pack_t*>(x0_hat);
  const index_t stride = static_cast<index_t>(blockDim.x) * gridDim.x;
  for (index_t i = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n_packs; i += stride) {
    const StepCoef<opmath_t> c = coef[packs_per_row.div(i)];
    const pack_t x = px[i], o = pn[i], zz = pz[i];
    pack_t xs, x0;
#pragma unroll
    for (int k = 0; k < N; ++k) {
      opmath_t xs_k, x0_k;
      posterior_elem<opmath_t>(static_cast<opmath_t>(x.v[k]), static_cast<opmath_t>(o.v[k]),
                               static_cast<opmath_t>(zz.v[k]), c, prediction, clip, &xs_k, &x0_k);
      xs.v[k] = static_cast<scalar_t>(xs_k);
      x0.v[k] = static_cast<scalar_t>(x0_k);
    }
    pxs[i] = xs;
    px0[i] = x0;
  }
}

// ---- launchers ----------------------------------------------------------------------------------

// 32-bit indexing (a multiply-high instead of a 64-bit division per pack) when the sizes fit.
bool fits_32bit(int64_t n_packs) { return n_packs <= std::numeric_limits<int32_t>::max(); }

template <typename scalar_t, int N>
void launch_q_sample(const at::Tensor& x0, const at::Tensor& eps, const at::Tensor& coef, at::Tensor& out,
                     int64_t inner, cudaStream_t stream) {
  using opmath_t = at::opmath_type<scalar_t>;
  const int64_t n_packs = x0.numel() / N, row = inner / N;
  if (fits_32bit(n_packs)) {
    q_sample_kernel<scalar_t, N, uint32_t><<<blocks_for(n_packs), kThreads, 0, stream>>>(
        x0.data_ptr<scalar_t>(), eps.data_ptr<scalar_t>(), coef.data_ptr<opmath_t>(), out.data_ptr<scalar_t>(),
        static_cast<uint32_t>(n_packs), at::cuda::detail::IntDivider<uint32_t>(static_cast<uint32_t>(row)));
  } else {
    q_sample_kernel<scalar_t, N, uint64_t><<<blocks_for(n_packs), kThreads, 0, stream>>>(
        x0.data_ptr<scalar_t>(), eps.data_ptr<scalar_t>(), coef.data_ptr<opmath_t>(), out.data_ptr<scalar_t>(),
        static_cast<uint64_t>(n_packs), at::cuda::detail::IntDivider<uint64_t>(static_cast<uint64_t>(row)));
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename scalar_t, int N>
void launch_posterior(const at::Tensor& x_t, const at::Tensor& net, const at::Tensor& z, const at::Tensor& coef,
                      int prediction, double clip, at::Tensor& x_s, at::Tensor& x0_hat, int64_t inner,
                      cudaStream_t stream) {
  using opmath_t = at::opmath_type<scalar_t>;
  const int64_t n_packs = x_t.numel() / N, row = inner / N;
  const auto* c = reinterpret_cast<const StepCoef<opmath_t>*>(coef.data_ptr<opmath_t>());
  const auto cl = static_cast<opmath_t>(clip);
  if (fits_32bit(n_packs)) {
    posterior_kernel<scalar_t, N, uint32_t><<<blocks_for(n_packs), kThreads, 0, stream>>>(
        x_t.data_ptr<scalar_t>(), net.data_ptr<scalar_t>(), z.data_ptr<scalar_t>(), c, prediction, cl,
        x_s.data_ptr<scalar_t>(), x0_hat.data_ptr<scalar_t>(), static_cast<uint32_t>(n_packs),
        at::cuda::detail::IntDivider<uint32_t>(static_cast<uint32_t>(row)));
  } else {
    posterior_kernel<scalar_t, N, uint64_t><<<blocks_for(n_packs), kThreads, 0, stream>>>(
        x_t.data_ptr<scalar_t>(), net.data_ptr<scalar_t>(), z.data_ptr<scalar_t>(), c, prediction, cl,
        x_s.data_ptr<scalar_t>(), x0_hat.data_ptr<scalar_t>(), static_cast<uint64_t>(n_packs),
        at::cuda::detail::IntDivider<uint64_t>(static_cast<uint64_t>(row)));
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// Reads the pre-pass flag (a sync). On bad input, the ATen checks name the range that was violated.
void raise_if_bad(const at::Tensor& bad, const at::Tensor& t, const at::Tensor* s_idx, int64_t T) {
  if (bad.item<int>() == 0) return;
  if (s_idx == nullptr) {
    check_timestep_range(t, T, 0, "t");
  } else {
    check_step_range(t, *s_idx, T);
  }
  TORCH_CHECK(false, "pydiffusion: a timestep is out of range");
}

at::Tensor q_sample_cuda(const at::Tensor& x0_in, const at::Tensor& eps_in, const at::Tensor& t_in,
                         const at::Tensor& a_in, const at::Tensor& s_in) {
  check_q_sample(x0_in, eps_in, t_in, a_in, s_in);
  const c10::cuda::CUDAGuard guard(x0_in.device());
  const auto x0 = x0_in.contiguous(), eps = eps_in.contiguous(), t = t_in.contiguous();
  const auto a = a_in.contiguous(), s = s_in.contiguous();
  const int64_t B = x0.size(0), inner = x0.numel() / B, T = a.size(0) - 1;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const auto bad = at::zeros({1}, x0.options().dtype(at::kInt));
  auto out = at::empty_like(x0);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x0.scalar_type(), "q_sample_cuda", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    const auto coef = at::empty({B, 2}, x0.options().dtype(c10::CppTypeToScalarType<opmath_t>::value));
    q_coef_kernel<opmath_t><<<blocks_for(B), kThreads, 0, stream>>>(
        t.data_ptr<int64_t>(), a.data_ptr<double>(), s.data_ptr<double>(), B, T, coef.data_ptr<opmath_t>(),
        bad.data_ptr<int>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    raise_if_bad(bad, t, nullptr, T);
    if (inner == 0) return;  // [B, 0, ...]: nothing to compute
    constexpr int N = 16 / sizeof(scalar_t);
    if (inner % N == 0 && aligned16(x0.data_ptr()) && aligned16(eps.data_ptr()) && aligned16(out.data_ptr())) {
      launch_q_sample<scalar_t, N>(x0, eps, coef, out, inner, stream);
    } else {
      launch_q_sample<scalar_t, 1>(x0, eps, coef, out, inner, stream);
    }
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> posterior_step_cuda(const at::Tensor& x_t_in, const at::Tensor& out_in,
                                                       const at::Tensor& t_in, const at::Tensor& s_idx_in,
                                                       const at::Tensor& a_in, const at::Tensor& s_in,
                                                       const at::Tensor& z_in, double eta, int64_t prediction,
                                                       double clip) {
  check_posterior_step(x_t_in, out_in, t_in, s_idx_in, a_in, s_in, z_in, eta, prediction, clip);
  const c10::cuda::CUDAGuard guard(x_t_in.device());
  const auto x_t = x_t_in.contiguous(), net = out_in.contiguous(), z = z_in.contiguous();
  const auto t = t_in.contiguous(), s_idx = s_idx_in.contiguous(), a = a_in.contiguous(), s = s_in.contiguous();
  const int64_t B = x_t.size(0), inner = x_t.numel() / B, T = a.size(0) - 1;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const auto bad = at::zeros({1}, x_t.options().dtype(at::kInt));
  auto x_s = at::empty_like(x_t), x0_hat = at::empty_like(x_t);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x_t.scalar_type(), "posterior_step_cuda", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    static_assert(sizeof(StepCoef<opmath_t>) == 5 * sizeof(opmath_t), "StepCoef must be 5 packed scalars");
    const auto coef = at::empty({B, 5}, x_t.options().dtype(c10::CppTypeToScalarType<opmath_t>::value));
    step_coef_kernel<opmath_t><<<blocks_for(B), kThreads, 0, stream>>>(
        t.data_ptr<int64_t>(), s_idx.data_ptr<int64_t>(), a.data_ptr<double>(), s.data_ptr<double>(), B, T,
        static_cast<opmath_t>(eta), reinterpret_cast<StepCoef<opmath_t>*>(coef.data_ptr<opmath_t>()),
        bad.data_ptr<int>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    raise_if_bad(bad, t, &s_idx, T);
    if (inner == 0) return;
    constexpr int N = 16 / sizeof(scalar_t);
    const int p = static_cast<int>(prediction);
    if (inner % N == 0 && aligned16(x_t.data_ptr()) && aligned16(net.data_ptr()) && aligned16(z.data_ptr()) &&
        aligned16(x_s.data_ptr()) && aligned16(x0_hat.data_ptr())) {
      launch_posterior<scalar_t, N>(x_t, net, z, coef, p, clip, x_s, x0_hat, inner, stream);
    } else {
      launch_posterior<scalar_t, 1>(x_t, net, z, coef, p, clip, x_s, x0_hat, inner, stream);
    }
  });
  return {x_s, x0_hat};
}

}  // namespace

TORCH_LIBRARY_IMPL(pydiffusion, CUDA, m) {
  m.impl("q_sample", &q_sample_cuda);
  m.impl("posterior_step", &posterior_step_cuda);
}

}  // namespace pydiffusion
