"""The figures read at a glance: every curve its own colour and dash and named in a legend, integer epochs and
timesteps, metric names from the metric table with their better direction, the verdict's measures first in the
paired figure, the per-timestep test MSE in the grid report, the ablation study's figures and `pydiffusion plot`,
one sample per panel; and one seed's spread is "n/a", not "± 0", in both reports."""
import argparse
import json
from pathlib import Path

import matplotlib.colors as mcolors
import pytest
from helpers.runs import made_up_run
from matplotlib.ticker import MaxNLocator

from pydiffusion.ablations.figures import curves_figure, effects_figure
from pydiffusion.ablations.stats import judged_metrics
from pydiffusion.ablations.text import configurations_section
from pydiffusion.cli import plot
from pydiffusion.reporting import figures, grid_figures
from pydiffusion.reporting.grid_stats import (
    BAR_METRICS,
    BETTER,
    DIFFERENCE_METRICS,
    METRICS,
    WORSE,
    load_runs,
    metric_title,
    paired,
    summarize,
)
from pydiffusion.reporting.report import markdown


@pytest.fixture
def grid(tmp_path):
    runs = []
    for seed in (0, 1):
        runs.append(made_up_run(tmp_path / "runs", "implicit", seed))
        semi = made_up_run(tmp_path / "runs", "semi_implicit", seed, offset=0.25)
        history = json.loads((semi / "history.json").read_text())
        for h in history:  # every component semi-implicit training logs
            h.update(inverse=0.4 / h["epoch"], rt_fi=0.3 / h["epoch"], rt_if=0.2 / h["epoch"])
        (semi / "history.json").write_text(json.dumps(history))
        runs.append(semi)
    records = load_runs(runs)
    return records, summarize(records), paired(records)


@pytest.fixture
def drawn(monkeypatch, tmp_path):
    saved = {}
    monkeypatch.setattr(grid_figures, "save_figure", lambda fig, path: saved.__setitem__(path.name, fig))
    return saved


def test_every_curve_is_distinguishable_and_named(grid, drawn, tmp_path):
    grid_figures.grid_figures(*grid, tmp_path)
    [ax] = drawn["components.png"].axes
    lines = ax.get_lines()
    styles = [(mcolors.to_hex(line.get_color()), str(line.get_linestyle())) for line in lines]
    assert len(lines) == 5 and len(set(styles)) == len(styles), styles
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "semi_implicit: roundtrip forward -> inverse" in labels and "semi_implicit: roundtrip inverse -> forward" in labels
    for name in ("components.png", "loss_curves.png"):
        assert isinstance(drawn[name].axes[0].xaxis.get_major_locator(), MaxNLocator)
        assert all(t == int(t) for t in drawn[name].axes[0].get_xticks())


def test_metric_titles_are_named_by_the_metric_table_with_their_direction(grid, drawn, tmp_path):
    grid_figures.grid_figures(*grid, tmp_path)
    titles = [ax.get_title().replace("\n", " ") for ax in drawn["metrics.png"].axes]
    assert titles == [metric_title(k) for k in BAR_METRICS]
    assert metric_title("fd_1d") == f"{METRICS['fd_1d'].name} (lower is better)" == "FD-1D (lower is better)"
    assert metric_title("sample_acc_guided").endswith("(higher is better)")
    assert metric_title("nn_dist") == METRICS["nn_dist"].name, "neither direction is better: none named"


def test_the_paired_figure_leads_with_the_verdicts_measures_coloured_by_their_reading(grid, drawn, tmp_path):
    grid_figures.grid_figures(*grid, tmp_path)
    axes = drawn["paired.png"].axes
    titles = [ax.get_title().replace("\n", " ") for ax in axes]
    assert titles[:2] == [metric_title("fd_1d"), metric_title("sample_acc_guided")]
    assert titles[2:] == [metric_title(k) for k in DIFFERENCE_METRICS[2:]]
    # made_up_run: semi-implicit is 0.25 higher on every metric in both seeds, so worse on FD-1D, better on accuracy
    [fd_point] = [line for line in axes[0].get_lines() if line.get_marker() == "o"]
    [acc_point] = [line for line in axes[1].get_lines() if line.get_marker() == "o"]
    assert list(fd_point.get_ydata()) == pytest.approx([0.25])
    assert mcolors.same_color(fd_point.get_color(), grid_figures.READING_COLORS[WORSE])
    assert mcolors.same_color(acc_point.get_color(), grid_figures.READING_COLORS[BETTER])
    legend = [t.get_text() for t in drawn["paired.png"].legends[0].get_texts()]
    assert legend[:2] == [BETTER, WORSE]


def test_the_per_timestep_test_mse_shows_semi_implicit_over_implicit(grid, drawn, tmp_path):
    grid_figures.grid_figures(*grid, tmp_path)
    top, bottom = drawn["test_mse_t.png"].axes
    assert [line.get_label() for line in top.get_lines()] == ["implicit", "semi_implicit"]
    [ratio] = [line for line in bottom.get_lines() if line.get_label() == "semi-implicit / implicit"]
    # made_up_run: every t of semi-implicit is (1.25 + seed / 100) / (1 + seed / 100) of implicit's, seeds 0 and 1
    assert ratio.get_ydata() == pytest.approx([(1.25 + 1.26) / (1.0 + 1.01)] * 20)


