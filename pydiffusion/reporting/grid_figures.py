"""The grid report's figures (loss curves, loss components, test metrics, paired differences, the per-timestep test
MSE, samples of each configuration), on figures.py's canvases, written atomically."""
import math
import statistics
import textwrap
from pathlib import Path

from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from pydiffusion.data.labels import NUM_CLASSES
from pydiffusion.files import load_torch, save_figure
from pydiffusion.reporting.figures import mse_by_t, new_figure, show
from pydiffusion.reporting.grid_stats import BAR_METRICS, DIFFERENCE_METRICS, config_name, metric_label

TRAINING_COLORS = {"implicit": "tab:blue", "semi_implicit": "tab:orange", "consistency": "tab:green"}
# each loss component its own dash (the colour is the training mode's), named in words in the legend
COMPONENTS = {"loss": ("-", "total"), "forward": ("-", "forward denoising"), "inverse": ("--", "inverse map"),
              "rt_fi": (":", "roundtrip forward -> inverse"), "rt_if": ("-.", "roundtrip inverse -> forward"),
              "consistency": ((0, (5, 1, 1, 1, 1, 1)), "consistency")}


def grid_figures(records, summary, cells, fig_dir):
    """The report's figures of the whole grid (records, summary and cells as pydiffusion.reporting.grid_stats makes them)."""
    fig_dir = Path(fig_dir)
    save_figure(_grid_curves(records, "loss"), fig_dir / "loss_curves.png")
    save_figure(_grid_curves(records, "components"), fig_dir / "components.png")
    save_figure(metric_bars(summary), fig_dir / "metrics.png")
    save_figure(paired_differences(cells), fig_dir / "paired.png")
    save_figure(_test_mse_by_t(records), fig_dir / "test_mse_t.png")
    save_figure(_samples_per_configuration(records, summary), fig_dir / "samples.png")


def _grid_curves(records, component):
    """Per loss x noise cell, the training loss ("loss") or each of its components per epoch, the mean over
    seeds with their range shaded, one colour per training mode."""
    cell_keys = sorted({(r["loss"], r["noise"]) for r in records})
    fig, axes = new_figure((4 * len(cell_keys), 3.2), 1, len(cell_keys), squeeze=False)
    for ax, (loss, noise) in zip(axes[0], cell_keys):
        for training in sorted({r["training"] for r in records}):
            rs = [r for r in records if (r["loss"], r["noise"], r["training"]) == (loss, noise, training)]
            keys = ["loss"] if component == "loss" else [k for k in list(COMPONENTS)[1:] if rs and k in rs[0]["history"][0]]
            for k in keys:
                per_epoch = list(zip(*[[h[k] for h in r["history"]] for r in rs]))
                if not per_epoch:
                    continue
                mean = [statistics.fmean(v) for v in per_epoch]
                epochs = range(1, len(mean) + 1)
                style, words = COMPONENTS[k]
                ax.plot(epochs, mean, linestyle=style, color=TRAINING_COLORS.get(training),
                        label=f"{training}: {words}" if component != "loss" else training)
                ax.fill_between(epochs, [min(v) for v in per_epoch], [max(v) for v in per_epoch],
                                color=TRAINING_COLORS.get(training), alpha=0.15)
        ax.set_title(f"{loss} / {noise}")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_yscale("log")
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("training loss" if component == "loss" else "loss component")
    return fig


def metric_bars(summary):
    shown = [k for k in BAR_METRICS if all(k in row for row in summary)]
    fig, axes = new_figure((3.2 * len(shown), 3.6), 1, len(shown), squeeze=False)
    for ax, key in zip(axes[0], shown):
        ax.bar(range(len(summary)), [row[key]["mean"] for row in summary], yerr=[row[key]["std"] for row in summary],
               color=[TRAINING_COLORS.get(row["training"]) for row in summary], capsize=3)
        ax.set_xticks(range(len(summary)), [f"{row['loss']}\n{row['noise']}" for row in summary], fontsize=6)
        ax.set_title(textwrap.fill(metric_label(key), 32), fontsize=8)
    axes[0][0].legend(handles=[Patch(color=TRAINING_COLORS[t], label=t) for t in sorted({row["training"] for row in summary})],
                      fontsize=7)
    return fig


