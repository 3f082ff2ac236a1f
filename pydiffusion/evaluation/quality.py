"""Generation quality on MNIST-1D: reference classifiers and what they measure of samples.

A classifier (pydiffusion.nets.classifiers: a 1-D CNN, or a GRU) is trained once per dataset; its penultimate
features play the role Inception features play for FID: FD-1D is the Frechet distance between the feature
Gaussians of samples and of the test set, shown beside its floor (a train subset of the same size against
the test set) and the floor's spread over disjoint train subsets (docs/math.md#sample-quality).
"""
import logging
import math
import statistics
import time
import warnings

import numpy as np
import torch
from scipy import linalg

from pydiffusion.data.labels import NUM_CLASSES
from pydiffusion.diffusion.samplers import draw_class_samples, run_sampler, steps_and_eta
from pydiffusion.nets.classifiers import (
    classifier_name,
    features,
    predict,
)

logger = logging.getLogger(__name__)


def _trace_sqrt_product_symmetric(c_a, c_b):
    """Tr((C_a C_b)^(1/2)) as the sum of sqrt eigenvalues of the symmetric PSD C_a^(1/2) C_b C_a^(1/2)."""
    w, u = np.linalg.eigh(c_a)
    root_a = (u * np.sqrt(np.clip(w, 0, None))) @ u.T
    return float(np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ c_b @ root_a), 0, None)).sum())


def frechet_distance(feat_a, feat_b, eps=1e-6):
    """||mu_a - mu_b||^2 + Tr(C_a + C_b - 2 (C_a C_b)^(1/2)) of the Gaussians fitted to two feature
    sets [N, D], in float64. As pytorch-fid: scipy's sqrtm, retried with eps added to both diagonals
    when the product is too singular for a finite root; a root with a non-negligible imaginary part
    (numerical error on a near-singular product) falls back to the exact symmetric form."""
    a, b = feat_a.double().cpu().numpy(), feat_b.double().cpu().numpy()
    mu_a, mu_b = a.mean(0), b.mean(0)
    c_a, c_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "matrix is singular" and friends: handled below
        covmean = linalg.sqrtm(c_a @ c_b)
        if not np.isfinite(covmean).all():
            offset = np.eye(c_a.shape[0]) * eps
            covmean = linalg.sqrtm((c_a + offset) @ (c_b + offset))
    if np.iscomplexobj(covmean) and np.abs(covmean.imag).max() > 1e-3 * max(1.0, np.abs(covmean.real).max()):
        tr_covmean = _trace_sqrt_product_symmetric(c_a, c_b)
    elif not np.isfinite(covmean).all():
        tr_covmean = _trace_sqrt_product_symmetric(c_a, c_b)
    else:
        tr_covmean = float(np.trace(covmean.real))
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(c_a) + np.trace(c_b) - 2 * tr_covmean)


def class_entropy(predictions):
    """Entropy of the predicted-class histogram divided by its maximum, log(10): 1 = perfectly even."""
    p = torch.bincount(predictions, minlength=NUM_CLASSES).double() / len(predictions)
    p = p[p > 0]
    return float(-(p * p.log()).sum() / math.log(NUM_CLASSES))


def nearest_distance(x, reference, batch_size=500):
    """Mean Euclidean distance of each sample of x to its nearest sample of `reference` (images flattened)."""
    x, reference = x.flatten(1), reference.flatten(1)
    return float(torch.cat([torch.cdist(x[i:i + batch_size].double(), reference.double(),
                                        compute_mode="donot_use_mm_for_euclid_dist").amin(1)
                            for i in range(0, len(x), batch_size)]).mean())


def fd_1d(classifier, x_a, x_b):
    """FD-1D: the Frechet distance between the classifier's penultimate features of two signal sets."""
    return frechet_distance(features(classifier, x_a), features(classifier, x_b))


def fd_floor(classifier, x_train, x_test, n, seed=0, feat_test=None):
    """The FD-1D a perfect generator would get: n random training signals against the test set."""
    idx = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(seed))[:n]
    feat_test = features(classifier, x_test) if feat_test is None else feat_test
    return frechet_distance(features(classifier, x_train[idx]), feat_test)


