"""Samplers as short functions over a denoiser f(x_t, t) -> network output.

`guided(model, y, guidance)` turns the network into such a denoiser (classifier-free guidance).
Every reverse step goes through `ops.posterior_step`: DDPM is all T steps with eta = 1, DDIM a
respaced subsequence with any eta.
"""
import math

import torch

from . import ops
from .data import NUM_CLASSES
from .models import NULL_LABEL
from .paths import NoisePath


def guided(model, y: torch.Tensor, guidance: float = 1.0, z: int = 0):
    """Denoiser f(x, t) for labels y: out_u + g * (out_c - out_u); g = 1 is one conditional pass,
    g = 0 one unconditional pass."""
    null = torch.full_like(y, NULL_LABEL)

    def f(x, t: int):
        tt = torch.full_like(y, t)
        zz = torch.full_like(y, z)
        if guidance == 1:
            return model(x, tt, zz, y)
        if guidance == 0:
            return model(x, tt, zz, null)
        out_c, out_u = model(torch.cat([x, x]), torch.cat([tt, tt]), torch.cat([zz, zz]), torch.cat([y, null])).chunk(2)
        return out_u + guidance * (out_c - out_u)

    return f


def timesteps_for(T: int, steps: int) -> list:
    """Descending respaced timesteps from T to 0 with `steps` reverse steps (evenly spaced)."""
    if not 1 <= steps <= T:
        raise ValueError(f"steps must be in [1, T={T}], got {steps}")
    return [round(T * (steps - i) / steps) for i in range(steps + 1)]


@torch.no_grad()
def sample_ddim(f, x, path: NoisePath, steps=None, eta: float = 0.0, prediction: str = "eps", clip: float = 5.0,
                generator=None, trajectory: bool = False):
    """DDIM (eta = 0) to DDPM-like (eta = 1) sampling from x = x_T ~ N(0, I) over `steps` respaced steps.

    Returns x_0, or (x_0, [x_T, ..., x_0]) when `trajectory` is true.
    """
    ts = timesteps_for(path.T, steps or path.T)
    xs = [x]
    for t, s in zip(ts[:-1], ts[1:]):
        z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype) if eta > 0 else torch.zeros_like(x)
        x, _ = ops.posterior_step(x, f(x, t), t, s, path, z, eta, prediction, clip)
        xs.append(x)
    return (x, xs) if trajectory else x


def sample_ddpm(f, x, path: NoisePath, prediction: str = "eps", clip: float = 5.0, generator=None,
                trajectory: bool = False):
    """DDPM ancestral sampling: every step t -> t-1 with the fixed small variance (eta = 1)."""
    return sample_ddim(f, x, path, path.T, 1.0, prediction, clip, generator, trajectory)


@torch.no_grad()
def sample_dpmpp_2m(f, x, path: NoisePath, steps=None, prediction: str = "eps", clip: float = 5.0,
                    trajectory: bool = False):
    """DPM-Solver++(2M) (Lu et al. 2022): a second-order multistep solver of the probability-flow
    ODE in log-SNR time lambda = log(a / s), on the data prediction x0_hat. Its first-order step is
    exactly DDIM (eta = 0); the last step returns x0_hat."""
    ts = timesteps_for(path.T, steps or path.T)
    lam = (path.a / path.s).log()
    xs, x0_prev, h_prev = [x], None, None
    for t, s in zip(ts[:-1], ts[1:]):
        tt = torch.full((x.shape[0],), t, device=x.device)
        x0 = path.x0_from_output(f(x, t), x, tt, prediction)
        x0 = x0.clamp(-clip, clip) if clip > 0 else x0
        if s == 0:
            x = x0
        else:
            h = (lam[s] - lam[t]).item()
            # D = (1 + 1/(2r)) x0_hat - 1/(2r) x0_hat_prev with r = h_prev / h (first step: D = x0_hat)
            d = x0 if x0_prev is None else (1 + h / (2 * h_prev)) * x0 - h / (2 * h_prev) * x0_prev
            x = (path.s[s] / path.s[t]).item() * x - path.a[s].item() * math.expm1(-h) * d
            x0_prev, h_prev = x0, h
        xs.append(x)
    return (x, xs) if trajectory else x


@torch.no_grad()
def draw_class_samples(model, path: NoisePath, cfg: dict, n: int, sampler: str = "ddim", steps=None, eta: float = 0.0,
                       guidance: float = 1.0, seed: int = 0):
    """n samples of a run's model, labels 0..9 in turn (all the null label when guidance is 0), x_T and the
    sampler's noise from one generator seeded with `seed`; `sampler` ddim (respaced, `steps`, default the
    run's sample_steps) or ddpm (all T steps). Returns (x [n, L], y [n])."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % NUM_CLASSES if guidance != 0 else torch.full((n,), NULL_LABEL)
    x_T = torch.randn((n, 40), generator=gen)
    f = guided(model, y, guidance)
    if sampler == "ddpm":
        return sample_ddpm(f, x_T, path, cfg["prediction"], cfg["clip"], gen), y
    return sample_ddim(f, x_T, path, steps or cfg["sample_steps"], eta, cfg["prediction"], cfg["clip"], gen), y