def paired_differences(cells):
    """Semi-implicit minus implicit per cell with its 95% interval, the verdict's measures (FD-1D, guided accuracy)
    first where the runs have them."""
    shown = [k for k in DIFFERENCE_METRICS if any(k in c for c in cells)]
    fig, axes = new_figure((3.2 * max(1, len(shown)), 3.4), 1, max(1, len(shown)), squeeze=False)
    if not shown:  # a grid of one training mode has no pairs
        axes[0][0].text(0.5, 0.5, "no semi-implicit / implicit pairs in this grid", ha="center", va="center")
        axes[0][0].set_axis_off()
    for ax, key in zip(axes[0], shown):
        for i, c in enumerate(cells):
            if key in c:
                e = c[key]
                lo, hi = (e["ci_low"], e["ci_high"]) if not math.isnan(e["ci_low"]) else (e["diff"], e["diff"])
                ax.errorbar([i], [e["diff"]], yerr=[[e["diff"] - lo], [hi - e["diff"]]], fmt="o", capsize=4)
        ax.axhline(0, color="gray", lw=0.8)
        ax.set_xticks(range(len(cells)), [f"{c['loss']}\n{c['noise']}" for c in cells], fontsize=7)
        ax.set_title(textwrap.fill(f"semi-implicit minus implicit: {metric_label(key)}", 32), fontsize=8)
    return fig


def _test_mse_by_t(records):
    """Per loss x noise cell, the forward test MSE at each t (mean over seeds) of each training mode, and
    semi-implicit's over implicit's (1 = the same; above 1 = worse denoising at that t)."""
    with_t = [r for r in records if r.get("test_mse_forward_t")]
    cell_keys = sorted({(r["loss"], r["noise"]) for r in with_t})
    fig, axes = new_figure((4.2 * max(1, len(cell_keys)), 5.6), 2, max(1, len(cell_keys)), squeeze=False, sharex=True)
    for j, (loss, noise) in enumerate(cell_keys):
        means = {}
        for training in sorted({r["training"] for r in with_t}):
            curves = [r["test_mse_forward_t"] for r in with_t if (r["loss"], r["noise"], r["training"]) == (loss, noise, training)]
            if curves:
                means[training] = [statistics.fmean(v) for v in zip(*curves)]
        mse_by_t(axes[0][j], means, TRAINING_COLORS, f"{loss} / {noise}: test MSE(t)")
        axes[0][j].set_xlabel("")  # the row below names the shared axis
        if {"implicit", "semi_implicit"} <= set(means):
            ratio = [a / b for a, b in zip(means["semi_implicit"], means["implicit"])]
            mse_by_t(axes[1][j], {"semi-implicit / implicit": ratio}, {"semi-implicit / implicit": "black"},
                     f"{loss} / {noise}: semi-implicit over implicit", log=False)
            axes[1][j].axhline(1, color="gray", lw=0.8)
    return fig


def _samples_per_configuration(records, summary):
    names = [row["config"] for row in summary]
    fig, axes = new_figure((14, 1.1 * len(names) + 0.5), len(names), NUM_CLASSES, squeeze=False, sharey=True)
    for i, name in enumerate(names):
        r = next(r for r in sorted(records, key=lambda r: r["seed"]) if config_name(r) == name)
        s = load_torch(Path(r["run"]) / "samples.pt", "samples", "rerun the workflow to draw them again")
        for digit in range(NUM_CLASSES):
            ax = axes[i][digit]
            for j in (s["y"] == digit).nonzero().flatten()[:1]:  # one sample per panel
                show(ax, s["x"][j], color=TRAINING_COLORS.get(r["training"]), lw=0.8)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(str(digit), fontsize=8)
        axes[i][0].set_ylabel(name, fontsize=6, rotation=0, ha="right")
    fig.legend(handles=[Line2D([], [], color=c, label=t) for t, c in TRAINING_COLORS.items()
                        if any(row["training"] == t for row in summary)], fontsize=7, loc="upper right")
    return fig
