"""The three training modes (docs/math.md#training-modes), each a callable batch -> dict of losses.

A trainer returns {"loss": scalar total, <component>: scalar, ...}. It draws t, eps and the
label dropout from the generator it is given, so a run is reproducible and resumable.
Labels are dropped (replaced by the null label, for classifier-free guidance) only on forward
(z = 0) passes: the inverse map P_y depends on y, so it is always conditioned.
"""
import torch

from . import losses, ops
from .data import prime_inverse
from .models import NULL_LABEL
from .paths import NoisePath


class ImplicitTrainer:
    """z = 0 only: the single forward (denoising) loss."""

    components = ("forward",)

    def __init__(self, path: NoisePath, loss: str = "mse", prediction: str = "eps", clip: float = 5.0,
                 cfg_dropout: float = 0.1):
        self.path, self.loss, self.prediction, self.clip, self.cfg_dropout = path, loss, prediction, clip, cfg_dropout
        self.tables = losses.bound_tables(path)

    def draw(self, x0, y, gen):
        """t ~ U{1..T}, eps ~ N(0, I), and y with labels dropped for the forward direction."""
        B = x0.shape[0]
        t = torch.randint(1, self.path.T + 1, (B,), generator=gen, device=x0.device)
        eps = torch.randn(x0.shape, generator=gen, device=x0.device, dtype=x0.dtype)
        drop = torch.rand(B, generator=gen, device=x0.device) < self.cfg_dropout
        return t, eps, torch.where(drop, torch.full_like(y, NULL_LABEL), y)

    def x0_hat(self, out, x_t, t):
        x0 = self.path.x0_from_output(out, x_t, t, self.prediction)
        return x0.clamp(-self.clip, self.clip) if self.clip > 0 else x0

    def clean_loss(self, target, pred, t):
        """Loss between clean-space signals: squared error, or the bound's formula under kl."""
        return losses.mse(pred, target) if self.loss == "mse" else losses.kl(target, pred, t, self.tables)

    def forward_loss(self, out, x0, eps, x_t, t):
        """(loss [B], x0_hat) of the forward pass: on the parameterisation's target, or the kl term."""
        x0_hat = self.x0_hat(out, x_t, t)
        if self.loss == "mse":
            return losses.mse(out, self.path.target(x0, eps, t, self.prediction)), x0_hat
        return losses.kl(x0, x0_hat, t, self.tables), x0_hat

    def __call__(self, model, x0, y, gen):
        t, eps, y_fwd = self.draw(x0, y, gen)
        x_t = ops.q_sample(x0, eps, t, self.path)
        forward, _ = self.forward_loss(model(x_t, t, torch.zeros_like(t), y_fwd), x0, eps, x_t, t)
        forward = forward.mean()
        return {"loss": forward, "forward": forward}


class SemiImplicitTrainer(ImplicitTrainer):
    """Four losses per batch: forward, inverse, and the two roundtrips (docs/math.md#training-modes).

    The two passes of each stage share one network call (GroupNorm is per sample, so batching
    them changes nothing but speed).
    """

    components = ("forward", "inverse", "rt_fi", "rt_if")

    def __init__(self, path, loss="mse", prediction="eps", clip=5.0, cfg_dropout=0.1, w_forward=1.0,
                 w_inverse=1.0, w_rt_fi=0.5, w_rt_if=0.5, detach_intermediate=True):
        super().__init__(path, loss, prediction, clip, cfg_dropout)
        self.weights = {"forward": w_forward, "inverse": w_inverse, "rt_fi": w_rt_fi, "rt_if": w_rt_if}
        self.detach = detach_intermediate

    def __call__(self, model, x0, y, gen):
        t, eps, y_fwd = self.draw(x0, y, gen)
        p = prime_inverse(x0, y)
        x_t = ops.q_sample(x0, eps, t, self.path)
        zeros, ones = torch.zeros_like(t), torch.ones_like(t)
        tt = torch.cat([t, t])
        out_f, p_hat = model(torch.cat([x_t, x0]), tt, torch.cat([zeros, ones]), torch.cat([y_fwd, y])).chunk(2)
        forward, x0_hat = self.forward_loss(out_f, x0, eps, x_t, t)
        inverse = self.clean_loss(p, p_hat, t)
        mid_x0, mid_p = (x0_hat.detach(), p_hat.detach()) if self.detach else (x0_hat, p_hat)
        out_fi, out_if = model(torch.cat([mid_x0, mid_p]), tt, torch.cat([ones, zeros]), torch.cat([y, y_fwd])).chunk(2)
        rt_fi = self.clean_loss(p, out_fi, t)
        rt_if = self.clean_loss(x0, self.x0_hat(out_if, mid_p, t), t)
        parts = {"forward": forward.mean(), "inverse": inverse.mean(), "rt_fi": rt_fi.mean(), "rt_if": rt_if.mean()}
        return {"loss": sum(self.weights[k] * v for k, v in parts.items()), **parts}


class ConsistencyTrainer(ImplicitTrainer):
    """Forward loss + w * MSE(denoise(renoise(x0_hat, t'), t'), x0_hat), x0_hat without gradient."""

    components = ("forward", "consistency")

    def __init__(self, path, loss="mse", prediction="eps", clip=5.0, cfg_dropout=0.1, w_consistency=0.5):
        super().__init__(path, loss, prediction, clip, cfg_dropout)
        self.w_consistency = w_consistency

    def __call__(self, model, x0, y, gen):
        t, eps, y_fwd = self.draw(x0, y, gen)
        x_t = ops.q_sample(x0, eps, t, self.path)
        zeros = torch.zeros_like(t)
        out = model(x_t, t, zeros, y_fwd)
        forward, _ = self.forward_loss(out, x0, eps, x_t, t)
        x0_hat = self.x0_hat(out.detach(), x_t, t)
        t2, eps2, _ = self.draw(x0, y, gen)
        x_t2 = ops.q_sample(x0_hat, eps2, t2, self.path)
        consistency = losses.mse(self.x0_hat(model(x_t2, t2, zeros, y_fwd), x_t2, t2), x0_hat)
        forward, consistency = forward.mean(), consistency.mean()
        return {"loss": forward + self.w_consistency * consistency, "forward": forward, "consistency": consistency}


def build_trainer(cfg: dict, path: NoisePath):
    common = dict(loss=cfg["loss"], prediction=cfg["prediction"], clip=cfg["clip"], cfg_dropout=cfg["cfg_dropout"])
    if cfg["training"] == "implicit":
        return ImplicitTrainer(path, **common)
    if cfg["training"] == "semi_implicit":
        return SemiImplicitTrainer(path, **common, w_forward=cfg["w_forward"], w_inverse=cfg["w_inverse"],
                                   w_rt_fi=cfg["w_rt_fi"], w_rt_if=cfg["w_rt_if"],
                                   detach_intermediate=cfg["detach_intermediate"])
    return ConsistencyTrainer(path, **common, w_consistency=cfg["w_consistency"])
