"""Statistics of a grid of runs: loading them, per-configuration summaries, paired semi-implicit minus
implicit differences with t intervals and p-values, Holm-Bonferroni over the verdict's tests (its measures x
cells), the best configuration, and the judgement behind the verdict.

Every numeric key of each run's metrics.json and quality.json is aggregated, so metrics added later
appear in the summary without changes here. METRICS below is the one place that names the metrics the
reports read (a short name for figures, words for tables) and says which direction is better; the selections
after it, and the ablation study's measures, only pick from it.
"""
import math
import statistics
from pathlib import Path
from typing import NamedTuple

import yaml
from scipy.optimize import brentq
from scipy.stats import nct
from scipy.stats import t as student_t

from pydiffusion.config import MNIST1D
from pydiffusion.files import UnreadableFileError, load_json

AXES = ("loss", "noise", "training")


class Metric(NamedTuple):
    name: str  # short, with its unit: a figure's title
    words: str  # what it measures: a table's row
    lower: bool | None  # lower is better: True, False, or None where neither direction is better


# in the order of the report's columns
METRICS = {
    "test_mse_forward": Metric("forward test MSE", "denoising error (forward test MSE)", True),
    "test_mse_inverse": Metric("inverse test MSE", "inverse-map error (inverse test MSE)", True),
    "test_mse": Metric("test MSE, forward and inverse", "mean of the forward and inverse test MSE", True),
    "test_mae": Metric("forward test MAE", "forward test MAE", True),
    "test_kl": Metric("test KL, nats / dim", "the variational bound on the test set, nats per dimension", True),
    "psnr_t5": Metric("PSNR at t = 5, dB", "denoising PSNR at t = 5", False),
    "psnr_t10": Metric("PSNR at t = 10, dB", "denoising PSNR at t = 10", False),
    "psnr_t15": Metric("PSNR at t = 15, dB", "denoising PSNR at t = 15", False),
    # images only
    "ssim_t5": Metric("SSIM at t = 5", "denoising SSIM at t = 5", False),
    "ssim_t10": Metric("SSIM at t = 10", "denoising SSIM at t = 10", False),
    "ssim_t15": Metric("SSIM at t = 15", "denoising SSIM at t = 15", False),
    "fd_1d": Metric("FD-1D", "sample quality (FD-1D)", True),
    "fd_ratio": Metric("FD-1D / floor", "FD-1D over its floor (a train subset against the test set)", True),
    "sample_acc_guided": Metric("guided accuracy", "class fidelity of guided samples", False),
    "coverage_entropy": Metric("class coverage", "evenness of the classes of unconditional samples", False),
    # small is copying the training set, large is poor samples
    "nn_dist": Metric("nearest-neighbour distance", "distance of each sample to its nearest training signal", None),
    # the training modes minimise different sums, so their losses do not compare
    "final_loss": Metric("final training loss", "training loss of the last epoch", None),
    "epochs_to_5pct": Metric("epochs to 5% of the final loss", "epochs until the loss stays within 5% of its final value",
                             True),
    "loss_mean_abs_change": Metric("mean loss change per epoch", "mean change of the training loss from one epoch to the "
                                   "next", None),
    "loss_increases": Metric("epochs the loss rose", "epochs in which the training loss went up", True),
    "train_time_s": Metric("training time, s", "training time in seconds", True),
    "train_cpu_s": Metric("training CPU time, s", "training CPU time in seconds, all threads (other work on the machine "
                          "does not inflate it)", True),
}
HIGHER_IS_BETTER = tuple(key for key, metric in METRICS.items() if metric.lower is False)
# compared seed by seed (summary.json's paired cells), in the order of the report's paired table
PAIRED_METRICS = ("test_mse_forward", "test_mse_inverse", "test_mse", "test_kl", "psnr_t5", "psnr_t10", "psnr_t15",
                  "ssim_t5", "ssim_t10", "ssim_t15", "sample_acc_guided", "coverage_entropy", "fd_1d")
VERDICT_METRICS = tuple((key, METRICS[key].words) for key in ("test_mse_forward", "fd_1d", "sample_acc_guided"))
BAR_METRICS = ("test_mse_forward", "test_mse_inverse", "test_kl", "psnr_t10", "fd_1d", "sample_acc_guided",
               "train_time_s")  # figures/metrics.png
# figures/paired.png: the verdict's own measures first
DIFFERENCE_METRICS = ("fd_1d", "sample_acc_guided", "test_mse_forward", "test_mse_inverse", "test_mse", "test_kl")
# numeric keys of metrics.json that describe the run rather than measure it
NOT_METRICS = {"seed", "epochs", "n_params"}

BETTER, WORSE = "semi-implicit better", "semi-implicit worse"
ALPHA = 0.05  # the level of every interval and test
POWER = 0.8   # the power of the reports' minimum detectable effects


