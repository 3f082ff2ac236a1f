"""Quality metrics on known cases, the classifier's features and file, and the samplers against each other."""

import pytest
import torch
from helpers import gaussian_data

from pydiffusion.config import validate
from pydiffusion.diffusion.denoiser import Denoiser
from pydiffusion.diffusion.paths import NoisePath
from pydiffusion.diffusion.samplers import draw_class_samples, sample_ddim, sample_ddpm, sample_dpmpp_2m
from pydiffusion.evaluation.quality import class_entropy, frechet_distance, nearest_distance
from pydiffusion.nets.backbones import build_model
from pydiffusion.nets.classifiers import load_classifier, save_classifier


def _whitened(n, d, seed=0):
    """n points in d dimensions whose sample mean is exactly 0 and sample covariance exactly I."""
    a = torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    a = a - a.mean(0)
    cov = a.T @ a / (n - 1)
    return a @ torch.linalg.inv(torch.linalg.cholesky(cov)).T


def test_frechet_distance_known_cases():
    a = _whitened(500, 8)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    delta = torch.arange(8, dtype=torch.float64) / 4
    assert frechet_distance(a, a + delta) == pytest.approx(float((delta**2).sum()), rel=1e-8)
    # covariance 4 I against I: Tr(I + 4I - 2 * 2I) = d
    assert frechet_distance(a, 2 * a) == pytest.approx(8.0, rel=1e-8)
    assert frechet_distance(a, 2 * a + delta) == pytest.approx(8.0 + float((delta**2).sum()), rel=1e-8)


def test_class_entropy_and_nearest_distance():
    assert class_entropy(torch.arange(1000) % 10) == pytest.approx(1.0)
    assert class_entropy(torch.zeros(100, dtype=torch.long)) == 0.0
    x = torch.randn(50, 40)
    assert nearest_distance(x[:10], x) == 0.0
    assert nearest_distance(x[:10] + torch.tensor([3.0] + [0.0] * 39), x[10:] * 0 + x[:10].repeat(4, 1)) == pytest.approx(3.0)


@pytest.fixture
def tiny_model():
    cfg = validate({"channels": 8, "emb_dim": 32})
    torch.manual_seed(0)
    m = build_model(cfg)
    for p in m.parameters():
        torch.nn.init.normal_(p, std=0.1)
    return Denoiser.from_config(m.eval(), NoisePath("gaussian", 20), cfg), cfg


@pytest.mark.parametrize("sampler", ["ddim", "dpmpp_2m"])
def test_samplers_are_deterministic_with_a_seed(tiny_model, sampler):
    denoiser, _ = tiny_model
    a, ya = draw_class_samples(denoiser, 20, sampler, steps=10, seed=3)
    b, yb = draw_class_samples(denoiser, 20, sampler, steps=10, seed=3)
    c, _ = draw_class_samples(denoiser, 20, sampler, steps=10, seed=4)
    assert torch.equal(a, b) and torch.equal(ya, yb) and not torch.equal(a, c)


