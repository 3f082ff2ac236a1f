"""The fused ops (csrc/) against the pure-PyTorch reference, diffusers and autograd, and their one-line errors.

Equivalence: float64 within 1e-12 (ulp scale: the only differences are torch's float sqrt,
which is not always correctly rounded, against the kernels' correctly rounded one), float32
within 1e-6 relative. The CUDA versions of these tests run on a GPU (DEVICES); the CUDA-only
ones are in tests/system/test_kernels_cuda.py; builds, fallbacks, torch.compile and the nvcc compile
check in tests/integration/test_kernel_builds.py.
"""
import os

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler
from helpers.kernels import kernel_inputs
from hypothesis import given, settings
from hypothesis import strategies as st

from pydiffusion.diffusion import ops, reference
from pydiffusion.diffusion.paths import NoisePath

if ops.backend("cpu") != "cpp" and os.environ.get("PYDIFFUSION_BACKEND", "").strip().lower() == "torch":
    pytest.skip("PYDIFFUSION_BACKEND=torch: the extension is switched off", allow_module_level=True)
if ops.backend("cpu") != "cpp":
    pytest.fail("the compiled extension pydiffusion.diffusion._C did not load; build it with `make` "
                "(pip install --no-build-isolation -e .)", pytrace=False)

OPS = torch.ops.pydiffusion
PATHS = [NoisePath("gaussian", 20, "linear"), NoisePath("gaussian", 20, "cosine"), NoisePath("convex", 20)]
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
TOL = {torch.float64: dict(rtol=1e-12, atol=1e-12), torch.float32: dict(rtol=1e-6, atol=1e-6),
       torch.float16: dict(rtol=1e-3, atol=1e-3), torch.bfloat16: dict(rtol=1e-2, atol=1e-2)}


def _tables(path, device):
    return path.a.to(device), path.s.to(device)


SHAPES = [(1, 40), (7, 40), (4096, 40), (3, 5, 8), (33, 1), (2, 3, 4, 5), (5, 13)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("path", PATHS, ids=repr)
def test_q_sample_matches_reference(device, dtype, shape, path):
    x0, eps, _, t, _ = kernel_inputs(shape, dtype, device)
    t[0] = 0  # t = 0 is allowed for q_sample: x_0 = x0
    a, s = _tables(path, device)
    got = OPS.q_sample(x0, eps, t, a, s)
    torch.testing.assert_close(got, reference.q_sample(x0, eps, t, a, s), **TOL[dtype])
    assert torch.equal(got[0], x0[0])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("clip", [0.0, 1.5])
@pytest.mark.parametrize("path", PATHS, ids=repr)
def test_posterior_step_matches_reference(device, dtype, shape, prediction, eta, clip, path):
    x_t, out, z, t, s_idx = kernel_inputs(shape, dtype, device, seed=len(shape))
    a, s = _tables(path, device)
    code = reference.PREDICTION_CODES[prediction]
    got = OPS.posterior_step(x_t * 3, out * 3, t, s_idx, a, s, z, eta, code, clip)
    want = reference.posterior_step(x_t * 3, out * 3, t, s_idx, a, s, z, eta, prediction, clip)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, **TOL[dtype])
    if clip:
        assert got[1].abs().max() <= clip


@settings(max_examples=40, deadline=None)
@given(B=st.integers(1, 300), inner=st.lists(st.integers(1, 9), min_size=0, max_size=3),
       kind=st.sampled_from(["gaussian", "convex"]), T=st.integers(2, 1000), seed=st.integers(0, 2**31 - 1),
       dtype=st.sampled_from([torch.float32, torch.float64]), prediction=st.sampled_from(["eps", "x0", "v"]),
       eta=st.sampled_from([0.0, 0.5, 1.0]), clip=st.sampled_from([0.0, 5.0]))
def test_random_shapes_and_timesteps_match_reference(B, inner, kind, T, seed, dtype, prediction, eta, clip):
    path = NoisePath(kind, T, "linear")
    shape = (B, *inner)
    x, out, z, t, s_idx = kernel_inputs(shape, dtype, "cpu", T=T, seed=seed)
    torch.testing.assert_close(ops.q_sample(x, out, t, path), reference.q_sample(x, out, t, path.a, path.s),
                               **TOL[dtype])
    got = ops.posterior_step(x, out, t, s_idx, path, z, eta, prediction, clip)
    want = reference.posterior_step(x, out, t, s_idx, path.a, path.s, z, eta, prediction, clip)
    # eps-prediction divides by a_t (down to 1e-3 at t = T for long schedules): compare on that scale
    scale = 1.0 if prediction != "eps" or clip else float(1 / path.a[t].min())
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=TOL[dtype]["rtol"], atol=TOL[dtype]["atol"] * scale)