def with_direction(text: str, lower: bool | None, sep: str = " ") -> str:
    """text with its better direction: 'FD-1D (lower is better)'; text alone where neither direction is better."""
    return text if lower is None else f"{text}{sep}({'lower' if lower else 'higher'} is better)"


def metric_label(key: str) -> str:
    """A metric in words with its better direction, for a table's row."""
    return with_direction(METRICS[key].words, METRICS[key].lower)


def metric_title(key: str) -> str:
    """A metric's short name and unit with its better direction, for a figure's title."""
    return with_direction(METRICS[key].name, METRICS[key].lower)


def _load_config(d: Path, fix: str) -> dict:
    try:
        cfg = yaml.safe_load((d / "config.yaml").read_bytes())
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as e:
        raise UnreadableFileError(f"run file {d / 'config.yaml'} is unreadable ({type(e).__name__}); {fix}") from None
    if not isinstance(cfg, dict) or not {*AXES, "seed"} <= set(cfg):
        raise UnreadableFileError(f"run file {d / 'config.yaml'} is not a run's config; {fix}")
    return cfg


def load_runs(run_dirs):
    """One record per run: its config axes and seed, numeric metrics, and loss history. A missing or
    broken file is an UnreadableFileError naming it: a report is never made from part of a grid."""
    records = []
    for d in map(Path, run_dirs):
        fix = f"delete {d} and rerun the workflow to recompute it"
        cfg = _load_config(d, fix)
        metrics = {}
        for name in ("metrics.json", "quality.json"):
            if (d / name).exists():
                values = load_json(d / name, "run file", fix)
                if not isinstance(values, dict):
                    raise UnreadableFileError(f"run file {d / name} does not hold a mapping of metrics; {fix}")
                metrics.update(values)
        history = load_json(d / "history.json", "run file", fix)
        if not isinstance(history, list) or not all(isinstance(h, dict) and "loss" in h for h in history):
            raise UnreadableFileError(f"run file {d / 'history.json'} is not a loss history; {fix}")
        numeric = {k: float(v) for k, v in metrics.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in NOT_METRICS}
        records.append({**{k: cfg[k] for k in AXES}, "seed": cfg["seed"], "dataset": cfg.get("dataset", MNIST1D),
                        "sampler": cfg.get("sampler", "ddim"), "sample_steps": cfg.get("sample_steps"),
                        "eval_split": cfg.get("eval_split", "test"),
                        "validation_fraction": cfg.get("validation_fraction", 0.0),
                        "run": str(d), "metrics": numeric, "test_mse_forward_t": metrics.get("test_mse_forward_t"),
                        "n_params": metrics.get("n_params"), "history": history})
    return records


def config_name(r):
    return f"{r['loss']}-{r['noise']}-{r['training']}"


def t_interval(diffs, level=0.95):
    """(mean, low, high) of a t confidence interval; low = high = nan with fewer than two values."""
    n = len(diffs)
    mean = statistics.fmean(diffs)
    if n < 2:
        return mean, math.nan, math.nan
    half = student_t.ppf(0.5 + level / 2, n - 1) * statistics.stdev(diffs) / math.sqrt(n)
    return mean, mean - half, mean + half


def paired_p(diffs) -> float:
    """The two-sided p-value of a paired t test that the mean of diffs is 0; nan with fewer than two values, and
    for no spread 0 (every difference the same, not 0) or 1 (all 0)."""
    n = len(diffs)
    if n < 2:
        return math.nan
    mean, sd = statistics.fmean(diffs), statistics.stdev(diffs)
    if sd == 0:
        return 1.0 if mean == 0 else 0.0
    return float(2 * student_t.sf(abs(mean) / (sd / math.sqrt(n)), n - 1))


