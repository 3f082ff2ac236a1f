"""Immiscible diffusion (Li et al., 2024, "Immiscible Diffusion: Accelerating Diffusion Training with Noise
Assignment"), a worked case of the trainer interface (docs/your-idea.md): implicit training with each batch's noise
assigned to its signals by a linear assignment that minimises the summed L2 distance, before noising. The noise
stays a sample of N(0, I) (a permutation of one), and t and the label dropout are drawn as implicit draws them.
"""
import torch
from scipy.optimize import linear_sum_assignment

from pydiffusion.training.trainers import ImplicitTrainer


def assign_noise(x0: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """eps permuted so that row i is the noise assigned to x0[i] (Hungarian algorithm on the L2 distances)."""
    cost = torch.cdist(x0.detach().flatten(1).float(), eps.flatten(1).float()).cpu().numpy()
    _, cols = linear_sum_assignment(cost)
    return eps[torch.as_tensor(cols, device=eps.device)]


class ImmiscibleTrainer(ImplicitTrainer):
    """Implicit training on batch-assigned noise."""

    def draw(self, x0, y, gen):
        t, eps, y_fwd = super().draw(x0, y, gen)
        return t, assign_noise(x0, eps), y_fwd