@pytest.mark.parametrize("kind", ["gaussian", "convex"])
def test_dpmpp_2m_and_ddim_agree_at_many_steps(kind):
    # for Gaussian data the probability-flow ODE has a closed form: x0 = mu + k (x_T - a_T mu),
    # k = sig / sqrt(a_T^2 sig^2 + s_T^2); both samplers must converge to it, DPM-Solver++ at second order
    mu, sig = gaussian_data.MU, gaussian_data.SIG
    path = NoisePath(kind, 1000)
    f = Denoiser(gaussian_data.exact_x0_network(path), path, "x0", clip=0).guided(torch.zeros(500, dtype=torch.long))
    x_T = torch.randn(500, 40, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    a_T, s_T = path.a[-1].item(), path.s[-1].item()
    exact = mu + sig / (a_T**2 * sig**2 + s_T**2) ** 0.5 * (x_T - a_T * mu)

    def err(sampler, steps):
        return (sampler(f, x_T, steps) - exact).abs().max().item()

    assert err(sample_ddim, 1000) < 0.01 and err(sample_dpmpp_2m, 1000) < 0.01
    assert err(sample_dpmpp_2m, 50) < 0.25 * err(sample_ddim, 50)  # measured: 0.02x (gaussian), 0.12x (convex)
    assert err(sample_ddim, 200) < 0.3 * err(sample_ddim, 50), "DDIM converges at first order"


def test_ddpm_sampler_matches_the_data_distribution():
    path = NoisePath("gaussian", 1000)
    f = Denoiser(gaussian_data.exact_x0_network(path), path, "x0", clip=0).guided(torch.zeros(2000, dtype=torch.long))
    x_T = torch.randn(2000, 40, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x = sample_ddpm(f, x_T, 1000, generator=torch.Generator().manual_seed(2))
    assert x.mean().item() == pytest.approx(1.5, abs=0.01) and x.std().item() == pytest.approx(0.5, abs=0.01)


def test_frechet_distance_singular_covariance_and_fallback():
    # 128-d features with dead units (as ReLU features have): singular covariances, finite FD;
    # equal covariances shifted by delta give exactly ||delta||^2; sqrtm and the symmetric form agree
    import numpy as np

    from pydiffusion.evaluation.quality import _trace_sqrt_product_symmetric

    g = torch.Generator().manual_seed(0)
    a = torch.randn(300, 128, generator=g, dtype=torch.float64) @ torch.randn(128, 128, generator=g, dtype=torch.float64)
    a[:, :40] = 0
    delta = torch.linspace(-1, 1, 128, dtype=torch.float64)
    assert frechet_distance(a, a + delta) == pytest.approx(float((delta**2).sum()), rel=1e-6)
    b = torch.randn(200, 128, generator=g, dtype=torch.float64) * 1.5
    fd = frechet_distance(a, b)
    c_a, c_b = np.cov(a.numpy(), rowvar=False), np.cov(b.numpy(), rowvar=False)
    exact = float(a.mean(0).sub(b.mean(0)).pow(2).sum() + np.trace(c_a) + np.trace(c_b)
                  - 2 * _trace_sqrt_product_symmetric(c_a, c_b))
    assert fd == pytest.approx(exact, rel=1e-6) and fd > 0


def test_classifier_features_and_saved_architecture(tmp_path):
    from pydiffusion.nets.classifiers import Classifier, features

    model = Classifier(width=8, features=16).eval()
    x = torch.randn(7, 40)
    f = features(model, x, batch_size=3)
    assert f.shape == (7, 16) and f.dtype == torch.float64
    assert torch.allclose(f.float(), model.features(x), atol=1e-6)
    save_classifier(model, 0.5, tmp_path / "c.pt")
    loaded, acc = load_classifier(tmp_path / "c.pt")
    assert acc == 0.5 and loaded.width == 8 and torch.equal(loaded(x), model(x))


def test_evaluate_quality_keys_and_sampler_settings(tiny_model):
    from pydiffusion.evaluation.quality import compare_samplers, evaluate_quality
    from pydiffusion.nets.classifiers import Classifier

    denoiser, cfg = tiny_model
    torch.manual_seed(0)
    classifier = Classifier(width=8, features=16).eval()
    g = torch.Generator().manual_seed(0)
    data = (torch.randn(300, 40, generator=g), torch.arange(300) % 10, torch.randn(100, 40, generator=g),
            torch.arange(100) % 10)
    keys = {"sample_acc_guided", "fd_1d", "fd_floor", "fd_ratio", "fd_1d_unconditional", "coverage_entropy", "nn_dist",
            "nn_dist_test_floor"}
    for sampler in ("ddim", "ddpm", "dpmpp_2m"):
        q = evaluate_quality(denoiser, cfg, classifier, data, n=60, seed=0, sampler=sampler, steps=5)
        assert set(q) == keys and all(isinstance(v, float) and v == v for v in q.values()), (sampler, q)
        assert 0 <= q["sample_acc_guided"] <= 1 and 0 <= q["coverage_entropy"] <= 1 and q["fd_floor"] >= 0
    assert q == evaluate_quality(denoiser, cfg, classifier, data, n=60, seed=0, sampler="dpmpp_2m", steps=5)
    # by default, the run's own sampler, steps and eta: what the grid measures each run with
    for sampler in ("ddpm", "ddim"):
        run_cfg = {**cfg, "sampler": sampler, "sample_steps": 5, "eta": 0.5}
        assert (evaluate_quality(denoiser, run_cfg, classifier, data, n=60, seed=0)
                == evaluate_quality(denoiser, cfg, classifier, data, n=60, seed=0, sampler=sampler, steps=5, eta=0.5))
    assert (evaluate_quality(denoiser, {**cfg, "sampler": "ddpm"}, classifier, data, n=60, seed=0)
            != evaluate_quality(denoiser, {**cfg, "sampler": "ddim"}, classifier, data, n=60, seed=0))
    rows = compare_samplers(denoiser, cfg, classifier, data, n=30, log=lambda s: None,
                            settings=[("ddpm", 5, 1.0), ("ddim", 5, 0.0), ("dpmpp_2m", 4, 3.0)])
    assert [(r["sampler"], r["steps"], r["evaluations"]) for r in rows] == [("ddpm", 20, 20), ("ddim", 5, 5),
                                                                             ("dpmpp_2m", 4, 8)]
    assert rows[1]["accuracy"] is None and rows[0]["seconds_per_1000"] > 0


@pytest.mark.parametrize("name,eta", [("ddpm", 1.0), ("ddim", 0.5)])
def test_stochastic_samplers_are_deterministic_with_a_seeded_generator(tiny_model, name, eta):
    denoiser, _ = tiny_model
    a, _ = draw_class_samples(denoiser, 20, name, 10, eta, seed=3, noise_seed=5)
    b, _ = draw_class_samples(denoiser, 20, name, 10, eta, seed=3, noise_seed=5)
    c, _ = draw_class_samples(denoiser, 20, name, 10, eta, seed=3, noise_seed=6)
    assert torch.equal(a, b) and not torch.equal(a, c), "same x_T, different sampler noise must differ"
