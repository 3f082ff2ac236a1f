"""The fused UNet block op, pydiffusion::norm_film_silu (csrc/block_ops.cpp), against the PyTorch modules it replaces
(nn.GroupNorm, the FiLM of ResBlock, F.silu): values and gradients in float32 and float64, gradcheck, opcheck,
odd shapes, channels-last and contiguous inputs, bad input in one clear line; and the UNet built on it equals the
UNet on the modules. The CUDA versions run on a GPU (DEVICES)."""
import os
from unittest import mock

import pytest
import torch
import torch.nn.functional as F

from pydiffusion.config import validate
from pydiffusion.diffusion import ops, reference
from pydiffusion.nets.backbones import build_model

if ops.backend("cpu") != "cpp" and os.environ.get("PYDIFFUSION_BACKEND", "").strip().lower() == "torch":
    pytest.skip("PYDIFFUSION_BACKEND=torch: the extension is switched off", allow_module_level=True)

OP = torch.ops.pydiffusion.norm_film_silu
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() and ops.norm_backend("cuda") == "cuda" else [])
TOL = {torch.float64: dict(rtol=1e-12, atol=1e-12), torch.float32: dict(rtol=2e-5, atol=2e-5)}
# [B, C, H, W] as the UNets keep them ([B, C, 1, L] for signals) and odd ones: one position, one group, one sample,
# groups of one channel, many positions
SHAPES = [((128, 32, 1, 40), 8), ((3, 64, 1, 10), 8), ((2, 16, 5, 7), 8), ((1, 8, 1, 2), 8), ((5, 8, 1, 3), 1),
          ((4, 6, 1, 9), 6), ((2, 16, 28, 28), 8), ((3, 24, 13), 8)]


def inputs(shape, dtype, device, channels_last, film=True, seed=0):
    gen = torch.Generator().manual_seed(seed)
    B, C = shape[:2]
    x = torch.randn(shape, generator=gen, dtype=dtype).mul(2).add(0.5)
    if channels_last and len(shape) == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    w, b = torch.randn(C, generator=gen, dtype=dtype), torch.randn(C, generator=gen, dtype=dtype)
    scale = torch.randn(B, C, generator=gen, dtype=dtype) if film else None
    shift = torch.randn(B, C, generator=gen, dtype=dtype) if film else None
    return [t.to(device) if t is not None else None for t in (x, w, b, scale, shift)]


def modules(x, w, b, scale, shift, groups):
    """What ResBlock computed before the fused op, module by module."""
    out = F.group_norm(x, groups, w, b, 1e-5)
    if scale is not None:
        view = (*scale.shape,) + (1,) * (x.dim() - 2)
        out = out * (1 + scale.view(view)) + shift.view(view)
    return F.silu(out)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape, groups", SHAPES)
@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("film", [True, False])
def test_values_and_gradients_match_the_modules(device, dtype, shape, groups, channels_last, film):
    """float64 within 1e-12 of the modules; float32 within 2e-5 of them, or, where the modules' own float32 rounding
    is larger (GroupNorm's input gradient over groups of a few values is ill-conditioned), no further from the
    float64 result than they are."""
    args = inputs(shape, dtype, device, channels_last, film)
    ours = [t.clone().requires_grad_() if t is not None else None for t in args]
    theirs = [t.clone().requires_grad_() if t is not None else None for t in args]
    exact = [t.double().requires_grad_() if t is not None else None for t in args]
    y, mean, rstd = OP(*ours, groups, 1e-5)
    expected = modules(*theirs, groups)
    truth = modules(*exact, groups)
    close(y, expected, truth, dtype, "y")
    grouped = args[0].reshape(shape[0], groups, -1)
    torch.testing.assert_close(mean, grouped.mean(-1), **TOL[dtype])
    torch.testing.assert_close(rstd, (grouped.var(-1, unbiased=False) + 1e-5).rsqrt(), **TOL[dtype])
    if channels_last and len(shape) == 4 and not args[0].is_contiguous():
        assert y.is_contiguous(memory_format=torch.channels_last), "a channels-last x keeps its layout"
    grad = torch.randn(shape, generator=torch.Generator().manual_seed(1), dtype=dtype).to(device)
    y.backward(grad)
    expected.backward(grad)
    truth.backward(grad.double())
    for name, a, e, t in zip(("x", "weight", "bias", "scale", "shift"), ours, theirs, exact):
        if a is not None:
            close(a.grad, e.grad, t.grad, dtype, f"d {name}")


def close(ours, modules_result, exact, dtype, name):
    if dtype == torch.float64:
        torch.testing.assert_close(ours, modules_result, **TOL[dtype], msg=lambda m: f"{name}: {m}")
        return
    if torch.allclose(ours, modules_result, **TOL[dtype]):
        return
    ours_error = (ours.double() - exact).abs().max().item()
    modules_error = (modules_result.double() - exact).abs().max().item()
    assert ours_error <= modules_error, f"{name}: off the float64 result by {ours_error:.3g}, the modules by " \
                                        f"{modules_error:.3g}"


