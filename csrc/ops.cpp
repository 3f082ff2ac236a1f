// pydiffusion::q_sample and pydiffusion::posterior_step: schemas, input checks, CPU kernels.
// The CUDA kernels (cuda/ops.cu) register under the same TORCH_LIBRARY namespace.
//
// CPU layout: at::parallel_for over samples (rows of inner = numel / B elements); per row the
// coefficients are computed once (for the reverse step, a block of rows at a time), then one
// `omp simd` loop over the row. The loops are compiled
// for AVX-512, AVX2 and baseline x86-64 (target_clones, chosen at load time), so a build on one
// machine runs on any other. Inputs that are not contiguous are copied to contiguous memory
// (handled, not rejected); outputs are always contiguous.
#include <Python.h>

#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include "checks.h"
#include "cpu.h"
#include "diffusion_math.h"

namespace pydiffusion {

namespace {

// Elements per parallel chunk: small batches stay on one thread (no pool overhead).
constexpr int64_t kGrainElements = 32768;

template <typename T>
PD_ALWAYS_INLINE void q_sample_rows_impl(const T* __restrict__ x0, const T* __restrict__ eps,
                                         const int64_t* __restrict__ t, const double* __restrict__ a,
                                         const double* __restrict__ s, T* __restrict__ out, int64_t begin,
                                         int64_t end, int64_t inner) {
  for (int64_t b = begin; b < end; ++b) {
    const T ab = static_cast<T>(a[t[b]]), sb = static_cast<T>(s[t[b]]);
    const T* __restrict__ x = x0 + b * inner;
    const T* __restrict__ e = eps + b * inner;
    T* __restrict__ o = out + b * inner;
    _Pragma("omp simd")
    for (int64_t i = 0; i < inner; ++i) o[i] = q_sample_elem(x[i], e[i], ab, sb);
  }
}

PD_CLONES void q_sample_rows(const float* x0, const float* eps, const int64_t* t, const double* a, const double* s,
                             float* out, int64_t begin, int64_t end, int64_t inner) {
  q_sample_rows_impl<float>(x0, eps, t, a, s, out, begin, end, inner);
}

PD_CLONES void q_sample_rows(const double* x0, const double* eps, const int64_t* t, const double* a, const double* s,
                             double* out, int64_t begin, int64_t end, int64_t inner) {
  q_sample_rows_impl<double>(x0, eps, t, a, s, out, begin, end, inner);
}

// One row of the reverse step, with the parameterisation and clamping fixed at compile time so the
// loop body is branch-free.
template <typename T, int P, bool Clip>
PD_ALWAYS_INLINE void posterior_row(const T* __restrict__ x_t, const T* __restrict__ net, const T* __restrict__ z,
                                    T* __restrict__ x_s, T* __restrict__ x0_hat, const StepCoef<T> c, T clip,
                                    int64_t n) {
  const T cl = Clip ? clip : T(0);
  _Pragma("omp simd")
  for (int64_t i = 0; i < n; ++i) posterior_elem(x_t[i], net[i], z[i], c, P, cl, &x_s[i], &x0_hat[i]);
}

// Rows in blocks: first the step coefficients of a block of rows (independent iterations, so the
// divisions and square roots pipeline and vectorise instead of stalling each row), then the rows.
constexpr int64_t kCoefBlock = 256;

template <typename T, int P, bool Clip>
PD_ALWAYS_INLINE void posterior_rows_impl(const T* x_t, const T* net, const T* z, const int64_t* t,
                                          const int64_t* s_idx, const double* a, const double* s, T eta, T clip,
                                          T* x_s, T* x0_hat, int64_t begin, int64_t end, int64_t inner) {
  T c_at[kCoefBlock], c_st[kCoefBlock], c_as[kCoefBlock], c_sigma[kCoefBlock], c_dir[kCoefBlock];
  for (int64_t b0 = begin; b0 < end; b0 += kCoefBlock) {
    const int64_t nb = std::min(kCoefBlock, end - b0);
    _Pragma("omp simd")
    for (int64_t j = 0; j < nb; ++j) {
      const int64_t ti = t[b0 + j], si = s_idx[b0 + j];
      const StepCoef<T> c = step_coef<T>(static_cast<T>(a[ti]), static_cast<T>(s[ti]), static_cast<T>(a[si]),
                                         static_cast<T>(s[si]), eta);
      c_at[j] = c.a_t;
      c_st[j] = c.s_t;
      c_as[j] = c.a_s;
      c_sigma[j] = c.sigma;
      c_dir[j] = c.dir;
    }
    for (int64_t j = 0; j < nb; ++j) {
      const int64_t o = (b0 + j) * inner;
      posterior_row<T, P, Clip>(x_t + o, net + o, z + o, x_s + o, x0_hat + o,
                                StepCoef<T>{c_at[j], c_st[j], c_as[j], c_sigma[j], c_dir[j]}, clip, inner);
    }
  }
}

template <typename T>
PD_ALWAYS_INLINE void posterior_rows_dispatch(const T* x_t, const T* net, const T* z, const int64_t* t,
                                              const int64_t* s_idx, const double* a, const double* s, T eta,
                                              int prediction, T clip, T* x_s, T* x0_hat, int64_t begin, int64_t end,
                                              int64_t inner) {
#define PD_ROWS(P, C) posterior_rows_impl<T, P, C>(x_t, net, z, t, s_idx, a, s, eta, clip, x_s, x0_hat, begin, end, inner)
  const bool clamp = clip > T(0);
  switch (prediction) {
    case kEps:
      clamp ? PD_ROWS(kEps, true) : PD_ROWS(kEps, false);
      break;
    case kX0:
      clamp ? PD_ROWS(kX0, true) : PD_ROWS(kX0, false);
      break;
    default:
      clamp ? PD_ROWS(kV, true) : PD_ROWS(kV, false);
  }
#undef PD_ROWS
}

PD_CLONES void posterior_rows(const float* x_t, const float* net, const float* z, const int64_t* t,
                              const int64_t* s_idx, const double* a, const double* s, float eta, int prediction,
                              float clip, float* x_s, float* x0_hat, int64_t begin, int64_t end, int64_t inner) {
  posterior_rows_dispatch<float>(x_t, net, z, t, s_idx, a, s, eta, prediction, clip, x_s, x0_hat, begin, end, inner);
}

PD_CLONES void posterior_rows(const double* x_t, const double* net, const double* z, const int64_t* t,
                              const int64_t* s_idx, const double* a, const double* s, double eta, int prediction,
                              double clip, double* x_s, double* x0_hat, int64_t begin, int64_t end, int64_t inner) {
  posterior_rows_dispatch<double>(x_t, net, z, t, s_idx, a, s, eta, prediction, clip, x_s, x0_hat, begin, end,
                                  inner);
}

int64_t grain_rows(int64_t inner) { return std::max<int64_t>(1, kGrainElements / std::max<int64_t>(1, inner)); }

void check_cpu_dtype(const at::Tensor& x, const char* op) {
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, "pydiffusion::", op,
              " on the CPU supports float32 and float64, got ", x.scalar_type());
}

at::Tensor q_sample_cpu(const at::Tensor& x0_in, const at::Tensor& eps_in, const at::Tensor& t_in,
                        const at::Tensor& a_in, const at::Tensor& s_in) {
  check_q_sample(x0_in, eps_in, t_in, a_in, s_in);
  check_cpu_dtype(x0_in, "q_sample");
  const auto x0 = x0_in.contiguous(), eps = eps_in.contiguous(), t = t_in.contiguous();
  const auto a = a_in.contiguous(), s = s_in.contiguous();
  const int64_t B = x0.size(0), inner = x0.numel() / B;
  const int64_t* pt = t.data_ptr<int64_t>();
  check_timestep_values(pt, nullptr, B, a.size(0) - 1, 0);
  auto out = at::empty_like(x0);
  AT_DISPATCH_FLOATING_TYPES(x0.scalar_type(), "q_sample_cpu", [&] {
    const scalar_t* px = x0.data_ptr<scalar_t>();
    const scalar_t* pe = eps.data_ptr<scalar_t>();
    scalar_t* po = out.data_ptr<scalar_t>();
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
  check_cpu_dtype(x_t_in, "posterior_step");
  const auto x_t = x_t_in.contiguous(), net = out_in.contiguous(), z = z_in.contiguous();
  const auto t = t_in.contiguous(), s_idx = s_idx_in.contiguous(), a = a_in.contiguous(), s = s_in.contiguous();
  const int64_t B = x_t.size(0), inner = x_t.numel() / B;
  const int64_t *pt = t.data_ptr<int64_t>(), *psi = s_idx.data_ptr<int64_t>();
  check_timestep_values(pt, psi, B, a.size(0) - 1, 1);
  auto x_s = at::empty_like(x_t), x0_hat = at::empty_like(x_t);
  AT_DISPATCH_FLOATING_TYPES(x_t.scalar_type(), "posterior_step_cpu", [&] {
    const scalar_t *px = x_t.data_ptr<scalar_t>(), *pn = net.data_ptr<scalar_t>(), *pz = z.data_ptr<scalar_t>();
    scalar_t *pxs = x_s.data_ptr<scalar_t>(), *px0 = x0_hat.data_ptr<scalar_t>();
    const double *pa = a.data_ptr<double>(), *ps = s.data_ptr<double>();
    const auto e = static_cast<scalar_t>(eta), c = static_cast<scalar_t>(clip);
    const int p = static_cast<int>(prediction);
    at::parallel_for(0, B, grain_rows(inner), [&](int64_t begin, int64_t end) {
      posterior_rows(px, pn, pz, pt, psi, pa, ps, e, p, c, pxs, px0, begin, end, inner);
    });
  });
  return {x_s, x0_hat};
}

// Autograd for q_sample, in C++ (a Python autograd kernel would add microseconds to every call):
// x_t = a[t] x0 + s[t] eps, so d/dx0 = a[t] and d/deps = s[t]; nothing for t or the tables. The
// backward is written with differentiable ATen ops, so double backward works too. Shared by the
// CPU and CUDA kernels (the Autograd key redispatches to either).
class QSampleFunction : public torch::autograd::Function<QSampleFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x0, const at::Tensor& eps,
                            const at::Tensor& t, const at::Tensor& a, const at::Tensor& s) {
    ctx->save_for_backward({t, a, s});
    at::AutoDispatchBelowADInplaceOrView guard;
    static const auto op = c10::Dispatcher::singleton()
                               .findSchemaOrThrow("pydiffusion::q_sample", "")
                               .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                 const at::Tensor&, const at::Tensor&)>();
    return op.call(x0, eps, t, a, s);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& grad = grads[0];
    at::Tensor grad_x0, grad_eps;
    if (grad.defined()) {
      std::vector<int64_t> shape(std::max<int64_t>(grad.dim(), 1), 1);
      shape[0] = -1;
      const auto dtype = grad.scalar_type();
      const auto opmath = (dtype == at::kHalf || dtype == at::kBFloat16) ? at::kFloat : dtype;
      const auto coef = [&](const at::Tensor& table) {
        return (table.index_select(0, saved[0]).to(opmath).view(shape) * grad).to(dtype);
      };
      if (ctx->needs_input_grad(0)) grad_x0 = coef(saved[1]);
      if (ctx->needs_input_grad(1)) grad_eps = coef(saved[2]);
    }
    return {grad_x0, grad_eps, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

at::Tensor q_sample_autograd(const at::Tensor& x0, const at::Tensor& eps, const at::Tensor& t, const at::Tensor& a,
                             const at::Tensor& s) {
  return QSampleFunction::apply(x0, eps, t, a, s);
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

TORCH_LIBRARY_IMPL(pydiffusion, Autograd, m) { m.impl("q_sample", &q_sample_autograd); }

}  // namespace pydiffusion

// A plain extension module: importing pydiffusion._C runs the registrations above.
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", "pydiffusion fused ops (torch.ops.pydiffusion)", -1,
                                      nullptr};
  return PyModule_Create(&module);
}