def floor_spread(classifier, x_train, x_test, n, k=5, seed=0, feat_test=None):
    """FD-1D of min(k, len(x_train) // n) disjoint sets of n training signals against the test set: how much the
    floor moves with the subset. The sets are consecutive slices of fd_floor's permutation, so the first is
    fd_floor's own."""
    perm = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(seed))
    feat_test = features(classifier, x_test) if feat_test is None else feat_test
    return [frechet_distance(features(classifier, x_train[perm[i * n:(i + 1) * n]]), feat_test)
            for i in range(min(k, len(x_train) // n))]


def sample_quality(classifier, x, y, x_test, feat_test=None):
    """Accuracy of samples meant to be class y, FD-1D against the test set, and the evenness of the
    predicted classes (coverage entropy, 1 = even)."""
    feat_test = features(classifier, x_test) if feat_test is None else feat_test
    pred = predict(classifier, x)
    return {"accuracy": float((pred == y).double().mean()), "fd_1d": frechet_distance(features(classifier, x), feat_test),
            "coverage_entropy": class_entropy(pred)}


def quality_settings(cfg: dict, T: int, sampler=None, steps=None, eta=None, guidance=None) -> dict:
    """{sampler, steps, eta, guidance} that evaluate_quality samples with: each as given, or else the run's, and
    guidance 1 where the run's is 0 (the guided samples must be guided)."""
    sampler, steps, eta = run_sampler(cfg, T, sampler, steps, eta)
    return {"sampler": sampler, "steps": steps, "eta": eta,
            "guidance": guidance if guidance is not None else (cfg["guidance"] or 1.0)}


DRAW_SEED_STEP = 100  # draw j of evaluate_quality starts from seed + 100 j (it uses seeds s, s + 1 and s + 7)


def evaluate_quality(denoiser, cfg, classifier, data, n=1000, seed=0, sampler=None, steps=None, guidance=None,
                     eta=None, more_classifiers=(), draws=1):
    """The quality metrics of one trained denoiser (of the EMA weights), as a dict of floats:

    sample_acc_guided    the classifier's accuracy on n class-conditional samples (labels 0..9 in
                         turn, guidance `guidance`, default the run's, 1 if that is 0) judged as their label
    fd_1d, fd_floor      FD-1D of those samples against the test set, and of n training signals
    fd_ratio             fd_1d / fd_floor (target <= 2)
    fd_1d_unconditional  FD-1D of n unconditional samples (null label)
    coverage_entropy     entropy of the predicted-class histogram of the unconditional samples / log 10
    nn_dist              mean Euclidean distance of each guided sample to its nearest training signal
    nn_dist_test_floor   the same for the test set: the scale of "not copied"

    Sampling: `sampler` (a name in sampling.SAMPLERS), `steps` and `eta`, each by default the run's (its
    `sampler`, `sample_steps`, `eta`: the sampler the run is meant to be used with); x_T from `seed` (guided) and
    seed + 1 (unconditional), the sampler's noise from seed + 7.
    `more_classifiers`: the classifier figures again with each of these, keys suffixed `_<its name>`
    (fd_1d_gru, ...), on the same samples. `draws` > 1: that many independent sample sets (draw j from seed
    + DRAW_SEED_STEP j); each sample-dependent key is then the mean over the draws, and `<key>_draw<j>` each
    draw's value.
    """
    x, _, x_test, _ = data
    sampler, steps, eta, g = quality_settings(cfg, denoiser.path.T, sampler, steps, eta, guidance).values()
    names = [classifier_name(c) for c in (classifier, *more_classifiers)]
    if len(set(names)) != len(names):
        raise ValueError(f"evaluate_quality: the classifiers must be of different architectures, not {names}")
    named = {"": classifier, **{f"_{name}": c for name, c in zip(names[1:], more_classifiers)}}
    feats = {suffix: features(c, x_test) for suffix, c in named.items()}
    floors = {suffix: fd_floor(c, x, x_test, n, seed, feats[suffix]) for suffix, c in named.items()}
    per_draw = []
    for j in range(draws):
        s = seed + DRAW_SEED_STEP * j
        samples, y = draw_class_samples(denoiser, n, sampler, steps, eta, g, s, noise_seed=s + 7)
        uncond, _ = draw_class_samples(denoiser, n, sampler, steps, eta, 0.0, s + 1, noise_seed=s + 7)
        q = {}
        for suffix, c in named.items():
            guided_q = sample_quality(c, samples, y, x_test, feats[suffix])
            uncond_q = sample_quality(c, uncond, y, x_test, feats[suffix])
            q |= {f"sample_acc_guided{suffix}": guided_q["accuracy"], f"fd_1d{suffix}": guided_q["fd_1d"],
                  f"fd_floor{suffix}": floors[suffix], f"fd_ratio{suffix}": guided_q["fd_1d"] / floors[suffix],
                  f"fd_1d_unconditional{suffix}": uncond_q["fd_1d"],
                  f"coverage_entropy{suffix}": uncond_q["coverage_entropy"]}
        per_draw.append(q | {"nn_dist": nearest_distance(samples, x)})
    out = {k: statistics.fmean(q[k] for q in per_draw) for k in per_draw[0]} if draws > 1 else per_draw[0]
    out["nn_dist_test_floor"] = nearest_distance(x_test, x)
    if draws > 1:
        out |= {f"{k}_draw{j}": q[k] for j, q in enumerate(per_draw) for k in q if not k.startswith("fd_floor")}
    return out


def sampler_settings(T, sample_steps):
    """(name, steps, guidance) of the comparison: DDPM with all T steps; DDIM and DPM-Solver++(2M)
    at 5, 10 and 20 steps (guidance 1); guidance 0 and 3 with DDIM at the run's steps."""
    settings = [("ddpm", T, 1.0)]
    settings += [("ddim", k, 1.0) for k in (5, 10, 20) if k <= T]
    settings += [("dpmpp_2m", k, 1.0) for k in (5, 10, 20) if k <= T]
    settings += [("ddim", sample_steps, g) for g in (0.0, 3.0)]
    return settings


def compare_samplers(denoiser, cfg, classifier, data, n=1000, seed=0, log=logger.info, settings=None):
    """Quality and time per 1,000 samples of each (name, steps, guidance) in `settings` (default
    `sampler_settings`): the same starting noise for every row, guided accuracy (None for
    guidance 0), FD-1D, its floor, coverage entropy and the number of network evaluations."""
    x, _, x_test, _ = data
    feat_test = features(classifier, x_test)
    floor = fd_floor(classifier, x, x_test, n, seed, feat_test)
    rows = []
    T = denoiser.path.T
    for name, steps, guidance in settings or sampler_settings(T, cfg["sample_steps"]):
        steps, _ = steps_and_eta(name, steps, 0.0, T)
        t0 = time.perf_counter()
        samples, y = draw_class_samples(denoiser, n, name, steps, 0.0, guidance, seed, noise_seed=seed + 7)
        seconds = time.perf_counter() - t0
        q = sample_quality(classifier, samples, y, x_test, feat_test)
        row = {"sampler": name, "steps": steps, "guidance": guidance,
               "evaluations": steps * (2 if guidance not in (0.0, 1.0) else 1),
               "accuracy": q["accuracy"] if guidance != 0 else None, "fd_1d": q["fd_1d"], "fd_floor": floor,
               "fd_ratio": q["fd_1d"] / floor, "coverage_entropy": q["coverage_entropy"],
               "seconds_per_1000": seconds * 1000 / n}
        rows.append(row)
        log(f"{name} steps={steps} guidance={guidance}: FD-1D {q['fd_1d']:.3f}, accuracy {q['accuracy']:.3f}, "
            f"{row['seconds_per_1000']:.2f} s per 1000")
    return rows


# (kind, classifier-free guidance, classifier-guidance scales): classifier-free guidance of the conditional
# network, and classifier guidance of the unconditional one (Dhariwal & Nichol's setting)
GUIDANCE_SCALES = {"classifier-free": (1.0, 1.5, 2.0, 3.0, 5.0), "classifier": (1.0, 2.0, 4.0, 8.0, 16.0)}


def compare_guidance(denoiser, cfg, classifier, noisy_classifier, data, n=1000, seed=0, log=logger.info,
                     scales=None):
    """The fidelity-diversity trade-off of the two kinds of guidance: for each scale of `scales` (default
    GUIDANCE_SCALES), n samples (DDIM, the run's sample_steps, labels 0..9 in turn) and their accuracy, FD-1D,
    its floor and the coverage entropy of the predicted classes. Classifier-free rows guide the conditional
    network with scale g; classifier rows guide the unconditional network (g = 0) with the noise-aware
    classifier at scale c. The same starting noise for every row."""
    x, _, x_test, _ = data
    feat_test = features(classifier, x_test)
    floor = fd_floor(classifier, x, x_test, n, seed, feat_test)
    rows = []
    for kind, kind_scales in (scales or GUIDANCE_SCALES).items():
        for scale in kind_scales:
            g, c = (scale, 0.0) if kind == "classifier-free" else (0.0, scale)
            t0 = time.perf_counter()
            samples, y = draw_class_samples(denoiser, n, "ddim", cfg["sample_steps"], 0.0, g, seed, noise_seed=seed + 7,
                                            classifier=noisy_classifier if c else None, classifier_scale=c)
            seconds = time.perf_counter() - t0
            q = sample_quality(classifier, samples, y, x_test, feat_test)
            rows.append({"guidance": kind, "scale": scale, "accuracy": q["accuracy"], "fd_1d": q["fd_1d"],
                         "fd_floor": floor, "fd_ratio": q["fd_1d"] / floor, "coverage_entropy": q["coverage_entropy"],
                         "seconds_per_1000": seconds * 1000 / n})
            log(f"{kind} guidance {scale}: accuracy {q['accuracy']:.3f}, FD-1D {q['fd_1d']:.3f}, "
                f"{rows[-1]['seconds_per_1000']:.2f} s per 1000")
    return rows

