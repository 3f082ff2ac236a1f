"""The kernels as built and loaded: one OpenMP runtime, the fallback to the reference when the extension is
missing or PYDIFFUSION_BACKEND=torch, torch.compile through the ops, and the nvcc compile check of the CUDA source."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers.kernels import kernel_inputs
from helpers.workflow import ROOT

from pydiffusion.diffusion import ops
from pydiffusion.diffusion.paths import NoisePath

if ops.backend("cpu") != "cpp" and os.environ.get("PYDIFFUSION_BACKEND", "").strip().lower() == "torch":
    pytest.skip("PYDIFFUSION_BACKEND=torch: the extension is switched off", allow_module_level=True)
if ops.backend("cpu") != "cpp":
    pytest.fail("the compiled extension pydiffusion.diffusion._C did not load; build it with `make` "
                "(pip install --no-build-isolation -e .)", pytrace=False)
PATHS = [NoisePath("gaussian", 20, "linear"), NoisePath("gaussian", 20, "cosine"), NoisePath("convex", 20)]


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc/self/maps (Linux)")
def test_one_openmp_runtime_is_loaded():
    """A second libgomp would be a second thread pool that ignores torch.set_num_threads."""
    code = ("import torch, pydiffusion.diffusion.ops as o; assert o.backend() == 'cpp'; torch.ops.pydiffusion.q_sample; "
            "print(sorted({l.split()[-1] for l in open('/proc/self/maps') if 'libgomp' in l}))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert len(eval(r.stdout)) <= 1, r.stdout


def _sample_then_renoise(x0, eps, t, out, z, path):
    x_t = ops.q_sample(x0, eps, t, path)
    x_s, x0_hat = ops.posterior_step(x_t, out, t, t - 1, path, z, 1.0, "v", 5.0)
    return x_s * 2 + ops.q_sample(x0_hat, eps, t - 1, path), x0_hat


def _cpp_compiler_missing():
    """Why inductor cannot run here, or None: its CPU code generation compiles C++ at run time, and
    the container image removes the compiler after building the extension."""
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler
        get_cpp_compiler()
    except Exception as e:  # torch raises InvalidCxxCompiler (or a subprocess error) when none works
        return f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else 'no C++ compiler'}"
    return None


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_torch_compile_fullgraph(backend):
    """Both ops, through the public API, in one graph: no graph breaks (fullgraph=True), dynamic
    batch sizes, and the compiled result equals the eager one."""
    if backend == "inductor" and (why := _cpp_compiler_missing()):
        pytest.skip(f"inductor needs a C++ compiler at run time ({why}); aot_eager covers tracing")
    path = PATHS[0]
    torch._dynamo.reset()
    compiled = torch.compile(_sample_then_renoise, fullgraph=True, dynamic=True, backend=backend)
    for B in (16, 9):
        x0, out, z, t, _ = kernel_inputs((B, 40), torch.float32, "cpu", seed=B)
        eps = torch.randn(B, 40)
        for g, w in zip(compiled(x0, eps, t, out, z, path), _sample_then_renoise(x0, eps, t, out, z, path)):
            torch.testing.assert_close(g, w)


def test_torch_compile_trains_through_q_sample():
    path = PATHS[2]
    x0, eps, _, t, _ = kernel_inputs((8, 40), torch.float32, "cpu")
    w = torch.randn(40, 40, requires_grad=True)

    def loss(w):
        return (ops.q_sample(x0 @ w, eps, t, path) ** 2).mean()

    torch._dynamo.reset()
    g_compiled = torch.autograd.grad(torch.compile(loss, fullgraph=True, backend="aot_eager")(w), w)[0]
    torch.testing.assert_close(g_compiled, torch.autograd.grad(loss(w), w)[0])


# ---- backend selection and the fallback ----------------------------------------------------------

def _python(code, **env):
    r = subprocess.run([sys.executable, "-W", "always", "-c", code], capture_output=True, text=True, cwd=ROOT,
                       env={**os.environ, **env}, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return r


FALLBACK_CHECK = """
import torch
from pydiffusion.diffusion import ops
from pydiffusion.diffusion import reference
from pydiffusion.diffusion.paths import NoisePath
p = NoisePath("gaussian", 20)
x = torch.randn(4, 40); t = torch.tensor([1, 5, 9, 20])
assert torch.equal(ops.q_sample(x, x, t, p), reference.q_sample(x, x, t, p.a, p.s))
got = ops.posterior_step(x, x, t, t - 1, p, x, 0.5, "v", 5.0)
want = reference.posterior_step(x, x, t, t - 1, p.a, p.s, x, 0.5, "v", 5.0)
assert all(torch.equal(g, w) for g, w in zip(got, want))
print("backend", ops.backend("cpu"), ops.backend("cuda"))
"""


def test_missing_extension_falls_back_with_one_warning():
    r = _python("import sys; sys.modules['pydiffusion.diffusion._C'] = None\n" + FALLBACK_CHECK, PYDIFFUSION_BACKEND="")
    assert "backend torch torch" in r.stdout
    ours = [line for line in r.stderr.splitlines() if "fused kernels unavailable" in line]
    assert len(ours) == 1 and "RuntimeWarning" in ours[0] and "PyTorch reference" in ours[0], r.stderr


def test_the_wheel_pins_the_torch_its_kernels_were_built_against():
    from importlib.metadata import requires

    built = ops.built_for_torch()
    assert built == torch.__version__.split("+")[0]
    assert f"torch=={built}" in requires("pydiffusion-mnist1d")


def test_another_torch_than_the_kernels_were_built_for_falls_back_with_one_warning():
    pretend = "import importlib.metadata as m; real = m.requires; " \
              "m.requires = lambda d: ['torch==1.0.0' if r.startswith('torch') else r for r in real(d)]\n"
    r = _python(pretend + FALLBACK_CHECK, PYDIFFUSION_BACKEND="")
    assert "backend torch torch" in r.stdout
    ours = [line for line in r.stderr.splitlines() if "fused kernels built for torch 1.0.0" in line]
    assert len(ours) == 1 and "PyTorch reference ops" in ours[0] and "--force-reinstall" in ours[0], r.stderr


def test_backend_env_forces_the_reference_quietly():
    r = _python(FALLBACK_CHECK, PYDIFFUSION_BACKEND="torch")
    assert "backend torch torch" in r.stdout
    assert "fused kernels unavailable" not in r.stderr, r.stderr


# ---- CUDA ---------------------------------------------------------------------------------------

def test_cuda_source_compiles_for_sm80_and_sm90(tmp_path):
    """nvcc compiles csrc/cuda/ops.cu and block_ops.cu for sm_80 and sm_90 even with no GPU, so a CUDA error fails
    CI (about a minute per file and architecture)."""
    nvcc = shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc" if Path("/usr/local/cuda/bin/nvcc").exists() else None)
    if nvcc is None:
        pytest.skip("nvcc is not installed on this machine (CUDA toolkit absent): the CUDA source was not compiled")
    r = subprocess.run([str(ROOT / "csrc" / "check_cuda_compile.sh"), str(tmp_path)], capture_output=True, text=True,
                       env={"PATH": f"{Path(nvcc).parent}:{Path(sys.executable).parent}:/usr/bin:/bin",
                            "PYTHON": sys.executable, "NVCC": nvcc})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    for arch in ("sm_80", "sm_90"):
        for name in ("ops", "block_ops"):
            assert (tmp_path / f"{name}_{arch}.o").stat().st_size > 10_000
