"""The trainers' losses as formulas: the KL term of a mu network, the four semi-implicit losses and their
detaching, and the learning-rate schedule."""

import pytest
import torch

from pydiffusion.config import validate
from pydiffusion.data.mnist1d import load_mnist1d
from pydiffusion.data.patterns import prime_inverse
from pydiffusion.diffusion import losses, ops
from pydiffusion.diffusion.denoiser import Denoiser
from pydiffusion.diffusion.paths import NoisePath
from pydiffusion.nets.backbones import build_model
from pydiffusion.training.loop import lr_at
from pydiffusion.training.trainers import SemiImplicitTrainer, build_trainer


def test_the_kl_term_of_a_mu_network_is_its_mean_space_error():
    # docs/math.md#losses: for t >= 2 the bound term is ||mu - mu_hat||^2 / (2 post_var) per dimension, x T
    path = NoisePath("gaussian", 20)
    g = torch.Generator().manual_seed(0)
    out = torch.randn(32, 40, generator=g, dtype=torch.float64)
    trainer = build_trainer(validate({"loss": "kl", "prediction": "mu", "clip": 0}),
                            Denoiser(lambda x, t, direction, y: out, path, "mu", clip=0))
    x0, y = torch.randn(32, 40, generator=g, dtype=torch.float64), torch.arange(32) % 10
    t, eps, _ = trainer.draw(x0, y, torch.Generator().manual_seed(1))
    t = t.clamp(min=2)
    x_t = ops.q_sample(x0, eps, t, path)
    loss, _ = trainer.forward_loss(out, x0, eps, x_t, t)
    _, _, post_var = path.posterior(t, t - 1)
    mean = trainer.denoiser.target(x0, eps, t)
    torch.testing.assert_close(loss, 20 * losses.mse(out, mean) / (2 * post_var))


def test_semi_implicit_losses_and_detaching():
    cfg = validate({"channels": 8, "emb_dim": 32, "training": "semi_implicit"})
    x, y, _, _ = load_mnist1d()
    path = NoisePath("gaussian", 20)
    torch.manual_seed(0)
    model = build_model(cfg)
    for p in model.parameters():  # the zero-initialised heads would hide the roundtrip gradients
        torch.nn.init.normal_(p, std=0.05)
    grads = {}
    for detach in (True, False):
        trainer = SemiImplicitTrainer(Denoiser(model, path), detach_intermediate=detach, w_forward=0, w_inverse=0,
                                      w_rt_fi=1, w_rt_if=0)
        model.zero_grad()
        parts = trainer(x[:32], y[:32], torch.Generator().manual_seed(0))
        assert set(parts) == {"loss", "forward", "inverse", "rt_fi", "rt_if"}
        assert parts["loss"].item() == pytest.approx(parts["rt_fi"].item())
        parts["loss"].backward()
        grads[detach] = torch.cat([p.grad.flatten() for p in model.parameters()])
    # without detaching, the roundtrip's gradient also flows back through the forward pass
    assert not torch.allclose(grads[True], grads[False])


def test_semi_implicit_losses_are_the_documented_maps():
    # docs/math.md#training-modes, one network pass at a time (the trainer batches the two passes of each
    # stage): the z = 1 map read as P_y(x0), and both roundtrips through it
    cfg = validate({"channels": 8, "emb_dim": 32, "training": "semi_implicit"})
    x, y, _, _ = load_mnist1d()
    x0, y = x[:16], y[:16]
    path = NoisePath("convex", 20)
    torch.manual_seed(0)
    model = build_model(cfg)
    for p in model.parameters():  # random, non-zero weights so the outputs depend on every input
        torch.nn.init.normal_(p, std=0.05)
    denoiser = Denoiser(model, path, prediction="v")
    trainer = SemiImplicitTrainer(denoiser, cfg_dropout=0.0)
    parts = trainer(x0, y, torch.Generator().manual_seed(0))
    t, eps, y_fwd = trainer.draw(x0, y, torch.Generator().manual_seed(0))
    assert torch.equal(y_fwd, y), "no label dropout"
    zeros, ones = torch.zeros_like(t), torch.ones_like(t)
    p = prime_inverse(x0, y)
    x_t = ops.q_sample(x0, eps, t, path)
    out = model(x_t, t, zeros, y)
    x0_hat = denoiser.x0_from(out, x_t, t)
    p_hat = model(x0, t, ones, y)
    assert not torch.allclose(p_hat, model(x0, t, zeros, y)), "z must change the output"
    a, s = path.coef(t, x0)
    expected = {"forward": losses.mse(out, a * eps - s * x0),
                "inverse": losses.mse(p_hat, p),
                "rt_fi": losses.mse(model(x0_hat, t, ones, y), p),
                "rt_if": losses.mse(denoiser.x0_from(model(p_hat, t, zeros, y), p_hat, t), x0)}
    for name, loss in expected.items():
        torch.testing.assert_close(parts[name], loss.mean(), rtol=1e-5, atol=1e-6, msg=name)
    total = parts["forward"] + parts["inverse"] + 0.5 * parts["rt_fi"] + 0.5 * parts["rt_if"]
    torch.testing.assert_close(parts["loss"], total)


def test_lr_schedule_warms_up_then_decays():
    lrs = [lr_at(s, 100, 10, 1.0) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:])) and lrs[-1] < 0.01
