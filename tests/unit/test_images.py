"""Images [B, C, H, W]: UNet2D, the trainers and samplers on images, the fused ops on 4-D input, the image
prime-inverse patterns, SSIM against scikit-image, and the image metrics."""
import math

import pytest
import torch
from skimage.metrics import structural_similarity
from sklearn.datasets import load_digits

from pydiffusion.config import validate
from pydiffusion.data.labels import NULL_LABEL
from pydiffusion.data.patterns import image_patterns, prime_inverse
from pydiffusion.diffusion import ops, reference
from pydiffusion.diffusion.denoiser import Denoiser
from pydiffusion.diffusion.paths import NoisePath
from pydiffusion.diffusion.samplers import SAMPLERS, draw_class_samples
from pydiffusion.evaluation.metrics import held_out_metrics
from pydiffusion.evaluation.ssim import ssim
from pydiffusion.nets.backbones import UNet2D, build_model
from pydiffusion.training.trainers import ConsistencyTrainer, ImplicitTrainer, SemiImplicitTrainer

SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32)]
SMALL = {"channels": 8, "emb_dim": 32}


@pytest.fixture(scope="module")
def digits():
    """sklearn's 8 x 8 digits (values 0..16) scaled to [-1, 1]: x float32 [1797, 1, 8, 8], y int64 [1797]."""
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 8 - 1
    return x, torch.tensor(d.target, dtype=torch.long)


def _randomised(model, std=0.05):
    """The model with random, non-zero weights (the zero-initialised heads would hide every input's effect)."""
    torch.manual_seed(0)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=std)
    return model


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("model", ["unet", "mlp"])
def test_image_models_keep_the_shape(shape, model):
    net = build_model(validate({**SMALL, "model": model, "channel_mult": [1, 2, 4]}), shape)
    assert net.sample_shape == shape
    x = torch.randn(3, *shape)
    out = net(x, torch.tensor([1, 7, 20]), torch.tensor([0, 1, 0]), torch.tensor([0, 9, NULL_LABEL]))
    assert out.shape == x.shape and out.is_contiguous()
    if model == "unet":
        assert isinstance(net, UNet2D)


def test_build_model_picks_the_network_by_shape():
    cfg = validate(SMALL)
    assert build_model(cfg).sample_shape == (40,)
    assert type(build_model(cfg)).__name__ == "UNet1D"
    with pytest.raises(ValueError, match=r"a sample shape is \(L,\) or \(C, H, W\)"):
        build_model(cfg, (8, 8))


@pytest.mark.parametrize("direction_embedding", [False, True])
def test_t_y_and_z_change_the_output(direction_embedding):
    net = _randomised(UNet2D(20, (1, 8, 8), 8, (1, 2, 4), emb_dim=32, direction_embedding=direction_embedding))
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    t, z, y = torch.full((4,), 5), torch.zeros(4, dtype=torch.long), torch.arange(4)
    base = net(x, t, z, y)
    for changed in (net(x, t + 3, z, y), net(x, t, z + 1, y), net(x, t, z, y + 1)):
        assert (changed - base).abs().amax(dim=(1, 2, 3)).min() > 1e-4, "every sample's output must change"


def test_a_training_step_makes_the_zero_initialised_head_depend_on_the_input(digits):
    x, y = digits
    torch.manual_seed(0)
    model = build_model(validate(SMALL), (1, 8, 8))
    t, z = torch.full((8,), 5), torch.zeros(8, dtype=torch.long)
    assert not model(x[:8], t, z, y[:8]).any(), "a fresh network outputs zeros"
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    trainer, gen = ImplicitTrainer(Denoiser(model, NoisePath("gaussian", 20))), torch.Generator().manual_seed(0)
    for step in range(2):  # the first step moves only the zero head; the second the zero convs that FiLM feeds
        opt.zero_grad()
        trainer(x[64 * step:64 * step + 64], y[64 * step:64 * step + 64], gen)["loss"].backward()
        opt.step()
    assert not torch.equal(model(x[:8], t, z, y[:8]), model(x[:8], t + 5, z, y[:8]))
    assert not torch.equal(model(x[:8], t, z, y[:8]), model(x[:8], t, z, (y[:8] + 1) % 10))
    assert not torch.equal(model(x[:8], t, z, y[:8]), model(x[:8], t, z + 1, y[:8]))


