"""The image classifiers' refusals, colour input, the augmentation, and the noise-aware classifier's gradient."""
import pytest
import torch
import torch.nn.functional as F

from pydiffusion.diffusion.denoiser import log_prob_grad
from pydiffusion.files import UnreadableFileError
from pydiffusion.nets.classifiers import Classifier, augment, load_classifier, save_classifier, train_classifier
from pydiffusion.nets.noisy_classifier import (
    NoisyClassifier,
)


def test_an_mnist1d_classifier_is_refused_on_images(tmp_path):
    save_classifier(Classifier(width=8, features=16), 0.5, tmp_path / "c.pt")
    assert load_classifier(tmp_path / "c.pt", dataset="mnist1d")[0].shape == (40,)
    with pytest.raises(UnreadableFileError, match="trained on mnist1d, the run uses cifar10"):
        load_classifier(tmp_path / "c.pt", dataset="cifar10")


def test_the_gru_is_refused_on_images(digits):
    with pytest.raises(ValueError, match="use arch 'cnn'"):
        train_classifier(*digits, epochs=1, arch="gru")


def test_the_classifier_reads_colour_images():
    model = Classifier(width=8, features=16, shape=(3, 32, 32)).eval()
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_image_augmentation_shifts_by_at_most_one_pixel():
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).reshape(2, 3, 6, 6)
    gen = torch.Generator().manual_seed(0)
    out = augment(x, gen)
    assert out.shape == x.shape
    for b in range(2):
        # some shift (dr, dc) in -1..1 with edge pixels repeated explains the sample, up to the noise
        candidates = []
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                rows, cols = (torch.arange(6) - dr).clamp(0, 5), (torch.arange(6) - dc).clamp(0, 5)
                candidates.append((out[b] - x[b][:, rows][:, :, cols]).abs().max().item())
        assert min(candidates) < 0.5, candidates  # noise of std 0.05; a wrong shift is off by >= 1


def test_the_image_noise_aware_classifier_gradient_matches_finite_differences():
    torch.manual_seed(0)
    model = NoisyClassifier(20, width=8, emb_dim=16, shape=(1, 8, 8)).double().eval()
    x, t, y = torch.randn(2, 1, 8, 8, dtype=torch.float64), torch.tensor([3, 15]), torch.tensor([2, 7])
    grad = log_prob_grad(model, x, t, y)
    assert grad.shape == x.shape

    def log_p(x):
        return F.log_softmax(model(x, t), dim=1).gather(1, y[:, None]).sum()

    h = 1e-6
    for idx in [(0, 0, 0, 0), (1, 0, 7, 7), (0, 0, 3, 5)]:
        e = torch.zeros_like(x)
        e[idx] = h
        assert grad[idx].item() == pytest.approx(((log_p(x + e) - log_p(x - e)) / (2 * h)).item(), rel=1e-6, abs=1e-9)
