"""Networks f(x, t, z, y) -> output [B, L] for length-40 signals.

x: signal [B, L]; t: int64 timestep [B]; z: direction [B] (0 forward, 1 inverse), fed as an
extra input channel and, with `conditioning: embedding`, also as a learned embedding of its own added
to the conditioning vector, so that it reaches every FiLM layer; y: int64 class label [B] with
NULL_LABEL for "no class" (classifier-free guidance). Both models share the conditioning embedding.

Inside UNet1D a feature map is [B, C, 1, L] in the channels-last memory format: oneDNN's
convolutions and PyTorch's GroupNorm run faster on that layout than on [B, C, L] (the whole
training step, 1.13x on one CPU thread; bench/grid.py). The parameters keep Conv1d's shapes.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from .data import NUM_CLASSES, SIGNAL_LENGTH

NULL_LABEL = NUM_CLASSES


def timestep_embedding(t: torch.Tensor, dim: int, T: int) -> torch.Tensor:
    """Sinusoidal embedding of t, rescaled to 0..1000 so any T spans the usual frequencies."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = (t.float() * (1000.0 / T))[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class Conv(nn.Conv1d):
    """A Conv1d applied to [B, C, 1, L] feature maps (channels-last) as a 1 x k Conv2d."""

    def forward(self, h):
        return F.conv2d(h, self.weight.unsqueeze(2), self.bias, (1, self.stride[0]), (0, self.padding[0]))


