"""Networks f(x, t, z, y) -> output shaped like x: 1-D signals [B, L] (MNIST-1D) and images [B, C, H, W].

x: a batch of samples; t: int64 timestep [B]; z: direction [B] (0 forward, 1 inverse), fed as an
extra input channel and, with `conditioning: embedding`, also as a learned embedding of its own added
to the conditioning vector, so that it reaches every FiLM layer; y: int64 class label [B] with
NULL_LABEL for "no class" (classifier-free guidance). Every model shares the conditioning embedding and
says the shape of one sample in `sample_shape` ((L,) or (C, H, W)), so samplers can draw x_T.

UNet1D and UNet2D are one UNet with different convolutions: inside UNet1D a feature map is [B, C, 1, L],
inside UNet2D [B, C, H, W], both in the channels-last memory format: oneDNN's convolutions and PyTorch's
GroupNorm run faster on that layout than on [B, C, L] (the whole 1-D training step, 1.13x on one CPU
thread; bench/grid.py). UNet1D's parameters keep Conv1d's shapes.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from pydiffusion.data.labels import NUM_CLASSES
from pydiffusion.data.mnist1d import SIGNAL_LENGTH
from pydiffusion.diffusion import ops


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


def norm_silu(norm: nn.GroupNorm, h, scale=None, shift=None):
    """silu(norm(h) * (1 + scale) + shift) in one op (ops.norm_film_silu: the fused kernel where it serves, else these
    modules' own functions), with norm's parameters; no FiLM without scale and shift."""
    return ops.norm_film_silu(h, norm.weight, norm.bias, scale, shift, norm.num_groups, norm.eps)


class ResBlock(nn.Module):
    """GroupNorm -> SiLU -> conv, FiLM (scale, shift) from the embedding, GroupNorm -> SiLU -> conv, plus skip.
    `conv` is the convolution class (Conv for 1-D, nn.Conv2d for images)."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, conv=Conv):
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(8, c_in), conv(c_in, c_out, 3, padding=1)
        self.film = nn.Linear(emb_dim, 2 * c_out)
        self.norm2, self.conv2 = nn.GroupNorm(8, c_out), conv(c_out, c_out, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = conv(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, h, emb):
        out = self.conv1(norm_silu(self.norm1, h))
        scale, shift = self.film(F.silu(emb)).chunk(2, dim=1)
        return self.skip(h) + self.conv2(norm_silu(self.norm2, out, scale, shift))


class SelfAttention(nn.Module):
    """Single-head self-attention over the positions of a [B, C, H, W] feature map (H = 1 for 1-D), residual."""

    def __init__(self, c: int, conv=Conv):
        super().__init__()
        self.norm, self.qkv, self.proj = nn.GroupNorm(8, c), conv(c, 3 * c, 1), conv(c, c, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, h):
        q, k, v = self.qkv(self.norm(h)).flatten(2).transpose(1, 2).chunk(3, dim=2)
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(h.shape)
        return h + self.proj(out.contiguous(memory_format=torch.channels_last))


class UNet(nn.Module):
    """Time- and class-conditioned UNet on [B, in_channels, H, W] feature maps with convolution class `conv`:
    `len(channel_mult)` levels, each halving the resolution by a stride-2 conv (rounding up: 7 -> 4), and
    back up by nearest-neighbour upsampling to the skip's size, with skips. UNet1D and UNet2D adapt the input."""

    def __init__(self, T: int, in_channels: int, out_channels: int, conv, channels: int, channel_mult, blocks_per_level: int,
                 attention: bool, emb_dim: int, direction_embedding: bool):
        super().__init__()
        self.cond = Conditioning(emb_dim, T, direction_embedding)
        widths = [channels * m for m in channel_mult]
        self.stem = conv(in_channels, widths[0], 3, padding=1)
        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        c, skips = widths[0], []
        for level, w in enumerate(widths):
            blocks = nn.ModuleList()
            for _ in range(blocks_per_level):
                blocks.append(ResBlock(c, w, emb_dim, conv))
                c = w
            self.down.append(blocks)
            skips.append(c)
            last = level == len(widths) - 1
            self.downsample.append(nn.Identity() if last else conv(c, c, 3, stride=2, padding=1))
        self.mid1 = ResBlock(c, c, emb_dim, conv)
        self.attn = SelfAttention(c, conv) if attention else nn.Identity()
        self.mid2 = ResBlock(c, c, emb_dim, conv)
        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for level in reversed(range(len(widths))):
            w = widths[level]
            blocks = nn.ModuleList([ResBlock(c + skips[level], w, emb_dim, conv)])
            blocks.extend(ResBlock(w, w, emb_dim, conv) for _ in range(blocks_per_level - 1))
            self.up.append(blocks)
            c = w
            self.upsample.append(nn.Identity() if level == 0 else conv(c, c, 3, padding=1))
        self.head = nn.Sequential(nn.GroupNorm(8, c), nn.SiLU(), conv(c, out_channels, 3, padding=1))
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    def features(self, h, t, z, y):
        """The network on an input feature map h [B, in_channels, H, W] -> [B, out_channels, H, W]."""
        emb = self.cond(t, y, z)
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
            if h.shape[2:] != skip.shape[2:]:
                h = F.interpolate(h, size=skip.shape[2:], mode="nearest")
            h = torch.cat([h, skip], dim=1)
            for block in blocks:
                h = block(h, emb)
            h = up(h)
        norm, _, conv = self.head  # GroupNorm, SiLU, conv: one fused op and the conv
        return conv(norm_silu(norm, h))


class UNet1D(UNet):
    """The UNet on signals x [B, L] (40 -> 20 -> 10 and back): x and z are two channels of a [B, 2, 1, L] map."""

    def __init__(self, T: int, channels: int = 32, channel_mult=(1, 2, 4), blocks_per_level: int = 1,
                 attention: bool = True, emb_dim: int = 128, direction_embedding: bool = False, length: int = SIGNAL_LENGTH):
        super().__init__(T, 2, 1, Conv, channels, channel_mult, blocks_per_level, attention, emb_dim, direction_embedding)
        self.sample_shape = (length,)

    def forward(self, x, t, z, y):
        h = torch.stack([x, z.to(x.dtype)[:, None].expand_as(x)], dim=1)[:, :, None]
        return self.features(h, t, z, y)[:, 0, 0]


class UNet2D(UNet):
    """The UNet on images x [B, C, H, W] with k x k convolutions (8 -> 4 -> 2, 28 -> 14 -> 7, 32 -> 16 -> 8 with
    three levels): z is one more input channel, constant over the image."""

    def __init__(self, T: int, sample_shape: tuple, channels: int = 32, channel_mult=(1, 2, 4), blocks_per_level: int = 1,
                 attention: bool = True, emb_dim: int = 128, direction_embedding: bool = False):
        C = sample_shape[0]
        super().__init__(T, C + 1, C, nn.Conv2d, channels, channel_mult, blocks_per_level, attention, emb_dim,
                         direction_embedding)
        self.sample_shape = tuple(sample_shape)

    def forward(self, x, t, z, y):
        zz = z.to(x.dtype)[:, None, None, None].expand(-1, 1, *x.shape[2:])
        return self.features(torch.cat([x, zz], dim=1), t, z, y).contiguous()


class ResMLP(nn.Module):
    """A small residual MLP over the flattened sample (a signal, or an image's C*H*W values), z and the
    conditioning embedding."""

    def __init__(self, T: int, width: int = 256, depth: int = 3, emb_dim: int = 128, sample_shape: tuple = (SIGNAL_LENGTH,),
                 direction_embedding: bool = False):
        super().__init__()
        self.sample_shape = tuple(sample_shape)
        size = math.prod(self.sample_shape)
        self.cond = Conditioning(emb_dim, T, direction_embedding)
        self.inp = nn.Linear(size + 1, width)
        self.blocks = nn.ModuleList(
            nn.ModuleDict({"norm": nn.LayerNorm(width), "film": nn.Linear(emb_dim, 2 * width), "fc": nn.Linear(width, width)})
            for _ in range(depth)
        )
        self.out = nn.Linear(width, size)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x, t, z, y):
        emb = F.silu(self.cond(t, y, z))
        h = self.inp(torch.cat([x.flatten(1), z.to(x.dtype)[:, None]], dim=1))
        for b in self.blocks:
            scale, shift = b["film"](emb).chunk(2, dim=1)
            h = h + b["fc"](F.silu(b["norm"](h) * (1 + scale) + shift))
        return self.out(h).reshape(x.shape)


def build_model(cfg: dict, shape: tuple = (SIGNAL_LENGTH,)) -> nn.Module:
    """The network a validated config asks for, on samples of `shape`: (L,) for signals (UNet1D), (C, H, W)
    for images (UNet2D). `model: mlp` flattens either into a ResMLP over prod(shape) values."""
    shape = tuple(shape)
    if len(shape) not in (1, 3):
        raise ValueError(f"build_model: a sample shape is (L,) or (C, H, W), got {shape}")
    direction_embedding = cfg["conditioning"] == "embedding"
    if cfg["model"] == "mlp":
        return ResMLP(cfg["T"], width=cfg["channels"] * 8, emb_dim=cfg["emb_dim"], sample_shape=shape,
                      direction_embedding=direction_embedding)
    unet = (cfg["channels"], tuple(cfg["channel_mult"]), cfg["blocks_per_level"], cfg["attention"], cfg["emb_dim"],
            direction_embedding)
    return UNet1D(cfg["T"], *unet, length=shape[0]) if len(shape) == 1 else UNet2D(cfg["T"], shape, *unet)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
