"""Classifier guidance with a trained noise-aware classifier: scale 0 is the unguided sampler bit for bit, a
guided step raises log p(y | x_t), refusals, its file, and the command line."""
import pytest
import torch
import torch.nn.functional as F

from pydiffusion.cli import main as cli
from pydiffusion.config import validate
from pydiffusion.data.mnist1d import load_mnist1d
from pydiffusion.diffusion.denoiser import Denoiser
from pydiffusion.diffusion.paths import NoisePath
from pydiffusion.diffusion.samplers import SAMPLERS, draw_class_samples
from pydiffusion.files import UnreadableFileError
from pydiffusion.nets.backbones import build_model
from pydiffusion.nets.noisy_classifier import (
    load_noisy_classifier,
    save_noisy_classifier,
    train_noisy_classifier,
)

PATH = NoisePath("convex", 20)


@pytest.fixture(scope="module")
def trained():
    """A noise-aware classifier of the convex path, trained briefly (about 5 s), and its test accuracy per t."""
    torch.manual_seed(0)
    return train_noisy_classifier(*load_mnist1d(), PATH, epochs=8, log=lambda s: None)


@pytest.fixture
def denoiser():
    torch.manual_seed(0)
    model = build_model(validate({"channels": 8, "emb_dim": 32}))
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.05)
    return Denoiser(model.eval(), PATH, "v", clip=5.0)


def test_the_trained_classifier_reads_clean_signals_and_loses_them_in_noise(trained):
    _, acc = trained
    assert acc[0] > 0.9 and acc[5] > 0.75, acc  # measured after 8 epochs: 0.962 and 0.840 (0.491 at t = 10)
    assert acc[20] < 0.2, "at t = T the signal is gone: chance is 0.1"


@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_scale_zero_is_the_unguided_sampler_bit_for_bit(trained, denoiser, sampler):
    classifier, _ = trained
    a, _ = draw_class_samples(denoiser, 20, sampler, 5, 0.5, seed=1)
    b, _ = draw_class_samples(denoiser, 20, sampler, 5, 0.5, seed=1, classifier=classifier, classifier_scale=0.0)
    c, _ = draw_class_samples(denoiser, 20, sampler, 5, 0.5, seed=1, classifier=classifier, classifier_scale=2.0)
    assert torch.equal(a, b) and not torch.allclose(a, c)


@pytest.mark.parametrize("eta,s", [(0.0, 8), (1.0, 9), (0.5, 5)])  # DDIM, the ancestral DDPM step, in between
def test_a_guided_step_raises_log_p_of_the_label(trained, denoiser, eta, s):
    classifier, _ = trained
    x, y = load_mnist1d()[2][:500], torch.arange(500) % 10  # test signals with labels that are mostly wrong
    g = torch.Generator().manual_seed(0)
    t = 10
    x_t = torch.sqrt(torch.tensor(0.5)) * x + torch.randn(x.shape, generator=g)  # a noisy start, not on the path
    noise = torch.randn(x.shape, generator=g)

    def mean_log_p(scale):
        f = denoiser.guided(y, 1.0, classifier, scale)
        x_s, _ = f.step(x_t, t, s, noise, eta)
        with torch.no_grad():
            return F.log_softmax(classifier(x_s, torch.full_like(y, s)), 1).gather(1, y[:, None]).mean().item()

    unguided, guided = mean_log_p(0.0), mean_log_p(3.0)
    assert guided > unguided + 0.05, (unguided, guided)


def test_classifier_guidance_refuses_the_null_label_and_a_missing_classifier(denoiser, trained):
    with pytest.raises(ValueError, match="needs a noise-aware classifier and class labels"):
        denoiser.guided(torch.full((4,), 10), 1.0, trained[0], 1.0)
    with pytest.raises(ValueError, match="needs a noise-aware classifier"):
        denoiser.guided(torch.arange(4), 1.0, None, 1.0)


def test_the_file_names_its_path_and_another_path_is_refused(tmp_path, trained):
    classifier, acc = trained
    save_noisy_classifier(classifier, PATH, acc, tmp_path / "c.pt")
    loaded = load_noisy_classifier(tmp_path / "c.pt", PATH)
    x, t = torch.randn(4, 40), torch.arange(4)
    assert torch.equal(loaded(x, t), classifier(x, t))
    with pytest.raises(UnreadableFileError, match=r"trained on the path .*'convex'.*noisy-classifier --dataset mnist1d --noise gaussian"):
        load_noisy_classifier(tmp_path / "c.pt", NoisePath("gaussian", 20))


def test_the_command_line_trains_one_and_samples_with_it(tmp_path, capsys, tiny_cfg):
    from pydiffusion.training.loop import train

    run = tmp_path / "run"
    train(validate({**tiny_cfg, "epochs": 1, "noise": "convex"}), run, log=lambda s: None)
    assert cli.main(["noisy-classifier", "--noise", "convex", "--epochs", "1", "--threads", "1",
                     "--out", str(tmp_path / "c.pt")]) == 0
    assert "test accuracy t=0:" in capsys.readouterr().out
    assert cli.main(["sample", "--run", str(run), "--n", "10", "--classifier-scale", "2", "--noisy-classifier",
                     str(tmp_path / "c.pt"), "--out", str(tmp_path / "s.pt")]) == 0
    s = torch.load(tmp_path / "s.pt", weights_only=True)
    assert s["classifier_scale"] == 2.0 and s["x"].shape == (10, 40)
    assert cli.main(["sample", "--run", str(run), "--classifier-scale", "2", "--out", str(tmp_path / "t.pt")]) == 2
    assert "--classifier-scale needs --noisy-classifier FILE" in capsys.readouterr().err
    assert cli.main(["noisy-classifier", "--T", "1", "--out", str(tmp_path / "d.pt")]) == 2
    assert "--T is 1; it must be an integer >= 2" in capsys.readouterr().err
