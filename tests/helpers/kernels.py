"""Inputs for the fused ops."""
import torch


def kernel_inputs(shape, dtype, device, T=20, seed=0):
    """x, out, z [shape] and per-row timesteps t in [1, T], s in [0, t - 1], from one seeded generator."""
    g = torch.Generator().manual_seed(seed)
    x, out, z = (torch.randn(shape, generator=g, dtype=torch.float64).to(device, dtype) for _ in range(3))
    t = torch.randint(1, T + 1, (shape[0],), generator=g)
    s = (torch.rand(shape[0], generator=g) * t).long().clamp(max=t - 1)  # any s in [0, t-1]
    return x, out, z, t.to(device), s.to(device)