@pytest.mark.parametrize("film", [True, False])
@pytest.mark.parametrize("channels_last", [True, False])
def test_gradcheck_in_float64(film, channels_last):
    args = inputs((3, 8, 1, 5), torch.float64, "cpu", channels_last, film)
    args = [t.requires_grad_() if t is not None else None for t in args]
    assert torch.autograd.gradcheck(lambda *a: OP(*a, 4, 1e-5)[0], args)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("film", [True, False])
def test_opcheck(device, film):
    args = inputs((4, 16, 1, 6), torch.float32, device, True, film)
    args = [t.requires_grad_() if t is not None else None for t in args]
    torch.library.opcheck(OP, (*args, 8, 1e-5))
    plain = inputs((4, 16, 6), torch.float32, device, False, film)
    torch.library.opcheck(OP, (*plain, 8, 1e-5))


def test_torch_compile_traces_through_it():
    args = inputs((4, 16, 1, 6), torch.float32, "cpu", True)
    compiled = torch.compile(lambda *a: ops.norm_film_silu(*a, groups=8), fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(*args), modules(*args, 8), **TOL[torch.float32])


def test_the_public_op_uses_the_kernel_and_falls_back_to_the_modules_exactly():
    args = inputs((6, 16, 1, 10), torch.float32, "cpu", True)
    with mock.patch.object(torch.ops.pydiffusion, "norm_film_silu", wraps=OP) as kernel:
        ops.norm_film_silu(*args, groups=8)
    assert kernel.call_count == 1, "the compiled backend serves CPU float32"
    with mock.patch.object(ops, "norm_backend", lambda *a: "torch"):
        fallback = ops.norm_film_silu(*args, groups=8)
    assert torch.equal(fallback, modules(*args, 8)), "the fallback is the modules' own functions, bit for bit"
    assert torch.equal(reference.norm_film_silu(*args, 8, 1e-5), fallback)


def test_two_threads_give_the_same_bits_as_one():
    args = [t.requires_grad_() if t is not None else None for t in inputs((64, 32, 1, 40), torch.float32, "cpu", True)]
    grad = torch.randn(64, 32, 1, 40)
    results = []
    threads = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            y = OP(*args, 8, 1e-5)[0]
            results.append((y, *torch.autograd.grad(y, args, grad)))
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, b) for a, b in zip(*results))


def test_the_unet_on_the_kernel_equals_the_unet_on_the_modules():
    cfg = validate({"channels": 16, "channel_mult": [1, 2], "emb_dim": 32})
    torch.manual_seed(0)
    model = build_model(cfg)
    for p in model.parameters():  # the zero-initialised last convolutions would hide the blocks
        torch.nn.init.normal_(p, std=0.2)
    x, t = torch.randn(8, 40), torch.randint(0, 20, (8,))
    z, y = torch.zeros(8), torch.arange(8) % 10

    def run():
        model.zero_grad()
        out = model(x, t, z, y)
        out.square().sum().backward()
        return out.detach(), [p.grad.clone() for p in model.parameters()]

    fused, fused_grads = run()
    with mock.patch.object(ops, "norm_backend", lambda *a: "torch"):
        plain, plain_grads = run()
    torch.testing.assert_close(fused, plain, rtol=1e-4, atol=1e-5)
    for a, b in zip(fused_grads, plain_grads):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("change, message", [
    (lambda a: {**a, "x": a["x"][:, :, 0, 0]}, r"x must be a non-empty \[B, C, ...\]"),
    (lambda a: {**a, "groups": 5}, "the 16 channels must split into groups = 5"),
    (lambda a: {**a, "weight": a["weight"][:8]}, r"weight must be \[C\] = \[16\]"),
    (lambda a: {**a, "scale": a["scale"][:, :8]}, r"scale must be \[B, C\] = \[4, 16\]"),
    (lambda a: {**a, "shift": None}, "give both scale and shift"),
    (lambda a: {**a, "bias": a["bias"].double()}, "bias must have x's dtype"),
    (lambda a: {**a, "eps": 0.0}, "eps must be > 0"),
    (lambda a: {**a, "x": a["x"][:1, :, :, :1], "scale": a["scale"][:1], "shift": a["shift"][:1], "groups": 16},
     "has one value per group"),
    (lambda a: {k: v.half() if isinstance(v, torch.Tensor) else v for k, v in a.items()},
     "on the CPU supports float32 and float64"),
])
def test_bad_input_is_one_clear_line(change, message):
    x, w, b, scale, shift = inputs((4, 16, 1, 6), torch.float32, "cpu", True)
    args = change({"x": x, "weight": w, "bias": b, "scale": scale, "shift": shift, "groups": 8, "eps": 1e-5})
    with pytest.raises(RuntimeError, match=message) as e:
        OP(*args.values())
    assert "\n" not in str(e.value).split("\nException raised from")[0].strip()
