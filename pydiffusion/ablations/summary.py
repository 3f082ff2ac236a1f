"""The ablation study's numbers (docs/math.md#ablation-statistics): its runs loaded, each configuration
summarised per cell, every family's comparisons with Welch intervals, Hedges' g and Holm-Bonferroni, the FD
floor's spread per classifier. The report job that writes them is pydiffusion.ablations.report_job.
"""
import logging
import statistics
from pathlib import Path

from pydiffusion.ablations.stats import (
    ALPHA,
    BETTER,
    UNCLEAR,
    WORSE,
    hedges_g,
    holm,
    judged_metrics,
    min_detectable_effect,
    ratio_interval,
    welch,
)
from pydiffusion.evaluation.quality import floor_spread
from pydiffusion.files import UnreadableFileError, load_json
from pydiffusion.nets.classifiers import load_classifier
from pydiffusion.reporting.grid_stats import load_runs

logger = logging.getLogger(__name__)


def load_study(runs: dict) -> list:
    """One record per run of {run directory: configuration}: grid_stats.load_runs' record (numeric metrics of
    metrics.json and quality.json) with the configuration, the cell and the per-timestep curve."""
    records = load_runs(list(runs))
    for r in records:
        fix = f"delete {r['run']} and rerun the workflow to recompute it"
        curve = load_json(Path(r["run"]) / "metrics.json", "run file", fix).get("test_mse_forward_t")
        if not isinstance(curve, list) or not curve or not all(isinstance(v, (int, float)) for v in curve):
            raise UnreadableFileError(f"run file {Path(r['run']) / 'metrics.json'} has no per-timestep test MSE; {fix}")
        r.update(config=runs[r["run"]], cell=f"{r['loss']}-{r['noise']}", curve=[float(v) for v in curve])
    return records


def values(records, config, cell, key) -> list:
    """One value per seed, in seed order."""
    return [r["metrics"][key] for r in sorted(records, key=lambda r: r["seed"])
            if r["config"] == config and r["cell"] == cell and key in r["metrics"]]


def time_key(records, configs, cell) -> str:
    """train_cpu_s where every run of the configurations in the cell has it (a cost that other work on the machine
    does not inflate), else train_time_s (wall-clock; runs trained before CPU time was recorded)."""
    runs = [r for r in records if r["config"] in configs and r["cell"] == cell]
    return "train_cpu_s" if runs and all("train_cpu_s" in r["metrics"] for r in runs) else "train_time_s"


def floors(classifiers: dict, data, n: int, k: int) -> dict:
    """Per classifier name: its test accuracy, and the FD floor on disjoint train subsets (values, mean, sd)."""
    x, _, x_test, _ = data
    out = {}
    for name, path in classifiers.items():
        model, acc = load_classifier(path)
        vals = floor_spread(model, x, x_test, n, k)
        out[name] = {"test_acc": acc, "values": vals, "mean": statistics.fmean(vals),
                     "sd": statistics.stdev(vals) if len(vals) > 1 else 0.0}
    return out


def summarize(records, configs: dict, cells, classifiers, floor: dict) -> list:
    """Per configuration and cell: epochs, seeds, mean / sd of every judged measure, the training time, each
    classifier's FD ratio with its interval (seeds and floor spread), and the per-draw means."""
    rows = []
    for name in configs:
        for cell in cells:
            if not values(records, name, cell, "test_mse_forward"):
                continue
            row = {"config": name, "cell": cell, "epochs": configs[name]["epochs"], "metrics": {}}
            keys = [k for k, _, _ in judged_metrics(classifiers)] + ["train_time_s", "train_cpu_s", "test_mse_inverse"]
            keys += [k for r in records if r["config"] == name for k in r["metrics"] if "_draw" in k]
            for key in dict.fromkeys(keys):
                v = values(records, name, cell, key)
                if v:
                    row["metrics"][key] = {"mean": statistics.fmean(v), "sd": statistics.stdev(v) if len(v) > 1 else 0.0,
                                           "n": len(v)}
            row["n_seeds"] = row["metrics"]["test_mse_forward"]["n"]
            for i, clf in enumerate(classifiers):
                fd = values(records, name, cell, "fd_1d" if i == 0 else f"fd_1d_{clf}")
                if fd:
                    row.setdefault("fd_ratio", {})[clf] = ratio_interval(fd, floor[clf]["mean"], floor[clf]["sd"])
            curves = [r["curve"] for r in records if r["config"] == name and r["cell"] == cell]
            row["curve"] = [statistics.fmean(c[t] for c in curves) for t in range(len(curves[0]))]
            rows.append(row)
    return rows


def _reading(effect, lower_is_better):
    if not effect["p_holm"] < ALPHA:  # nan (too few seeds) reads as no clear difference too
        return UNCLEAR
    return BETTER if (effect["diff"] < 0) == lower_is_better else WORSE


def compare(records, families: dict, cells, classifiers) -> list:
    """Every family's comparisons (configuration against its reference) in every cell: per judged measure
    Welch's difference with its 95% interval and p-value, Hedges' g with its interval, the p-value adjusted
    by Holm-Bonferroni over the family's comparisons x cells (per measure), the reading at ALPHA, and the minimum
    detectable effect at 80% power and level ALPHA / (the family's comparisons x cells)."""
    rows = []
    for family, pairs in families.items():
        fam = []
        for name, reference in pairs:
            for cell in cells:
                row = {"family": family, "config": name, "reference": reference, "cell": cell, "metrics": {}}
                for key, _, _ in judged_metrics(classifiers):
                    a, b = values(records, name, cell, key), values(records, reference, cell, key)
                    if a and b:
                        g = hedges_g(a, b)
                        row["metrics"][key] = {**welch(a, b), "g": g["g"], "g_low": g["ci_low"], "g_high": g["ci_high"],
                                               "reference_mean": statistics.fmean(b), "n": [len(a), len(b)]}
                row["time_basis"] = time_key(records, (reference, name), cell)
                times = [statistics.fmean(values(records, c, cell, row["time_basis"]) or [float("nan")])
                         for c in (reference, name)]
                row["time_ratio"] = times[0] / times[1]
                fam.append(row)
        for key, _, lower in judged_metrics(classifiers):
            measured = [r for r in fam if key in r["metrics"]]
            for r, p in zip(measured, holm([r["metrics"][key]["p"] for r in measured])):
                e = r["metrics"][key]
                e["p_holm"] = p
                e["reading"] = _reading(e, lower)
                # at Holm's strictest step, alpha / m: an effect this large is found whatever the family's other p
                e["mde"] = min_detectable_effect(e["se"], e["df"], ALPHA / len(measured))
        rows += fam
    return rows
