"""The ablation study's figures: per-timestep test MSE of every comparison relative to its reference, and the
effect sizes (Hedges' g) with their intervals. Each is a matplotlib Figure on its own Agg canvas, as in
pydiffusion.reporting.figures."""
import math

from pydiffusion.ablations.stats import BETTER, WORSE
from pydiffusion.reporting.figures import mse_by_t, new_figure
from pydiffusion.reporting.grid_figures import READING_COLORS, reading_legend
from pydiffusion.reporting.grid_stats import BETTER as GRID_BETTER
from pydiffusion.reporting.grid_stats import WORSE as GRID_WORSE
from pydiffusion.reporting.grid_stats import with_direction

REFERENCE_DASHES = ("-", "--", ":", "-.")
# the grid's colours for the study's readings (summaries of older studies hold the grid's words: the same colours)
STUDY_COLORS = {BETTER: READING_COLORS[GRID_BETTER], WORSE: READING_COLORS[GRID_WORSE]}
COLORS = {**STUDY_COLORS, GRID_BETTER: STUDY_COLORS[BETTER], GRID_WORSE: STUDY_COLORS[WORSE]}


def curves_figure(summary, families: dict, cells):
    """One row per family; per cell two panels: every configuration of the family's mean x0 test MSE at
    t = 1..T (log scale), and each configuration's over its reference's (1 = the same; above 1 = worse
    denoising at that t)."""
    curve = {(row["config"], row["cell"]): row["curve"] for row in summary}
    fig, axes = new_figure((4.2 * 2 * len(cells), 2.6 * len(families)), len(families), 2 * len(cells), squeeze=False,
                           sharex=True)
    for i, (family, pairs) in enumerate(families.items()):
        # one colour per configuration in every panel of the family (the reference has no curve of its own on the
        # right)
        color = {name: f"C{k}" for k, name in enumerate(dict.fromkeys(n for pair in pairs for n in pair))}
        # and, over its references, one dash per reference of a configuration compared with several (the budget
        # family: its plain, wall-clock and evaluation-matched references)
        dashes = {f"{name} / {reference}": REFERENCE_DASHES[[r for n, r in pairs if n == name].index(reference)
                                                            % len(REFERENCE_DASHES)] for name, reference in pairs}
        for j, cell in enumerate(cells):
            absolute, relative = axes[i][2 * j], axes[i][2 * j + 1]
            mse_by_t(absolute, {name: curve[(name, cell)] for name in color if (name, cell) in curve}, color,
                     f"{family}, {cell}: test MSE(t)", fontsize=8)
            ratios = {f"{name} / {reference}": [a / b for a, b in zip(curve[(name, cell)], curve[(reference, cell)])]
                      for name, reference in pairs if (name, cell) in curve and (reference, cell) in curve}
            mse_by_t(relative, ratios, {f"{name} / {reference}": color[name] for name, reference in pairs},
                     f"{family}, {cell}: over the reference", log=False, fontsize=8, dashes=dashes)
            relative.axhline(1, color="gray", lw=0.8)
            if i < len(families) - 1:  # the bottom row names the shared t axis
                absolute.set_xlabel("")
                relative.set_xlabel("")
    return fig


def effects_figure(comparisons, judged):
    """Hedges' g (configuration minus reference) with its 95% interval, one panel per judged measure, one row
    per comparison and cell; green where the configuration is better than its reference, red where worse
    (Holm-Bonferroni, 0.05)."""
    labels = [f"{c['family']}: {c['config']} vs {c['reference']} ({c['cell']})" for c in comparisons]
    fig, axes = new_figure((2.6 * len(judged) + 3, 0.22 * len(comparisons) + 1.2), 1, len(judged), squeeze=False,
                        sharey=True)
    for ax, (key, words, lower) in zip(axes[0], judged):
        for y, c in enumerate(comparisons):
            e = c["metrics"].get(key)
            if e is None or math.isnan(e["g"]):
                continue
            color = COLORS.get(e["reading"], "gray")
            ax.errorbar([e["g"]], [y], xerr=[[e["g"] - e["g_low"]], [e["g_high"] - e["g"]]], fmt="o", ms=3,
                        color=color, capsize=2, lw=1)
        ax.axvline(0, color="gray", lw=0.8)
        ax.set_title(with_direction(words, lower, "\n"), fontsize=7)
        ax.set_xlabel("Hedges' g", fontsize=6)
        ax.tick_params(labelsize=6)
    axes[0][0].set_yticks(range(len(labels)), labels, fontsize=5)
    axes[0][0].invert_yaxis()
    reading_legend(fig, {f"configuration {words}": c for words, c in STUDY_COLORS.items()})
    return fig
