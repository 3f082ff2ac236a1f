"""Loss values on hand-computed cases, against torch.distributions as an independent oracle."""
import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from pydiffusion.diffusion import losses
from pydiffusion.diffusion.paths import NoisePath


def test_mse_by_hand():
    pred = torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 0.0]])
    target = torch.tensor([[1.0, 0.0, 3.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    torch.testing.assert_close(losses.mse(pred, target), torch.tensor([(4 + 16) / 4, 1.0]))


def test_kl_by_hand_on_a_two_step_path():
    # T = 2, linear schedule scaled by 500: beta_1 = 0.05, beta_2 = 0.999 (clipped from 10)
    p = NoisePath("gaussian", 2)
    b1, b2 = 0.05, 0.999
    assert p.betas.tolist() == pytest.approx([b1, b2])
    abar1, abar2 = 1 - b1, (1 - b1) * (1 - b2)
    coef_x0 = math.sqrt(abar1) * b2 / (1 - abar2)
    post_var = (1 - abar1) / (1 - abar2) * b2
    x0, x0_hat = torch.ones(1, 4, dtype=torch.float64), torch.zeros(1, 4, dtype=torch.float64)
    tables = losses.bound_tables(p)
    # t = 2: KL of equal-variance Gaussians whose means differ by coef_x0 * 1, per dimension, times T
    kl2 = losses.kl(x0, x0_hat, torch.tensor([2]), tables)
    assert kl2.item() == pytest.approx(2 * coef_x0**2 / (2 * post_var), rel=1e-12)
    # t = 1: Gaussian decoder NLL with variance post_var(2 -> 1), times T
    kl1 = losses.kl(x0, x0_hat, torch.tensor([1]), tables)
    assert kl1.item() == pytest.approx(2 * (0.5 * math.log(2 * math.pi * post_var) + 1 / (2 * post_var)), rel=1e-12)


@pytest.mark.parametrize("kind", ["gaussian", "convex"])
def test_bound_terms_match_torch_distributions(kind):
    p = NoisePath(kind, 20)
    tables = losses.bound_tables(p)
    g = torch.Generator().manual_seed(0)
    x0, x0_hat = torch.randn(16, 40, generator=g, dtype=torch.float64), torch.randn(16, 40, generator=g, dtype=torch.float64)
    x_t = torch.randn(16, 40, generator=g, dtype=torch.float64)
    for t in range(2, 21):
        c_xt, c_x0, var = p.posterior(t, t - 1)
        q = Normal(c_xt * x_t + c_x0 * x0, var.sqrt())
        pm = Normal(c_xt * x_t + c_x0 * x0_hat, var.sqrt())
        expected = kl_divergence(q, pm).mean(1)
        torch.testing.assert_close(losses.bound_term(x0, x0_hat, torch.full((16,), t), tables), expected)
    _, _, dec_var = p.posterior(2, 1)
    expected = -Normal(x0_hat, dec_var.sqrt()).log_prob(x0).mean(1)
    torch.testing.assert_close(losses.bound_term(x0, x0_hat, torch.ones(16, dtype=torch.long), tables), expected)
    expected = kl_divergence(Normal(p.a[-1] * x0, p.s[-1]), Normal(0.0, 1.0)).mean(1)
    torch.testing.assert_close(losses.prior_kl(x0, p), expected)


def test_perfect_prediction_has_zero_kl_for_t_at_least_2():
    p = NoisePath("gaussian", 20)
    x0 = torch.randn(4, 40)
    t = torch.arange(2, 6)
    assert torch.all(losses.kl(x0, x0, t, losses.bound_tables(p)) == 0)
