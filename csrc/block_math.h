// The per-element math of the fused UNet block op, GroupNorm -> FiLM -> SiLU, written once for the CPU and CUDA
// paths (csrc/block_ops.cpp, csrc/cuda/block_ops.cu); mirrors nn.GroupNorm, the FiLM of ResBlock and F.silu
// (pydiffusion/nets/backbones.py) operation for operation:
//   xhat = (x - mean) * rstd,  g = xhat * w + b,  o = g * s1 + sh,  y = o * sigmoid(o)
// with mean and rstd = 1 / sqrt(var + eps) over a (sample, group), w, b per channel, s1 = 1 + scale and sh the
// FiLM scale and shift per (sample, channel).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define PD_BLOCK_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define PD_BLOCK_HOST_DEVICE inline
#endif

namespace pydiffusion {

// exp(x) for float on the host as a branch-free polynomial (Cephes' expf: range reduction by ln 2 in two parts,
// a degree-6 polynomial on [-ln 2 / 2, ln 2 / 2], the exponent built in the bits; within 2 ulp), so that the CPU loops vectorise: glibc's
// expf is a scalar call. On the device, and for double, the library's exp.
PD_BLOCK_HOST_DEVICE float block_exp(float x) {
#if defined(__CUDA_ARCH__) || defined(__HIP_DEVICE_COMPILE__)
  return expf(x);
#else
  x = x < -87.3365f ? -87.3365f : (x > 88.0f ? 88.0f : x);  // exp stays a finite, normal float
  // n = x / ln 2 rounded to the nearest integer by adding and subtracting 1.5 * 2^23 (exact for |x / ln 2| < 2^22;
  // floor() would be a call, which does not vectorise; the clamp above needs -fno-trapping-math to, setup.py)
  const float fx = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  float r = x - fx * 0.693359375f;
  r = r - fx * -2.12194440e-4f;
  const float z = r * r;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * z + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(fx) + 127) << 23;
  float two_n;
  std::memcpy(&two_n, &bits, sizeof(two_n));
  return p * two_n;
#endif
}

PD_BLOCK_HOST_DEVICE double block_exp(double x) { return exp(x); }

template <typename T>
PD_BLOCK_HOST_DEVICE T block_sigmoid(T o) {
  return T(1) / (T(1) + block_exp(-o));
}

// The forward folds the normalisation, affine and FiLM of one (sample, channel) into o = x * a + c (equal to the
// sequence above up to rounding), so that each element costs one multiply-add before the SiLU.
template <typename T>
struct ChannelAffine {
  T a, c;
};

template <typename T>
PD_BLOCK_HOST_DEVICE ChannelAffine<T> channel_affine(T mean, T rstd, T w, T b, T s1, T sh) {
  const T a = rstd * w;
  return ChannelAffine<T>{a * s1, (b - mean * a) * s1 + sh};
}

// y of one element.
template <typename T>
PD_BLOCK_HOST_DEVICE T silu_affine_elem(T x, T a, T c) {
  const T o = x * a + c;
  return o * block_sigmoid(o);
}

// The backward of one element: from dy, the gradient at g (dg = do * s1, do = dy * silu'(o)), with xhat, g and
// do for the reductions: d shift = sum do, d scale = sum do * g, d w = sum dg * xhat, d b = sum dg.
template <typename T>
struct ElemGrad {
  T xhat, g, d_o, dg;
};

template <typename T>
PD_BLOCK_HOST_DEVICE ElemGrad<T> norm_film_silu_grad_elem(T dy, T x, T mean, T rstd, T w, T b, T s1, T sh) {
  const T xhat = (x - mean) * rstd;
  const T g = xhat * w + b;
  const T o = g * s1 + sh;
  const T sig = block_sigmoid(o);
  const T d_o = dy * (sig * (T(1) + o * (T(1) - sig)));
  return ElemGrad<T>{xhat, g, d_o, d_o * s1};
}

// dx of one element from dg and the group's means of dxhat = dg * w and of dxhat * xhat (GroupNorm's backward):
// dx = rstd * (dg * w - m1 - xhat * m2).
template <typename T>
PD_BLOCK_HOST_DEVICE T norm_input_grad_elem(T dg, T x, T mean, T rstd, T w, T m1, T m2) {
  const T xhat = (x - mean) * rstd;
  return rstd * (dg * w - m1 - xhat * m2);
}

}  // namespace pydiffusion
