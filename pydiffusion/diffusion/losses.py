"""Per-sample losses (docs/math.md#losses): L_simple (mse) and the rescaled variational bound (kl).

Everything returns a [B] tensor, one value per sample, averaged over the signal dimensions,
so `kl` and the bound are in nats per dimension.
"""
import math

import torch

from pydiffusion.diffusion.paths import NoisePath


def mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (pred - target).pow(2).flatten(1).mean(1)


def bound_tables(path: NoisePath):
    """(w, c), float64 [T+1]: the bound term at t is w[t] * mean((x0 - x0_hat)^2) + c[t].

    t >= 2: KL(q(x_{t-1}|x_t,x0) || p(x_{t-1}|x_t)) with the fixed variance post_var, whose means
    differ by coef_x0 * (x0 - x0_hat). t = 1: a continuous Gaussian decoder NLL with variance
    post_var(2 -> 1), clipped like improved-diffusion's first variance.
    """
    T = path.T
    t = torch.arange(2, T + 1)
    _, coef_x0, post_var = path.posterior(t, t - 1)
    w = torch.zeros(T + 1, dtype=torch.float64)
    c = torch.zeros(T + 1, dtype=torch.float64)
    w[2:] = coef_x0**2 / (2 * post_var)
    dec_var = post_var[0]
    w[1] = 1 / (2 * dec_var)
    c[1] = 0.5 * math.log(2 * math.pi * dec_var)
    return w, c


def bound_term(x0, x0_hat, t, tables):
    """The bound's term at each sample's t, in nats per dimension (not rescaled)."""
    w, c = (tab.to(x0.device)[t].to(x0.dtype) for tab in tables)
    return w * mse(x0_hat, x0) + c


def kl(x0, x0_hat, t, tables):
    """The rescaled bound term T * L_t: with t uniform on 1..T, an unbiased estimate of the bound."""
    T = tables[0].shape[0] - 1
    return T * bound_term(x0, x0_hat, t, tables)


def prior_kl(x0, path: NoisePath):
    """KL(q(x_T | x0) || N(0, I)) per sample, nats per dimension."""
    a, s = path.a[-1].item(), path.s[-1].item()
    return 0.5 * (s * s + a * a * x0.pow(2) - 1 - math.log(s * s)).flatten(1).mean(1)
