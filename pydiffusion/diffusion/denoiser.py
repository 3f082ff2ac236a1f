"""One denoiser: a network read through a noise path and a parameterisation (docs/math.md#parameterisations).

`Denoiser(model, path, prediction, clip)` owns "network output -> x0_hat, eps_hat, score" and the
training target; trainers, samplers and metrics take it or its outputs. The formulas of the
parameterisations are written once in pydiffusion/diffusion/paths.py (`x0_from_output`, `output_target`), which
the reference op shares, and once in csrc/diffusion_math.h (`predict_x0`); tests hold the two equal.

`Denoiser.guided(y, guidance)` fixes the labels and the classifier-free guidance scale: the object
every sampler in `pydiffusion.diffusion.samplers` takes.
"""
import torch
import torch.nn.functional as F

from pydiffusion.config import CHOICES
from pydiffusion.data.labels import NULL_LABEL
from pydiffusion.diffusion import ops
from pydiffusion.diffusion.paths import NoisePath, output_target, unknown_prediction, x0_from_output

FORWARD, INVERSE = 0, 1  # the network's direction input: denoise, or apply the prime-inverse map P_y


def log_prob_grad(classifier, x, t, y):
    """grad_x log p(y | x, t) per sample [B, ...], with gradients on even under torch.no_grad."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        log_p = F.log_softmax(classifier(x, t), dim=1).gather(1, y[:, None]).sum()
        return torch.autograd.grad(log_p, x)[0]


class Denoiser:
    """The network `model(x, t, direction, y)` with the path, the parameterisation and the x0 clamp."""

    def __init__(self, model, path: NoisePath, prediction: str = "eps", clip: float = 5.0):
        if prediction not in CHOICES["prediction"]:
            raise unknown_prediction(prediction)
        self.model, self.path, self.prediction, self.clip = model, path, prediction, clip

    @classmethod
    def from_config(cls, model, path: NoisePath, cfg: dict) -> "Denoiser":
        return cls(model, path, cfg["prediction"], cfg["clip"])

    def __call__(self, x, t, y, direction=FORWARD):
        """The network's output; t and direction are ints or int64 [B]."""
        t = torch.as_tensor(t, device=y.device).expand(y.shape)
        return self.model(x, t, torch.full_like(t, direction) if isinstance(direction, int) else direction, y)

    def clamp(self, x0):
        return x0.clamp(-self.clip, self.clip) if self.clip > 0 else x0

    def _mean_coef(self, t, like):
        return self.path.mean_coef(t, like) if self.prediction == "mu" else None

    def x0_from(self, out, x_t, t):
        """x0_hat, clamped to [-clip, clip], from an output at (x_t, t)."""
        a, s = self.path.coef(t, x_t)
        return self.clamp(x0_from_output(out, x_t, a, s, self.prediction, self._mean_coef(t, x_t)))

    def eps_from(self, out, x_t, t):
        """eps_hat = (x_t - a_t x0_hat) / s_t, consistent with the clamped x0_hat (t >= 1)."""
        a, s = self.path.coef(t, x_t)
        return (x_t - a * self.x0_from(out, x_t, t)) / s

    def score_from(self, out, x_t, t):
        """The score grad log p_t(x_t) = -eps_hat / s_t (t >= 1)."""
        _, s = self.path.coef(t, x_t)
        return -self.eps_from(out, x_t, t) / s

    def target(self, x0, eps, t):
        """The network's training target at x_t = a_t x0 + s_t eps."""
        a, s = self.path.coef(t, x0)
        return output_target(x0, eps, a, s, self.prediction, self._mean_coef(t, x0))

    def x0(self, x_t, t, y):
        return self.x0_from(self(x_t, t, y), x_t, t)

    def eps(self, x_t, t, y):
        return self.eps_from(self(x_t, t, y), x_t, t)

    def score(self, x_t, t, y):
        return self.score_from(self(x_t, t, y), x_t, t)

    def guided(self, y: torch.Tensor, guidance: float = 1.0, classifier=None, classifier_scale: float = 0.0):
        """The denoiser for labels y with classifier-free guidance g and optional classifier guidance."""
        return GuidedDenoiser(self, y, guidance, classifier, classifier_scale)