def test_public_ops_use_the_extension_and_take_int_timesteps():
    path = PATHS[0]
    x, out, z, _, _ = kernel_inputs((16, 40), torch.float32, "cpu")
    assert ops.backend("cpu", torch.float32) == ops.backend("cpu", torch.float64) == "cpp"
    assert ops.backend("cpu", torch.float16) == "torch"
    tt = torch.full((16,), 7)
    assert torch.equal(ops.q_sample(x, out, 7, path), OPS.q_sample(x, out, tt, path.a, path.s))
    for g, w in zip(ops.posterior_step(x, out, 7, 3, path, z, 0.5, "v", 5.0),
                    OPS.posterior_step(x, out, tt, tt - 4, path.a, path.s, z, 0.5, 2, 5.0)):
        assert torch.equal(g, w)
    # half precision on the CPU goes to the reference, computed in float32
    xh = x.half()
    torch.testing.assert_close(ops.q_sample(xh, xh, 7, path), reference.q_sample(xh, xh, tt, path.a, path.s))
    with pytest.raises(ValueError, match="unknown prediction"):
        ops.posterior_step(x, out, 7, 3, path, z, prediction="score")
    with pytest.raises(ValueError, match="integer timesteps"):
        ops.q_sample(x, out, tt.float(), path)
    with pytest.raises(ValueError, match="integer timestep"):
        ops.q_sample(x, out, 7.0, path)


def test_nan_flows_through():
    path = PATHS[0]
    a, s = _tables(path, "cpu")
    x = torch.randn(4, 40)
    x[1, 3] = float("nan")
    t = torch.tensor([5, 5, 5, 5])
    assert torch.isnan(OPS.q_sample(x, x, t, a, s)[1, 3]) and torch.isfinite(OPS.q_sample(x, x, t, a, s)[0]).all()
    for code in (0, 1, 2):
        for clip in (0.0, 5.0):  # clamping keeps NaN a NaN (like torch.clamp)
            x_s, x0 = OPS.posterior_step(x, x, t, t - 1, a, s, torch.zeros_like(x), 0.5, code, clip)
            assert torch.isnan(x_s[1, 3]) and torch.isnan(x0[1, 3]) and torch.isfinite(x_s[0]).all()
            assert torch.isfinite(x_s).sum() == x.numel() - 1


def test_non_contiguous_input_is_handled():
    a, s = _tables(PATHS[0], "cpu")
    x = torch.randn(40, 8).t()  # [8, 40], not contiguous
    eps = torch.randn(8, 40)
    z = torch.randn(8, 80)[:, ::2]  # strided
    t = torch.arange(1, 9)
    t_strided = torch.arange(1, 17)[::2]
    assert not x.is_contiguous() and not z.is_contiguous() and not t_strided.is_contiguous()
    got = OPS.q_sample(x, eps, t, a, s)
    assert got.is_contiguous()
    torch.testing.assert_close(got, reference.q_sample(x, eps, t, a, s))
    torch.testing.assert_close(OPS.q_sample(x, eps, t_strided, a, s), reference.q_sample(x, eps, t_strided, a, s))
    for g, w in zip(OPS.posterior_step(x, eps, t, t - 1, a, s, z, 1.0, 0, 5.0),
                    reference.posterior_step(x, eps, t, t - 1, a, s, z, 1.0, "eps", 5.0)):
        assert g.is_contiguous()
        torch.testing.assert_close(g, w)


def test_rows_of_zero_width_are_empty_results():
    a, s = _tables(PATHS[0], "cpu")
    x, t = torch.randn(3, 0, 4), torch.tensor([1, 2, 3])
    assert OPS.q_sample(x, x, t, a, s).shape == (3, 0, 4)
    assert [r.shape for r in OPS.posterior_step(x, x, t, t - 1, a, s, x, 0.5, 0, 5.0)] == [(3, 0, 4)] * 2


