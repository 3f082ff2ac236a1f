"""Noise paths x_t = a_t * x0 + s_t * eps, their posteriors (docs/math.md#paths) and the read-out of
the network parameterisations (docs/math.md#parameterisations).

Coefficient tables are float64 tensors of length T+1 with a[0] = 1, s[0] = 0.
"""
import math

import torch

from pydiffusion.config import CHOICES


def beta_schedule(schedule: str, T: int) -> torch.Tensor:
    """Betas for t = 1..T, scaled by 1000/T as in improved-diffusion, clipped to <= 0.999."""
    scale = 1000.0 / T
    if schedule == "linear":
        betas = torch.linspace(scale * 1e-4, scale * 0.02, T, dtype=torch.float64)
    elif schedule == "quadratic":
        betas = torch.linspace(math.sqrt(scale * 1e-4), math.sqrt(scale * 0.02), T, dtype=torch.float64) ** 2
    elif schedule == "cosine":
        def abar(u):
            return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2
        betas = torch.tensor([1 - abar(i / T) / abar((i - 1) / T) for i in range(1, T + 1)], dtype=torch.float64)
    else:
        raise ValueError(f"unknown schedule {schedule!r}; choose one of {CHOICES['schedule']}")
    return betas.clamp(max=0.999)


def unknown_prediction(prediction, choices=CHOICES["prediction"], hint: str = "") -> ValueError:
    """The one error of a parameterisation name outside `choices` (the kernels know eps, x0 and v only)."""
    return ValueError(f"unknown prediction {prediction!r}; choose one of {tuple(choices)}{hint}")


def x0_from_output(out, x_t, a, s, prediction: str, mean_coef=None):
    """x0_hat (unclamped) from the network output at x_t; a = a_t, s = s_t broadcast against x_t
    (docs/math.md#parameterisations; eps, x0 and v as the kernels' predict_x0 in csrc/diffusion_math.h).
    mu needs mean_coef = (c_xt, c_x0), the posterior mean's coefficients of t -> t-1 (NoisePath.mean_coef)."""
    if prediction == "eps":
        return (x_t - s * out) / a
    if prediction == "x0":
        return out
    if prediction == "v":
        return (a * x_t - s * out) / (a * a + s * s)
    if prediction == "mu":
        c_xt, c_x0 = mean_coef
        return (out - c_xt * x_t) / c_x0
    raise unknown_prediction(prediction)


def output_target(x0, eps, a, s, prediction: str, mean_coef=None):
    """What the network should output at x_t = a x0 + s eps (mu: the posterior mean of t -> t-1)."""
    if prediction == "eps":
        return eps
    if prediction == "x0":
        return x0
    if prediction == "v":
        return a * eps - s * x0
    if prediction == "mu":
        c_xt, c_x0 = mean_coef
        return c_xt * (a * x0 + s * eps) + c_x0 * x0
    raise unknown_prediction(prediction)


class NoisePath:
    """Coefficient tables `a`, `s` (float64, length T+1) of a gaussian or convex path."""

    def __init__(self, kind: str = "gaussian", T: int = 20, schedule: str = "linear"):
        if kind not in CHOICES["noise"]:
            raise ValueError(f"unknown noise path {kind!r}; choose one of {CHOICES['noise']}")
        if int(T) < 2:
            raise ValueError(f"T must be an integer >= 2, got {T}")
        self.kind, self.T, self.schedule = kind, int(T), schedule
        if kind == "gaussian":
            self.betas = beta_schedule(schedule, self.T)
            abar = torch.cat([torch.ones(1, dtype=torch.float64), torch.cumprod(1 - self.betas, 0)])
            self.a, self.s = abar.sqrt(), (1 - abar).sqrt()
        else:
            lam = 0.999 * torch.arange(self.T + 1, dtype=torch.float64) / self.T
            self.a, self.s = 1 - lam, lam

    def __repr__(self):
        return f"NoisePath({self.kind!r}, T={self.T}, schedule={self.schedule!r})"

    def snr(self) -> torch.Tensor:
        return self.a**2 / self.s**2

    def posterior(self, t, s):
        """(coef_xt, coef_x0, post_var) of q(x_s | x_t, x0) for s < t, as float64 tensors."""
        t, s = torch.as_tensor(t), torch.as_tensor(s)
        a_t, s_t, a_s, s_s = self.a[t], self.s[t], self.a[s], self.s[s]
        a_ts = a_t / a_s
        var_ts = s_t**2 - a_ts**2 * s_s**2
        return a_ts * s_s**2 / s_t**2, a_s * var_ts / s_t**2, var_ts * s_s**2 / s_t**2

    def mean_coef(self, t, like: torch.Tensor):
        """(c_xt, c_x0) of the posterior mean of t -> t-1, gathered per sample and shaped like `coef`'s."""
        t = torch.as_tensor(t, device=self.a.device).long()
        c_xt, c_x0, _ = self.posterior(t, t - 1)
        shape = (-1,) + (1,) * (like.dim() - 1) if t.dim() else ()
        return c_xt.to(like.device, like.dtype).reshape(shape), c_x0.to(like.device, like.dtype).reshape(shape)

    def coef(self, t, like: torch.Tensor):
        """a_t, s_t gathered per sample and shaped to broadcast against `like` [B, ...]."""
        t = torch.as_tensor(t, device=self.a.device).long()
        shape = (-1,) + (1,) * (like.dim() - 1) if t.dim() else ()
        a = self.a[t].to(like.device, like.dtype).reshape(shape)
        s = self.s[t].to(like.device, like.dtype).reshape(shape)
        return a, s
