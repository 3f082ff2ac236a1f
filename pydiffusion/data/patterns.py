"""The prime-inverse patterns P_y (docs/math.md#prime-inverse-patterns): one fixed map per digit class y,
a table for 1-D signals [B, L] and one for square images [B, C, H, W]."""
import math

import torch


def signal_patterns(x: torch.Tensor) -> list:
    """The ten maps of the signals x [B, L], in class order."""
    return [
        -x,
        torch.roll(x, 10, dims=-1),
        torch.flip(x, dims=[-1]),
        torch.roll(torch.flip(x, dims=[-1]), 10, dims=-1),
        -torch.roll(x, 20, dims=-1),
        torch.sin(x * math.pi / 5),
        torch.tanh(x),
        x * x.abs(),
        torch.sign(x) * x.abs().sqrt(),
        torch.cos(x * math.pi / 5) + 1,
    ]


def image_patterns(x: torch.Tensor) -> list:
    """The ten maps of the square images x [B, C, H, W], in class order: each maps [-1, 1] onto itself and is
    invertible there."""
    H, W = x.shape[-2:]
    return [
        -x,
        torch.flip(x, dims=[-1]),  # left-right
        torch.flip(x, dims=[-2]),  # upside down
        x.transpose(-2, -1),
        torch.rot90(x, 1, dims=(-2, -1)),  # a quarter turn, counter-clockwise as displayed
        torch.rot90(x, 2, dims=(-2, -1)),
        torch.roll(x, (H // 2, W // 2), dims=(-2, -1)),  # the quadrants swapped diagonally
        x * x.abs(),
        torch.sign(x) * x.abs().sqrt(),
        torch.sin(x * math.pi / 2),
    ]


def prime_inverse(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """P_y(x): the pattern of class y applied to each sample of x, signals [B, L] or square images [B, C, H, W]."""
    if x.dim() not in (2, 4) or y.shape != x.shape[:1]:
        raise ValueError(f"prime_inverse expects x [B, L] or [B, C, H, W] and y [B], got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.dim() == 4 and x.shape[-1] != x.shape[-2]:
        raise ValueError(f"prime_inverse: the image patterns (transpose, rotations) need square images, got {tuple(x.shape)}")
    patterns = torch.stack(signal_patterns(x) if x.dim() == 2 else image_patterns(x))
    return patterns[y.long(), torch.arange(x.shape[0], device=x.device)]
