// pydiffusion::q_sample and pydiffusion::posterior_step: schemas, input checks, CPU kernels.
// The CUDA kernels (cuda/ops.cu) register under the same TORCH_LIBRARY namespace.
#include <Python.h>

#include <ATen/Parallel.h>
#include <torch/library.h>

#include "checks.h"
#include "diffusion_math.h"

namespace pydiffusion {

namespace {

// Elements per parallel chunk: small batches stay on one thread (no pool overhead).
constexpr int64_t kGrainElements = 32768;

template <typename T>
void q_sample_rows(const T* x0, const T* eps, const int64_t* t, const double* a, const double* s, T* out,
                   int64_t begin, int64_t end, int64_t inner) {
  for (int64_t b = begin; b < end; ++b) {
    const T ab = static_cast<T>(a[t[b]]), sb = static_cast<T>(s[t[b]]);
    const T* x = x0 + b * inner;
    const T* e = eps + b * inner;
    T* o = out + b * inner;
    _Pragma("omp simd")
    for (int64_t i = 0; i < inner; ++i) o[i] = q_sample_elem(x[i], e[i], ab, sb);
  }
}

template <typename T>
void posterior_rows(const T* x_t, const T* net, const T* z, const int64_t* t, const int64_t* s_idx, const double* a,
                    const double* s, T eta, int prediction, T clip, T* x_s, T* x0_hat, int64_t begin, int64_t end,
                    int64_t inner) {
  for (int64_t b = begin; b < end; ++b) {
    const StepCoef<T> c = step_coef<T>(static_cast<T>(a[t[b]]), static_cast<T>(s[t[b]]), static_cast<T>(a[s_idx[b]]),
                                       static_cast<T>(s[s_idx[b]]), eta);
    const int64_t o = b * inner;
    // one loop per parameterisation so the branch leaves the vectorised inner loop
    switch (prediction) {
      case kEps:
        _Pragma("omp simd")
        for (int64_t i = o; i < o + inner; ++i) posterior_elem(x_t[i], net[i], z[i], c, kEps, clip, &x_s[i], &x0_hat[i]);
        break;
      case kX0:
        _Pragma("omp simd")
        for (int64_t i = o; i < o + inner; ++i) posterior_elem(x_t[i], net[i], z[i], c, kX0, clip, &x_s[i], &x0_hat[i]);
        break;
      default:
        _Pragma("omp simd")
        for (int64_t i = o; i < o + inner; ++i) posterior_elem(x_t[i], net[i], z[i], c, kV, clip, &x_s[i], &x0_hat[i]);
    }
  }
}

int64_t grain_rows(int64_t inner) { return std::max<int64_t>(1, kGrainElements / std::max<int64_t>(1, inner)); }

at::Tensor q_sample_cpu(const at::Tensor& x0_in, const at::Tensor& eps_in, const at::Tensor& t_in,
                        const at::Tensor& a_in, const at::Tensor& s_in) {
  check_q_sample(x0_in, eps_in, t_in, a_in, s_in);
  TORCH_CHECK(x0_in.scalar_type() == at::kFloat || x0_in.scalar_type() == at::kDouble,
              "pydiffusion::q_sample on the CPU supports float32 and float64, got ", x0_in.scalar_type());
  const auto x0 = x0_in.contiguous(), eps = eps_in.contiguous(), t = t_in.contiguous();
  const auto a = a_in.contiguous(), s = s_in.contiguous();
  check_timestep_range(t, a.size(0) - 1, 0, "t");
  auto out = at::empty_like(x0);
  const int64_t B = x0.size(0), inner = x0.numel() / B;
  AT_DISPATCH_FLOATING_TYPES(x0.scalar_type(), "q_sample_cpu", [&] {
    const scalar_t* px = x0.data_ptr<scalar_t>();
    const scalar_t* pe = eps.data_ptr<scalar_t>();
    scalar_t* po = out.data_ptr<scalar_t>();
    const int64_t* pt = t.data_ptr<int64_t>();
    const double *pa = a.data_ptr<double>(), *ps = s.data_ptr<double>();
    at::parallel_for(0, B, grain_rows(inner), [&](int64_t begin, int64_t end) {
      q_sample_rows(px, pe, pt, pa, ps, po, begin, end, inner);
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> posterior_step_cpu(const at::Tensor& x_t_in, const at::Tensor& out_in,
                                                      const at::Tensor& t_in, const at::Tensor& s_idx_in,
                                                      const at::Tensor& a_in, const at::Tensor& s_in,
                                                      const at::Tensor& z_in, double eta, int64_t prediction,
                                                      double clip) {
  check_posterior_step(x_t_in, out_in, t_in, s_idx_in, a_in, s_in, z_in, eta, prediction, clip);
  TORCH_CHECK(x_t_in.scalar_type() == at::kFloat || x_t_in.scalar_type() == at::kDouble,
              "pydiffusion::posterior_step on the CPU supports float32 and float64, got ", x_t_in.scalar_type());
  const auto x_t = x_t_in.contiguous(), net = out_in.contiguous(), z = z_in.contiguous();
  const auto t = t_in.contiguous(), s_idx = s_idx_in.contiguous(), a = a_in.contiguous(), s = s_in.contiguous();
  check_step_range(t, s_idx, a.size(0) - 1);
  auto x_s = at::empty_like(x_t), x0_hat = at::empty_like(x_t);
  const int64_t B = x_t.size(0), inner = x_t.numel() / B;
  AT_DISPATCH_FLOATING_TYPES(x_t.scalar_type(), "posterior_step_cpu", [&] {
    const scalar_t *px = x_t.data_ptr<scalar_t>(), *pn = net.data_ptr<scalar_t>(), *pz = z.data_ptr<scalar_t>();
    scalar_t *pxs = x_s.data_ptr<scalar_t>(), *px0 = x0_hat.data_ptr<scalar_t>();
    const int64_t *pt = t.data_ptr<int64_t>(), *psi = s_idx.data_ptr<int64_t>();
    const double *pa = a.data_ptr<double>(), *ps = s.data_ptr<double>();
    const auto e = static_cast<scalar_t>(eta), c = static_cast<scalar_t>(clip);
    const int p = static_cast<int>(prediction);
    at::parallel_for(0, B, grain_rows(inner), [&](int64_t begin, int64_t end) {
      posterior_rows(px, pn, pz, pt, psi, pa, ps, e, p, c, pxs, px0, begin, end, inner);
    });
  });
  return {x_s, x0_hat};
}

}  // namespace

TORCH_LIBRARY(pydiffusion, m) {
  m.def("q_sample(Tensor x0, Tensor eps, Tensor t, Tensor a, Tensor s) -> Tensor");
  m.def("posterior_step(Tensor x_t, Tensor out, Tensor t, Tensor s_idx, Tensor a, Tensor s, Tensor z, float eta, "
        "int prediction, float clip) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(pydiffusion, CPU, m) {
  m.impl("q_sample", &q_sample_cpu);
  m.impl("posterior_step", &posterior_step_cpu);
}

}  // namespace pydiffusion

// A plain extension module: importing pydiffusion._C runs the registrations above.
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", "pydiffusion fused ops (torch.ops.pydiffusion)", -1,
                                      nullptr};
  return PyModule_Create(&module);
}
