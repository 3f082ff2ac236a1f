"""The two hot ops, q_sample and posterior_step, behind one signature whatever the backend.

The backend is the compiled extension `pydiffusion.diffusion._C` (torch.ops.pydiffusion, built from csrc/:
"cpp" on the CPU for float32/float64, "cuda" on a GPU for float32/float64/float16/bfloat16) when it
loads and supports the input, otherwise the pure-PyTorch reference `pydiffusion.diffusion.reference`
("torch"). If the extension cannot be imported, or was built against another torch than the one installed,
importing this module warns once and every call uses the reference.
PYDIFFUSION_BACKEND=torch forces the reference (for benchmarks and tests); another name than auto or torch is
refused (a ConfigError at the first op, and before any work in the commands).
Trainers and samplers call only this module.

Inputs: any batch shape [B, ...]; t (and s) an int or int64 [B] per-sample timesteps. Inputs
that are not contiguous are copied (handled, not rejected); outputs are contiguous. Bad input
(mismatched shapes, dtypes or devices, timesteps outside [0, T], s >= t, an empty batch) raises
RuntimeError, from the extension or, on the reference path, from the same checks in Python
(ValueError for an unknown prediction or a non-integer t).
q_sample is differentiable in x0 and eps (the kernels have its backward); posterior_step is differentiable in x_t,
out and z, a step that needs a gradient taking the reference (the kernels serve the sampling steps, under no_grad).
Both ops have fake implementations, so torch.compile(fullgraph=True) traces through them.
"""
import os
import re
import warnings
from importlib.metadata import PackageNotFoundError, requires

import torch

from pydiffusion.config import DISTRIBUTION, ConfigError
from pydiffusion.diffusion import reference
from pydiffusion.diffusion.paths import NoisePath, unknown_prediction

_CPU_DTYPES = (torch.float32, torch.float64)
_CUDA_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def built_for_torch():
    """The torch version the installed extension was compiled against: the wheel's own requirement `torch==X`
    (setup.py pins it), or None where the package is not installed with one (a source tree on sys.path)."""
    try:
        requirements = requires(DISTRIBUTION) or []
    except PackageNotFoundError:
        return None
    pins = [m.group(1) for r in requirements if (m := re.fullmatch(r"torch\s*==\s*([\w.]+)", r.split(";")[0].strip()))]
    return pins[0] if pins else None


BACKEND_CHOICES = ("", "auto", "torch")  # PYDIFFUSION_BACKEND: unset or auto, the kernels where they serve; torch


def requested_backend() -> str:
    """PYDIFFUSION_BACKEND, checked: an unknown name is a ConfigError naming the valid ones."""
    name = os.environ.get("PYDIFFUSION_BACKEND", "").strip().lower()
    if name not in BACKEND_CHOICES:
        raise ConfigError(f"PYDIFFUSION_BACKEND is {name!r}; unset it (or auto) for the fused kernels where they serve, "
                          f"or set torch for the PyTorch reference")
    return name


def _load_extension() -> bool:
    try:
        if requested_backend() == "torch":
            return False
    except ConfigError:
        return False  # every op call raises it (check_backend): nothing runs on a backend nobody asked for
    built, installed = built_for_torch(), torch.__version__.split("+")[0]
    if built is not None and built != installed:  # its C++ ABI is torch's: loading it could crash, not just fail
        warnings.warn(f"pydiffusion: fused kernels built for torch {built} but torch {installed} is installed; "
                      "using the PyTorch reference ops (rebuild them: pip install --no-build-isolation --force-reinstall "
                      "pydiffusion's source)", RuntimeWarning, stacklevel=2)
        return False
    try:
        from pydiffusion.diffusion import _C  # noqa: F401  (registers torch.ops.pydiffusion)
    except (ImportError, OSError) as e:
        first_line = (str(e).strip().splitlines() or [""])[0]
        warnings.warn(f"pydiffusion: fused kernels unavailable ({type(e).__name__}: {first_line}); "
                      "using the PyTorch reference ops", RuntimeWarning, stacklevel=2)
        return False
    return True


_EXT = _load_extension()
_EXT_CUDA = _EXT and torch.ops.pydiffusion.q_sample.default.has_kernel_for_dispatch_key("CUDA")
_NORM_CUDA = _EXT and torch.ops.pydiffusion.norm_film_silu.default.has_kernel_for_dispatch_key("CUDA")
_NORM_CUDA_DTYPES = (torch.float32, torch.float64)

