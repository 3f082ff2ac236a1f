"""Samplers: respacing, determinism, DDPM = DDIM(eta=1, all steps), guidance."""
import pytest
import torch

from pydiffusion.config import validate
from pydiffusion.models import NULL_LABEL, build_model
from pydiffusion.paths import NoisePath
from pydiffusion.sampling import guided, sample_ddim, sample_ddpm, timesteps_for


@pytest.fixture
def model():
    torch.manual_seed(0)
    m = build_model(validate({"channels": 8, "emb_dim": 32}))
    for p in m.parameters():  # random, non-zero weights so the outputs depend on every input
        torch.nn.init.normal_(p, std=0.1)
    return m.eval()


def test_timesteps_for():
    assert timesteps_for(20, 20) == list(range(20, -1, -1))
    assert timesteps_for(20, 5) == [20, 16, 12, 8, 4, 0]
    assert timesteps_for(20, 1) == [20, 0]
    with pytest.raises(ValueError, match="steps must be in"):
        timesteps_for(20, 21)


def test_samplers_are_deterministic_and_end_at_x0_hat(model):
    path = NoisePath("gaussian", 20)
    y = torch.arange(16) % 10
    f = guided(model, y)
    x_T = torch.randn(16, 40, generator=torch.Generator().manual_seed(0))
    a = sample_ddpm(f, x_T, path, generator=torch.Generator().manual_seed(1))
    b = sample_ddpm(f, x_T, path, generator=torch.Generator().manual_seed(1))
    c = sample_ddpm(f, x_T, path, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    d = sample_ddim(f, x_T, path, steps=20, eta=1.0, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, d), "DDPM is DDIM with eta = 1 over all T steps"
    x0, traj = sample_ddim(f, x_T, path, steps=5, trajectory=True)
    assert len(traj) == 6 and torch.equal(traj[0], x_T) and torch.equal(traj[-1], x0)
    assert x0.abs().max() <= 5.0, "the last step returns the clamped x0_hat"
    assert torch.equal(x0, sample_ddim(f, x_T, path, steps=5)), "DDIM with eta = 0 needs no noise"


def test_guidance(model):
    y = torch.arange(8)
    x = torch.randn(8, 40)
    cond, uncond = guided(model, y, 1.0)(x, 10), guided(model, y, 0.0)(x, 10)
    torch.testing.assert_close(uncond, guided(model, torch.full_like(y, NULL_LABEL), 1.0)(x, 10))
    assert not torch.allclose(cond, uncond)
    torch.testing.assert_close(guided(model, y, 3.0)(x, 10), uncond + 3.0 * (cond - uncond), rtol=1e-5, atol=1e-5)
