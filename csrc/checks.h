// Input checks shared by the CPU and CUDA implementations: a clear error, never a crash.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <utility>

namespace pydiffusion {

inline void check_tables(const at::Tensor& like, const at::Tensor& a, const at::Tensor& s) {
  TORCH_CHECK(a.dim() == 1 && s.dim() == 1 && a.size(0) == s.size(0) && a.size(0) >= 2,
              "pydiffusion: the tables a and s must be 1-D of the same length T+1 >= 2, got ", a.sizes(), " and ",
              s.sizes());
  TORCH_CHECK(a.scalar_type() == at::kDouble && s.scalar_type() == at::kDouble,
              "pydiffusion: the tables a and s must be float64, got ", a.scalar_type(), " and ", s.scalar_type());
  TORCH_CHECK(a.device() == like.device() && s.device() == like.device(),
              "pydiffusion: the tables a and s must be on ", like.device(), ", got ", a.device(), " and ", s.device());
}

inline void check_timestep_tensor(const at::Tensor& like, const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.scalar_type() == at::kLong, "pydiffusion: ", name, " must be int64, got ", t.scalar_type());
  TORCH_CHECK(t.dim() == 1 && t.size(0) == like.size(0), "pydiffusion: ", name,
              " must hold one timestep per sample, shape [", like.size(0), "], got ", t.sizes());
  TORCH_CHECK(t.device() == like.device(), "pydiffusion: ", name, " must be on ", like.device(), ", got ", t.device());
}

inline void check_pair(const at::Tensor& x, const at::Tensor& y, const char* xn, const char* yn) {
  TORCH_CHECK(x.sizes() == y.sizes(), "pydiffusion: ", xn, " and ", yn, " must have the same shape, got ", x.sizes(),
              " and ", y.sizes());
  TORCH_CHECK(x.scalar_type() == y.scalar_type(), "pydiffusion: ", xn, " and ", yn, " must have the same dtype, got ",
              x.scalar_type(), " and ", y.scalar_type());
  TORCH_CHECK(x.device() == y.device(), "pydiffusion: ", xn, " and ", yn, " must be on the same device, got ",
              x.device(), " and ", y.device());
}

inline void check_batch(const at::Tensor& x, const char* name) {
  TORCH_CHECK(x.dim() >= 1 && x.size(0) > 0, "pydiffusion: ", name, " must be a non-empty batch [B, ...], got shape ",
              x.sizes());
}

inline void check_q_sample(const at::Tensor& x0, const at::Tensor& eps, const at::Tensor& t, const at::Tensor& a,
                           const at::Tensor& s) {
  check_batch(x0, "x0");
  check_pair(x0, eps, "x0", "eps");
  check_timestep_tensor(x0, t, "t");
  check_tables(x0, a, s);
}

inline void check_posterior_step(const at::Tensor& x_t, const at::Tensor& out, const at::Tensor& t,
                                 const at::Tensor& s_idx, const at::Tensor& a, const at::Tensor& s,
                                 const at::Tensor& z, double eta, int64_t prediction, double clip) {
  check_batch(x_t, "x_t");
  check_pair(x_t, out, "x_t", "out");
  check_pair(x_t, z, "x_t", "z");
  check_timestep_tensor(x_t, t, "t");
  check_timestep_tensor(x_t, s_idx, "s");
  check_tables(x_t, a, s);
  TORCH_CHECK(eta >= 0.0 && eta <= 1.0, "pydiffusion: eta must be in [0, 1], got ", eta);
  TORCH_CHECK(prediction >= 0 && prediction <= 2, "pydiffusion: prediction must be 0 (eps), 1 (x0) or 2 (v), got ",
              prediction);
  TORCH_CHECK(clip >= 0.0, "pydiffusion: clip must be >= 0 (0 disables clamping), got ", clip);
}

// Range checks on host memory (CPU tensors): one pass over the timesteps, no ATen ops.
// `lowest` is 0 for q_sample and 1 for posterior_step (t >= 1); s_idx may be null.
inline void check_timestep_values(const int64_t* t, const int64_t* s_idx, int64_t n, int64_t T, int64_t lowest) {
  int64_t lo = t[0], hi = t[0];
  bool ordered = true;
  for (int64_t i = 0; i < n; ++i) {
    lo = t[i] < lo ? t[i] : lo;
    hi = t[i] > hi ? t[i] : hi;
  }
  TORCH_CHECK(lo >= lowest && hi <= T, "pydiffusion: t must be in [", lowest, ", ", T, "], got values in [", lo, ", ",
              hi, "]");
  if (s_idx == nullptr) return;
  lo = s_idx[0];
  hi = s_idx[0];
  for (int64_t i = 0; i < n; ++i) {
    lo = s_idx[i] < lo ? s_idx[i] : lo;
    hi = s_idx[i] > hi ? s_idx[i] : hi;
    ordered = ordered && s_idx[i] < t[i];
  }
  TORCH_CHECK(lo >= 0 && hi <= T, "pydiffusion: s must be in [0, ", T, "], got values in [", lo, ", ", hi, "]");
  TORCH_CHECK(ordered, "pydiffusion: every s must be < its t (a reverse step)");
}