def holm(pvalues) -> list:
    """Holm-Bonferroni adjusted p-values, in the order given: the i-th smallest of m is multiplied by m - i + 1
    (i from 1), made non-decreasing in that order and capped at 1. nan p-values stay nan and do not count in m."""
    order = sorted((p, i) for i, p in enumerate(pvalues) if not math.isnan(p))
    m, running = len(order), 0.0
    adjusted = [math.nan] * len(pvalues)
    for rank, (p, i) in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def min_detectable_effect(se: float, df: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """The smallest true difference that a two-sided t test at level alpha detects with probability `power`, for a
    difference with standard error se and df degrees of freedom (the noncentral t's noncentrality times se: exact
    for a paired t test, close for Welch's, whose df is itself estimated); nan without a spread (fewer than two
    seeds a side), 0 for a spread of 0."""
    if not (df >= 1 and se >= 0):
        return math.nan
    if se == 0:
        return 0.0
    crit = student_t.ppf(1 - alpha / 2, df)

    def shortfall(nc):
        wrong_side = nct.cdf(-crit, df, nc)  # nan far out in the tail, where it is 0 to double precision
        return nct.sf(crit, df, nc) + (0.0 if math.isnan(wrong_side) else wrong_side) - power

    high = crit + 1.0
    while shortfall(high) < 0:
        high *= 2
    return brentq(shortfall, 0.0, high) * se


def summarize(records):
    """Per configuration: the number of seeds and mean / std / min / max of every metric."""
    groups = {}
    for r in records:
        groups.setdefault(config_name(r), []).append(r)
    summary = []
    for name, rs in sorted(groups.items()):
        row = {**{k: rs[0][k] for k in AXES}, "config": name, "n_seeds": len(rs), "n_params": rs[0]["n_params"]}
        for key in sorted({k for r in rs for k in r["metrics"]}):
            vals = [r["metrics"][key] for r in rs if key in r["metrics"]]
            row[key] = {"mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
                        "min": min(vals), "max": max(vals)}
        summary.append(row)
    return summary


def paired(records):
    """Semi-implicit minus implicit, seed by seed, per loss x noise cell, with a 95% t interval, the paired t test's
    p-value and the minimum detectable effect at 80% power from the differences' spread (nan for one seed). The
    verdict's tests (VERDICT_METRICS x cells) also get p_holm, Holm-Bonferroni over all of them: the grid's
    headline is one family of tests, and each of them is read from its adjusted p (judge)."""
    by_key = {(r["loss"], r["noise"], r["training"], r["seed"]): r for r in records}
    cells = []
    for loss, noise in sorted({(r["loss"], r["noise"]) for r in records}):
        seeds = sorted(s for (lo, n, t, s) in by_key if (lo, n, t) == (loss, noise, "semi_implicit")
                       and (loss, noise, "implicit", s) in by_key)
        if not seeds:
            continue
        cell = {"loss": loss, "noise": noise, "seeds": seeds}
        for key in PAIRED_METRICS:
            diffs = [by_key[(loss, noise, "semi_implicit", s)]["metrics"][key]
                     - by_key[(loss, noise, "implicit", s)]["metrics"][key]
                     for s in seeds if key in by_key[(loss, noise, "semi_implicit", s)]["metrics"]
                     and key in by_key[(loss, noise, "implicit", s)]["metrics"]]
            if diffs:
                mean, lo, hi = t_interval(diffs)
                se = statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else math.nan
                cell[key] = {"diff": mean, "ci_low": lo, "ci_high": hi, "n": len(diffs), "se": se,
                             "p": paired_p(diffs), "mde": min_detectable_effect(se, len(diffs) - 1)}
        cells.append(cell)
    return with_holm(cells)


def with_holm(cells):
    """cells with p_holm on each verdict measure, Holm-Bonferroni over every (cell, verdict measure) tested, and
    that measure's MDE at Holm's strictest level, ALPHA / m: an effect that large is found whatever the other
    tests give."""
    tests = [c[key] for c in cells for key, _ in VERDICT_METRICS if key in c]
    for effect, p in zip(tests, holm([e["p"] for e in tests])):
        effect["p_holm"] = p
        effect["mde"] = min_detectable_effect(effect["se"], effect["n"] - 1, ALPHA / len(tests))
    return cells


def best_configuration(summary):
    """The configuration with the lowest mean FD-1D when measured, else the lowest forward test MSE."""
    key = "fd_1d" if all("fd_1d" in row for row in summary) else "test_mse_forward"
    return min(summary, key=lambda row: row[key]["mean"])["config"], key


def judge(effect, lower_is_better=True):
    """The reading of one paired difference (semi-implicit minus implicit): a verdict measure's from its
    Holm-adjusted p at ALPHA, any other's from its (unadjusted) 95% interval; the sign says which way."""
    lo, hi = effect["ci_low"], effect["ci_high"]
    if math.isnan(lo):
        return "one seed only, no interval"
    if "p_holm" in effect:
        if not effect["p_holm"] < ALPHA:
            return "no clear difference (Holm-adjusted p >= 0.05)"
    elif lo <= 0 <= hi:
        return "no clear difference (the interval contains 0)"
    better = (effect["diff"] < 0) if lower_is_better else (effect["diff"] > 0)
    return BETTER if better else WORSE


def reading(cell, key):
    """judge() of one metric of a paired cell, in the direction METRICS gives it."""
    return judge(cell[key], METRICS[key].lower)


def verdict_tally(cells):
    """Per verdict metric measured in some cell: (words, cells better, cells worse, cells); None when no
    cell has two seeds, so that there is no interval to judge by."""
    if all(c.get("test_mse_forward", {}).get("n", 0) < 2 for c in cells):
        return None
    tally = []
    for key, words in VERDICT_METRICS:
        judged = [reading(c, key) for c in cells if key in c]
        if judged:
            tally.append((words, judged.count(BETTER), judged.count(WORSE), len(judged)))
    return tally
