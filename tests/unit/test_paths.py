"""Noise paths, posteriors and the reference ops against docs/math.md and diffusers."""
import math

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from pydiffusion.data.patterns import prime_inverse
from pydiffusion.diffusion import ops
from pydiffusion.diffusion.paths import NoisePath, beta_schedule

PATHS = [("gaussian", "linear"), ("gaussian", "quadratic"), ("gaussian", "cosine"), ("convex", "linear")]


@pytest.mark.parametrize("kind,schedule", PATHS)
@pytest.mark.parametrize("T", [2, 20, 1000])
def test_endpoints_and_decreasing_snr(kind, schedule, T):
    p = NoisePath(kind, T, schedule)
    assert p.a.dtype == torch.float64 and p.a.shape == (T + 1,)
    assert p.a[0] == 1 and p.s[0] == 0
    snr = p.snr()[1:]
    assert torch.all(snr[1:] < snr[:-1]), "SNR must decrease strictly with t"
    if kind == "gaussian":
        torch.testing.assert_close(p.a**2 + p.s**2, torch.ones(T + 1, dtype=torch.float64), rtol=0, atol=1e-15)
        assert p.a[-1] < 0.1, "T steps must reach (nearly) pure noise"
    else:
        torch.testing.assert_close(p.a + p.s, torch.ones(T + 1, dtype=torch.float64))
        assert p.s[-1].item() == pytest.approx(0.999) and p.a[-1].item() == pytest.approx(0.001)


def test_schedules_are_scaled_to_T():
    # improved-diffusion's scaling: betas at T=1000 are DDPM's 1e-4 .. 0.02; at T=20, 50 times larger, clipped
    b = beta_schedule("linear", 1000)
    assert b[0].item() == pytest.approx(1e-4) and b[-1].item() == pytest.approx(0.02)
    b = beta_schedule("linear", 20)
    assert b[0].item() == pytest.approx(5e-3) and b[-1].item() == pytest.approx(0.999)
    assert beta_schedule("cosine", 20).max() <= 0.999
    with pytest.raises(ValueError, match="unknown schedule"):
        beta_schedule("sigmoid", 20)


@pytest.mark.parametrize("kind,schedule", PATHS)
def test_posterior_is_consistent_with_the_marginals(kind, schedule):
    # integrating q(x_s | x_t, x0) against q(x_t | x0) must give q(x_s | x0) for any s < t
    p = NoisePath(kind, 20, schedule)
    for t in range(1, 21):
        for s in range(0, t):
            c_xt, c_x0, var = p.posterior(t, s)
            assert (c_xt * p.a[t] + c_x0).item() == pytest.approx(p.a[s].item(), abs=1e-12)
            assert (c_xt**2 * p.s[t] ** 2 + var).item() == pytest.approx(p.s[s].item() ** 2, abs=1e-12)
            assert var >= 0


@pytest.mark.parametrize("schedule", ["linear", "quadratic", "cosine"])
def test_gaussian_posterior_is_ddpm_eq7(schedule):
    p = NoisePath("gaussian", 20, schedule)
    beta = torch.cat([torch.zeros(1, dtype=torch.float64), p.betas])
    abar = p.a**2
    for t in range(2, 21):
        c_xt, c_x0, var = p.posterior(t, t - 1)
        assert c_x0.item() == pytest.approx((abar[t - 1].sqrt() * beta[t] / (1 - abar[t])).item(), rel=1e-12)
        assert c_xt.item() == pytest.approx(((1 - beta[t]).sqrt() * (1 - abar[t - 1]) / (1 - abar[t])).item(), rel=1e-12)
        assert var.item() == pytest.approx(((1 - abar[t - 1]) / (1 - abar[t]) * beta[t]).item(), rel=1e-12)


