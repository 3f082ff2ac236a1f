"""The two hot ops, q_sample and posterior_step, behind one signature whatever the backend.

The backend is the compiled extension `pydiffusion._C` (torch.ops.pydiffusion, from csrc/:
"cpp" on the CPU, "cuda" on a GPU) when it loads and supports the input, otherwise the
pure-PyTorch reference ("torch"). PYDIFFUSION_BACKEND=torch forces the reference.
Trainers and samplers call only this module.
"""
import os
import warnings

import torch

from . import reference
from .paths import NoisePath

_CPU_DTYPES = (torch.float32, torch.float64)
_CUDA_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def _load_extension() -> bool:
    if os.environ.get("PYDIFFUSION_BACKEND") == "torch":
        return False
    try:
        from . import _C  # noqa: F401  (registers torch.ops.pydiffusion)
    except ImportError as e:
        warnings.warn(f"pydiffusion: fused kernels unavailable ({e}); using the PyTorch reference ops", stacklevel=2)
        return False
    return True


_EXT = _load_extension()

if _EXT:
    @torch.library.register_fake("pydiffusion::q_sample")
    def _(x0, eps, t, a, s):
        return torch.empty_like(x0)

    @torch.library.register_fake("pydiffusion::posterior_step")
    def _(x_t, out, t, s_idx, a, s, z, eta, prediction, clip):
        return torch.empty_like(x_t), torch.empty_like(x_t)

    def _q_sample_setup(ctx, inputs, output):
        _, _, t, a, s = inputs
        ctx.save_for_backward(t, a, s)

    def _q_sample_backward(ctx, grad):
        # x_t = a[t] x0 + s[t] eps: d/dx0 = a[t], d/deps = s[t]; no gradient for t or the tables
        t, a, s = ctx.saved_tensors
        shape = (-1,) + (1,) * (grad.dim() - 1)
        dt = torch.float32 if grad.dtype in (torch.float16, torch.bfloat16) else grad.dtype
        grad_x0 = (a[t].to(dt).reshape(shape) * grad).to(grad.dtype) if ctx.needs_input_grad[0] else None
        grad_eps = (s[t].to(dt).reshape(shape) * grad).to(grad.dtype) if ctx.needs_input_grad[1] else None
        return grad_x0, grad_eps, None, None, None

    torch.library.register_autograd("pydiffusion::q_sample", _q_sample_backward, setup_context=_q_sample_setup)


def backend(device="cpu", dtype=torch.float32) -> str:
    """"cuda" or "cpp" when the compiled op serves tensors of this device and dtype, else "torch"."""
    kind = torch.device(device).type
    if _EXT and kind == "cpu" and dtype in _CPU_DTYPES:
        return "cpp"
    if _EXT and kind == "cuda" and dtype in _CUDA_DTYPES and torch.ops.pydiffusion.q_sample.default.has_kernel_for_dispatch_key("CUDA"):
        return "cuda"
    return "torch"


def _tables(path: NoisePath, like: torch.Tensor):
    return path.a.to(like.device), path.s.to(like.device)


def _timesteps(t, like: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(t, device=like.device, dtype=torch.long)
    return t.expand(like.shape[0]).contiguous() if t.dim() == 0 else t


def q_sample(x0: torch.Tensor, eps: torch.Tensor, t, path: NoisePath) -> torch.Tensor:
    """x_t = a_t * x0 + s_t * eps, per-sample t (int or [B] int64); differentiable in x0 and eps."""
    a, s = _tables(path, x0)
    t = _timesteps(t, x0)
    if backend(x0.device, x0.dtype) != "torch":
        return torch.ops.pydiffusion.q_sample(x0, eps, t, a, s)
    return reference.q_sample(x0, eps, t, a, s)


def posterior_step(x_t, out, t, s, path: NoisePath, z, eta: float = 0.0, prediction: str = "eps", clip: float = 5.0):
    """Reverse step t -> s < t from the network output; returns (x_s, x0_hat). Not differentiable."""
    if prediction not in reference.PREDICTION_CODES:
        raise ValueError(f"unknown prediction {prediction!r}; choose one of {tuple(reference.PREDICTION_CODES)}")
    a, sig = _tables(path, x_t)
    t, s = _timesteps(t, x_t), _timesteps(s, x_t)
    if backend(x_t.device, x_t.dtype) != "torch":
        return torch.ops.pydiffusion.posterior_step(x_t, out, t, s, a, sig, z, float(eta),
                                                    reference.PREDICTION_CODES[prediction], float(clip))
    return reference.posterior_step(x_t, out, t, s, a, sig, z, eta, prediction, clip)
