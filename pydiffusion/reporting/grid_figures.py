"""The grid report's figures (loss curves, loss components, test metrics, paired differences, samples of each
configuration), on figures.py's canvases, written atomically."""
import math
import statistics
from pathlib import Path

from matplotlib.patches import Patch

from pydiffusion.data.labels import NUM_CLASSES
from pydiffusion.files import load_torch, save_figure
from pydiffusion.reporting.figures import new_figure, show
from pydiffusion.reporting.grid_stats import BAR_METRICS, DIFFERENCE_METRICS, config_name

TRAINING_COLORS = {"implicit": "tab:blue", "semi_implicit": "tab:orange", "consistency": "tab:green"}


def grid_figures(records, summary, cells, fig_dir):
    """The report's figures of the whole grid (records, summary and cells as pydiffusion.reporting.grid_stats makes them)."""
    fig_dir = Path(fig_dir)
    save_figure(_grid_curves(records, "loss"), fig_dir / "loss_curves.png")
    save_figure(_grid_curves(records, "components"), fig_dir / "components.png")
    save_figure(_metric_bars(summary), fig_dir / "metrics.png")
    save_figure(_paired_differences(cells), fig_dir / "paired.png")
    save_figure(_samples_per_configuration(records, summary), fig_dir / "samples.png")


def _grid_curves(records, component):
    """Per loss x noise cell, the training loss ("loss") or each of its components per epoch, the mean over
    seeds with their range shaded, one colour per training mode."""
    cell_keys = sorted({(r["loss"], r["noise"]) for r in records})
    fig, axes = new_figure((4 * len(cell_keys), 3.2), 1, len(cell_keys), squeeze=False)
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
                ax.plot(epochs, mean, style, color=TRAINING_COLORS.get(training),
                        label=f"{training} {k}" if component != "loss" else training)
                ax.fill_between(epochs, [min(v) for v in per_epoch], [max(v) for v in per_epoch],
                                color=TRAINING_COLORS.get(training), alpha=0.15)
        ax.set_title(f"{loss} / {noise}")
        ax.set_xlabel("epoch")
        ax.set_yscale("log")
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("training loss" if component == "loss" else "loss component")
    return fig


def _metric_bars(summary):
    shown = [k for k in BAR_METRICS if all(k in row for row in summary)]
    fig, axes = new_figure((3.2 * len(shown), 3.6), 1, len(shown), squeeze=False)
    for ax, key in zip(axes[0], shown):
        ax.bar(range(len(summary)), [row[key]["mean"] for row in summary], yerr=[row[key]["std"] for row in summary],
               color=[TRAINING_COLORS.get(row["training"]) for row in summary], capsize=3)
        ax.set_xticks(range(len(summary)), [f"{row['loss']}\n{row['noise']}" for row in summary], fontsize=6)
        ax.set_title(key, fontsize=9)
    axes[0][0].legend(handles=[Patch(color=TRAINING_COLORS[t], label=t) for t in sorted({row["training"] for row in summary})],
                      fontsize=7)
    return fig


def _paired_differences(cells):
    fig, axes = new_figure((3.2 * len(DIFFERENCE_METRICS), 3.2), 1, len(DIFFERENCE_METRICS), squeeze=False)
    for ax, key in zip(axes[0], DIFFERENCE_METRICS):
        for i, c in enumerate(cells):
            if key in c:
                e = c[key]
                lo, hi = (e["ci_low"], e["ci_high"]) if not math.isnan(e["ci_low"]) else (e["diff"], e["diff"])
                ax.errorbar([i], [e["diff"]], yerr=[[e["diff"] - lo], [hi - e["diff"]]], fmt="o", capsize=4)
        ax.axhline(0, color="gray", lw=0.8)
        ax.set_xticks(range(len(cells)), [f"{c['loss']}\n{c['noise']}" for c in cells], fontsize=7)
        ax.set_title(f"{key}: semi - implicit", fontsize=9)
    return fig


def _samples_per_configuration(records, summary):
    names = [row["config"] for row in summary]
    fig, axes = new_figure((14, 1.1 * len(names) + 0.5), len(names), NUM_CLASSES, squeeze=False, sharey=True)
    for i, name in enumerate(names):
        r = next(r for r in sorted(records, key=lambda r: r["seed"]) if config_name(r) == name)
        s = load_torch(Path(r["run"]) / "samples.pt", "samples", "rerun the workflow to draw them again")
        for digit in range(NUM_CLASSES):
            ax = axes[i][digit]
            # three signals overlaid, or one image
            for j in (s["y"] == digit).nonzero().flatten()[:3 if s["x"].dim() == 2 else 1]:
                show(ax, s["x"][j], lw=0.8)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(str(digit), fontsize=8)
        axes[i][0].set_ylabel(name, fontsize=6, rotation=0, ha="right")
    return fig
