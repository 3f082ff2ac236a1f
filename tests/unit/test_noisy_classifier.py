"""The noise-aware classifier's gradient of log p(y | x_t, t) against finite differences."""
import pytest
import torch
import torch.nn.functional as F

from pydiffusion.diffusion.denoiser import log_prob_grad
from pydiffusion.nets.noisy_classifier import (
    NoisyClassifier,
)


def test_the_gradient_matches_finite_differences():
    torch.manual_seed(0)
    model = NoisyClassifier(20, width=8, emb_dim=16).double().eval()
    x, t, y = torch.randn(3, 40, dtype=torch.float64), torch.tensor([0, 7, 20]), torch.tensor([1, 4, 9])
    grad = log_prob_grad(model, x, t, y)

    def log_p(x):
        return F.log_softmax(model(x, t), dim=1).gather(1, y[:, None]).sum()

    h = 1e-6
    for b, i in [(0, 0), (1, 17), (2, 39), (1, 5)]:
        e = torch.zeros_like(x)
        e[b, i] = h
        assert grad[b, i].item() == pytest.approx(((log_p(x + e) - log_p(x - e)) / (2 * h)).item(), rel=1e-6, abs=1e-9)
