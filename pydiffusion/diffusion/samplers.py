"""Samplers with one signature over a guided denoiser, and drawing samples of a model.

Every sampler is `sample_<name>(denoiser, x, steps, eta, generator, trajectory)`, from x = x_T to x_0 (as
k-diffusion's `sample_x(model, x, sigmas)`), where `denoiser` is a `denoiser.GuidedDenoiser` (the network
for fixed labels and guidance, with its path and parameterisation); `SAMPLERS` names them. DDIM and DDPM
step through the fused `ops.posterior_step`: DDPM is all T steps with eta = 1, DDIM a respaced subsequence
with any eta. `draw_class_samples` is the one way to draw class-conditional samples of a trained model.
"""
import math

import torch

from pydiffusion.data.labels import NULL_LABEL, NUM_CLASSES
from pydiffusion.diffusion.denoiser import Denoiser


def timesteps_for(T: int, steps: int) -> list:
    """Descending respaced timesteps from T to 0 with `steps` reverse steps (evenly spaced)."""
    if not 1 <= steps <= T:
        raise ValueError(f"steps must be in [1, T={T}], got {steps}")
    return [round(T * (steps - i) / steps) for i in range(steps + 1)]


@torch.no_grad()
def sample_ddim(denoiser, x, steps: int, eta: float = 0.0, generator=None, trajectory: bool = False):
    """DDIM (eta = 0) to DDPM-like (eta = 1) sampling from x = x_T ~ N(0, I) over `steps` respaced steps;
    with eta > 0, one normal draw shaped like x from `generator` per step.

    Returns x_0, or (x_0, [x_T, ..., x_0]) when `trajectory` is true.
    """
    ts = timesteps_for(denoiser.path.T, steps)
    xs = [x]
    for t, s in zip(ts[:-1], ts[1:]):
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype) if eta > 0 else torch.zeros_like(x)
        x, _ = denoiser.step(x, t, s, noise, eta)
        xs.append(x)
    return (x, xs) if trajectory else x


def sample_ddpm(denoiser, x, steps: int, eta: float = 0.0, generator=None, trajectory: bool = False):
    """DDPM ancestral sampling: every step t -> t-1 with the fixed small variance, that is DDIM with eta = 1
    over all T steps; `steps` and `eta` are ignored."""
    return sample_ddim(denoiser, x, denoiser.path.T, 1.0, generator, trajectory)


@torch.no_grad()
def sample_dpmpp_2m(denoiser, x, steps: int, eta: float = 0.0, generator=None, trajectory: bool = False):
    """DPM-Solver++(2M) (Lu et al. 2022): a second-order multistep solver of the probability-flow
    ODE in log-SNR time lambda = log(a / s), on the data prediction x0_hat. Its first-order step is
    exactly DDIM (eta = 0); the last step returns x0_hat. Deterministic: `eta` and `generator` are ignored."""
    path = denoiser.path
    ts = timesteps_for(path.T, steps)
    lam = (path.a / path.s).log()
    xs, x0_prev, h_prev = [x], None, None
    for t, s in zip(ts[:-1], ts[1:]):
        x0 = denoiser.x0(x, t)
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


# config.CHOICES["sampler"] names the same samplers (config.py stays free of torch; a test checks they agree)
SAMPLERS = {"ddim": sample_ddim, "ddpm": sample_ddpm, "dpmpp_2m": sample_dpmpp_2m}


def steps_and_eta(sampler: str, steps: int, eta: float, T: int) -> tuple:
    """The (steps, eta) that `sampler` really uses: DDPM all T steps with eta 1, DPM-Solver++(2M) no noise."""
    if sampler == "ddpm":
        return T, 1.0
    if sampler == "dpmpp_2m":
        return steps, 0.0
    return steps, eta


def run_sampler(cfg: dict, T: int, sampler=None, steps=None, eta=None) -> tuple:
    """(sampler, steps, eta) to sample a run with: each as given, or else the run's `sampler`, `sample_steps`,
    `eta` (what the run is meant to be sampled with); steps and eta as that sampler really uses them."""
    sampler = sampler or cfg["sampler"]
    steps = cfg["sample_steps"] if steps is None else steps
    return (sampler, *steps_and_eta(sampler, steps, cfg["eta"] if eta is None else eta, T))


@torch.no_grad()
def draw_class_samples(denoiser: Denoiser, n: int, sampler: str, steps: int, eta: float = 0.0, guidance: float = 1.0,
                       seed: int = 0, label=None, noise_seed=None, trajectory: bool = False, classifier=None,
                       classifier_scale: float = 0.0):
    """n samples of a denoiser with the sampler `sampler` (a name in SAMPLERS). Labels 0..9 in turn, or all
    `label`; all the null label when guidance is 0 without classifier guidance. Classifier-free guidance
    `guidance`; classifier guidance with a noise-aware `classifier` (guidance.NoisyClassifier) at
    `classifier_scale`, of the conditional network or, with guidance 0, of the unconditional one. x_T comes
    from a generator seeded with `seed`; the sampler's noise continues that generator, or, given `noise_seed`,
    comes from a second generator seeded with it (what the quality measurements use).

    x_T has the model's `sample_shape`. Returns (x [n, ...], y [n]), and the trajectory [x_T, ..., x_0] as a
    third item when `trajectory` is true.
    """
    gen = torch.Generator().manual_seed(seed)
    if guidance == 0 and not classifier_scale:
        y = torch.full((n,), NULL_LABEL)
    elif label is None:
        y = torch.arange(n) % NUM_CLASSES
    else:
        y = torch.full((n,), label)
    x_T = torch.randn((n, *denoiser.model.sample_shape), generator=gen)
    noise_gen = gen if noise_seed is None else torch.Generator().manual_seed(noise_seed)
    guided = denoiser.guided(y, guidance, classifier, classifier_scale)
    out = SAMPLERS[sampler](guided, x_T, steps, eta, noise_gen, trajectory)
    return (out[0], y, out[1]) if trajectory else (out, y)
