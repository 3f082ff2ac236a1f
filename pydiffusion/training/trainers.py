"""The three training modes (docs/math.md#training-modes), each a callable batch -> dict of losses, and the trainer
interface a plugin implements the same way (docs/your-idea.md#the-trainer-interface):

- `components`: the names of the losses it returns besides "loss" (the history's and the report's columns);
- `passes`: network passes (forward + backward) per training example, implicit = 1 (the workflow's cost of an epoch);
- `options`: its own config keys and their defaults, `checks`: key -> (predicate, description), and
  `check_config(cfg)`: None or a message, for rules across keys; config.validate reads all three at the edge;
- `from_config(denoiser, cfg)`: the trainer of a validated config (ImplicitTrainer's passes the loss, the label
  dropout and the options as keyword arguments);
- `__call__(x0, y, gen)` -> {"loss": scalar total, <component>: scalar, ...}.

A trainer holds the denoiser it trains (`pydiffusion.diffusion.denoiser.Denoiser`: the network, its path and
parameterisation). It draws t, eps and the label dropout from the generator it is given, so a run is reproducible
and resumable. Labels are dropped (replaced by the null label, for classifier-free guidance) only on forward
(z = 0) passes: the inverse map P_y depends on y, so it is always conditioned.
"""
import torch

from pydiffusion.config import DEFAULTS, TRAINING_PASSES, load_trainer_class
from pydiffusion.data.labels import NULL_LABEL
from pydiffusion.data.patterns import prime_inverse
from pydiffusion.diffusion import losses, ops
from pydiffusion.diffusion.denoiser import FORWARD, INVERSE, Denoiser


class ImplicitTrainer:
    """z = 0 only: the single forward (denoising) loss."""

    components = ("forward",)
    passes = TRAINING_PASSES["implicit"]
    options = {}
    checks = {}

    def __init__(self, denoiser: Denoiser, loss: str = "mse", cfg_dropout: float = 0.1):
        self.denoiser, self.loss, self.cfg_dropout = denoiser, loss, cfg_dropout
        self.path = denoiser.path
        self.tables = losses.bound_tables(self.path)

    @classmethod
    def from_config(cls, denoiser: Denoiser, cfg: dict):
        return cls(denoiser, loss=cfg["loss"], cfg_dropout=cfg["cfg_dropout"], **{k: cfg[k] for k in cls.options})

    def draw(self, x0, y, gen):
        """t ~ U{1..T}, eps ~ N(0, I), and y with labels dropped for the forward direction."""
        B = x0.shape[0]
        t = torch.randint(1, self.path.T + 1, (B,), generator=gen, device=x0.device)
        eps = torch.randn(x0.shape, generator=gen, device=x0.device, dtype=x0.dtype)
        drop = torch.rand(B, generator=gen, device=x0.device) < self.cfg_dropout
        return t, eps, torch.where(drop, torch.full_like(y, NULL_LABEL), y)

    def clean_loss(self, target, pred, t):
        """Loss between clean-space signals: squared error, or the bound's formula under kl."""
        return losses.mse(pred, target) if self.loss == "mse" else losses.kl(target, pred, t, self.tables)

    def forward_loss(self, out, x0, eps, x_t, t):
        """(loss [B], x0_hat) of the forward pass: on the parameterisation's target, or the kl term."""
        x0_hat = self.denoiser.x0_from(out, x_t, t)
        if self.loss == "mse":
            return losses.mse(out, self.denoiser.target(x0, eps, t)), x0_hat
        return losses.kl(x0, x0_hat, t, self.tables), x0_hat

    def __call__(self, x0, y, gen):
        t, eps, y_fwd = self.draw(x0, y, gen)
        x_t = ops.q_sample(x0, eps, t, self.path)
        forward, _ = self.forward_loss(self.denoiser(x_t, t, y_fwd), x0, eps, x_t, t)
        forward = forward.mean()
        return {"loss": forward, "forward": forward}