class GuidedDenoiser:
    """A denoiser for fixed labels y, with classifier-free guidance out_u + g (out_c - out_u) (g = 1 is one
    conditional pass, g = 0 one unconditional pass) and, with a noise-aware `classifier` and a scale
    c > 0, classifier guidance (docs/math.md#guidance): an ancestral step (eta = 1, t -> t-1) moves its mean
    by c * post_var * grad log p(y | x_t, t), and every other step and x0_hat use
    eps_hat - s_t * c * grad log p(y | x_t, t). What the samplers take: `output(x, t)`, `x0(x, t)` and the
    fused reverse step `step(x, t, s, noise, eta)`, t and s ints."""

    def __init__(self, denoiser: Denoiser, y: torch.Tensor, guidance: float = 1.0, classifier=None,
                 classifier_scale: float = 0.0):
        if classifier_scale and (classifier is None or bool((y == NULL_LABEL).any())):
            raise ValueError("classifier guidance needs a noise-aware classifier and class labels (not the null label)")
        self.denoiser, self.y, self.guidance = denoiser, y, guidance
        self.classifier, self.classifier_scale = classifier, classifier_scale
        self.path = denoiser.path

    def output(self, x, t: int):
        d, y, g = self.denoiser, self.y, self.guidance
        tt = torch.full_like(y, t)
        zz = torch.full_like(y, FORWARD)
        if g == 1:
            return d.model(x, tt, zz, y)
        null = torch.full_like(y, NULL_LABEL)
        if g == 0:
            return d.model(x, tt, zz, null)
        out_c, out_u = d.model(torch.cat([x, x]), torch.cat([tt, tt]), torch.cat([zz, zz]), torch.cat([y, null])).chunk(2)
        return out_u + g * (out_c - out_u)

    def _timesteps(self, x, t: int):
        return torch.full((x.shape[0],), t, device=x.device)

    def classifier_grad(self, x, t: int):
        """c * grad_x log p(y | x_t, t)."""
        return self.classifier_scale * log_prob_grad(self.classifier, x, torch.full_like(self.y, t), self.y)

    def _guided_eps(self, out, x, t: int):
        tt = self._timesteps(x, t)
        _, s_t = self.path.coef(tt, x)
        return self.denoiser.eps_from(out, x, tt) - s_t * self.classifier_grad(x, t)

    def x0(self, x, t: int):
        out, tt = self.output(x, t), self._timesteps(x, t)
        if not self.classifier_scale:
            return self.denoiser.x0_from(out, x, tt)
        a_t, s_t = self.path.coef(tt, x)
        return self.denoiser.clamp((x - s_t * self._guided_eps(out, x, t)) / a_t)

    def step(self, x, t: int, s: int, noise, eta: float):
        """One reverse step t -> s (ops.posterior_step): returns (x_s, x0_hat). A mu network's output reaches
        the kernel as its x0_hat (the kernels read eps, x0 and v)."""
        d, out = self.denoiser, self.output(x, t)
        ancestral = eta == 1 and s == t - 1
        if self.classifier_scale and not ancestral:
            return ops.posterior_step(x, self._guided_eps(out, x, t), t, s, self.path, noise, eta, "eps", d.clip)
        if d.prediction == "mu":
            out, prediction = d.x0_from(out, x, self._timesteps(x, t)), "x0"
        else:
            prediction = d.prediction
        x_s, x0_hat = ops.posterior_step(x, out, t, s, self.path, noise, eta, prediction, d.clip)
        if self.classifier_scale:
            _, _, post_var = self.path.posterior(t, s)
            x_s = x_s + post_var.item() * self.classifier_grad(x, t)
        return x_s, x0_hat
