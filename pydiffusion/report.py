"""Aggregate a grid of runs: summary.json / summary.csv / report.md and the figures.

Every numeric key of each run's metrics.json and quality.json is aggregated, so metrics added
later (the quality metrics, for example) appear in the summary without changes here.
"""
import csv
import io
import math
import statistics
from pathlib import Path

import yaml

from .io import UnreadableFileError, load_json, load_torch, save_figure, save_json, save_text

AXES = ("loss", "noise", "training")
# lower is better for these; the paired comparison and the verdict use them
PAIRED = ("test_mse_forward", "test_mse_inverse", "test_mse", "test_kl")
HIGHER_IS_BETTER = ("psnr_t5", "psnr_t10", "psnr_t15", "sample_acc_guided", "coverage_entropy")
NOT_METRICS = {"seed", "epochs", "n_params"}


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
        records.append({**{k: cfg[k] for k in AXES}, "seed": cfg["seed"], "run": str(d), "metrics": numeric,
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
    from scipy.stats import t

    half = t.ppf(0.5 + level / 2, n - 1) * statistics.stdev(diffs) / math.sqrt(n)
    return mean, mean - half, mean + half


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
    """Semi-implicit minus implicit, seed by seed, per loss x noise cell, with a 95% t interval."""
    by_key = {(r["loss"], r["noise"], r["training"], r["seed"]): r for r in records}
    cells = []
    for loss, noise in sorted({(r["loss"], r["noise"]) for r in records}):
        seeds = sorted(s for (lo, n, t, s) in by_key if (lo, n, t) == (loss, noise, "semi_implicit")
                       and (loss, noise, "implicit", s) in by_key)
        if not seeds:
            continue
        cell = {"loss": loss, "noise": noise, "seeds": seeds}
        for key in PAIRED + HIGHER_IS_BETTER + ("fd_1d",):
            diffs = [by_key[(loss, noise, "semi_implicit", s)]["metrics"][key]
                     - by_key[(loss, noise, "implicit", s)]["metrics"][key]
                     for s in seeds if key in by_key[(loss, noise, "semi_implicit", s)]["metrics"]
                     and key in by_key[(loss, noise, "implicit", s)]["metrics"]]
            if diffs:
                mean, lo, hi = t_interval(diffs)
                cell[key] = {"diff": mean, "ci_low": lo, "ci_high": hi, "n": len(diffs)}
        cells.append(cell)
    return cells


def best_configuration(summary):
    """The configuration with the lowest mean FD-1D when measured, else the lowest forward test MSE."""
    key = "fd_1d" if all("fd_1d" in row for row in summary) else "test_mse_forward"
    return min(summary, key=lambda row: row[key]["mean"])["config"], key


def _judge(effect, lower_is_better=True):
    lo, hi = effect["ci_low"], effect["ci_high"]
    if math.isnan(lo):
        return "one seed only, no interval"
    if lo <= 0 <= hi:
        return "no clear difference (the interval contains 0)"
    better = (hi < 0) if lower_is_better else (lo > 0)
    return "semi-implicit better" if better else "semi-implicit worse"


VERDICT_METRICS = (("test_mse_forward", "denoising error (forward test MSE)"), ("fd_1d", "sample quality (FD-1D)"),
                   ("sample_acc_guided", "class fidelity of guided samples"))


def verdict(cells):
    """Plain-words answer to "does semi-implicit training help?" from the paired comparisons."""
    if not cells:
        return "No loss x noise cell has both implicit and semi-implicit runs, so there is nothing to compare."
    if all(c.get("test_mse_forward", {}).get("n", 0) < 2 for c in cells):
        head = ["With one seed per configuration there is no confidence interval, so no conclusion: "
                "run more seeds (the default grid has three)."]
    else:
        head = []
        for key, words in VERDICT_METRICS:
            judged = [_judge(c[key], key not in HIGHER_IS_BETTER) for c in cells if key in c]
            if not judged:
                continue
            better, worse = judged.count("semi-implicit better"), judged.count("semi-implicit worse")
            n = len(judged)
            if better == n:
                head.append(f"On {words}, semi-implicit training is better in every loss x noise cell.")
            elif worse == n:
                head.append(f"On {words}, semi-implicit training is worse in every loss x noise cell.")
            elif better == worse == 0:
                head.append(f"On {words}, no cell shows a difference beyond the seed spread.")
            else:
                head.append(f"On {words}, semi-implicit training is better in {better}, worse in {worse} and "
                            f"indistinguishable in {n - better - worse} of {n} cells.")
    lines = []
    for c in cells:
        parts = []
        for key, _ in VERDICT_METRICS:
            if key in c:
                e = c[key]
                parts.append(f"{key} {e['diff']:+.4g} (95% CI {_fmt(e['ci_low'])} .. {_fmt(e['ci_high'])}: "
                             f"{_judge(e, key not in HIGHER_IS_BETTER)})")
        lines.append(f"- **{c['loss']} / {c['noise']}**, semi-implicit minus implicit over {c['seeds']}: " + "; ".join(parts))
    note = ("Semi-implicit training also learns the inverse map (z = 1), which implicit training never sees, so its "
            "inverse test MSE is lower by construction; the question is what the extra objectives cost or give the "
            "denoiser and its samples.")
    return "\n".join([*head, "", note, "", *lines])


def _fmt(v):
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4g}"


def _table(headers, rows):
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def write_csv(summary, path):
    keys = sorted({k for row in summary for k, v in row.items() if isinstance(v, dict)})
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["config", *AXES, "n_seeds"] + [f"{k}_{s}" for k in keys for s in ("mean", "std")])
    for row in summary:
        w.writerow([row["config"], *(row[a] for a in AXES), row["n_seeds"]]
                   + [row[k][s] if k in row else "" for k in keys for s in ("mean", "std")])
    save_text(buf.getvalue(), path)