def test_two_threads_give_the_same_bits_as_one():
    """The CPU kernels run on torch's OpenMP pool (the extension is built with -fopenmp and links the
    libgomp torch loaded): more threads split the rows, never change a result."""
    a, s = _tables(PATHS[0], "cpu")
    x, out, z, t, s_idx = kernel_inputs((20_000, 40), torch.float32, "cpu")
    results = {}
    for n in (1, 2):
        torch.set_num_threads(n)
        results[n] = (OPS.q_sample(x, out, t, a, s), *OPS.posterior_step(x, out, t, s_idx, a, s, z, 0.5, 2, 5.0))
    for one, two in zip(results[1], results[2]):
        assert torch.equal(one, two)


@pytest.mark.parametrize("prediction", ["epsilon", "sample", "v_prediction"])
@pytest.mark.parametrize("schedule", ["linear", "quadratic"])
def test_against_diffusers_schedulers(prediction, schedule):
    """DDPM ancestral steps (eta = 1, s = t - 1) and DDIM steps (eta in {0, 0.5, 1}) against diffusers,
    the same betas passed as trained_betas, no clipping; noise fed to both."""
    path = NoisePath("gaussian", 20, schedule)
    code = {"epsilon": 0, "sample": 1, "v_prediction": 2}[prediction]
    a, s = _tables(path, "cpu")
    kw = dict(num_train_timesteps=20, trained_betas=path.betas.float().numpy(), clip_sample=False,
              prediction_type=prediction)
    ddpm, ddim = DDPMScheduler(**kw), DDIMScheduler(**kw, set_alpha_to_one=True)
    ddim.set_timesteps(20)
    assert list(ddim.timesteps) == list(range(19, -1, -1))
    g = torch.Generator().manual_seed(5)
    x0, eps = torch.randn(64, 40, generator=g), torch.randn(64, 40, generator=g)
    t = torch.randint(1, 21, (64,), generator=g)
    torch.testing.assert_close(OPS.q_sample(x0, eps, t, a, s), ddpm.add_noise(x0, eps, t - 1), rtol=1e-5, atol=1e-6)
    for k in range(20):  # diffusers' timestep k is our t = k + 1
        x_t, out, z = (torch.randn(8, 40, generator=g) for _ in range(3))
        tt = torch.full((8,), k + 1)
        want = ddpm.step(out, k, x_t, generator=torch.Generator().manual_seed(k)).prev_sample
        z_ddpm = torch.randn(8, 40, generator=torch.Generator().manual_seed(k))
        got, _ = OPS.posterior_step(x_t, out, tt, tt - 1, a, s, z_ddpm, 1.0, code, 0.0)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
        for eta in (0.0, 0.5, 1.0):
            want = ddim.step(out, k, x_t, eta=eta, variance_noise=z).prev_sample
            got, _ = OPS.posterior_step(x_t, out, tt, tt - 1, a, s, z, eta, code, 0.0)
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_q_sample_gradcheck():
    a, s = _tables(PATHS[2], "cpu")
    x0 = torch.randn(5, 6, dtype=torch.float64, requires_grad=True)
    eps = torch.randn(5, 6, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0, 3, 7, 19, 20])
    assert torch.autograd.gradcheck(lambda x, e: OPS.q_sample(x, e, t, a, s), (x0, eps))
    assert torch.autograd.gradgradcheck(lambda x, e: OPS.q_sample(x, e, t, a, s), (x0, eps))


def test_q_sample_gradients_match_the_reference():
    path = PATHS[0]
    x, e, w, t, _ = kernel_inputs((32, 40), torch.float32, "cpu")
    grads = []
    for fn in (lambda x0, eps: ops.q_sample(x0, eps, t, path), lambda x0, eps: reference.q_sample(x0, eps, t, path.a, path.s)):
        x0, eps = x.clone().requires_grad_(), e.clone().requires_grad_()
        (fn(x0, eps) * w).sum().backward()
        grads.append((x0.grad, eps.grad))
    for g, r in zip(*grads):
        torch.testing.assert_close(g, r)
    x0 = x.clone().requires_grad_()  # only one input needing a gradient
    (ops.q_sample(x0, e, t, path) * w).sum().backward()
    torch.testing.assert_close(x0.grad, grads[1][0])


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    a, s = _tables(PATHS[0], device)
    x0, eps, z, t, s_idx = kernel_inputs((6, 40), torch.float32, device)
    torch.library.opcheck(OPS.q_sample, (x0, eps, t, a, s))
    torch.library.opcheck(OPS.q_sample, (x0.clone().requires_grad_(), eps.clone().requires_grad_(), t, a, s))
    torch.library.opcheck(OPS.q_sample, (x0.double(), eps.double(), t, a, s))
    torch.library.opcheck(OPS.q_sample, (x0.t().contiguous().t(), eps, torch.stack([t, t], 1)[:, 0], a, s))  # strided
    for code in (0, 1, 2):
        torch.library.opcheck(OPS.posterior_step, (x0, eps, t, s_idx, a, s, z, 0.5, code, 5.0))
    torch.library.opcheck(OPS.posterior_step, (x0.double(), eps.double(), t, s_idx, a, s, z.double(), 1.0, 2, 0.0))


