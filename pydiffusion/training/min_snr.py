"""Min-SNR-gamma loss weighting (Hang et al., 2023, "Efficient Diffusion Training via Min-SNR Weighting Strategy"),
a worked case of the trainer interface (docs/your-idea.md): implicit training with each example's forward loss
weighted so that it weighs the x0-space error by min(SNR(t), gamma).

A parameterisation's squared error is k(t) times the x0-space one, k(t) the square of d x0_hat / d output (v on a
variance-preserving path: 1 / (SNR + 1)), so the weight of the target-space loss is min(SNR, gamma) * k(t): the
paper's min(SNR, gamma) / (SNR + 1) for v-prediction, min(SNR, gamma) / SNR for eps, min(SNR, gamma) for x0, and
the same x0-space weighting on the convex path, which is not variance-preserving.
"""
import torch

from pydiffusion.diffusion.paths import x0_from_output
from pydiffusion.training.trainers import ImplicitTrainer


def min_snr_weights(denoiser, gamma: float) -> torch.Tensor:
    """[T + 1] float32 weights of the target-space loss at t = 0..T (t = 0 is never drawn: weight 0)."""
    path = denoiser.path
    t = torch.arange(1, path.T + 1)
    a, s = path.a[t], path.s[t]
    mean_coef = path.posterior(t, t - 1)[:2]
    zero = torch.zeros_like(a)
    slope = x0_from_output(torch.ones_like(a), zero, a, s, denoiser.prediction, mean_coef) - \
        x0_from_output(zero, zero, a, s, denoiser.prediction, mean_coef)
    weights = torch.clamp(path.snr()[t], max=gamma) * slope**2
    return torch.cat([torch.zeros(1, dtype=weights.dtype), weights]).float()


class MinSNRTrainer(ImplicitTrainer):
    """Implicit training, the forward loss weighted by min(SNR, gamma) in x0 space (its history: the weighted loss)."""

    options = {"snr_gamma": 5.0}
    checks = {"snr_gamma": (lambda v: v > 0, "> 0 (the paper's default is 5)")}

    @staticmethod
    def check_config(cfg):
        if cfg["loss"] != "mse":
            return f"min-SNR weighting weighs the mse loss, and loss is {cfg['loss']!r}; use loss: mse"
        return None

    def __init__(self, denoiser, loss="mse", cfg_dropout=0.1, snr_gamma=5.0):
        super().__init__(denoiser, loss, cfg_dropout)
        self.weights = min_snr_weights(denoiser, snr_gamma)

    def forward_loss(self, out, x0, eps, x_t, t):
        forward, x0_hat = super().forward_loss(out, x0, eps, x_t, t)
        return self.weights.to(forward.device)[t] * forward, x0_hat
