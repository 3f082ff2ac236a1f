"""The fused ops (csrc/) against the pure-PyTorch reference, diffusers, autograd and torch.compile."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler
from hypothesis import given, settings
from hypothesis import strategies as st

from pydiffusion import ops, reference
from pydiffusion.paths import NoisePath

ROOT = Path(__file__).resolve().parents[1]
if ops.backend("cpu") != "cpp":
    pytest.fail("the compiled extension pydiffusion._C did not load; build it with `make` "
                "(pip install --no-build-isolation -e .)", pytrace=False)

OPS = torch.ops.pydiffusion
PATHS = [NoisePath("gaussian", 20, "linear"), NoisePath("gaussian", 20, "cosine"), NoisePath("convex", 20)]
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
TOL = {torch.float64: dict(rtol=1e-12, atol=1e-12), torch.float32: dict(rtol=1e-6, atol=1e-6),
       torch.float16: dict(rtol=1e-3, atol=1e-3), torch.bfloat16: dict(rtol=1e-2, atol=1e-2)}


def _inputs(shape, dtype, device, T=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    x, out, z = (torch.randn(shape, generator=g, dtype=torch.float64).to(device, dtype) for _ in range(3))
    t = torch.randint(1, T + 1, (shape[0],), generator=g)
    s = (torch.rand(shape[0], generator=g) * t).long().clamp(max=t - 1)  # any s in [0, t-1]
    return x, out, z, t.to(device), s.to(device)


def _tables(path, device):
    return path.a.to(device), path.s.to(device)


SHAPES = [(1, 40), (7, 40), (4096, 40), (3, 5, 8), (33, 1), (2, 3, 4, 5)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("path", PATHS, ids=repr)
def test_q_sample_matches_reference(device, dtype, shape, path):
    x0, eps, _, t, _ = _inputs(shape, dtype, device)
    a, s = _tables(path, device)
    torch.testing.assert_close(OPS.q_sample(x0, eps, t, a, s), reference.q_sample(x0, eps, t, a, s), **TOL[dtype])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("clip", [0.0, 1.5])
@pytest.mark.parametrize("path", PATHS, ids=repr)
def test_posterior_step_matches_reference(device, dtype, shape, prediction, eta, clip, path):
    x_t, out, z, t, s_idx = _inputs(shape, dtype, device, seed=len(shape))
    a, s = _tables(path, device)
    code = reference.PREDICTION_CODES[prediction]
    got = OPS.posterior_step(x_t * 3, out * 3, t, s_idx, a, s, z, eta, code, clip)
    want = reference.posterior_step(x_t * 3, out * 3, t, s_idx, a, s, z, eta, prediction, clip)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, **TOL[dtype])


def test_nan_flows_through():
    path = PATHS[0]
    a, s = _tables(path, "cpu")
    x = torch.randn(4, 40)
    x[1, 3] = float("nan")
    t = torch.tensor([5, 5, 5, 5])
    assert torch.isnan(OPS.q_sample(x, x, t, a, s)[1, 3]) and torch.isfinite(OPS.q_sample(x, x, t, a, s)[0]).all()
    x_s, x0 = OPS.posterior_step(x, x, t, t - 1, a, s, torch.zeros_like(x), 0.5, 0, 5.0)
    assert torch.isnan(x_s[1, 3]) and torch.isnan(x0[1, 3]) and torch.isfinite(x_s[0]).all()


def test_non_contiguous_input_is_handled():
    a, s = _tables(PATHS[0], "cpu")
    x = torch.randn(40, 8).t()  # [8, 40], not contiguous
    eps = torch.randn(8, 40)
    t = torch.arange(1, 9)
    assert not x.is_contiguous()
    torch.testing.assert_close(OPS.q_sample(x, eps, t, a, s), reference.q_sample(x, eps, t, a, s))


def test_against_diffusers_schedulers():
    path = NoisePath("gaussian", 20, "linear")
    a, s = _tables(path, "cpu")
    kw = dict(num_train_timesteps=20, trained_betas=path.betas.float().numpy(), clip_sample=False)
    ddpm, ddim = DDPMScheduler(**kw), DDIMScheduler(**kw, set_alpha_to_one=True)
    ddim.set_timesteps(20)
    g = torch.Generator().manual_seed(5)
    x0, eps = torch.randn(64, 40, generator=g), torch.randn(64, 40, generator=g)
    t = torch.randint(1, 21, (64,), generator=g)
    torch.testing.assert_close(OPS.q_sample(x0, eps, t, a, s), ddpm.add_noise(x0, eps, t - 1), rtol=1e-5, atol=1e-6)
    for k in range(20):
        x_t, out, z = (torch.randn(8, 40, generator=g) for _ in range(3))
        tt = torch.full((8,), k + 1)
        want = ddpm.step(out, k, x_t, generator=torch.Generator().manual_seed(k)).prev_sample
        z_ddpm = torch.randn(8, 40, generator=torch.Generator().manual_seed(k))
        got, _ = OPS.posterior_step(x_t, out, tt, tt - 1, a, s, z_ddpm, 1.0, 0, 0.0)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
        got, _ = OPS.posterior_step(x_t, out, tt, tt - 1, a, s, z, 0.0, 0, 0.0)
        torch.testing.assert_close(got, ddim.step(out, k, x_t, eta=0.0).prev_sample, rtol=1e-4, atol=1e-5)


def test_q_sample_gradcheck():
    a, s = _tables(PATHS[2], "cpu")
    x0 = torch.randn(5, 6, dtype=torch.float64, requires_grad=True)
    eps = torch.randn(5, 6, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0, 3, 7, 19, 20])
    assert torch.autograd.gradcheck(lambda x, e: OPS.q_sample(x, e, t, a, s), (x0, eps))
    assert torch.autograd.gradgradcheck(lambda x, e: OPS.q_sample(x, e, t, a, s), (x0, eps))


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    a, s = _tables(PATHS[0], device)
    x0, eps, z, t, s_idx = _inputs((6, 40), torch.float32, device)
    torch.library.opcheck(OPS.q_sample, (x0, eps, t, a, s))
    torch.library.opcheck(OPS.q_sample, (x0.requires_grad_(), eps.requires_grad_(), t, a, s))
    for code in (0, 1, 2):
        torch.library.opcheck(OPS.posterior_step, (x0.detach(), eps.detach(), t, s_idx, a, s, z, 0.5, code, 5.0))


def test_torch_compile_fullgraph():
    path = PATHS[0]
    a, s = _tables(path, "cpu")

    def step(x0, eps, t, out, z):
        x_t = OPS.q_sample(x0, eps, t, a, s)
        return OPS.posterior_step(x_t, out, t, t - 1, a, s, z, 1.0, 2, 5.0)

    x0, out, z, t, _ = _inputs((16, 40), torch.float32, "cpu")
    eps = torch.randn(16, 40)
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    for g, w in zip(compiled(x0, eps, t, out, z), step(x0, eps, t, out, z)):
        torch.testing.assert_close(g, w)


ERRORS = {
    "shape": "same shape", "dtype": "same dtype", "t_dtype": "int64", "t_len": "one timestep per sample",
    "t_range": "must be in", "s_ge_t": "every s must be < its t", "empty": "non-empty batch",
    "tables": "float64", "eta": "eta must be in", "int_input": "supports float32 and float64",
}


@settings(max_examples=60, deadline=None)
@given(kind=st.sampled_from(sorted(ERRORS)), B=st.integers(1, 9), L=st.integers(1, 12), T=st.integers(2, 50),
       op=st.sampled_from(["q_sample", "posterior_step"]))
def test_bad_input_is_a_clear_error(kind, B, L, T, op):
    path = NoisePath("convex", T)
    a, s = path.a, path.s
    x, y, z = torch.randn(B, L), torch.randn(B, L), torch.randn(B, L)
    t = torch.full((B,), T)
    s_idx = t - 1
    eta = 0.5
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
    elif kind == "s_ge_t":
        if op == "q_sample":
            t = torch.full((B,), -1)  # q_sample has no s: test the other range end instead
        else:
            s_idx = t.clone()
    elif kind == "empty":
        x, y, z, t, s_idx = x[:0], y[:0], z[:0], t[:0], s_idx[:0]
    elif kind == "tables":
        a = a.float()
    elif kind == "eta":
        eta = 1.5 if op == "posterior_step" else eta
        if op == "q_sample":
            t = torch.full((B,), T + 5)
    elif kind == "int_input":
        x, y, z = x.long(), y.long(), z.long()
    expected = ERRORS[kind]
    if op == "q_sample" and kind in ("s_ge_t", "eta"):
        expected = ERRORS["t_range"]
    with pytest.raises(RuntimeError, match=expected):
        if op == "q_sample":
            OPS.q_sample(x, y, t, a, s)
        else:
            OPS.posterior_step(x, y, t, s_idx, a, s, z, eta, 0, 5.0)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_half_types_match_reference(dtype):
    a, s = _tables(PATHS[0], "cuda")
    x, out, z, t, s_idx = _inputs((512, 40), dtype, "cuda")
    torch.testing.assert_close(OPS.q_sample(x, out, t, a, s), reference.q_sample(x, out, t, a, s), **TOL[dtype])
    for g, w in zip(OPS.posterior_step(x, out, t, s_idx, a, s, z, 0.5, 2, 5.0),
                    reference.posterior_step(x, out, t, s_idx, a, s, z, 0.5, "v", 5.0)):
        torch.testing.assert_close(g, w, **TOL[dtype])
    assert ops.backend("cuda", dtype) == "cuda"


def test_cuda_source_compiles_for_sm80_and_sm90(tmp_path):
    """nvcc compiles csrc/cuda/ops.cu for sm_80 and sm_90 even with no GPU, so a CUDA error fails CI."""
    nvcc = shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc" if Path("/usr/local/cuda/bin/nvcc").exists() else None)
    if nvcc is None:
        pytest.skip("nvcc is not installed on this machine")
    r = subprocess.run([str(ROOT / "csrc" / "check_cuda_compile.sh"), str(tmp_path)], capture_output=True, text=True,
                       env={"PATH": f"{Path(nvcc).parent}:{Path(sys.executable).parent}:/usr/bin:/bin",
                            "PYTHON": sys.executable})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    for arch in ("sm_80", "sm_90"):
        assert (tmp_path / f"ops_{arch}.o").stat().st_size > 10_000
