"""The grid report's figures read at a glance: every curve its own colour and dash and named in a legend, integer
epochs, metric names in words with their better direction, the verdict's measures first in the paired figure, the
per-timestep test MSE, one sample per panel; and one seed's spread is "n/a", not "± 0"."""
import json

import matplotlib.colors as mcolors
import pytest
from helpers.runs import made_up_run
from matplotlib.ticker import MaxNLocator

from pydiffusion.reporting import grid_figures
from pydiffusion.reporting.grid_stats import load_runs, metric_label, paired, summarize
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


def test_metric_titles_are_words_with_their_direction_and_the_verdict_leads_the_paired_figure(grid, drawn, tmp_path):
    grid_figures.grid_figures(*grid, tmp_path)
    titles = [ax.get_title().replace("\n", " ") for ax in drawn["metrics.png"].axes]
    assert titles[0] == metric_label("test_mse_forward") == "denoising error (forward test MSE) (lower is better)"
    assert "class fidelity of guided samples (higher is better)" in titles
    paired_titles = [ax.get_title().replace("\n", " ") for ax in drawn["paired.png"].axes]
    assert "sample quality (FD-1D)" in paired_titles[0] and "class fidelity" in paired_titles[1]
    assert "forward test MSE" in paired_titles[2]


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
