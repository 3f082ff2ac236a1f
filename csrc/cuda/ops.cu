// CUDA implementations of pydiffusion::q_sample and pydiffusion::posterior_step.
// Grid-stride loops on the current stream; float32/float64/float16/bfloat16, with the math in
// float32 for the half types (opmath), exactly like pydiffusion/reference.py.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../checks.h"
#include "../diffusion_math.h"

namespace pydiffusion {

namespace {

constexpr int kThreads = 256;

// A grid of at most 32 blocks per SM; the grid-stride loops cover the rest.
int blocks_for(int64_t n) {
  int sms = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, c10::cuda::current_device()));
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>((n + kThreads - 1) / kThreads, static_cast<int64_t>(sms) * 32)));
}

template <typename scalar_t>
__global__ void q_sample_kernel(const scalar_t* __restrict__ x0, const scalar_t* __restrict__ eps,
                                const int64_t* __restrict__ t, const double* __restrict__ a,
                                const double* __restrict__ s, scalar_t* __restrict__ out, int64_t n, int64_t inner) {
  using opmath_t = at::opmath_type<scalar_t>;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int64_t ti = t[i / inner];
    out[i] = static_cast<scalar_t>(q_sample_elem<opmath_t>(static_cast<opmath_t>(x0[i]), static_cast<opmath_t>(eps[i]),
                                                           static_cast<opmath_t>(a[ti]), static_cast<opmath_t>(s[ti])));
  }
}

// float32 rows of a multiple of 4 on 16-byte aligned storage: one float4 load per operand.
__global__ void q_sample_kernel_vec4(const float4* __restrict__ x0, const float4* __restrict__ eps,
                                     const int64_t* __restrict__ t, const double* __restrict__ a,
                                     const double* __restrict__ s, float4* __restrict__ out, int64_t n4,
                                     int64_t inner4) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n4;
       i += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int64_t ti = t[i / inner4];
    const float ab = static_cast<float>(a[ti]), sb = static_cast<float>(s[ti]);
    const float4 x = x0[i], e = eps[i];
    out[i] = make_float4(q_sample_elem(x.x, e.x, ab, sb), q_sample_elem(x.y, e.y, ab, sb),
                         q_sample_elem(x.z, e.z, ab, sb), q_sample_elem(x.w, e.w, ab, sb));
  }
}

template <typename scalar_t>
__global__ void posterior_kernel(const scalar_t* __restrict__ x_t, const scalar_t* __restrict__ net,
                                 const scalar_t* __restrict__ z, const int64_t* __restrict__ t,
                                 const int64_t* __restrict__ s_idx, const double* __restrict__ a,
                                 const double* __restrict__ s, at::opmath_type<scalar_t> eta, int prediction,
                                 at::opmath_type<scalar_t> clip, scalar_t* __restrict__ x_s,
                                 scalar_t* __restrict__ x0_hat, int64_t n, int64_t inner) {
  using opmath_t = at::opmath_type<scalar_t>;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int64_t b = i / inner, ti = t[b], si = s_idx[b];
    const StepCoef<opmath_t> c = step_coef<opmath_t>(static_cast<opmath_t>(a[ti]), static_cast<opmath_t>(s[ti]),
                                                     static_cast<opmath_t>(a[si]), static_cast<opmath_t>(s[si]), eta);
    opmath_t xs, x0;
    posterior_elem<opmath_t>(static_cast<opmath_t>(x_t[i]), static_cast<opmath_t>(net[i]),
                             static_cast<opmath_t>(z[i]), c, prediction, clip, &xs, &x0);
    x_s[i] = static_cast<scalar_t>(xs);
    x0_hat[i] = static_cast<scalar_t>(x0);
  }
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

at::Tensor q_sample_cuda(const at::Tensor& x0_in, const at::Tensor& eps_in, const at::Tensor& t_in,
                         const at::Tensor& a_in, const at::Tensor& s_in) {
  check_q_sample(x0_in, eps_in, t_in, a_in, s_in);
  const c10::cuda::CUDAGuard guard(x0_in.device());
  const auto x0 = x0_in.contiguous(), eps = eps_in.contiguous(), t = t_in.contiguous();
  const auto a = a_in.contiguous(), s = s_in.contiguous();
  check_timestep_range(t, a.size(0) - 1, 0, "t");
  auto out = at::empty_like(x0);
  const int64_t n = x0.numel(), inner = n / x0.size(0);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  if (x0.scalar_type() == at::kFloat && inner % 4 == 0 && aligned16(x0.data_ptr()) && aligned16(eps.data_ptr()) &&
      aligned16(out.data_ptr())) {
    q_sample_kernel_vec4<<<blocks_for(n / 4), kThreads, 0, stream>>>(
        reinterpret_cast<const float4*>(x0.data_ptr<float>()), reinterpret_cast<const float4*>(eps.data_ptr<float>()),
        t.data_ptr<int64_t>(), a.data_ptr<double>(), s.data_ptr<double>(),
        reinterpret_cast<float4*>(out.data_ptr<float>()), n / 4, inner / 4);
  } else {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x0.scalar_type(), "q_sample_cuda", [&] {
      q_sample_kernel<scalar_t><<<blocks_for(n), kThreads, 0, stream>>>(
          x0.data_ptr<scalar_t>(), eps.data_ptr<scalar_t>(), t.data_ptr<int64_t>(), a.data_ptr<double>(),
          s.data_ptr<double>(), out.data_ptr<scalar_t>(), n, inner);
    });
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
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
  check_step_range(t, s_idx, a.size(0) - 1);
  auto x_s = at::empty_like(x_t), x0_hat = at::empty_like(x_t);
  const int64_t n = x_t.numel(), inner = n / x_t.size(0);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x_t.scalar_type(), "posterior_step_cuda", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    posterior_kernel<scalar_t><<<blocks_for(n), kThreads, 0, stream>>>(
        x_t.data_ptr<scalar_t>(), net.data_ptr<scalar_t>(), z.data_ptr<scalar_t>(), t.data_ptr<int64_t>(),
        s_idx.data_ptr<int64_t>(), a.data_ptr<double>(), s.data_ptr<double>(), static_cast<opmath_t>(eta),
        static_cast<int>(prediction), static_cast<opmath_t>(clip), x_s.data_ptr<scalar_t>(),
        x0_hat.data_ptr<scalar_t>(), n, inner);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {x_s, x0_hat};
}

}  // namespace

TORCH_LIBRARY_IMPL(pydiffusion, CUDA, m) {
  m.impl("q_sample", &q_sample_cuda);
  m.impl("posterior_step", &posterior_step_cuda);
}

}  // namespace pydiffusion