TRAINERS = {"implicit": ImplicitTrainer, "semi_implicit": SemiImplicitTrainer, "consistency": ConsistencyTrainer}


@pytest.mark.parametrize("training", TRAINERS)
@pytest.mark.parametrize("loss", ["mse", "kl"])
def test_trainers_give_finite_losses_on_images(training, loss):
    torch.manual_seed(0)
    model = _randomised(build_model(validate(SMALL), (3, 32, 32)))
    trainer = TRAINERS[training](Denoiser(model, NoisePath("gaussian", 20)), loss=loss)
    x = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    parts = trainer(x, torch.arange(6), torch.Generator().manual_seed(0))
    assert set(parts) == {"loss", *trainer.components}
    assert all(math.isfinite(v.item()) for v in parts.values())
    parts["loss"].backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("training", TRAINERS)
def test_a_few_steps_on_digits_reduce_the_loss(training, digits):
    # the loss of one batch and one draw of t, noise and dropout, fitted by Adam: the gradients through the image
    # shapes are right. Random non-zero weights: from the zero-output start the roundtrip I->F term first rises
    # (it reads p_hat as x_t and divides by a_t), as on 1-D signals.
    x, y = digits
    model = _randomised(build_model(validate(SMALL), (1, 8, 8)))
    trainer = TRAINERS[training](Denoiser(model, NoisePath("gaussian", 20)))
    loss = lambda: trainer(x[:64], y[:64], torch.Generator().manual_seed(0))["loss"]
    before = loss().item()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in range(20):
        opt.zero_grad()
        loss().backward()
        opt.step()
    assert loss().item() < 0.99 * before


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 32, 32)])
def test_every_sampler_draws_images(sampler, shape):
    model = _randomised(build_model(validate(SMALL), shape)).eval()
    denoiser = Denoiser(model, NoisePath("gaussian", 20))
    x, y = draw_class_samples(denoiser, 4, sampler, 5, eta=0.5, guidance=2.0, seed=0)
    assert x.shape == (4, *shape) and torch.isfinite(x).all()
    assert torch.equal(y, torch.arange(4))
    again, _ = draw_class_samples(denoiser, 4, sampler, 5, eta=0.5, guidance=2.0, seed=0)
    assert torch.equal(x, again)


