"""Samplers: one signature, respacing, determinism, DDPM = DDIM(eta=1, all steps), guidance, the RNG stream."""
import inspect

import pytest
import torch

from pydiffusion.config import CHOICES, validate
from pydiffusion.data.labels import NULL_LABEL
from pydiffusion.diffusion import ops
from pydiffusion.diffusion.denoiser import Denoiser
from pydiffusion.diffusion.paths import NoisePath
from pydiffusion.diffusion.samplers import SAMPLERS, draw_class_samples, run_sampler, sample_ddim, sample_ddpm, timesteps_for
from pydiffusion.nets.backbones import build_model


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


def test_run_sampler_defaults_to_the_runs_settings_as_the_sampler_uses_them():
    cfg = validate({"T": 20, "sampler": "ddim", "sample_steps": 10, "eta": 0.3})
    assert run_sampler(cfg, 20) == ("ddim", 10, 0.3)
    assert run_sampler(cfg, 20, steps=5, eta=0.0) == ("ddim", 5, 0.0)
    assert run_sampler(cfg, 20, sampler="ddpm", steps=5) == ("ddpm", 20, 1.0)
    assert run_sampler(cfg, 20, sampler="dpmpp_2m") == ("dpmpp_2m", 10, 0.0)
    assert run_sampler(validate({"T": 20, "sampler": "ddpm"}), 20) == ("ddpm", 20, 1.0)


def test_samplers_are_deterministic_and_end_at_x0_hat(model):
    y = torch.arange(16) % 10
    f = Denoiser(model, NoisePath("gaussian", 20)).guided(y)
    x_T = torch.randn(16, 40, generator=torch.Generator().manual_seed(0))
    a = sample_ddpm(f, x_T, 20, generator=torch.Generator().manual_seed(1))
    b = sample_ddpm(f, x_T, 5, eta=0.0, generator=torch.Generator().manual_seed(1))
    c = sample_ddpm(f, x_T, 20, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c), "DDPM ignores steps and eta"
    d = sample_ddim(f, x_T, steps=20, eta=1.0, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, d), "DDPM is DDIM with eta = 1 over all T steps"
    x0, traj = sample_ddim(f, x_T, steps=5, trajectory=True)
    assert len(traj) == 6 and torch.equal(traj[0], x_T) and torch.equal(traj[-1], x0)
    assert x0.abs().max() <= 5.0, "the last step returns the clamped x0_hat"
    assert torch.equal(x0, sample_ddim(f, x_T, steps=5)), "DDIM with eta = 0 needs no noise"


def test_guidance(model):
    d = Denoiser(model, NoisePath("gaussian", 20))
    y = torch.arange(8)
    x = torch.randn(8, 40)
    cond, uncond = d.guided(y, 1.0).output(x, 10), d.guided(y, 0.0).output(x, 10)
    torch.testing.assert_close(uncond, d.guided(torch.full_like(y, NULL_LABEL), 1.0).output(x, 10))
    torch.testing.assert_close(cond, d(x, 10, y))
    assert not torch.allclose(cond, uncond)
    torch.testing.assert_close(d.guided(y, 3.0).output(x, 10), uncond + 3.0 * (cond - uncond), rtol=1e-5, atol=1e-5)


def test_every_sampler_has_one_signature_and_config_names_them():
    assert set(CHOICES["sampler"]) == set(SAMPLERS)
    signatures = {name: list(inspect.signature(fn).parameters.items()) for name, fn in SAMPLERS.items()}
    assert [p for p, _ in signatures["ddim"]] == ["denoiser", "x", "steps", "eta", "generator", "trajectory"]
    assert all(s == signatures["ddim"] for s in signatures.values()), signatures


def test_dpmpp_2m_is_deterministic(model):
    f = Denoiser(model, NoisePath("gaussian", 20)).guided(torch.arange(8))
    x_T = torch.randn(8, 40, generator=torch.Generator().manual_seed(0))
    a = SAMPLERS["dpmpp_2m"](f, x_T, 5)
    assert torch.equal(a, SAMPLERS["dpmpp_2m"](f, x_T, 5, eta=1.0, generator=torch.Generator().manual_seed(3)))


@pytest.mark.parametrize("sampler,steps,eta", [("ddpm", 20, 1.0), ("ddim", 5, 0.5)])
def test_the_sampling_rng_stream_is_kept(model, sampler, steps, eta):
    # every stored sample and quality number depends on this order of draws: x_T [n, 40] first, then one
    # [n, 40] normal per reverse step, from the same generator (or from a second one seeded with noise_seed)
    cfg = validate({"channels": 8, "emb_dim": 32})
    path = NoisePath("gaussian", 20)
    y = torch.arange(12) % 10

    def by_hand(seed, noise_seed=None):
        gen = torch.Generator().manual_seed(seed)
        x = torch.randn((12, 40), generator=gen)
        noise = gen if noise_seed is None else torch.Generator().manual_seed(noise_seed)
        ts = timesteps_for(20, steps)
        for t, s in zip(ts[:-1], ts[1:]):
            z = torch.randn((12, 40), generator=noise)
            x, _ = ops.posterior_step(x, model(x, torch.full_like(y, t), torch.zeros_like(y), y), t, s, path, z, eta,
                                      cfg["prediction"], cfg["clip"])
        return x

    with torch.no_grad():
        d = Denoiser.from_config(model, path, cfg)
        x, labels = draw_class_samples(d, 12, sampler, steps, eta, seed=3)
        assert torch.equal(labels, y) and torch.equal(x, by_hand(3))
        x, _ = draw_class_samples(d, 12, sampler, steps, eta, seed=3, noise_seed=10)
        assert torch.equal(x, by_hand(3, 10))


def test_draw_class_samples_labels_and_trajectory(model):
    cfg = validate({"channels": 8, "emb_dim": 32, "sample_steps": 4})
    path = NoisePath("gaussian", 20)
    d = Denoiser.from_config(model, path, cfg)
    x, y = draw_class_samples(d, 7, "ddim", 4, label=3)
    assert x.shape == (7, 40) and y.tolist() == [3] * 7
    _, y = draw_class_samples(d, 7, "ddim", 4, guidance=0.0, label=3)
    assert y.tolist() == [NULL_LABEL] * 7, "guidance 0 draws unconditional samples"
    x, y, xs = draw_class_samples(d, 7, "dpmpp_2m", 4, trajectory=True)
    assert y.tolist() == [0, 1, 2, 3, 4, 5, 6] and len(xs) == 5 and torch.equal(xs[-1], x)
    assert torch.equal(x, draw_class_samples(d, 7, "dpmpp_2m", 4)[0])
