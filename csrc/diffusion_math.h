// The per-element math of the fused ops, written once for the CPU and CUDA paths.
// Torch-free so that nvcc and the host compiler both see the same formulas; mirrors
// pydiffusion/reference.py (docs/math.md, sections Paths and Reverse step) operation for operation.
#pragma once

#include <cmath>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define PD_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define PD_HOST_DEVICE inline
#endif

namespace pydiffusion {

enum Prediction : int { kEps = 0, kX0 = 1, kV = 2 };

// Correctly rounded square root in the working precision, on host and device.
PD_HOST_DEVICE float pd_sqrt(float x) { return sqrtf(x); }
PD_HOST_DEVICE double pd_sqrt(double x) { return sqrt(x); }

// Coefficients of one reverse step t -> s, constant over a sample.
template <typename T>
struct StepCoef {
  T a_t, s_t, a_s, sigma, dir;
};

template <typename T>
PD_HOST_DEVICE T q_sample_elem(T x0, T eps, T a, T s) {
  return a * x0 + s * eps;
}

// sigma = eta * sqrt(post_var(t -> s)) and dir = sqrt(s_s^2 - sigma^2), the eps_hat coefficient.
// With r = (a_ts s_s / s_t)^2: post_var = s_s^2 (1 - r) and dir = s_s sqrt(1 - eta^2 + eta^2 r), a
// sum of non-negative terms. The textbook s_s^2 - sigma^2 cancels catastrophically when sigma ~ s_s
// (eta = 1 with a_t / a_s small), where one rounding step changes dir by orders of magnitude.
template <typename T>
PD_HOST_DEVICE StepCoef<T> step_coef(T a_t, T s_t, T a_s, T s_s, T eta) {
  const T q = a_t / a_s * s_s / s_t;
  const T r = q * q;
  const T one_minus_r = T(1) - r > T(0) ? T(1) - r : T(0);
  const T sigma = eta * s_s * pd_sqrt(one_minus_r);
  const T dir = s_s * pd_sqrt((T(1) - eta * eta) + eta * eta * r);
  return StepCoef<T>{a_t, s_t, a_s, sigma, dir};
}

// x0_hat from the network output under a parameterisation, clamped to [-clip, clip] when clip > 0.
// NaN passes through (comparisons with NaN are false).
template <typename T>
PD_HOST_DEVICE T predict_x0(T x_t, T out, T a_t, T s_t, int prediction, T clip) {
  T x0;
  if (prediction == kEps) {
    x0 = (x_t - s_t * out) / a_t;
  } else if (prediction == kX0) {
    x0 = out;
  } else {
    x0 = (a_t * x_t - s_t * out) / (a_t * a_t + s_t * s_t);
  }
  if (clip > T(0)) {
    x0 = x0 < -clip ? -clip : (x0 > clip ? clip : x0);
  }
  return x0;
}

// x_s = a_s x0_hat + dir * eps_hat + sigma * z, eps_hat = (x_t - a_t x0_hat) / s_t.
template <typename T>
PD_HOST_DEVICE void posterior_elem(T x_t, T out, T z, const StepCoef<T>& c, int prediction, T clip, T* x_s,
                                   T* x0_hat) {
  const T x0 = predict_x0(x_t, out, c.a_t, c.s_t, prediction, clip);
  const T eps_hat = (x_t - c.a_t * x0) / c.s_t;
  *x_s = c.a_s * x0 + c.dir * eps_hat + c.sigma * z;
  *x0_hat = x0;
}

}  // namespace pydiffusion