@pytest.mark.parametrize("shape", [(5, 1, 8, 8), (4, 1, 28, 28), (3, 3, 32, 32)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_compiled_ops_equal_the_reference_on_images(shape, channels_last):
    assert ops.backend("cpu", torch.float64) == "cpp"
    g = torch.Generator().manual_seed(0)
    x, out, noise = (torch.randn(shape, generator=g, dtype=torch.float64) for _ in range(3))
    if channels_last:  # what UNet2D's feature maps look like: the ops copy them, not misread them
        x, out, noise = (v.contiguous(memory_format=torch.channels_last) for v in (x, out, noise))
    path = NoisePath("gaussian", 20)
    t = torch.randint(1, 21, (shape[0],), generator=g)
    s = t - 1
    torch.testing.assert_close(ops.q_sample(x, noise, t, path), reference.q_sample(x, noise, t, path.a, path.s),
                               rtol=1e-12, atol=1e-12)
    for prediction in ("eps", "x0", "v"):
        got = ops.posterior_step(x, out, t, s, path, noise, 0.5, prediction, 1.5)
        want = reference.posterior_step(x, out, t, s, path.a, path.s, noise, 0.5, prediction, 1.5)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


# docs/math.md#prime-inverse-patterns: the image maps' inverses, written out independently of the code
INVERSES = [
    lambda p: -p,
    lambda p: p.flip(-1),
    lambda p: p.flip(-2),
    lambda p: p.transpose(-2, -1),
    lambda p: torch.rot90(p, -1, dims=(-2, -1)),
    lambda p: torch.rot90(p, 2, dims=(-2, -1)),
    lambda p: torch.roll(p, (-(p.shape[-2] // 2), -(p.shape[-1] // 2)), dims=(-2, -1)),
    lambda p: p.sign() * p.abs().sqrt(),
    lambda p: p * p.abs(),
    lambda p: torch.asin(p) * 2 / math.pi,
]


@pytest.mark.parametrize("shape", [(2, 1, 8, 8), (2, 3, 7, 7), (2, 1, 28, 28)])
def test_image_patterns_are_deterministic_invertible_maps_of_the_range(shape):
    x = torch.rand(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2 - 1
    outputs = []
    for c in range(10):
        y = torch.full((shape[0],), c)
        p = prime_inverse(x, y)
        assert p.shape == x.shape and torch.equal(p, prime_inverse(x.clone(), y))
        assert p.abs().max() <= 1, "each map takes [-1, 1] onto itself"
        torch.testing.assert_close(INVERSES[c](p), x, rtol=1e-12, atol=1e-12)
        outputs.append(p)
    assert all(not torch.allclose(a, b) for i, a in enumerate(outputs) for b in outputs[i + 1:]), "ten distinct maps"


def test_image_patterns_use_each_samples_label():
    x = torch.rand(10, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    y = torch.arange(9, -1, -1)
    p = prime_inverse(x, y)
    for i in range(10):
        assert torch.equal(p[i], image_patterns(x[i:i + 1])[int(y[i])][0])


def test_image_patterns_refuse_bad_shapes():
    with pytest.raises(ValueError, match="need square images"):
        prime_inverse(torch.zeros(2, 1, 8, 6), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"expects x \[B, L\] or \[B, C, H, W\]"):
        prime_inverse(torch.zeros(2, 8, 8), torch.zeros(2, dtype=torch.long))


def _ssim_pairs(digits):
    """(x, y) float64 image pairs: random images and their noisy copies, and real digits against noisy and
    other digits, 1 and 3 channels, 8 x 8 to 32 x 32."""
    g = torch.Generator().manual_seed(0)
    real = digits[0][:8].double()
    noisy = (real + 0.3 * torch.randn(real.shape, generator=g, dtype=torch.float64)).clamp(-1, 1)
    yield real, noisy
    yield real, digits[0][8:16].double()
    for shape in [(4, 1, 8, 8), (4, 3, 8, 8), (4, 1, 28, 28), (4, 3, 32, 32)]:
        x = torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1
        yield x, (x + 0.5 * torch.randn(shape, generator=g, dtype=torch.float64)).clamp(-1, 1)


def test_ssim_equals_scikit_image(digits):
    for x, y in _ssim_pairs(digits):
        ours = ssim(x, y, 2.0)
        theirs = torch.tensor([structural_similarity(a.numpy(), b.numpy(), data_range=2.0, channel_axis=0,
                                                     win_size=7, gaussian_weights=False) for a, b in zip(x, y)])
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-10)
        if x.shape[1] == 1:  # a grayscale image as a 2-D array, no channel axis
            gray = [structural_similarity(a[0].numpy(), b[0].numpy(), data_range=2.0) for a, b in zip(x, y)]
            torch.testing.assert_close(ours, torch.tensor(gray, dtype=torch.float64), rtol=0, atol=1e-10)
    x = digits[0][:4].double()
    torch.testing.assert_close(ssim(x, x, 2.0), torch.ones(4, dtype=torch.float64), rtol=0, atol=1e-12)


def test_ssim_refuses_images_smaller_than_the_window():
    with pytest.raises(ValueError, match="must be odd and fit the images"):
        ssim(torch.zeros(1, 1, 6, 6), torch.zeros(1, 1, 6, 6), 2.0)


def test_held_out_metrics_report_ssim_for_images_only(digits):
    x, y = digits
    model = _randomised(build_model(validate(SMALL), (1, 8, 8)), std=0.02)
    out = held_out_metrics(Denoiser(model, NoisePath("gaussian", 20)), x[:40], y[:40], psnr_timesteps=(2, 10),
                           batch_size=16)
    for k in (2, 10):
        assert math.isfinite(out[f"psnr_t{k}"]) and -1 <= out[f"ssim_t{k}"] <= 1
    assert math.isfinite(out["test_mse_inverse"]) and len(out["test_mse_forward_t"]) == 20
    signal_model = build_model(validate(SMALL))
    signals = held_out_metrics(Denoiser(signal_model, NoisePath("gaussian", 20)), torch.randn(8, 40),
                               torch.arange(8), psnr_timesteps=(2, 10))
    assert "psnr_t2" in signals and not any(k.startswith("ssim") for k in signals)
