// pydiffusion::norm_film_silu, the UNet block's GroupNorm -> FiLM -> SiLU in one op, and its backward: schemas,
// autograd, CPU kernels. The CUDA kernels (cuda/block_ops.cu) register under the same names; the per-element
// math is block_math.h's.
//
// CPU layout: at::parallel_for over samples. Per sample, one pass for each group's mean and one for its variance
// (accumulated in double), then one pass that writes y; the backward makes one pass that writes dg = dL/d(norm's
// output) into dx and sums the per-channel reductions, and one that turns dg into dx in place. The innermost loop
// runs over the contiguous dimension: channels for a channels-last x ([B, C, 1, L] as the UNet keeps it), positions
// for a contiguous one; other strides are copied to contiguous memory first.
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include <optional>
#include <vector>

#include "block_math.h"
#include "checks.h"
#include "cpu.h"

namespace pydiffusion {

namespace {

// The sizes of one call: B samples of C channels in G groups at L positions; per-sample rows of scale and shift
// (null: no FiLM, s1 = 1, sh = 0).
struct Dims {
  int64_t C, L, G;
  bool channels_last;
};

// Per-channel values of one sample: the group's mean and rstd, the affine and FiLM parameters.
template <typename T>
struct ChannelRow {
  std::vector<T> mean, rstd, w, b, s1, sh;
  explicit ChannelRow(int64_t C) : mean(C), rstd(C), w(C), b(C), s1(C, T(1)), sh(C, T(0)) {}
};

template <typename T>
PD_ALWAYS_INLINE void channel_row(ChannelRow<T>& r, const Dims& d, const T* w, const T* b, const T* scale,
                                  const T* shift, const T* mean, const T* rstd) {
  const int64_t per = d.C / d.G;
  for (int64_t c = 0; c < d.C; ++c) {
    r.mean[c] = mean[c / per];
    r.rstd[c] = rstd[c / per];
    r.w[c] = w[c];
    r.b[c] = b[c];
    if (scale != nullptr) {
      r.s1[c] = T(1) + scale[c];
      r.sh[c] = shift[c];
    }
  }
}

// The mean and rstd of each group of one sample, two-pass: per-channel sums in T over the positions (vectorised
// over the contiguous dimension), added over a group's channels in double. acc and shift hold C values each.
template <typename T, bool CL>
PD_ALWAYS_INLINE void group_stats(const T* __restrict__ x, const Dims& d, double eps, T* __restrict__ acc,
                                  T* __restrict__ shift, T* mean, T* rstd) {
  const int64_t C = d.C, L = d.L, per = C / d.G;
  const double n = static_cast<double>(per * L);
  for (int pass = 0; pass < 2; ++pass) {
    for (int64_t c = 0; c < C; ++c) {
      acc[c] = T(0);
      shift[c] = pass == 0 ? T(0) : mean[c / per];
    }
    if (CL) {
      for (int64_t l = 0; l < L; ++l) {
        const T* __restrict__ row = x + l * C;
        _Pragma("omp simd")
        for (int64_t c = 0; c < C; ++c) {
          const T v = row[c] - shift[c];
          acc[c] += pass == 0 ? v : v * v;
        }
      }
    } else {
      for (int64_t c = 0; c < C; ++c) {
        const T* __restrict__ row = x + c * L;
        const T mc = shift[c];
        T s = T(0);
        _Pragma("omp simd reduction(+ : s)")
        for (int64_t l = 0; l < L; ++l) {
          const T v = row[l] - mc;
          s += pass == 0 ? v : v * v;
        }
        acc[c] = s;
      }
    }
    for (int64_t g = 0; g < d.G; ++g) {
      double s = 0.0;
      for (int64_t c = g * per; c < (g + 1) * per; ++c) s += acc[c];
      if (pass == 0) {
        mean[g] = static_cast<T>(s / n);
      } else {
        rstd[g] = static_cast<T>(1.0 / std::sqrt(s / n + eps));
      }
    }
  }
}

template <typename T, bool CL>
PD_ALWAYS_INLINE void forward_samples_impl(const T* x, const T* w, const T* b, const T* scale, const T* shift,
                                           const Dims& d, double eps, T* y, T* mean, T* rstd, int64_t begin,
                                           int64_t end) {
  const int64_t C = d.C, L = d.L;
  std::vector<T> acc(C), shift_row(C), fa(C), fc(C);
  ChannelRow<T> r(C);
  for (int64_t i = begin; i < end; ++i) {
    const T* __restrict__ xs = x + i * C * L;
    T* __restrict__ ys = y + i * C * L;
    group_stats<T, CL>(xs, d, eps, acc.data(), shift_row.data(), mean + i * d.G, rstd + i * d.G);
    channel_row(r, d, w, b, scale ? scale + i * C : nullptr, shift ? shift + i * C : nullptr, mean + i * d.G,
                rstd + i * d.G);
    for (int64_t c = 0; c < C; ++c) {
      const ChannelAffine<T> f = channel_affine(r.mean[c], r.rstd[c], r.w[c], r.b[c], r.s1[c], r.sh[c]);
      fa[c] = f.a;
      fc[c] = f.c;
    }
    const T *__restrict__ pa = fa.data(), *__restrict__ pc = fc.data();
    if (CL) {
      for (int64_t l = 0; l < L; ++l) {
        _Pragma("omp simd")
        for (int64_t c = 0; c < C; ++c) ys[l * C + c] = silu_affine_elem(xs[l * C + c], pa[c], pc[c]);
      }
    } else {
      for (int64_t c = 0; c < C; ++c) {
        const T a = pa[c], k = pc[c];
        _Pragma("omp simd")
        for (int64_t l = 0; l < L; ++l) ys[c * L + l] = silu_affine_elem(xs[c * L + l], a, k);
      }
    }
  }
}

// The backward of samples [begin, end): dx, and per sample the rows of d scale, d shift and the partial sums of
// d weight and d bias (summed over samples by the caller, in order, so the result is the same for any threads).
template <typename T, bool CL>
PD_ALWAYS_INLINE void backward_samples_impl(const T* dy, const T* x, const T* w, const T* b, const T* scale,
                                            const T* shift, const T* mean, const T* rstd, const Dims& d, T* dx,
                                            double* dscale, double* dshift, double* dw, double* db, int64_t begin,
                                            int64_t end) {
  const int64_t C = d.C, L = d.L, per = C / d.G;
  const double n = static_cast<double>(per * L);
  ChannelRow<T> r(C);
  std::vector<T> m1(C), m2(C), acc(4 * C);
  for (int64_t i = begin; i < end; ++i) {
    const T* __restrict__ xs = x + i * C * L;
    const T* __restrict__ dys = dy + i * C * L;
    T* __restrict__ dxs = dx + i * C * L;
    T *__restrict__ a_do = acc.data(), *__restrict__ a_dog = acc.data() + C, *__restrict__ a_dg = acc.data() + 2 * C,
                    *__restrict__ a_dgx = acc.data() + 3 * C;
    channel_row(r, d, w, b, scale ? scale + i * C : nullptr, shift ? shift + i * C : nullptr, mean + i * d.G,
                rstd + i * d.G);
    const T *__restrict__ rm = r.mean.data(), *__restrict__ rr = r.rstd.data(), *__restrict__ rw = r.w.data(),
                          *__restrict__ rb = r.b.data(), *__restrict__ rs = r.s1.data(), *__restrict__ rh = r.sh.data();
    if (CL) {
      for (int64_t c = 0; c < 4 * C; ++c) a_do[c] = T(0);
      for (int64_t l = 0; l < L; ++l) {
        _Pragma("omp simd")
        for (int64_t c = 0; c < C; ++c) {
          const ElemGrad<T> e =
              norm_film_silu_grad_elem(dys[l * C + c], xs[l * C + c], rm[c], rr[c], rw[c], rb[c], rs[c], rh[c]);
          dxs[l * C + c] = e.dg;
          a_do[c] += e.d_o;
          a_dog[c] += e.d_o * e.g;
          a_dg[c] += e.dg;
          a_dgx[c] += e.dg * e.xhat;
        }
      }
    } else {
      for (int64_t c = 0; c < C; ++c) {
        const T m = rm[c], s = rr[c], ww = rw[c], bb = rb[c], s1 = rs[c], sh = rh[c];
        T s_do = T(0), s_dog = T(0), s_dg = T(0), s_dgx = T(0);
        _Pragma("omp simd reduction(+ : s_do, s_dog, s_dg, s_dgx)")
        for (int64_t l = 0; l < L; ++l) {
          const ElemGrad<T> e = norm_film_silu_grad_elem(dys[c * L + l], xs[c * L + l], m, s, ww, bb, s1, sh);
          dxs[c * L + l] = e.dg;
          s_do += e.d_o;
          s_dog += e.d_o * e.g;
          s_dg += e.dg;
          s_dgx += e.dg * e.xhat;
        }
        a_do[c] = s_do;
        a_dog[c] = s_dog;
        a_dg[c] = s_dg;
        a_dgx[c] = s_dgx;
      }
    }
    for (int64_t c = 0; c < C; ++c) {
      dshift[i * C + c] = a_do[c];
      dscale[i * C + c] = a_dog[c];
      db[i * C + c] = a_dg[c];
      dw[i * C + c] = a_dgx[c];
    }
    for (int64_t g = 0; g < d.G; ++g) {
      double s1 = 0.0, s2 = 0.0;
      for (int64_t c = g * per; c < (g + 1) * per; ++c) {
        s1 += static_cast<double>(rw[c]) * a_dg[c];
        s2 += static_cast<double>(rw[c]) * a_dgx[c];
      }
      for (int64_t c = g * per; c < (g + 1) * per; ++c) {
        m1[c] = static_cast<T>(s1 / n);
        m2[c] = static_cast<T>(s2 / n);
      }
    }
    const T *__restrict__ p1 = m1.data(), *__restrict__ p2 = m2.data();
    if (CL) {
      for (int64_t l = 0; l < L; ++l) {
        _Pragma("omp simd")
        for (int64_t c = 0; c < C; ++c)
          dxs[l * C + c] = norm_input_grad_elem(dxs[l * C + c], xs[l * C + c], rm[c], rr[c], rw[c], p1[c], p2[c]);
      }
    } else {
      for (int64_t c = 0; c < C; ++c) {
        const T m = rm[c], s = rr[c], ww = rw[c], q1 = p1[c], q2 = p2[c];
        _Pragma("omp simd")
        for (int64_t l = 0; l < L; ++l)
          dxs[c * L + l] = norm_input_grad_elem(dxs[c * L + l], xs[c * L + l], m, s, ww, q1, q2);
      }
    }
  }
}

// The clones per ISA level: one function per dtype, the layout a branch outside the loops.
#define PD_BLOCK_ROWS(T)                                                                                              \
  PD_CLONES void forward_samples(const T* x, const T* w, const T* b, const T* scale, const T* shift, const Dims& d,   \
                                 double eps, T* y, T* mean, T* rstd, int64_t begin, int64_t end) {                    \
    d.channels_last ? forward_samples_impl<T, true>(x, w, b, scale, shift, d, eps, y, mean, rstd, begin, end)         \
                    : forward_samples_impl<T, false>(x, w, b, scale, shift, d, eps, y, mean, rstd, begin, end);       \
  }                                                                                                                   \
  PD_CLONES void backward_samples(const T* dy, const T* x, const T* w, const T* b, const T* scale, const T* shift,    \
                                  const T* mean, const T* rstd, const Dims& d, T* dx, double* dscale, double* dshift, \
                                  double* dw, double* db, int64_t begin, int64_t end) {                               \
    d.channels_last ? backward_samples_impl<T, true>(dy, x, w, b, scale, shift, mean, rstd, d, dx, dscale, dshift,    \
                                                     dw, db, begin, end)                                              \
                    : backward_samples_impl<T, false>(dy, x, w, b, scale, shift, mean, rstd, d, dx, dscale, dshift,   \
                                                      dw, db, begin, end);                                            \
  }
PD_BLOCK_ROWS(float)
PD_BLOCK_ROWS(double)
#undef PD_BLOCK_ROWS

at::Tensor dense(const at::Tensor& x, bool channels_last) {
  return channels_last ? x : x.contiguous();
}

Dims dims_of(const at::Tensor& x, int64_t groups, bool channels_last) {
  return Dims{x.size(1), x.numel() / (x.size(0) * x.size(1)), groups, channels_last};
}

int64_t grain_samples(const at::Tensor& x) { return std::max<int64_t>(1, 32768 / (x.numel() / x.size(0))); }

void check_cpu(const at::Tensor& x) {
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "pydiffusion::norm_film_silu on the CPU supports float32 and float64, got ", x.scalar_type());
}

template <typename T>
const T* row_or_null(const std::optional<at::Tensor>& t) {
  return t.has_value() ? t->data_ptr<T>() : nullptr;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> norm_film_silu_cpu(const at::Tensor& x_in, const at::Tensor& weight_in,
                                                                  const at::Tensor& bias_in,
                                                                  const std::optional<at::Tensor>& scale_in,
                                                                  const std::optional<at::Tensor>& shift_in,
                                                                  int64_t groups, double eps) {
  check_norm_film_silu(x_in, weight_in, bias_in, scale_in, shift_in, groups, eps);
  check_cpu(x_in);
  const bool cl = keeps_channels_last(x_in);
  const auto x = dense(x_in, cl), weight = weight_in.contiguous(), bias = bias_in.contiguous();
  const auto scale = scale_in.has_value() ? std::optional<at::Tensor>(scale_in->contiguous()) : std::nullopt;
  const auto shift = shift_in.has_value() ? std::optional<at::Tensor>(shift_in->contiguous()) : std::nullopt;
  const Dims d = dims_of(x, groups, cl);
  const int64_t B = x.size(0);
  auto y = at::empty_like(x), mean = at::empty({B, groups}, x.options()), rstd = at::empty({B, groups}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "norm_film_silu_cpu", [&] {
    const scalar_t *px = x.data_ptr<scalar_t>(), *pw = weight.data_ptr<scalar_t>(), *pb = bias.data_ptr<scalar_t>();
    const scalar_t *psc = row_or_null<scalar_t>(scale), *psh = row_or_null<scalar_t>(shift);
    scalar_t *py = y.data_ptr<scalar_t>(), *pm = mean.data_ptr<scalar_t>(), *pr = rstd.data_ptr<scalar_t>();
    at::parallel_for(0, B, grain_samples(x), [&](int64_t begin, int64_t end) {
      forward_samples(px, pw, pb, psc, psh, d, eps, py, pm, pr, begin, end);
    });
  });
  return {y, mean, rstd};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> norm_film_silu_backward_cpu(
    const at::Tensor& grad_in, const at::Tensor& x_in, const at::Tensor& weight_in, const at::Tensor& bias_in,
    const std::optional<at::Tensor>& scale_in, const std::optional<at::Tensor>& shift_in, const at::Tensor& mean_in,
    const at::Tensor& rstd_in, int64_t groups) {
  check_norm_film_silu_backward(grad_in, x_in, weight_in, bias_in, scale_in, shift_in, mean_in, rstd_in, groups);
  check_cpu(x_in);
  const int64_t B = x_in.size(0), C = x_in.size(1);
  // grad_y in x's layout (a convolution's backward may hand it over in the other one)
  const bool cl = keeps_channels_last(x_in);
  const auto x = dense(x_in, cl);
  const auto grad = cl ? grad_in.contiguous(at::MemoryFormat::ChannelsLast) : grad_in.contiguous();
  const auto weight = weight_in.contiguous(), bias = bias_in.contiguous();
  const auto mean = mean_in.contiguous(), rstd = rstd_in.contiguous();
  const auto scale = scale_in.has_value() ? std::optional<at::Tensor>(scale_in->contiguous()) : std::nullopt;
  const auto shift = shift_in.has_value() ? std::optional<at::Tensor>(shift_in->contiguous()) : std::nullopt;
  const Dims d = dims_of(x, groups, cl);
  auto dx = at::empty_like(x);
  const auto sums = at::empty({4, B, C}, x.options().dtype(at::kDouble));
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "norm_film_silu_backward_cpu", [&] {
    const scalar_t *pg = grad.data_ptr<scalar_t>(), *px = x.data_ptr<scalar_t>();
    const scalar_t *pw = weight.data_ptr<scalar_t>(), *pb = bias.data_ptr<scalar_t>();
    const scalar_t *psc = row_or_null<scalar_t>(scale), *psh = row_or_null<scalar_t>(shift);
    const scalar_t *pm = mean.data_ptr<scalar_t>(), *pr = rstd.data_ptr<scalar_t>();
    scalar_t* pdx = dx.data_ptr<scalar_t>();
    double* ps = sums.data_ptr<double>();
    at::parallel_for(0, B, grain_samples(x), [&](int64_t begin, int64_t end) {
      backward_samples(pg, px, pw, pb, psc, psh, pm, pr, d, pdx, ps, ps + B * C, ps + 2 * B * C, ps + 3 * B * C,
                       begin, end);
    });
  });
  // d weight and d bias: the per-sample sums added in sample order, the same for any number of threads
  auto totals = at::zeros({2, C}, sums.options());
  const double* ps = sums.data_ptr<double>();
  double* pt = totals.data_ptr<double>();
  for (int64_t k = 0; k < 2; ++k)
    for (int64_t i = 0; i < B; ++i)
      for (int64_t c = 0; c < C; ++c) pt[k * C + c] += ps[(2 + k) * B * C + i * C + c];
  const auto dtype = x.scalar_type();
  return {dx, totals[0].to(dtype), totals[1].to(dtype), sums[0].to(dtype), sums[1].to(dtype)};
}

// Autograd: y from the op, its backward from the backward op (not itself differentiable: no double backward).
// Shared by the CPU and CUDA kernels (the Autograd key redispatches to either).
class NormFilmSiluFunction : public torch::autograd::Function<NormFilmSiluFunction> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                                                const at::Tensor& weight, const at::Tensor& bias,
                                                const std::optional<at::Tensor>& scale,
                                                const std::optional<at::Tensor>& shift, int64_t groups, double eps) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static const auto op = c10::Dispatcher::singleton()
                               .findSchemaOrThrow("pydiffusion::norm_film_silu", "")
                               .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
                                   const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                   const std::optional<at::Tensor>&, const std::optional<at::Tensor>&, int64_t,
                                   double)>();
    auto [y, mean, rstd] = op.call(x, weight, bias, scale, shift, groups, eps);
    ctx->save_for_backward({x, weight, bias, scale.value_or(at::Tensor()), shift.value_or(at::Tensor()), mean, rstd});
    ctx->saved_data["groups"] = groups;
    ctx->mark_non_differentiable({mean, rstd});
    return {y, mean, rstd};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto s = ctx->get_saved_variables();
    const at::Tensor& grad = grads[0];
    if (!grad.defined()) return {at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(),
                                 at::Tensor()};
    static const auto op = c10::Dispatcher::singleton()
                               .findSchemaOrThrow("pydiffusion::norm_film_silu_backward", "")
                               .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>(
                                   const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                   const std::optional<at::Tensor>&, const std::optional<at::Tensor>&,
                                   const at::Tensor&, const at::Tensor&, int64_t)>();
    const auto opt = [](const at::Tensor& t) { return t.defined() ? std::optional<at::Tensor>(t) : std::nullopt; };
    const bool film = s[3].defined();
    auto [dx, dw, db, dscale, dshift] =
        op.call(grad, s[0], s[1], s[2], opt(s[3]), opt(s[4]), s[5], s[6], ctx->saved_data["groups"].toInt());
    return {ctx->needs_input_grad(0) ? dx : at::Tensor(),
            ctx->needs_input_grad(1) ? dw : at::Tensor(),
            ctx->needs_input_grad(2) ? db : at::Tensor(),
            film && ctx->needs_input_grad(3) ? dscale : at::Tensor(),
            film && ctx->needs_input_grad(4) ? dshift : at::Tensor(),
            at::Tensor(),
            at::Tensor()};
  }
};

