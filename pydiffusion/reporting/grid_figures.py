"""The grid report's figures (loss curves, loss components, test metrics, paired differences, the per-timestep test
MSE, samples of each configuration), on figures.py's canvases, written atomically."""
import math
import statistics
import textwrap
from pathlib import Path

from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from pydiffusion.data.labels import NUM_CLASSES
from pydiffusion.files import load_torch, save_figure
from pydiffusion.reporting.figures import COMPONENTS, mse_by_t, new_figure, show
from pydiffusion.reporting.grid_stats import (
    BAR_METRICS,
    BETTER,
    DIFFERENCE_METRICS,
    WORSE,
    config_name,
    metric_title,
    reading,
)

# a paired difference's reading (grid_stats.judge); no clear difference: gray
READING_COLORS = {BETTER: "tab:green", WORSE: "tab:red"}
TRAINING_COLORS = {"implicit": "tab:blue", "semi_implicit": "tab:orange", "consistency": "tab:green"}


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
    """Per bar metric, the mean over seeds of each configuration with its standard deviation (none for one seed),
    the training modes side by side in each loss x noise cell."""
    shown = [k for k in BAR_METRICS if all(k in row for row in summary)]
    cell_keys = sorted({(row["loss"], row["noise"]) for row in summary})
    trainings = sorted({row["training"] for row in summary})
    width = 0.8 / len(trainings)
    fig, axes = new_figure((2.8 * len(shown), 3.4), 1, len(shown), squeeze=False)
    for ax, key in zip(axes[0], shown):
        for k, training in enumerate(trainings):
            rows = [row for row in summary if row["training"] == training]
            ax.bar([cell_keys.index((row["loss"], row["noise"])) + (k - (len(trainings) - 1) / 2) * width for row in rows],
                   [row[key]["mean"] for row in rows], width,
                   yerr=[row[key]["std"] if row["n_seeds"] > 1 else 0 for row in rows],
                   color=TRAINING_COLORS.get(training), capsize=2, label=training)
        ax.set_xticks(range(len(cell_keys)), [f"{loss}\n{noise}" for loss, noise in cell_keys], fontsize=7)
        ax.tick_params(axis="y", labelsize=7)
        ax.set_title(textwrap.fill(metric_title(key), 40), fontsize=8)
    axes[0][0].legend(fontsize=7)
    fig.suptitle("mean over seeds per configuration, with its standard deviation", fontsize=9)
    fig.tight_layout()
    return fig


def paired_differences(cells):
    """Semi-implicit minus implicit per cell with its 95% interval, coloured by its reading (grid_stats.judge: Holm's
    for the verdict's measures), the verdict's measures (FD-1D, guided accuracy) first where the runs have them."""
    shown = [k for k in DIFFERENCE_METRICS if any(k in c for c in cells)]
    fig, axes = new_figure((2.8 * max(1, len(shown)), 3.4), 1, max(1, len(shown)), squeeze=False)
    if not shown:  # a grid of one training mode has no pairs
        axes[0][0].text(0.5, 0.5, "no semi-implicit / implicit pairs in this grid", ha="center", va="center")
        axes[0][0].set_axis_off()
        return fig
    for ax, key in zip(axes[0], shown):
        for i, c in enumerate(cells):
            if key in c:
                e = c[key]
                lo, hi = (e["ci_low"], e["ci_high"]) if not math.isnan(e["ci_low"]) else (e["diff"], e["diff"])
                ax.errorbar([i], [e["diff"]], yerr=[[e["diff"] - lo], [hi - e["diff"]]], fmt="o", capsize=4,
                            color=READING_COLORS.get(reading(c, key), "gray"))
        ax.axhline(0, color="gray", lw=0.8)
        ax.set_xticks(range(len(cells)), [f"{c['loss']}\n{c['noise']}" for c in cells], fontsize=7)
        ax.tick_params(axis="y", labelsize=7)
        ax.set_title(textwrap.fill(metric_title(key), 40), fontsize=8)
    axes[0][0].set_ylabel("semi-implicit minus implicit", fontsize=8)
    reading_legend(fig)
    fig.suptitle("semi-implicit minus implicit per loss x noise cell: mean over seeds, 95% interval (unadjusted); "
                 "colour: the reading, after Holm-Bonferroni for the verdict's FD-1D, guided accuracy and forward test "
                 "MSE", fontsize=9, x=0.02, ha="left")
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    return fig


def reading_legend(fig, colors=None):
    """A legend of reading -> colour (default READING_COLORS) above the figure's top right corner (clear of the panels'
    titles; the saved PNG's tight box takes it in)."""
    colors = READING_COLORS if colors is None else colors
    fig.legend(handles=[Line2D([], [], color=c, marker="o", label=words) for words, c in
                        (*colors.items(), ("no clear difference, or one seed", "gray"))],
               fontsize=7, loc="lower right", bbox_to_anchor=(1, 1), ncol=3)


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