class Conditioning(nn.Module):
    """(t, y, z) -> one embedding vector: sinusoidal time -> MLP, plus a learned class embedding, plus (with
    `direction`) a learned direction embedding of z, separate from the class's: "generate digit y" and "apply
    P_y" then get different FiLM parameters in every block."""

    def __init__(self, emb_dim: int, T: int, direction: bool = False):
        super().__init__()
        self.emb_dim, self.T = emb_dim, T
        self.time_mlp = nn.Sequential(nn.Linear(emb_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.label = nn.Embedding(NUM_CLASSES + 1, emb_dim)
        # created only when asked, so that a default network draws the same initial weights as before
        self.direction = nn.Embedding(2, emb_dim) if direction else None

    def forward(self, t, y, z):
        emb = self.time_mlp(timestep_embedding(t, self.emb_dim, self.T)) + self.label(y)
        return emb if self.direction is None else emb + self.direction(z.long())


class ResBlock(nn.Module):
    """GroupNorm -> SiLU -> conv, FiLM (scale, shift) from the embedding, GroupNorm -> SiLU -> conv, plus skip."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int):
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(8, c_in), Conv(c_in, c_out, 3, padding=1)
        self.film = nn.Linear(emb_dim, 2 * c_out)
        self.norm2, self.conv2 = nn.GroupNorm(8, c_out), Conv(c_out, c_out, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = Conv(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, h, emb):
        out = self.conv1(F.silu(self.norm1(h)))
        scale, shift = self.film(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        out = self.norm2(out) * (1 + scale) + shift
        return self.skip(h) + self.conv2(F.silu(out))


class SelfAttention(nn.Module):
    """Single-head self-attention over positions, residual."""

    def __init__(self, c: int):
        super().__init__()
        self.norm, self.qkv, self.proj = nn.GroupNorm(8, c), Conv(c, 3 * c, 1), Conv(c, c, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, h):
        B, C, _, L = h.shape
        q, k, v = self.qkv(self.norm(h)).reshape(B, 3 * C, L).transpose(1, 2).chunk(3, dim=2)
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, C, 1, L)
        return h + self.proj(out.contiguous(memory_format=torch.channels_last))


class UNet1D(nn.Module):
    """Time- and class-conditioned 1-D UNet: 40 -> 20 -> 10 and back with skips."""

    def __init__(self, T: int, channels: int = 32, channel_mult=(1, 2, 4), blocks_per_level: int = 1,
                 attention: bool = True, emb_dim: int = 128, direction_embedding: bool = False):
        super().__init__()
        self.cond = Conditioning(emb_dim, T, direction_embedding)
        widths = [channels * m for m in channel_mult]
        self.stem = Conv(2, widths[0], 3, padding=1)
        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        c, skips = widths[0], []
        for level, w in enumerate(widths):
            blocks = nn.ModuleList()
            for _ in range(blocks_per_level):
                blocks.append(ResBlock(c, w, emb_dim))
                c = w
            self.down.append(blocks)
            skips.append(c)
            last = level == len(widths) - 1
            self.downsample.append(nn.Identity() if last else Conv(c, c, 3, stride=2, padding=1))
        self.mid1 = ResBlock(c, c, emb_dim)
        self.attn = SelfAttention(c) if attention else nn.Identity()
        self.mid2 = ResBlock(c, c, emb_dim)
        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for level in reversed(range(len(widths))):
            w = widths[level]
            blocks = nn.ModuleList([ResBlock(c + skips[level], w, emb_dim)])
            blocks.extend(ResBlock(w, w, emb_dim) for _ in range(blocks_per_level - 1))
            self.up.append(blocks)
            c = w
            self.upsample.append(nn.Identity() if level == 0 else Conv(c, c, 3, padding=1))
        self.head = nn.Sequential(nn.GroupNorm(8, c), nn.SiLU(), Conv(c, 1, 3, padding=1))
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    def forward(self, x, t, z, y):
        emb = self.cond(t, y, z)
        h = torch.stack([x, z.to(x.dtype)[:, None].expand_as(x)], dim=1)[:, :, None]
        h = self.stem(h.contiguous(memory_format=torch.channels_last))
        skips = []
        for blocks, down in zip(self.down, self.downsample):
            for block in blocks:
                h = block(h, emb)
            skips.append(h)
            h = down(h)
        h = self.mid2(self.attn(self.mid1(h, emb)), emb)
        for blocks, up in zip(self.up, self.upsample):
            skip = skips.pop()
            if h.shape[-1] != skip.shape[-1]:
                h = F.interpolate(h, size=(1, skip.shape[-1]), mode="nearest")
            h = torch.cat([h, skip], dim=1)
            for block in blocks:
                h = block(h, emb)
            h = up(h)
        return self.head(h)[:, 0, 0]


class ResMLP(nn.Module):
    """A small residual MLP over the flattened signal, z and the conditioning embedding."""

    def __init__(self, T: int, width: int = 256, depth: int = 3, emb_dim: int = 128, length: int = SIGNAL_LENGTH,
                 direction_embedding: bool = False):
        super().__init__()
        self.cond = Conditioning(emb_dim, T, direction_embedding)
        self.inp = nn.Linear(length + 1, width)
        self.blocks = nn.ModuleList(
            nn.ModuleDict({"norm": nn.LayerNorm(width), "film": nn.Linear(emb_dim, 2 * width), "fc": nn.Linear(width, width)})
            for _ in range(depth)
        )
        self.out = nn.Linear(width, length)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x, t, z, y):
        emb = F.silu(self.cond(t, y, z))
        h = self.inp(torch.cat([x, z.to(x.dtype)[:, None]], dim=1))
        for b in self.blocks:
            scale, shift = b["film"](emb).chunk(2, dim=1)
            h = h + b["fc"](F.silu(b["norm"](h) * (1 + scale) + shift))
        return self.out(h)


def build_model(cfg: dict) -> nn.Module:
    """The network a validated config asks for."""
    direction_embedding = cfg["conditioning"] == "embedding"
    if cfg["model"] == "unet":
        return UNet1D(cfg["T"], cfg["channels"], tuple(cfg["channel_mult"]), cfg["blocks_per_level"],
                      cfg["attention"], cfg["emb_dim"], direction_embedding)
    return ResMLP(cfg["T"], width=cfg["channels"] * 8, emb_dim=cfg["emb_dim"], direction_embedding=direction_embedding)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
