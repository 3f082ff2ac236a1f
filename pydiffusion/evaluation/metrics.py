"""Test metrics (docs/math.md#losses for the bound) and convergence figures from the loss history.

All test quantities use the EMA network, the test set with its true labels, and noise drawn
from a generator seeded with `eval_seed`, so two models are compared on identical inputs.
"""
import math

import torch

from pydiffusion.data.patterns import prime_inverse
from pydiffusion.diffusion import losses, ops
from pydiffusion.diffusion.denoiser import INVERSE
from pydiffusion.evaluation.ssim import ssim


@torch.no_grad()
def held_out_metrics(denoiser, x0, y, psnr_timesteps=(5, 10, 15), seed=1234, batch_size=1000):
    """MSE (forward, inverse, mean), MAE, the full bound in nats/dim and denoising PSNR of a denoiser; for
    images (x0 [N, C, H, W]) also the denoising SSIM (pydiffusion/evaluation/ssim.py) at the PSNR's timesteps and noise,
    with the PSNR's peak as its data range.

    test_mse_forward draws one t per test signal; test_mse_forward_t is the x0 MSE at each t = 1..T over
    every test signal, from the noise the bound uses at that t (so it costs no extra network pass), and its
    mean over t estimates the same quantity as test_mse_forward."""
    denoiser.model.eval()
    path = denoiser.path
    gen = torch.Generator().manual_seed(seed)
    N, T = x0.shape[0], path.T
    t = torch.randint(1, T + 1, (N,), generator=gen)
    eps = torch.randn(x0.shape, generator=gen)
    eps_bound = torch.randn((T,) + tuple(x0.shape), generator=gen)
    eps_psnr = torch.randn((len(psnr_timesteps),) + tuple(x0.shape), generator=gen)
    tables = losses.bound_tables(path)
    peak = (x0.max() - x0.min()).item()
    device = next(denoiser.model.parameters()).device
    x0_hat = denoiser.x0

    images = x0.dim() == 4
    sums = {"sq_f": 0.0, "abs_f": 0.0, "sq_i": 0.0, "bound": 0.0, **{f"sq_{k}": 0.0 for k in psnr_timesteps},
            **{f"ssim_{k}": 0.0 for k in psnr_timesteps}}
    sq_t = [0.0] * T
    for lo in range(0, N, batch_size):
        sl = slice(lo, lo + batch_size)
        xb, yb, tb = x0[sl].to(device), y[sl].to(device), t[sl].to(device)
        err = x0_hat(ops.q_sample(xb, eps[sl].to(device), tb, path), tb, yb) - xb
        sums["sq_f"] += err.pow(2).sum().item()
        sums["abs_f"] += err.abs().sum().item()
        p_hat = denoiser(xb, tb, yb, INVERSE)
        sums["sq_i"] += (p_hat - prime_inverse(xb, yb)).pow(2).sum().item()
        bound = losses.prior_kl(xb, path)
        for k in range(1, T + 1):
            tk = torch.full_like(tb, k)
            x0_k = x0_hat(ops.q_sample(xb, eps_bound[k - 1][sl].to(device), tk, path), tk, yb)
            bound += losses.bound_term(xb, x0_k, tk, tables)
            sq_t[k - 1] += (x0_k - xb).pow(2).sum().item()
        sums["bound"] += bound.sum().item()
        for j, k in enumerate(psnr_timesteps):
            tk = torch.full_like(tb, k)
            x0_k = x0_hat(ops.q_sample(xb, eps_psnr[j][sl].to(device), tk, path), tk, yb)
            sums[f"sq_{k}"] += (x0_k - xb).pow(2).sum().item()
            if images:
                sums[f"ssim_{k}"] += ssim(x0_k.double(), xb.double(), peak).sum().item()
    n = x0.numel()
    out = {"test_mse_forward": sums["sq_f"] / n, "test_mse_inverse": sums["sq_i"] / n}
    out["test_mse"] = 0.5 * (out["test_mse_forward"] + out["test_mse_inverse"])
    out["test_mae"] = sums["abs_f"] / n
    out["test_kl"] = sums["bound"] / N
    out["test_mse_forward_t"] = [v / n for v in sq_t]
    for k in psnr_timesteps:
        out[f"psnr_t{k}"] = 10 * math.log10(peak**2 / (sums[f"sq_{k}"] / n))
        if images:
            out[f"ssim_t{k}"] = sums[f"ssim_{k}"] / N
    return out


def convergence(losses_per_epoch) -> dict:
    """Epochs to come (and stay) within 5% of the final loss; smoothness of the curve."""
    L = [float(v) for v in losses_per_epoch]
    final = L[-1]
    within = [abs(v - final) <= 0.05 * abs(final) for v in L]
    first = len(L)
    while first > 1 and within[first - 2]:
        first -= 1
    changes = [b - a for a, b in zip(L, L[1:])]
    return {
        "final_loss": final,
        "epochs_to_5pct": first,
        "loss_mean_abs_change": sum(abs(c) for c in changes) / len(changes) if changes else 0.0,
        "loss_increases": sum(c > 0 for c in changes),
    }