def figures(records, summary, cells, fig_dir):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig_dir = Path(fig_dir)
    cell_keys = sorted({(r["loss"], r["noise"]) for r in records})
    colors = {"implicit": "tab:blue", "semi_implicit": "tab:orange", "consistency": "tab:green"}

    def curves(component):
        fig, axes = plt.subplots(1, len(cell_keys), figsize=(4 * len(cell_keys), 3.2), squeeze=False)
        for ax, (loss, noise) in zip(axes[0], cell_keys):
            for training in sorted({r["training"] for r in records}):
                rs = [r for r in records if (r["loss"], r["noise"], r["training"]) == (loss, noise, training)]
                keys = ["loss"] if component == "loss" else [k for k in ("forward", "inverse", "rt_fi", "rt_if", "consistency")
                                                             if rs and k in rs[0]["history"][0]]
                for k in keys:
                    per_epoch = list(zip(*[[h[k] for h in r["history"]] for r in rs]))
                    if not per_epoch:
                        continue
                    mean = [statistics.fmean(v) for v in per_epoch]
                    epochs = range(1, len(mean) + 1)
                    style = "-" if k in ("loss", "forward") else ("--" if k == "inverse" else ":")
                    ax.plot(epochs, mean, style, color=colors.get(training), label=f"{training} {k}" if component != "loss" else training)
                    ax.fill_between(epochs, [min(v) for v in per_epoch], [max(v) for v in per_epoch],
                                    color=colors.get(training), alpha=0.15)
            ax.set_title(f"{loss} / {noise}")
            ax.set_xlabel("epoch")
            ax.set_yscale("log")
            ax.legend(fontsize=7)
        axes[0][0].set_ylabel("training loss" if component == "loss" else "loss component")
        return fig

    save_figure(curves("loss"), fig_dir / "loss_curves.png")
    save_figure(curves("components"), fig_dir / "components.png")

    shown = [k for k in ("test_mse_forward", "test_mse_inverse", "test_kl", "psnr_t10", "fd_1d", "sample_acc_guided",
                         "train_time_s") if all(k in row for row in summary)]
    fig, axes = plt.subplots(1, len(shown), figsize=(3.2 * len(shown), 3.6), squeeze=False)
    for ax, key in zip(axes[0], shown):
        ax.bar(range(len(summary)), [row[key]["mean"] for row in summary], yerr=[row[key]["std"] for row in summary],
               color=[colors.get(row["training"]) for row in summary], capsize=3)
        ax.set_xticks(range(len(summary)), [f"{row['loss']}\n{row['noise']}" for row in summary], fontsize=6)
        ax.set_title(key, fontsize=9)
    from matplotlib.patches import Patch
    axes[0][0].legend(handles=[Patch(color=colors[t], label=t) for t in sorted({row["training"] for row in summary})],
                      fontsize=7)
    save_figure(fig, fig_dir / "metrics.png")

    fig, axes = plt.subplots(1, len(PAIRED), figsize=(3.2 * len(PAIRED), 3.2), squeeze=False)
    for ax, key in zip(axes[0], PAIRED):
        for i, c in enumerate(cells):
            if key in c:
                e = c[key]
                lo, hi = (e["ci_low"], e["ci_high"]) if not math.isnan(e["ci_low"]) else (e["diff"], e["diff"])
                ax.errorbar([i], [e["diff"]], yerr=[[e["diff"] - lo], [hi - e["diff"]]], fmt="o", capsize=4)
        ax.axhline(0, color="gray", lw=0.8)
        ax.set_xticks(range(len(cells)), [f"{c['loss']}\n{c['noise']}" for c in cells], fontsize=7)
        ax.set_title(f"{key}: semi - implicit", fontsize=9)
    save_figure(fig, fig_dir / "paired.png")

    names = [row["config"] for row in summary]
    fig, axes = plt.subplots(len(names), 10, figsize=(14, 1.1 * len(names) + 0.5), squeeze=False, sharey=True)
    for i, name in enumerate(names):
        r = next(r for r in sorted(records, key=lambda r: r["seed"]) if config_name(r) == name)
        s = load_torch(Path(r["run"]) / "samples.pt", "samples", "rerun the workflow to draw them again")
        for digit in range(10):
            ax = axes[i][digit]
            idx = (s["y"] == digit).nonzero().flatten()[:3]
            for j in idx:
                ax.plot(s["x"][j].numpy(), lw=0.8)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(str(digit), fontsize=8)
        axes[i][0].set_ylabel(name, fontsize=6, rotation=0, ha="right")
    save_figure(fig, fig_dir / "samples.png")
    plt.close("all")