if _EXT:
    @torch.library.register_fake("pydiffusion::q_sample")
    def _(x0, eps, t, a, s):
        torch._check(x0.shape == eps.shape, lambda: f"pydiffusion: x0 and eps must have the same shape, got "
                                                    f"{tuple(x0.shape)} and {tuple(eps.shape)}")
        return x0.new_empty(x0.shape)  # the kernels return contiguous tensors

    @torch.library.register_fake("pydiffusion::posterior_step")
    def _(x_t, out, t, s_idx, a, s, z, eta, prediction, clip):
        torch._check(x_t.shape == out.shape and x_t.shape == z.shape,
                     lambda: f"pydiffusion: x_t, out and z must have the same shape, got {tuple(x_t.shape)}, "
                             f"{tuple(out.shape)} and {tuple(z.shape)}")
        return x_t.new_empty(x_t.shape), x_t.new_empty(x_t.shape)

    def _like(x):  # the kernels keep a channels-last x's layout and make any other contiguous
        keep = x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
        return torch.empty_like(x, memory_format=torch.channels_last if keep else torch.contiguous_format)

    @torch.library.register_fake("pydiffusion::norm_film_silu")
    def _(x, weight, bias, scale, shift, groups, eps):
        return _like(x), x.new_empty((x.shape[0], groups)), x.new_empty((x.shape[0], groups))

    @torch.library.register_fake("pydiffusion::norm_film_silu_backward")
    def _(grad_y, x, weight, bias, scale, shift, mean, rstd, groups):
        B, C = x.shape[:2]
        return _like(x), x.new_empty((C,)), x.new_empty((C,)), x.new_empty((B, C)), x.new_empty((B, C))

    # q_sample's and norm_film_silu's autograd are registered in C++ (csrc/ops.cpp, csrc/block_ops.cpp).


def backend(device="cpu", dtype=torch.float32) -> str:
    """"cuda" or "cpp" when the compiled op serves tensors of this device and dtype, else "torch"."""
    requested_backend()
    kind = torch.device(device).type
    if _EXT and kind == "cpu" and dtype in _CPU_DTYPES:
        return "cpp"
    if _EXT_CUDA and kind == "cuda" and dtype in _CUDA_DTYPES:
        return "cuda"
    return "torch"


def _tables(path: NoisePath, like: torch.Tensor):
    return path.a.to(like.device), path.s.to(like.device)


def _timesteps(t, like: torch.Tensor, name: str = "t") -> torch.Tensor:
    if like.dim() == 0:  # before like.shape[0] below; both backends reject it with the same message
        raise RuntimeError("pydiffusion: inputs must be a non-empty batch [B, ...], got a 0-dim tensor")
    if isinstance(t, torch.Tensor) and (t.is_floating_point() or t.is_complex() or t.dtype == torch.bool):
        raise ValueError(f"pydiffusion: {name} must hold integer timesteps, got dtype {t.dtype}")
    if isinstance(t, (float, bool)):
        raise ValueError(f"pydiffusion: {name} must be an integer timestep, got {t!r}")
    t = torch.as_tensor(t, device=like.device, dtype=torch.long)
    return t.expand(like.shape[0]).contiguous() if t.dim() == 0 else t


