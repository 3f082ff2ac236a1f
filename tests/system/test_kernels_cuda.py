"""The CUDA kernels on a GPU: half types, the scalar (unaligned) and vectorised paths, large tensors,
bad timesteps, and agreement with the CPU kernels. Skipped where no GPU is present; the float32 and
float64 equivalence, opcheck and autograd tests of tests/unit/test_kernels.py also run on the GPU (DEVICES)."""
import pytest
import torch

from pydiffusion.diffusion import ops, reference
from pydiffusion.diffusion.paths import NoisePath

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")]

OPS = torch.ops.pydiffusion
PATH = NoisePath("gaussian", 20, "linear")
TOL = {torch.float64: dict(rtol=1e-12, atol=1e-12), torch.float32: dict(rtol=1e-6, atol=1e-6),
       torch.float16: dict(rtol=1e-3, atol=1e-3), torch.bfloat16: dict(rtol=1e-2, atol=1e-2)}


def _inputs(shape, dtype, T=20, seed=0, offset=0):
    """x, out, z on the GPU (offset elements into their storage: offset 1 breaks 16-byte alignment)."""
    g = torch.Generator().manual_seed(seed)
    n = torch.Size(shape).numel()
    x, out, z = (torch.randn(n + offset, generator=g, dtype=torch.float64).to("cuda", dtype)[offset:].view(shape)
                 for _ in range(3))
    t = torch.randint(1, T + 1, (shape[0],), generator=g)
    s = (torch.rand(shape[0], generator=g) * t).long().clamp(max=t - 1)
    return x, out, z, t.cuda(), s.cuda()


def _check(shape, dtype, offset=0, eta=0.5, prediction="v", clip=5.0):
    a, s = PATH.a.cuda(), PATH.s.cuda()
    x, out, z, t, s_idx = _inputs(shape, dtype, offset=offset)
    torch.testing.assert_close(OPS.q_sample(x, out, t, a, s), reference.q_sample(x, out, t, a, s), **TOL[dtype])
    code = reference.PREDICTION_CODES[prediction]
    for g, w in zip(OPS.posterior_step(x, out, t, s_idx, a, s, z, eta, code, clip),
                    reference.posterior_step(x, out, t, s_idx, a, s, z, eta, prediction, clip)):
        torch.testing.assert_close(g, w, **TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(512, 40), (7, 3), (5, 13), (2, 8, 16), (1, 1)])
@pytest.mark.parametrize("offset", [0, 1])
def test_all_dtypes_vectorised_and_scalar_paths_match_reference(dtype, shape, offset):
    _check(shape, dtype, offset)
    assert ops.backend("cuda", dtype) == "cuda"


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_parameterisations(prediction, eta):
    _check((64, 40), torch.float32, eta=eta, prediction=prediction, clip=0.0)


def test_large_tensor():
    _check((400_000, 40), torch.float32)


def test_cuda_matches_cpu_kernels_in_float64():
    a, s = PATH.a, PATH.s
    x, out, z, t, s_idx = _inputs((300, 40), torch.float64)
    cpu = [OPS.q_sample(x.cpu(), out.cpu(), t.cpu(), a, s),
           *OPS.posterior_step(x.cpu(), out.cpu(), t.cpu(), s_idx.cpu(), a, s, z.cpu(), 0.5, 0, 5.0)]
    gpu = [OPS.q_sample(x, out, t, a.cuda(), s.cuda()),
           *OPS.posterior_step(x, out, t, s_idx, a.cuda(), s.cuda(), z, 0.5, 0, 5.0)]
    for c, g in zip(cpu, gpu):
        torch.testing.assert_close(g.cpu(), c, rtol=1e-12, atol=1e-12)


def test_bad_timesteps_are_errors_and_the_device_stays_usable():
    a, s = PATH.a.cuda(), PATH.s.cuda()
    x, out, z, t, s_idx = _inputs((8, 40), torch.float32)
    with pytest.raises(RuntimeError, match=r"t must be in \[0, 20\]"):
        OPS.q_sample(x, out, t + 100, a, s)
    with pytest.raises(RuntimeError, match=r"t must be in \[0, 20\]"):
        OPS.q_sample(x, out, t - 100, a, s)
    with pytest.raises(RuntimeError, match="every s must be < its t"):
        OPS.posterior_step(x, out, t, t, a, s, z, 0.5, 0, 5.0)
    with pytest.raises(RuntimeError, match=r"t must be in \[1, 20\]"):
        OPS.posterior_step(x, out, t * 0, s_idx * 0, a, s, z, 0.5, 0, 5.0)
    with pytest.raises(RuntimeError, match="same device"):
        OPS.q_sample(x, out.cpu(), t, a, s)
    with pytest.raises(RuntimeError, match="must be on"):
        OPS.q_sample(x, out, t.cpu(), a, s)
    torch.cuda.synchronize()
    _check((8, 40), torch.float32)


def test_q_sample_backward_and_compile_on_gpu():
    x, out, z, t, _ = _inputs((16, 40), torch.float32)
    x0 = x.clone().requires_grad_()
    ops.q_sample(x0, out, t, PATH).sum().backward()
    torch.testing.assert_close(x0.grad, PATH.a.cuda()[t].float()[:, None].expand(16, 40))

    def f(x0, eps, t, o, z):
        x_t = ops.q_sample(x0, eps, t, PATH)
        return ops.posterior_step(x_t, o, t, t - 1, PATH, z, 1.0, "v", 5.0)

    torch._dynamo.reset()
    for g, w in zip(torch.compile(f, fullgraph=True)(x, out, t, out, z), f(x, out, t, out, z)):
        torch.testing.assert_close(g, w)