def test_one_sample_per_panel(grid, drawn, tmp_path):
    grid_figures.grid_figures(*grid, tmp_path)
    panels = drawn["samples.png"].axes
    assert len(panels) == 2 * 10 and all(len(ax.get_lines()) == 1 for ax in panels)


def test_one_seed_gives_no_spread(tmp_path):
    runs = [made_up_run(tmp_path / "runs", t, 0) for t in ("implicit", "semi_implicit")]
    records = load_runs(runs)
    summary = summarize(records)
    text = markdown(records, summary, paired(records), summary[0]["config"], "fd_1d")
    assert "± n/a" in text and "± 0 " not in text and "± 0 |" not in text


def test_a_grid_of_one_training_mode_says_it_has_no_pairs(tmp_path, drawn):
    records = load_runs([made_up_run(tmp_path / "runs", "implicit", s) for s in (0, 1)])
    grid_figures.grid_figures(records, summarize(records), paired(records), tmp_path)
    [ax] = drawn["paired.png"].axes
    assert ax.texts[0].get_text() == "no semi-implicit / implicit pairs in this grid"
    assert not drawn["test_mse_t.png"].axes[1].get_lines(), "no ratio without semi-implicit runs"


def test_one_seed_gives_no_spread_in_the_ablation_report_either():
    one_seed = {"mean": 0.512, "sd": 0.0, "n": 1}
    row = {"config": "semi", "cell": "mse-convex", "epochs": 2, "n_seeds": 1,
           "metrics": {"test_mse_forward": one_seed, "train_time_s": {"mean": 60.0, "sd": 0.0, "n": 1}}}
    table = configurations_section([row], [])
    assert "0.512 ± n/a" in table and "± 0" not in table


def test_the_ablation_figures_read_the_metric_table_and_tick_whole_timesteps():
    judged = judged_metrics(["cnn", "gru"])
    assert [(key, lower) for key, _, lower in judged][:4] == [(k, METRICS[k].lower) for k in
                                                               ("test_mse_forward", "fd_1d", "sample_acc_guided",
                                                                "coverage_entropy")]
    effect = {"g": 1.0, "g_low": 0.5, "g_high": 1.5, "reading": WORSE}
    comparisons = [{"family": "roundtrip", "config": "semi", "reference": "implicit", "cell": "mse-convex",
                    "metrics": {key: effect for key, _, _ in judged}}]
    fig = effects_figure(comparisons, judged)
    assert [ax.get_title() for ax in fig.axes][:2] == ["forward test MSE\n(lower is better)",
                                                       "FD-1D (cnn)\n(lower is better)"]
    assert fig.axes[2].get_title() == "guided accuracy (cnn)\n(higher is better)"
    summary = [{"config": name, "cell": "mse-convex", "curve": [k + 1.0 + t / 10 for t in range(20)]}
               for k, name in enumerate(["implicit", "semi"])]
    curves = curves_figure(summary, {"roundtrip": [("semi", "implicit")]}, ["mse-convex"])
    for ax in curves.axes:
        assert isinstance(ax.xaxis.get_major_locator(), MaxNLocator)
        assert all(t == int(t) for t in ax.get_xticks())
        assert ax.get_legend() is not None


def test_plot_adds_the_per_timestep_test_mse_once_the_run_has_finished(grid, monkeypatch, capsys):
    saved = []
    monkeypatch.setattr(figures, "save_figure", lambda fig, path: saved.append(fig))
    records, _, _ = grid
    finished = Path(records[0]["run"])
    plot.run(argparse.Namespace(run=str(finished), out=str(finished / "loss.png")))
    loss, mse_t = saved[0].axes
    assert mse_t.get_lines()[0].get_ydata() == pytest.approx(records[0]["test_mse_forward_t"])
    assert isinstance(mse_t.xaxis.get_major_locator(), MaxNLocator)
    assert [t.get_text() for t in loss.get_legend().get_texts()] == ["total (weighted)", "forward denoising"]
    (finished / "metrics.json").unlink()  # as while it still trains
    plot.run(argparse.Namespace(run=str(finished), out=str(finished / "loss.png")))
    assert len(saved[1].axes) == 1
    assert "test MSE per timestep" not in capsys.readouterr().out.splitlines()[-1]


def test_a_configuration_compared_with_several_references_gets_a_dash_for_each():
    names = ["semi_2x", "implicit_2x", "implicit_2x_wallclock", "semi_3x", "implicit_3x"]
    summary = [{"config": name, "cell": "mse-convex", "curve": [k + 1.0 + t / 10 for t in range(20)]}
               for k, name in enumerate(names)]
    pairs = [("semi_2x", "implicit_2x"), ("semi_2x", "implicit_2x_wallclock"), ("semi_3x", "implicit_3x")]
    relative = curves_figure(summary, {"budget": pairs}, ["mse-convex"]).axes[1]
    ratios = [line for line in relative.get_lines() if "/" in line.get_label()]
    styles = [(mcolors.to_hex(line.get_color()), line.get_linestyle()) for line in ratios]
    assert len(ratios) == 3 and len(set(styles)) == 3, styles