def _samplers_section(rows):
    table = _table(["sampler", "steps", "guidance", "accuracy of guided samples", "FD-1D", "FD floor",
                    "s per 1,000 samples"],
                   [[r["sampler"], r["steps"], r["guidance"], _fmt(r["accuracy"]), _fmt(r["fd_1d"]), _fmt(r["fd_floor"]),
                     _fmt(r["seconds_per_1000"])] for r in rows])
    return ["## Samplers on the best configuration", "",
            "Each row draws the same number of samples from the same starting noise (guidance 0 is "
            "unconditional, so it has no accuracy).", "", table, ""]


def markdown(records, summary, cells, best, best_key, samplers=None):
    main = [k for k in ("test_mse_forward", "test_mse_inverse", "test_mse", "test_mae", "test_kl", "psnr_t5", "psnr_t10",
                        "psnr_t15", "fd_1d", "fd_ratio", "sample_acc_guided", "coverage_entropy", "nn_dist",
                        "final_loss", "epochs_to_5pct", "loss_mean_abs_change", "loss_increases", "train_time_s")
            if all(k in row for row in summary)]
    rows = [[row["config"], row["n_seeds"]] + [f"{_fmt(row[k]['mean'])} ± {_fmt(row[k]['std'])}" for k in main]
            for row in summary]
    paired_rows = []
    for c in cells:
        for key in PAIRED + HIGHER_IS_BETTER + ("fd_1d",):
            if key in c:
                e = c[key]
                paired_rows.append([f"{c['loss']} / {c['noise']}", key, _fmt(e["diff"]),
                                    f"{_fmt(e['ci_low'])} .. {_fmt(e['ci_high'])}", e["n"],
                                    _judge(e, key not in HIGHER_IS_BETTER)])
    seeds = sorted({r["seed"] for r in records})
    parts = [
        "# pydiffusion grid report",
        "",
        f"{len(records)} runs: {len(summary)} configurations x seeds {seeds}. Metrics are means ± standard deviation "
        "over seeds; every test metric uses the EMA weights on the 1,000 MNIST-1D test signals with fixed noise. "
        "Test KL is the full variational bound in nats per dimension.",
        "",
        "## Does semi-implicit training help?",
        "",
        verdict(cells),
        "",
        "## Results per configuration",
        "",
        _table(["configuration", "seeds"] + main, rows),
        "",
        "## Paired comparison: semi-implicit minus implicit (same seed)",
        "",
        "95% t confidence intervals over seeds. For errors and the bound, below zero favours semi-implicit; "
        "for PSNR, accuracy and coverage, above zero does.",
        "",
        _table(["cell", "metric", "mean difference", "95% CI", "seeds", "reading"], paired_rows),
        "",
        "## Best configuration",
        "",
        f"**{best}** (lowest mean {best_key}).",
        "",
        *(_samplers_section(samplers) if samplers else []),
        "## Figures",
        "",
        "![training loss](figures/loss_curves.png)",
        "",
        "![loss components](figures/components.png)",
        "",
        "![test metrics](figures/metrics.png)",
        "",
        "![paired comparison](figures/paired.png)",
        "",
        "![samples](figures/samples.png)",
        "",
        *(["![best configuration, samples per class](figures/best_per_class.png)", "",
           "![reverse trajectory](figures/trajectory.png) ![animated](figures/trajectory.gif)", "",
           "![forward vs reverse](figures/forward_reverse.png)", "",
           "![FD-1D against sampler steps](figures/samplers.png)", ""] if samplers else []),
    ]
    return "\n".join(parts)


