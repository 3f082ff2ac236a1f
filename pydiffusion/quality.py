"""Generation quality on MNIST-1D: a reference classifier and what it measures of samples.

The classifier is a small 1-D CNN trained once per dataset; its penultimate features play the
role Inception features play for FID: FD-1D is the Frechet distance between the feature
Gaussians of samples and of the test set, shown beside its floor (a train subset of the same
size against the test set).
"""
import math
import time

import torch
from torch import nn
import torch.nn.functional as F

from .data import NUM_CLASSES
from .io import save_torch
from .models import NULL_LABEL
from .sampling import guided, sample_ddim


class Classifier(nn.Module):
    """Conv-BN-ReLU stacks 40 -> 20 -> 10, global average and max pooling, a 128-d feature layer."""

    def __init__(self, width: int = 32, features: int = 128):
        super().__init__()

        def block(c_in, c_out, k):
            return [nn.Conv1d(c_in, c_out, k, padding=k // 2), nn.BatchNorm1d(c_out), nn.ReLU()]

        self.body = nn.Sequential(*block(1, width, 5), *block(width, width, 5), nn.MaxPool1d(2),
                                  *block(width, 2 * width, 3), *block(2 * width, 2 * width, 3), nn.MaxPool1d(2),
                                  *block(2 * width, 2 * width, 3))
        self.feature = nn.Sequential(nn.Linear(4 * width, features), nn.ReLU())
        self.head = nn.Linear(features, NUM_CLASSES)

    def features(self, x):
        h = self.body(x[:, None])
        return self.feature(torch.cat([h.mean(-1), h.amax(-1)], dim=1))

    def forward(self, x):
        return self.head(self.features(x))


def augment(x, gen):
    """Light augmentation: a random shift of up to 3 samples (zero fill), scale 0.9-1.1, small noise."""
    B, L = x.shape
    shift = torch.randint(-3, 4, (B,), generator=gen)
    idx = (torch.arange(L)[None] - shift[:, None])
    valid = (idx >= 0) & (idx < L)
    out = torch.where(valid, x.gather(1, idx.clamp(0, L - 1)), torch.zeros(()))
    scale = 0.9 + 0.2 * torch.rand(B, 1, generator=gen)
    return out * scale + 0.05 * torch.randn(x.shape, generator=gen)


@torch.no_grad()
def accuracy(model, x, y, batch_size=1000):
    model.eval()
    correct = sum((model(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum().item()
                  for i in range(0, len(x), batch_size))
    return correct / len(x)


def train_classifier(x, y, x_test, y_test, seed=0, epochs=20, batch_size=128, lr=3e-3, log=print):
    """(classifier, test accuracy): AdamW with a one-cycle schedule on augmented training signals."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = Classifier()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-2)
    steps = epochs * (len(x) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    t0 = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(x), generator=gen)
        for i in range(len(x) // batch_size):
            idx = perm[i * batch_size:(i + 1) * batch_size]
            loss = F.cross_entropy(model(augment(x[idx], gen)), y[idx], label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        if (epoch + 1) % 10 == 0 or epoch + 1 == epochs:
            log(f"classifier epoch {epoch + 1}: test accuracy {accuracy(model, x_test, y_test):.4f} "
                f"({time.perf_counter() - t0:.0f} s)")
    return model.eval(), accuracy(model, x_test, y_test)


def save_classifier(model, test_acc, path):
    save_torch({"state_dict": model.state_dict(), "test_acc": test_acc}, path)


def load_classifier(path):
    """(classifier in eval mode, the test accuracy recorded when it was trained)."""
    d = torch.load(path, map_location="cpu")
    model = Classifier()
    model.load_state_dict(d["state_dict"])
    return model.eval(), d["test_acc"]


@torch.no_grad()
def features(classifier, x, batch_size=1000):
    return torch.cat([classifier.features(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]).double()


def frechet_distance(feat_a, feat_b, eps=1e-6):
    """||mu_a - mu_b||^2 + Tr(C_a + C_b - 2 (C_a C_b)^(1/2)) of the two feature Gaussians (float64)."""
    import numpy as np
    from scipy import linalg

    a, b = feat_a.double().numpy(), feat_b.double().numpy()
    mu_a, mu_b = a.mean(0), b.mean(0)
    c_a, c_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean, _ = linalg.sqrtm(c_a @ c_b, disp=False)
    if not np.isfinite(covmean).all():  # near-singular product: offset the diagonals (as pytorch-fid does)
        offset = np.eye(c_a.shape[0]) * eps
        covmean = linalg.sqrtm((c_a + offset) @ (c_b + offset))
    covmean = covmean.real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(c_a) + np.trace(c_b) - 2 * np.trace(covmean))


def class_entropy(predictions):
    """Entropy of the predicted-class histogram divided by its maximum, log(10): 1 = perfectly even."""
    p = torch.bincount(predictions, minlength=NUM_CLASSES).double() / len(predictions)
    p = p[p > 0]
    return float(-(p * p.log()).sum() / math.log(NUM_CLASSES))


def nearest_distance(x, reference, batch_size=500):
    """Mean Euclidean distance of each row of x to its nearest row of `reference`."""
    return float(torch.cat([torch.cdist(x[i:i + batch_size].double(), reference.double(),
                                        compute_mode="donot_use_mm_for_euclid_dist").amin(1)
                            for i in range(0, len(x), batch_size)]).mean())


@torch.no_grad()
def draw(model, path, cfg, n, guidance, seed, steps=None, sampler=sample_ddim, **kw):
    """n samples, labels 0..9 in turn (or the null label when guidance is 0)."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % NUM_CLASSES
    labels = torch.full_like(y, NULL_LABEL) if guidance == 0 else y
    x_T = torch.randn((n, 40), generator=gen)
    f = guided(model, labels, guidance)
    return sampler(f, x_T, path, steps or cfg["sample_steps"], prediction=cfg["prediction"], clip=cfg["clip"], **kw), y


def sample_quality(classifier, x, y, x_test, feat_test=None):
    """Accuracy of samples meant to be class y, and FD-1D against the test set."""
    feat_test = features(classifier, x_test) if feat_test is None else feat_test
    pred = classifier(x).argmax(1)
    return {"accuracy": float((pred == y).double().mean()), "fd_1d": frechet_distance(features(classifier, x), feat_test)}


def evaluate_quality(model, path, cfg, classifier, data, n=1000, seed=0):
    """The quality metrics of one trained model (EMA weights), DDIM with the run's sample_steps."""
    x, _, x_test, _ = data
    feat_test = features(classifier, x_test)
    samples, y = draw(model, path, cfg, n, cfg["guidance"] or 1.0, seed)
    guided_q = sample_quality(classifier, samples, y, x_test, feat_test)
    uncond, _ = draw(model, path, cfg, n, 0.0, seed + 1)
    floor_idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:n]
    fd_floor = frechet_distance(features(classifier, x[floor_idx]), feat_test)
    return {
        "sample_acc_guided": guided_q["accuracy"],
        "fd_1d": guided_q["fd_1d"],
        "fd_floor": fd_floor,
        "fd_ratio": guided_q["fd_1d"] / fd_floor,
        "fd_1d_unconditional": sample_quality(classifier, uncond, y, x_test, feat_test)["fd_1d"],
        "coverage_entropy": class_entropy(classifier(uncond).argmax(1)),
        "nn_dist": nearest_distance(samples, x),
        "nn_dist_test_floor": nearest_distance(x_test, x),
    }


def compare_samplers(model, path, cfg, classifier, data, n=1000, seed=0, log=print):
    """Quality and time per 1,000 samples of DDPM (all T steps), DDIM at 5/10/20 steps, DPM-Solver++(2M)
    at 5/10/20 steps, and classifier-free guidance scales 0, 1 and 3 (DDIM, the run's steps)."""
    from .sampling import sample_ddpm, sample_dpmpp_2m

    x, _, x_test, _ = data
    feat_test = features(classifier, x_test)
    floor_idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:n]
    fd_floor = frechet_distance(features(classifier, x[floor_idx]), feat_test)
    T = path.T

    def ddpm(f, x_T, path, steps, prediction, clip):
        return sample_ddpm(f, x_T, path, prediction, clip, generator=torch.Generator().manual_seed(seed + 7))

    settings = [("ddpm", T, 1.0, ddpm)]
    settings += [("ddim", k, 1.0, sample_ddim) for k in (5, 10, 20) if k <= T]
    settings += [("dpmpp_2m", k, 1.0, sample_dpmpp_2m) for k in (5, 10, 20) if k <= T]
    settings += [("ddim", cfg["sample_steps"], g, sample_ddim) for g in (0.0, 3.0)]
    rows = []
    for name, steps, guidance, sampler in settings:
        t0 = time.perf_counter()
        samples, y = draw(model, path, cfg, n, guidance, seed, steps=steps, sampler=sampler)
        seconds = time.perf_counter() - t0
        q = sample_quality(classifier, samples, y, x_test, feat_test)
        row = {"sampler": name, "steps": steps, "guidance": guidance, "evaluations": steps * (2 if guidance not in (0.0, 1.0) else 1),
               "accuracy": q["accuracy"] if guidance != 0 else None, "fd_1d": q["fd_1d"], "fd_floor": fd_floor,
               "seconds_per_1000": seconds * 1000 / n}
        rows.append(row)
        log(f"{name} steps={steps} guidance={guidance}: FD-1D {q['fd_1d']:.3f}, accuracy {q['accuracy']:.3f}, "
            f"{row['seconds_per_1000']:.2f} s per 1000")
    return rows
