"""Classifier guidance (Dhariwal & Nichol 2021; docs/math.md#guidance): a noise-aware classifier
p(y | x_t, t), trained on a path's own noised training data, and the gradient of log p(y | x_t, t)
that `denoiser.GuidedDenoiser` adds to the reverse steps.

The classifier is tied to one noise path (kind, T, schedule): the file records it, and a run on another
path is refused. GroupNorm, not BatchNorm: each sample's gradient depends on that sample alone.
"""
import logging

import torch
import torch.nn.functional as F
from torch import nn

from pydiffusion.config import MNIST1D
from pydiffusion.data.labels import NUM_CLASSES
from pydiffusion.data.mnist1d import SIGNAL_LENGTH
from pydiffusion.diffusion import ops
from pydiffusion.diffusion.paths import NoisePath
from pydiffusion.files import UnreadableFileError, build_and_load, load_torch, save_torch
from pydiffusion.nets.backbones import timestep_embedding
from pydiffusion.nets.classifiers import fit

logger = logging.getLogger(__name__)


class NoisyClassifier(nn.Module):
    """Logits of p(y | x_t, t): four conv -> GroupNorm -> FiLM(t) -> SiLU blocks with two 2x average poolings
    (40 -> 20 -> 10; 8 -> 4 -> 2 on digits), mean and max pooling, a linear head. 1-D for a signal shape (L,),
    2-D for an image shape (C, H, W)."""

    def __init__(self, T: int, width: int = 32, emb_dim: int = 64, shape=(SIGNAL_LENGTH,)):
        super().__init__()
        self.T, self.width, self.emb_dim, self.shape = T, width, emb_dim, tuple(shape)
        image = len(self.shape) == 3
        conv = nn.Conv2d if image else nn.Conv1d
        self.pool = F.avg_pool2d if image else F.avg_pool1d
        self.time_mlp = nn.Sequential(nn.Linear(emb_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        channels = [(self.shape[0] if image else 1, width), (width, width), (width, 2 * width), (2 * width, 2 * width)]
        self.convs = nn.ModuleList(conv(c_in, c_out, 3, padding=1) for c_in, c_out in channels)
        self.norms = nn.ModuleList(nn.GroupNorm(8, c_out) for _, c_out in channels)
        self.films = nn.ModuleList(nn.Linear(emb_dim, 2 * c_out) for _, c_out in channels)
        self.head = nn.Linear(4 * width, NUM_CLASSES)

    def forward(self, x, t):
        emb = F.silu(self.time_mlp(timestep_embedding(t, self.emb_dim, self.T).to(x.dtype)))
        h = x if len(self.shape) == 3 else x[:, None]
        spatial = (None,) * (h.dim() - 2)
        for i, (conv, norm, film) in enumerate(zip(self.convs, self.norms, self.films)):
            scale, shift = film(emb)[(...,) + spatial].chunk(2, dim=1)
            h = F.silu(norm(conv(h)) * (1 + scale) + shift)
            if i % 2:
                h = self.pool(h, 2)
        h = h.flatten(2)
        return self.head(torch.cat([h.mean(-1), h.amax(-1)], dim=1))


@torch.no_grad()
def accuracy_by_t(classifier, path: NoisePath, x, y, ts, seed=0):
    """{t: accuracy on q_sample(x, eps, t)} with eps from `seed`, for each t in ts."""
    classifier.eval()
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for t in ts:
        x_t = ops.q_sample(x, torch.randn(x.shape, generator=gen), t, path)
        out[int(t)] = (classifier(x_t, torch.full_like(y, t)).argmax(1) == y).double().mean().item()
    return out


def train_noisy_classifier(x, y, x_test, y_test, path: NoisePath, seed=0, epochs=30, batch_size=128, lr=3e-3,
                           width=32, log=logger.info):
    """(classifier in eval mode, {t: test accuracy}) trained on q_sample(x0, eps, t), t uniform on 0..T."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = NoisyClassifier(path.T, width, shape=x.shape[1:])

    def batch_loss(idx):
        t = torch.randint(0, path.T + 1, (len(idx),), generator=gen)
        x_t = ops.q_sample(x[idx], torch.randn(x[idx].shape, generator=gen), t, path)
        return F.cross_entropy(model(x_t, t), y[idx])

    model = fit(model, len(x), batch_loss, epochs, batch_size, lr, gen,
                lambda epoch, loss: f"noisy classifier epoch {epoch}: loss {loss.item():.3f}", log)
    checkpoints = sorted({0, path.T // 4, path.T // 2, 3 * path.T // 4, path.T})
    return model, accuracy_by_t(model, path, x_test, y_test, checkpoints, seed=seed + 1)


def _path_record(path: NoisePath) -> dict:
    return {"noise": path.kind, "T": path.T, "schedule": path.schedule}


def save_noisy_classifier(model, path: NoisePath, test_acc: dict, file, dataset=MNIST1D):
    """Atomic write of the weights, the architecture, the noise path, the dataset and the test accuracy per t."""
    arch = {"T": model.T, "width": model.width, "emb_dim": model.emb_dim}
    extra = {}
    if dataset != MNIST1D:  # an MNIST-1D classifier's file stays as it was
        arch["shape"], extra["dataset"] = list(model.shape), dataset
    save_torch({"state_dict": model.state_dict(), "arch": arch, "path": _path_record(path),
                "test_acc": {str(t): a for t, a in test_acc.items()}, **extra}, file)


def load_noisy_classifier(file, path: NoisePath, dataset=MNIST1D):
    """The classifier in eval mode, refused (UnreadableFileError, one line) if trained on another path or
    another dataset."""
    fix = (f"train one with `pydiffusion noisy-classifier --dataset {dataset} --noise {path.kind} --T {path.T} "
           f"--schedule {path.schedule} --out FILE`")
    d = load_torch(file, "noisy classifier", fix)
    if not isinstance(d, dict) or not {"state_dict", "arch", "path", "test_acc"} <= set(d):
        raise UnreadableFileError(f"{file} is not a pydiffusion noisy classifier; {fix}")
    if d["path"] != _path_record(path):
        raise UnreadableFileError(f"noisy classifier {file} was trained on the path {d['path']}, the run uses "
                                  f"{_path_record(path)}; {fix}")
    if d.get("dataset", MNIST1D) != dataset:
        raise UnreadableFileError(f"noisy classifier {file} was trained on {d.get('dataset', 'mnist1d')}, the run uses "
                                  f"{dataset}; {fix}")
    if not isinstance(d["arch"], dict):
        raise UnreadableFileError(f"{file} is not a pydiffusion noisy classifier; {fix}")
    model = build_and_load(lambda: NoisyClassifier(**d["arch"]), d["state_dict"], f"noisy classifier {file}", fix)
    return model.eval()