def best_model_figures(records, best, out_dir, classifier, data_cache, n, log=print):
    """Samplers compared on the best configuration's first seed, and its figures; returns the rows."""
    from . import figures as run_figures
    from .checkpoints import load_run
    from .data import load_mnist1d
    from .quality import compare_samplers, load_classifier

    run = next(r for r in sorted(records, key=lambda r: r["seed"]) if config_name(r) == best)["run"]
    model, path, cfg = load_run(run)
    data = load_mnist1d(data_cache)
    rows = compare_samplers(model, path, cfg, load_classifier(classifier)[0], data, n=n, log=log)
    save_json({"run": run, "samplers": rows}, out_dir / "samplers.json")
    run_figures.all_for_run(model, path, cfg, data, rows, out_dir / "figures")
    return rows


def aggregate(run_dirs, out_dir, classifier=None, data_cache=None, n=1000, threads=0, log=print):
    """Write summary.json, summary.csv, report.md and figures/ for the runs into out_dir; with a
    reference classifier, also the sampler comparison and figures of the best configuration."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    out_dir = Path(out_dir)
    records = load_runs(run_dirs)
    summary = summarize(records)
    cells = paired(records)
    best, best_key = best_configuration(summary)
    figures(records, summary, cells, out_dir / "figures")
    samplers = best_model_figures(records, best, out_dir, classifier, data_cache, n, log) if classifier else None
    save_json({"configurations": summary, "paired": cells, "best": {"config": best, "by": best_key},
               "runs": [{k: v for k, v in r.items() if k != "history"} for r in records]}, out_dir / "summary.json")
    write_csv(summary, out_dir / "summary.csv")
    save_text(markdown(records, summary, cells, best, best_key, samplers), out_dir / "report.md")