std::tuple<at::Tensor, at::Tensor, at::Tensor> norm_film_silu_autograd(const at::Tensor& x, const at::Tensor& weight,
                                                                       const at::Tensor& bias,
                                                                       const std::optional<at::Tensor>& scale,
                                                                       const std::optional<at::Tensor>& shift,
                                                                       int64_t groups, double eps) {
  auto out = NormFilmSiluFunction::apply(x, weight, bias, scale, shift, groups, eps);
  return {out[0], out[1], out[2]};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(pydiffusion, m) {
  m.def("norm_film_silu(Tensor x, Tensor weight, Tensor bias, Tensor? scale, Tensor? shift, int groups, float eps) "
        "-> (Tensor, Tensor, Tensor)");
  m.def("norm_film_silu_backward(Tensor grad_y, Tensor x, Tensor weight, Tensor bias, Tensor? scale, Tensor? shift, "
        "Tensor mean, Tensor rstd, int groups) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(pydiffusion, CPU, m) {
  m.impl("norm_film_silu", &norm_film_silu_cpu);
  m.impl("norm_film_silu_backward", &norm_film_silu_backward_cpu);
}

TORCH_LIBRARY_IMPL(pydiffusion, Autograd, m) { m.impl("norm_film_silu", &norm_film_silu_autograd); }

}  // namespace pydiffusion
