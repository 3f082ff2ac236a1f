"""The two hot ops, q_sample and posterior_step, behind one signature whatever the backend.

The backend is the compiled extension (`pydiffusion._C`, "cpp" or "cuda") when it loads,
otherwise the pure-PyTorch reference ("torch"). Trainers and samplers call only this module.
"""
import torch

from . import reference
from .paths import NoisePath

_ext = None


def backend(device: str = "cpu") -> str:
    """"cuda" or "cpp" when the compiled op serves `device`, else "torch"."""
    return "torch"


def _tables(path: NoisePath, like: torch.Tensor):
    return path.a.to(like.device), path.s.to(like.device)


def _timesteps(t, like: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(t, device=like.device, dtype=torch.long)
    return t.expand(like.shape[0]) if t.dim() == 0 else t


def q_sample(x0: torch.Tensor, eps: torch.Tensor, t, path: NoisePath) -> torch.Tensor:
    """x_t = a_t * x0 + s_t * eps, per-sample t (int or [B] int64)."""
    a, s = _tables(path, x0)
    return reference.q_sample(x0, eps, _timesteps(t, x0), a, s)


def posterior_step(x_t, out, t, s, path: NoisePath, z, eta: float = 0.0, prediction: str = "eps", clip: float = 5.0):
    """Reverse step t -> s < t from the network output; returns (x_s, x0_hat)."""
    a, sig = _tables(path, x_t)
    return reference.posterior_step(x_t, out, _timesteps(t, x_t), _timesteps(s, x_t), a, sig, z, eta, prediction, clip)