class SemiImplicitTrainer(ImplicitTrainer):
    """Four losses per batch: forward, inverse, and the two roundtrips (docs/math.md#training-modes).

    The two passes of each stage share one network call (GroupNorm is per sample, so batching
    them changes nothing but speed).
    """

    components = ("forward", "inverse", "rt_fi", "rt_if")
    passes = TRAINING_PASSES["semi_implicit"]
    options = {k: DEFAULTS[k] for k in ("w_forward", "w_inverse", "w_rt_fi", "w_rt_if", "detach_intermediate")}

    def __init__(self, denoiser, loss="mse", cfg_dropout=0.1, w_forward=1.0, w_inverse=1.0, w_rt_fi=0.5, w_rt_if=0.5,
                 detach_intermediate=True):
        super().__init__(denoiser, loss, cfg_dropout)
        self.weights = {"forward": w_forward, "inverse": w_inverse, "rt_fi": w_rt_fi, "rt_if": w_rt_if}
        self.detach = detach_intermediate

    def __call__(self, x0, y, gen):
        t, eps, y_fwd = self.draw(x0, y, gen)
        p = prime_inverse(x0, y)
        x_t = ops.q_sample(x0, eps, t, self.path)
        forward_dir, inverse_dir = torch.full_like(t, FORWARD), torch.full_like(t, INVERSE)
        tt = torch.cat([t, t])
        out_f, p_hat = self.denoiser(torch.cat([x_t, x0]), tt, torch.cat([y_fwd, y]),
                                     torch.cat([forward_dir, inverse_dir])).chunk(2)
        forward, x0_hat = self.forward_loss(out_f, x0, eps, x_t, t)
        inverse = self.clean_loss(p, p_hat, t)
        mid_x0, mid_p = (x0_hat.detach(), p_hat.detach()) if self.detach else (x0_hat, p_hat)
        out_fi, out_if = self.denoiser(torch.cat([mid_x0, mid_p]), tt, torch.cat([y, y_fwd]),
                                       torch.cat([inverse_dir, forward_dir])).chunk(2)
        rt_fi = self.clean_loss(p, out_fi, t)
        rt_if = self.clean_loss(x0, self.denoiser.x0_from(out_if, mid_p, t), t)
        parts = {"forward": forward.mean(), "inverse": inverse.mean(), "rt_fi": rt_fi.mean(), "rt_if": rt_if.mean()}
        return {"loss": sum(self.weights[k] * v for k, v in parts.items()), **parts}


class ConsistencyTrainer(ImplicitTrainer):
    """Forward loss + w * MSE(denoise(renoise(x0_hat, t'), t'), x0_hat), x0_hat without gradient."""

    components = ("forward", "consistency")
    passes = TRAINING_PASSES["consistency"]
    options = {"w_consistency": DEFAULTS["w_consistency"]}

    def __init__(self, denoiser, loss="mse", cfg_dropout=0.1, w_consistency=0.5):
        super().__init__(denoiser, loss, cfg_dropout)
        self.w_consistency = w_consistency

    def __call__(self, x0, y, gen):
        t, eps, y_fwd = self.draw(x0, y, gen)
        x_t = ops.q_sample(x0, eps, t, self.path)
        out = self.denoiser(x_t, t, y_fwd)
        forward, _ = self.forward_loss(out, x0, eps, x_t, t)
        x0_hat = self.denoiser.x0_from(out.detach(), x_t, t)
        t2, eps2, _ = self.draw(x0, y, gen)
        x_t2 = ops.q_sample(x0_hat, eps2, t2, self.path)
        consistency = losses.mse(self.denoiser.x0(x_t2, t2, y_fwd), x0_hat)
        forward, consistency = forward.mean(), consistency.mean()
        return {"loss": forward + self.w_consistency * consistency, "forward": forward, "consistency": consistency}


BUILT_IN = {"implicit": ImplicitTrainer, "semi_implicit": SemiImplicitTrainer, "consistency": ConsistencyTrainer}


def trainer_class(name: str):
    """The class of a `training` value: a built-in mode, or a plugin (config.load_trainer_class)."""
    return BUILT_IN[name] if name in BUILT_IN else load_trainer_class(name)


def build_trainer(cfg: dict, denoiser: Denoiser):
    """The trainer of a validated config."""
    return trainer_class(cfg["training"]).from_config(denoiser, cfg)