# ---- input checks ------------------------------------------------------------------------------

ERRORS = {
    "shape": "same shape", "dtype": "same dtype", "t_dtype": "int64", "t_len": "one timestep per sample",
    "t_range": "must be in", "t_negative": "must be in", "s_ge_t": "every s must be < its t",
    "s_negative": "s must be in", "empty": "non-empty batch", "scalar": "non-empty batch",
    "tables": "float64", "table_len": "same length", "eta": "eta must be in", "clip": "clip must be >= 0",
    "prediction": "prediction must be", "int_input": "supports float32 and float64",
}
POSTERIOR_ONLY = {"s_ge_t", "s_negative", "eta", "clip", "prediction"}


@settings(max_examples=150, deadline=None)
@given(kind=st.sampled_from(sorted(ERRORS)), B=st.integers(1, 9), L=st.integers(1, 12), T=st.integers(2, 50),
       op=st.sampled_from(["q_sample", "posterior_step"]))
def test_bad_input_is_a_clear_error(kind, B, L, T, op):
    """Every malformed call to the compiled ops is a RuntimeError naming the problem, never a crash."""
    if op == "q_sample" and kind in POSTERIOR_ONLY:
        kind = "t_range"
    path = NoisePath("convex", T)
    a, s = path.a, path.s
    x, y, z = torch.randn(B, L), torch.randn(B, L), torch.randn(B, L)
    t = torch.full((B,), T)
    s_idx = t - 1
    eta, clip, prediction = 0.5, 5.0, 0
    if kind == "shape":
        y = torch.randn(B, L + 1)
    elif kind == "dtype":
        y = y.double()
    elif kind == "t_dtype":
        t = t.int()
    elif kind == "t_len":
        t = torch.full((B + 1,), T)
    elif kind == "t_range":
        t = torch.full((B,), T + 1)
    elif kind == "t_negative":
        t = torch.full((B,), -1)
    elif kind == "s_ge_t":
        s_idx = t.clone()
    elif kind == "s_negative":
        s_idx = torch.full((B,), -3)
    elif kind == "empty":
        x, y, z, t, s_idx = x[:0], y[:0], z[:0], t[:0], s_idx[:0]
    elif kind == "scalar":
        x, y, z = x[0, 0], y[0, 0], z[0, 0]
    elif kind == "tables":
        a = a.float()
    elif kind == "table_len":
        s = s[:-1]
    elif kind == "eta":
        eta = 1.5
    elif kind == "clip":
        clip = -1.0
    elif kind == "prediction":
        prediction = 3
    elif kind == "int_input":
        x, y, z = x.long(), y.long(), z.long()
    with pytest.raises(RuntimeError, match=ERRORS[kind]):
        if op == "q_sample":
            OPS.q_sample(x, y, t, a, s)
        else:
            OPS.posterior_step(x, y, t, s_idx, a, s, z, eta, prediction, clip)


PUBLIC_ERRORS = {
    "shape": (RuntimeError, "same shape"), "dtype": (RuntimeError, "same dtype"),
    "t_float": (ValueError, "integer timestep"), "t_len": (RuntimeError, "one timestep per sample"),
    "t_range": (RuntimeError, "must be in"), "t_negative": (RuntimeError, "must be in"),
    "s_ge_t": (RuntimeError, "every s must be < its t"), "empty": (RuntimeError, "non-empty batch"),
    "eta": (RuntimeError, "eta must be in"), "clip": (RuntimeError, "clip must be >= 0"),
    "prediction": (ValueError, "unknown prediction"), "int_input": (RuntimeError, "support"),
}