def _schedulers(p: NoisePath):
    betas = p.betas.float().numpy()
    kw = dict(num_train_timesteps=p.T, trained_betas=betas, clip_sample=False, prediction_type="epsilon")
    return DDPMScheduler(**kw, variance_type="fixed_small"), DDIMScheduler(**kw, set_alpha_to_one=True)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_q_sample_matches_diffusers_add_noise(schedule):
    p = NoisePath("gaussian", 20, schedule)
    ddpm, _ = _schedulers(p)
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(256, 40, generator=g), torch.randn(256, 40, generator=g)
    t = torch.randint(1, 21, (256,), generator=g)
    # diffusers' timestep k is our t = k + 1 (its alphas_cumprod[0] already includes beta_1)
    expected = ddpm.add_noise(x0, eps, t - 1)
    torch.testing.assert_close(ops.q_sample(x0, eps, t, p), expected, rtol=1e-5, atol=1e-6)


def test_posterior_step_eta1_matches_ddpm_step():
    p = NoisePath("gaussian", 20, "linear")
    ddpm, _ = _schedulers(p)
    g = torch.Generator().manual_seed(2)
    for t in range(1, 21):
        x_t, out = torch.randn(8, 40, generator=g), torch.randn(8, 40, generator=g)
        seed = 100 + t
        expected = ddpm.step(out, t - 1, x_t, generator=torch.Generator().manual_seed(seed)).prev_sample
        z = torch.randn(8, 40, generator=torch.Generator().manual_seed(seed))
        x_s, _ = ops.posterior_step(x_t, out, t, t - 1, p, z, eta=1.0, prediction="eps", clip=0)
        torch.testing.assert_close(x_s, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("eta", [0.0, 0.5])
def test_posterior_step_matches_ddim_step(eta):
    p = NoisePath("gaussian", 20, "cosine")
    _, ddim = _schedulers(p)
    ddim.set_timesteps(20)
    g = torch.Generator().manual_seed(3)
    for k in ddim.timesteps.tolist():
        x_t, out, z = (torch.randn(8, 40, generator=g) for _ in range(3))
        expected = ddim.step(out, k, x_t, eta=eta, variance_noise=z).prev_sample
        x_s, _ = ops.posterior_step(x_t, out, k + 1, k, p, z, eta=eta, prediction="eps", clip=0)
        torch.testing.assert_close(x_s, expected, rtol=1e-4, atol=1e-5)


def test_posterior_step_clamps_x0_hat():
    p = NoisePath("gaussian", 20)
    x_t, out = torch.full((2, 40), 3.0), torch.full((2, 40), -50.0)
    _, x0_hat = ops.posterior_step(x_t, out, 10, 9, p, torch.zeros(2, 40), 0.0, "x0", clip=5.0)
    assert torch.all(x0_hat == -5.0)
    _, x0_hat = ops.posterior_step(x_t, out, 10, 9, p, torch.zeros(2, 40), 0.0, "x0", clip=0)
    assert torch.all(x0_hat == -50.0)


def test_prime_inverse_patterns():
    x = torch.linspace(-3, 3, 40).repeat(10, 1)
    y = torch.arange(10)
    P = prime_inverse(x, y)
    s = x[0]
    expected = [
        -s, torch.roll(s, 10), torch.flip(s, [0]), torch.roll(torch.flip(s, [0]), 10), -torch.roll(s, 20),
        torch.sin(s * math.pi / 5), torch.tanh(s), s * s.abs(), torch.sign(s) * s.abs().sqrt(), torch.cos(s * math.pi / 5) + 1,
    ]
    for digit in range(10):
        torch.testing.assert_close(P[digit], expected[digit], msg=f"pattern of digit {digit}")
    # spot values worked by hand: roll by 10 moves element 0 to position 10; flip reverses
    assert P[1][10] == s[0] and P[2][0] == s[-1] and P[4][20] == -s[0]
    assert P[8][-1].item() == pytest.approx(math.sqrt(3)) and P[9][0].item() == pytest.approx(math.cos(-3 * math.pi / 5) + 1)
    with pytest.raises(ValueError, match="expects x"):
        prime_inverse(x, y[:3])


def test_prime_inverse_mixed_batch_uses_each_label():
    g = torch.Generator().manual_seed(4)
    x, y = torch.randn(50, 40, generator=g), torch.randint(0, 10, (50,), generator=g)
    P = prime_inverse(x, y)
    for i in range(50):
        torch.testing.assert_close(P[i], prime_inverse(x[i:i + 1], y[i:i + 1])[0])
