"""Pure-PyTorch reference of the fused ops: the fallback backend and the oracle in tests.

Mirrors csrc/diffusion_math.h formula for formula. Tables `a`, `s` hold the path
coefficients for t = 0..T; `t` and `s_idx` are per-sample int64 timesteps [B]; the
math runs in the input dtype (float32 for half and bfloat16).
"""
import torch
import torch.nn.functional as F

from pydiffusion.config import CHOICES
from pydiffusion.diffusion.paths import unknown_prediction, x0_from_output

# the kernels' enum Prediction (csrc/diffusion_math.h): eps 0, x0 1, v 2 (mu is not a kernel prediction:
# the denoiser reads it out and passes x0_hat)
PREDICTION_CODES = {name: code for code, name in enumerate(CHOICES["prediction"][:3])}


def _opmath(x):
    return torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype


def _per_sample(table, idx, x):
    return table[idx].to(_opmath(x)).reshape((-1,) + (1,) * (x.dim() - 1))


def q_sample(x0, eps, t, a, s):
    """x_t = a[t] * x0 + s[t] * eps."""
    out = _per_sample(a, t, x0) * x0.to(_opmath(x0)) + _per_sample(s, t, x0) * eps.to(_opmath(x0))
    return out.to(x0.dtype)


def predict_x0(x_t, out, a_t, s_t, prediction: str, clip: float):
    """x0_hat from the network output (paths.x0_from_output), clamped to [-clip, clip] when clip > 0."""
    if prediction not in PREDICTION_CODES:
        raise unknown_prediction(prediction, PREDICTION_CODES)
    x0 = x0_from_output(out, x_t, a_t, s_t, prediction)
    return x0.clamp(-clip, clip) if clip > 0 else x0


def posterior_step(x_t, out, t, s_idx, a, s, z, eta: float, prediction: str = "eps", clip: float = 5.0):
    """One reverse step t -> s < t: returns (x_s, x0_hat).

    x_s = a_s x0_hat + sqrt(s_s^2 - sigma^2) eps_hat + sigma z,
    sigma = eta * sqrt(post_var(t -> s)), eps_hat = (x_t - a_t x0_hat) / s_t.
    """
    dt = _opmath(x_t)
    a_t, s_t = _per_sample(a, t, x_t), _per_sample(s, t, x_t)
    a_s, s_s = _per_sample(a, s_idx, x_t), _per_sample(s, s_idx, x_t)
    x_t32, out32, z32 = x_t.to(dt), out.to(dt), z.to(dt)
    x0_hat = predict_x0(x_t32, out32, a_t, s_t, prediction, clip)
    eps_hat = (x_t32 - a_t * x0_hat) / s_t
    # r = (a_ts s_s / s_t)^2: post_var = s_s^2 (1 - r), s_s^2 - sigma^2 = s_s^2 (1 - eta^2 + eta^2 r),
    # written without the cancellation of s_s^2 - sigma^2 when sigma ~ s_s (see csrc/diffusion_math.h)
    q = a_t / a_s * s_s / s_t
    r = q * q
    sigma = eta * s_s * (1 - r).clamp(min=0).sqrt()
    dir_coef = s_s * ((1 - eta * eta) + eta * eta * r).sqrt()
    x_s = a_s * x0_hat + dir_coef * eps_hat + sigma * z32
    return x_s.to(x_t.dtype), x0_hat.to(x_t.dtype)


def norm_film_silu(x, weight, bias, scale, shift, groups: int, eps: float):
    """silu(GroupNorm(x) * (1 + scale) + shift), scale and shift [B, C] per sample and channel (None: no FiLM):
    the UNet block's modules, in their order (csrc/block_math.h)."""
    out = F.group_norm(x, groups, weight, bias, eps)
    if scale is not None:
        shape = tuple(scale.shape) + (1,) * (x.dim() - 2)
        out = out * (1 + scale.reshape(shape)) + shift.reshape(shape)
    return F.silu(out)