def _check_reference_inputs(x, names, others, t, s_idx, T):
    """The extension's input checks, with its messages, for the reference path (which would otherwise
    broadcast, promote or wrap negative indices silently)."""
    if x.dim() == 0 or x.shape[0] == 0:
        raise RuntimeError(f"pydiffusion: {names[0]} must be a non-empty batch [B, ...], got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise RuntimeError(f"pydiffusion: the reference ops support floating-point inputs, got {x.dtype}")
    for name, y in zip(names[1:], others):
        pair = f"{names[0]} and {name}"
        if y.shape != x.shape:
            raise RuntimeError(f"pydiffusion: {pair} must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
        if y.dtype != x.dtype:
            raise RuntimeError(f"pydiffusion: {pair} must have the same dtype, got {x.dtype} and {y.dtype}")
        if y.device != x.device:
            raise RuntimeError(f"pydiffusion: {pair} must be on the same device, got {x.device} and {y.device}")
    for name, ts in (("t", t), ("s", s_idx)):
        if ts is not None and ts.shape != (x.shape[0],):
            raise RuntimeError(f"pydiffusion: {name} must hold one timestep per sample, shape [{x.shape[0]}], "
                               f"got {tuple(ts.shape)}")
    if torch.compiler.is_compiling():  # value checks need the data; compiled reference graphs skip them
        return
    lowest = 0 if s_idx is None else 1
    lo, hi = int(t.min()), int(t.max())
    if lo < lowest or hi > T:
        raise RuntimeError(f"pydiffusion: t must be in [{lowest}, {T}], got values in [{lo}, {hi}]")
    if s_idx is not None:
        lo, hi = int(s_idx.min()), int(s_idx.max())
        if lo < 0 or hi > T:
            raise RuntimeError(f"pydiffusion: s must be in [0, {T}], got values in [{lo}, {hi}]")
        if not bool((s_idx < t).all()):
            raise RuntimeError("pydiffusion: every s must be < its t (a reverse step)")


def q_sample(x0: torch.Tensor, eps: torch.Tensor, t, path: NoisePath) -> torch.Tensor:
    """x_t = a_t * x0 + s_t * eps, per-sample t (int or [B] int64); differentiable in x0 and eps."""
    a, s = _tables(path, x0)
    t = _timesteps(t, x0)
    if backend(x0.device, x0.dtype) != "torch":
        return torch.ops.pydiffusion.q_sample(x0, eps, t, a, s)
    _check_reference_inputs(x0, ("x0", "eps"), (eps,), t, None, path.T)
    return reference.q_sample(x0, eps, t, a, s)


def posterior_step(x_t, out, t, s, path: NoisePath, z, eta: float = 0.0, prediction: str = "eps", clip: float = 5.0):
    """Reverse step t -> s < t from the network output; returns (x_s, x0_hat). Differentiable in x_t, out and z
    (through the reference: the kernels serve steps that need no gradient, which sampling's are).

    eta = 1 with s = t - 1 is DDPM ancestral sampling, eta = 0 is DDIM; z is the noise (an input,
    so the step is deterministic). x0_hat is clamped to [-clip, clip] (clip = 0 disables it).
    """
    if prediction not in reference.PREDICTION_CODES:
        hint = " (a mu output steps as its x0_hat: Denoiser.guided(...).step)" if prediction == "mu" else ""
        raise unknown_prediction(prediction, reference.PREDICTION_CODES, hint)
    a, sig = _tables(path, x_t)
    t, s = _timesteps(t, x_t), _timesteps(s, x_t, "s")
    # the kernels have no backward: a step differentiated through (guidance research, distillation) takes the
    # reference, whose autograd gives the gradients
    needs_grad = torch.is_grad_enabled() and any(v.requires_grad for v in (x_t, out, z))
    if not needs_grad and backend(x_t.device, x_t.dtype) != "torch":
        return torch.ops.pydiffusion.posterior_step(x_t, out, t, s, a, sig, z, float(eta),
                                                    reference.PREDICTION_CODES[prediction], float(clip))
    if not 0.0 <= eta <= 1.0:
        raise RuntimeError(f"pydiffusion: eta must be in [0, 1], got {eta}")
    if not clip >= 0.0:
        raise RuntimeError(f"pydiffusion: clip must be >= 0 (0 disables clamping), got {clip}")
    _check_reference_inputs(x_t, ("x_t", "out", "z"), (out, z), t, s, path.T)
    return reference.posterior_step(x_t, out, t, s, a, sig, z, eta, prediction, clip)


def norm_backend(device="cpu", dtype=torch.float32) -> str:
    """backend() for norm_film_silu: its CUDA kernel serves float32 and float64."""
    name = backend(device, dtype)
    if name == "cuda" and not (_NORM_CUDA and dtype in _NORM_CUDA_DTYPES):
        return "torch"
    return name


def norm_film_silu(x, weight, bias, scale=None, shift=None, groups: int = 8, eps: float = 1e-5):
    """silu(GroupNorm(x; groups, weight, bias, eps) * (1 + scale) + shift): the UNet block's normalisation, FiLM and
    activation in one op, differentiable in x, weight, bias, scale and shift. x [B, C, ...] (channels-last or any
    layout), weight and bias [C], scale and shift [B, C] or both None (no FiLM)."""
    if (scale is None) != (shift is None):
        raise RuntimeError("pydiffusion: give both scale and shift (FiLM) or neither")
    if norm_backend(x.device, x.dtype) != "torch":
        return torch.ops.pydiffusion.norm_film_silu(x, weight, bias, scale, shift, groups, float(eps))[0]
    if scale is not None and (scale.shape != x.shape[:2] or shift.shape != x.shape[:2]):
        raise RuntimeError(f"pydiffusion: scale and shift must be [B, C] = {list(x.shape[:2])}, got "
                           f"{list(scale.shape)} and {list(shift.shape)}")
    return reference.norm_film_silu(x, weight, bias, scale, shift, groups, eps)