// The same checks for device tensors with ATen reductions (one device-to-host copy, a sync):
// called by the CUDA kernels only after their own in-kernel check has flagged bad input.
inline void check_timestep_range(const at::Tensor& t, int64_t T, int64_t lowest, const char* name) {
  const auto lo = t.min().item<int64_t>(), hi = t.max().item<int64_t>();
  TORCH_CHECK(lo >= lowest && hi <= T, "pydiffusion: ", name, " must be in [", lowest, ", ", T, "], got values in [",
              lo, ", ", hi, "]");
}

inline void check_step_range(const at::Tensor& t, const at::Tensor& s_idx, int64_t T) {
  check_timestep_range(t, T, 1, "t");
  check_timestep_range(s_idx, T, 0, "s");
  TORCH_CHECK(at::lt(s_idx, t).all().item<bool>(), "pydiffusion: every s must be < its t (a reverse step)");
}

// norm_film_silu: x [B, C, ...] with C a multiple of groups; weight, bias [C]; scale, shift [B, C] or absent; one
// dtype and device throughout.
inline void check_same(const at::Tensor& x, const at::Tensor& y, const char* name) {
  TORCH_CHECK(y.scalar_type() == x.scalar_type(), "pydiffusion: ", name, " must have x's dtype ", x.scalar_type(),
              ", got ", y.scalar_type());
  TORCH_CHECK(y.device() == x.device(), "pydiffusion: ", name, " must be on x's device ", x.device(), ", got ",
              y.device());
}

inline void check_norm_film_silu(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                                 const std::optional<at::Tensor>& scale, const std::optional<at::Tensor>& shift,
                                 int64_t groups, double eps) {
  TORCH_CHECK(x.dim() >= 3 && x.size(0) > 0 && x.numel() > 0, "pydiffusion: x must be a non-empty [B, C, ...] with ",
              "at least one position, got shape ", x.sizes());
  const int64_t C = x.size(1);
  TORCH_CHECK(groups >= 1 && C % groups == 0, "pydiffusion: the ", C, " channels must split into groups = ", groups,
              " groups of the same size");
  TORCH_CHECK(x.numel() / groups > 1, "pydiffusion: x of shape ", x.sizes(), " has one value per group; GroupNorm ",
              "needs more (as torch.nn.functional.group_norm does)");
  TORCH_CHECK(eps > 0.0, "pydiffusion: eps must be > 0, got ", eps);
  for (const auto& [t, name] : {std::pair<const at::Tensor&, const char*>{weight, "weight"}, {bias, "bias"}}) {
    TORCH_CHECK(t.dim() == 1 && t.size(0) == C, "pydiffusion: ", name, " must be [C] = [", C, "], got ", t.sizes());
    check_same(x, t, name);
  }
  TORCH_CHECK(scale.has_value() == shift.has_value(), "pydiffusion: give both scale and shift (FiLM) or neither");
  if (scale.has_value()) {
    for (const auto& [t, name] :
         {std::pair<const at::Tensor&, const char*>{*scale, "scale"}, {*shift, "shift"}}) {
      TORCH_CHECK(t.dim() == 2 && t.size(0) == x.size(0) && t.size(1) == C, "pydiffusion: ", name, " must be [B, C] = [",
                  x.size(0), ", ", C, "], got ", t.sizes());
      check_same(x, t, name);
    }
  }
}

inline void check_norm_film_silu_backward(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& weight,
                                          const at::Tensor& bias, const std::optional<at::Tensor>& scale,
                                          const std::optional<at::Tensor>& shift, const at::Tensor& mean,
                                          const at::Tensor& rstd, int64_t groups) {
  check_norm_film_silu(x, weight, bias, scale, shift, groups, 1.0);
  TORCH_CHECK(grad.sizes() == x.sizes(), "pydiffusion: grad_y must be shaped like x ", x.sizes(), ", got ",
              grad.sizes());
  check_same(x, grad, "grad_y");
  TORCH_CHECK(mean.sizes() == rstd.sizes() && mean.dim() == 2 && mean.size(0) == x.size(0) && mean.size(1) == groups,
              "pydiffusion: mean and rstd must be [B, groups] = [", x.size(0), ", ", groups, "], got ", mean.sizes(),
              " and ", rstd.sizes());
}

// The layout the block kernels work in: a channels-last x stays as it is (the UNet's layout); any other is made
// contiguous.
inline bool keeps_channels_last(const at::Tensor& x) {
  return x.dim() == 4 && !x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast);
}

}  // namespace pydiffusion