@settings(max_examples=150, deadline=None)
@given(kind=st.sampled_from(sorted(PUBLIC_ERRORS)), B=st.integers(1, 9), L=st.integers(1, 12),
       T=st.integers(2, 50), op=st.sampled_from(["q_sample", "posterior_step"]),
       backend=st.sampled_from(["cpp", "torch"]))
def test_public_api_checks_the_same_on_both_backends(kind, B, L, T, op, backend):
    """pydiffusion.diffusion.ops raises the same errors whether the extension or the reference serves the call
    (the reference would otherwise broadcast shapes or wrap negative timesteps silently)."""
    if op == "q_sample" and kind in {"s_ge_t", "eta", "clip", "prediction"}:
        kind = "t_negative"
    path = NoisePath("gaussian", T)
    x, y, z = torch.randn(B, L), torch.randn(B, L), torch.randn(B, L)
    t, s_idx = torch.full((B,), T), torch.full((B,), T - 1)
    eta, clip, prediction = 0.5, 5.0, "v"
    if kind == "shape":
        y = torch.randn(L)  # broadcastable: the reference alone would accept it
    elif kind == "dtype":
        y = y.double()
    elif kind == "t_float":
        t = t.float()
    elif kind == "t_len":
        t = torch.full((B + 1,), T)
    elif kind == "t_range":
        t = torch.full((B,), T + 1)
    elif kind == "t_negative":
        t = torch.full((B,), -1)  # the reference alone would read a[-1] = a[T]
    elif kind == "s_ge_t":
        s_idx = t.clone()
    elif kind == "empty":
        x, y, z, t, s_idx = x[:0], y[:0], z[:0], t[:0], s_idx[:0]
    elif kind == "eta":
        eta = 1.5
    elif kind == "clip":
        clip = -1.0
    elif kind == "prediction":
        prediction = "score"
    elif kind == "int_input":
        x, y, z = x.long(), y.long(), z.long()
    exc, pattern = PUBLIC_ERRORS[kind]
    saved = ops._EXT, ops._EXT_CUDA
    ops._EXT = ops._EXT_CUDA = backend == "cpp"
    try:
        assert ops.backend("cpu") == backend
        with pytest.raises(exc, match=pattern):
            if op == "q_sample":
                ops.q_sample(x, y, t, path)
            else:
                ops.posterior_step(x, y, t, s_idx, path, z, eta, prediction, clip)
    finally:
        ops._EXT, ops._EXT_CUDA = saved


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_posterior_step_is_differentiable_and_steps_as_the_kernel_does(prediction):
    """A step that needs a gradient (guidance research, distillation through a sampler) gets one, checked in float64
    against finite differences, and its value is the one the kernels give without gradients."""
    path = NoisePath("gaussian", 20)
    gen = torch.Generator().manual_seed(3)
    x_t, out, z = (torch.randn(4, 40, dtype=torch.float64, generator=gen) for _ in range(3))
    t, s = torch.tensor([20, 12, 5, 2]), torch.tensor([15, 11, 0, 1])

    def step(x_t, out, z):
        return ops.posterior_step(x_t, out, t, s, path, z, 0.5, prediction, 5.0)

    inputs = tuple(v.clone().requires_grad_() for v in (x_t, out, z))
    assert torch.autograd.gradcheck(step, inputs)
    with torch.no_grad():
        plain = step(x_t, out, z)
    for got, want in zip(step(*inputs), plain):
        torch.testing.assert_close(got.detach(), want, rtol=1e-12, atol=1e-12)
    grads = torch.autograd.grad(step(*inputs)[0].sum(), inputs)
    assert all(g is not None and g.abs().sum() > 0 for g in grads[:2])


def test_an_unknown_backend_name_is_refused(monkeypatch):
    from pydiffusion.config import ConfigError

    monkeypatch.setenv("PYDIFFUSION_BACKEND", "bogus")
    path = NoisePath("gaussian", 20)
    x = torch.randn(2, 40)
    with pytest.raises(ConfigError, match="PYDIFFUSION_BACKEND is 'bogus'; unset it"):
        ops.q_sample(x, x, 3, path)
    for valid in ("torch", "auto", " Torch "):
        monkeypatch.setenv("PYDIFFUSION_BACKEND", valid)
        assert ops.requested_backend() == valid.strip().lower()
