"""The denoiser: each parameterisation's read-out inverts its target, eps_hat and the score agree with the
closed forms of Gaussian data, and the Python formulas equal the kernels' (csrc/diffusion_math.h)."""
import pytest
import torch
from helpers import gaussian_data

from pydiffusion.config import CHOICES
from pydiffusion.diffusion import ops, reference
from pydiffusion.diffusion.denoiser import Denoiser
from pydiffusion.diffusion.paths import NoisePath


@pytest.mark.parametrize("prediction", CHOICES["prediction"])
@pytest.mark.parametrize("kind", ["gaussian", "convex"])
def test_parameterisations_invert_their_targets(prediction, kind):
    p = NoisePath(kind, 20)
    d = Denoiser(None, p, prediction, clip=0)
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(64, 40, generator=g, dtype=torch.float64), torch.randn(64, 40, generator=g, dtype=torch.float64)
    t = torch.randint(1, 21, (64,), generator=g)
    x_t = ops.q_sample(x0, eps, t, p)
    out = d.target(x0, eps, t)
    torch.testing.assert_close(d.x0_from(out, x_t, t), x0)
    torch.testing.assert_close(d.eps_from(out, x_t, t), eps)
    # and the fused step reads the output the same way: with clip off, DDIM lands on q_sample(x0, eps, t - 1)
    # (a mu output reaches the kernel as its x0_hat, as GuidedDenoiser.step passes it)
    kernel_out, kernel_prediction = (d.x0_from(out, x_t, t), "x0") if prediction == "mu" else (out, prediction)
    x_s, x0_hat = ops.posterior_step(x_t, kernel_out, t, t - 1, p, torch.zeros_like(x0), 0.0, kernel_prediction, clip=0)
    torch.testing.assert_close(x0_hat, x0)
    torch.testing.assert_close(x_s, ops.q_sample(x0, eps, t - 1, p))


@pytest.mark.parametrize("prediction", reference.PREDICTION_CODES)
def test_the_clamp_feeds_eps_hat_as_in_the_kernel(prediction):
    p = NoisePath("gaussian", 20)
    d = Denoiser(None, p, prediction, clip=1.0)
    g = torch.Generator().manual_seed(1)
    x_t, out = 3 * torch.randn(32, 40, generator=g), 3 * torch.randn(32, 40, generator=g)
    t = torch.randint(1, 21, (32,), generator=g)
    x0_hat = d.x0_from(out, x_t, t)
    assert x0_hat.abs().max() <= 1.0 and (x0_hat.abs() == 1.0).any(), "some values clamped"
    a, s = p.coef(t, x_t)
    torch.testing.assert_close(d.eps_from(out, x_t, t), (x_t - a * x0_hat) / s)
    _, kernel_x0 = ops.posterior_step(x_t, out, t, t - 1, p, torch.zeros_like(x_t), 0.0, prediction, 1.0)
    torch.testing.assert_close(kernel_x0, x0_hat)


@pytest.mark.parametrize("kind", ["gaussian", "convex"])
def test_score_of_gaussian_data_is_exact(kind):
    # the exact x0 predictor of N(mu, sig^2) data, read as an x0 network: its score is the closed form
    p = NoisePath(kind, 20)
    d = Denoiser(gaussian_data.exact_x0_network(p), p, "x0", clip=0)
    g = torch.Generator().manual_seed(2)
    t = torch.randint(1, 21, (256,), generator=g)
    x_t = 2 * torch.randn(256, 40, generator=g, dtype=torch.float64)
    y = torch.zeros(256, dtype=torch.long)
    torch.testing.assert_close(d.score(x_t, t, y), gaussian_data.exact_score(p, x_t, t))
    # the same denoiser as an eps or a v network (outputting its own targets): the same score
    x0_hat = d.x0(x_t, t, y)
    a, s = p.coef(t, x_t)
    eps_hat = (x_t - a * x0_hat) / s
    for prediction in ("eps", "v"):
        other = Denoiser(None, p, prediction, clip=0)
        out = other.target(x0_hat, eps_hat, t)
        torch.testing.assert_close(other.score_from(out, x_t, t), gaussian_data.exact_score(p, x_t, t))


def test_a_denoiser_refuses_an_unknown_prediction():
    with pytest.raises(ValueError, match="unknown prediction 'score'; choose one of"):
        Denoiser(None, NoisePath("gaussian", 20), "score")


@pytest.mark.parametrize("kind", ["gaussian", "convex"])
def test_mu_is_the_closed_form_posterior_mean(kind):
    # docs/math.md#posterior: mean = (a_ts s_s^2 / s_t^2) x_t + (a_s var_ts / s_t^2) x0 with s = t - 1, by hand
    p = NoisePath(kind, 20)
    d = Denoiser(None, p, "mu", clip=0)
    g = torch.Generator().manual_seed(3)
    x0, eps = torch.randn(64, 40, generator=g, dtype=torch.float64), torch.randn(64, 40, generator=g, dtype=torch.float64)
    t = torch.randint(1, 21, (64,), generator=g)
    x_t = ops.q_sample(x0, eps, t, p)
    a_t, s_t, a_s, s_s = (v[:, None] for v in (p.a[t], p.s[t], p.a[t - 1], p.s[t - 1]))
    var_ts = s_t**2 - (a_t / a_s) ** 2 * s_s**2
    mean = (a_t / a_s) * s_s**2 / s_t**2 * x_t + a_s * var_ts / s_t**2 * x0
    torch.testing.assert_close(d.target(x0, eps, t), mean)
    torch.testing.assert_close(d.x0_from(mean, x_t, t), x0)
    torch.testing.assert_close(d.eps_from(mean, x_t, t), eps)
    assert torch.equal(p.mean_coef(torch.tensor([1]), x0)[0].flatten(), torch.zeros(1, dtype=torch.float64)), \
        "t = 1: the mean is x0 itself"


@pytest.mark.parametrize("kind", ["gaussian", "convex"])
def test_a_mu_network_steps_to_its_mean_plus_the_posterior_noise(kind):
    # DDPM (eta = 1, t -> t-1) with a mu network is x_{t-1} = mu_hat + sqrt(post_var) z, through the fused kernel
    p = NoisePath(kind, 20)
    g = torch.Generator().manual_seed(4)
    mu_hat, x_t, z = (torch.randn(16, 40, generator=g, dtype=torch.float64) for _ in range(3))
    f = Denoiser(lambda x, t, direction, y: mu_hat, p, "mu", clip=0).guided(torch.zeros(16, dtype=torch.long))
    for t in (1, 2, 10, 20):
        x_s, _ = f.step(x_t, t, t - 1, z, 1.0)
        _, _, post_var = p.posterior(t, t - 1)
        torch.testing.assert_close(x_s, mu_hat + post_var.sqrt() * z)
    with pytest.raises(ValueError, match="a mu output steps as its x0_hat"):
        ops.posterior_step(x_t, mu_hat, 5, 4, p, z, 1.0, "mu")
