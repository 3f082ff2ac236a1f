"""The grid report from made-up runs (no training): the one metric table behind the report and the verdict,
the sampler it names, and the per-class figure."""
import json
import re
import runpy
import shutil
from pathlib import Path

import pytest
import torch
from helpers.runs import made_up_run
from scipy import stats as scipy_stats

from pydiffusion.data.labels import NUM_CLASSES
from pydiffusion.reporting import grid_stats
from pydiffusion.reporting.aggregate import aggregate
from pydiffusion.reporting.figures import per_class_grid
from pydiffusion.reporting.grid_stats import BETTER, HIGHER_IS_BETTER, METRICS, PAIRED_METRICS, VERDICT_METRICS, WORSE

SELECTIONS = {"PAIRED_METRICS": PAIRED_METRICS, "VERDICT_METRICS": tuple(k for k, _ in VERDICT_METRICS),
              "BAR_METRICS": grid_stats.BAR_METRICS, "DIFFERENCE_METRICS": grid_stats.DIFFERENCE_METRICS}


def test_the_metric_table_is_the_one_list_of_metric_names():
    assert set(HIGHER_IS_BETTER) == {k for k, metric in METRICS.items() if metric.lower is False}
    for name, keys in SELECTIONS.items():
        assert set(keys) <= set(METRICS), f"{name} names a metric that METRICS does not describe"
    assert all(METRICS[k].lower is not None for k in PAIRED_METRICS), "a paired difference needs a better direction"
    assert dict(VERDICT_METRICS) == {k: METRICS[k].words for k, _ in VERDICT_METRICS}


def test_report_and_verdict_read_the_metric_table(tmp_path):
    # semi-implicit is 0.5 higher on every metric, in each of three seeds: worse where lower is better
    runs = [made_up_run(tmp_path / "runs", t, s, 0.5 if t == "semi_implicit" else 0.0)
            for t in ("implicit", "semi_implicit") for s in range(3)]
    aggregate(runs, tmp_path / "out")
    report = (tmp_path / "out" / "report.md").read_text()

    header = next(line for line in report.splitlines() if line.startswith("| configuration |"))
    assert header == "| " + " | ".join(["configuration", "seeds", *METRICS]) + " |", "the table's columns, in order"
    rows = re.findall(r"^\| mse / gaussian \| (\w+) \|[^|]*\|[^|]*\| 3 \| ([^|]+) \| ([^|]+) \| ([^|]+) \| ([^|]+) \|$",
                      report, re.M)
    readings = {key: words for key, _, _, words, _ in rows}
    assert list(readings) == list(PAIRED_METRICS)
    assert {mde for *_, mde in rows} == {"0"}, "every seed differs by the same 0.5: no spread, so any effect shows"
    assert {p for _, p, *_ in rows} == {"0"}
    verdict_keys = {k for k, _ in VERDICT_METRICS}
    assert {key: p_holm for key, _, p_holm, _, _ in rows} == {k: "0" if k in verdict_keys else "-" for k in readings}
    for key, words in readings.items():
        assert words == (WORSE if METRICS[key].lower else BETTER), key
    for key, words in VERDICT_METRICS:
        everywhere = "worse" if METRICS[key].lower else "better"
        assert f"On {words}, semi-implicit training is {everywhere} in every loss x noise cell." in report

    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert set(summary["paired"][0]) == {"loss", "noise", "seeds", *PAIRED_METRICS}
    assert summary["paired"][0]["fd_1d"]["diff"] == pytest.approx(0.5)
    for name in ("loss_curves", "components", "metrics", "paired", "samples"):
        assert (tmp_path / "out" / "figures" / f"{name}.png").stat().st_size > 5_000, name


def made_up_records(diffs):
    """Grid records of two cells and len(diffs) seeds: implicit 0 on every metric, semi-implicit diffs[s] on FD-1D
    in the mse / convex cell and the alternating diffs that average to 0 everywhere else."""
    records = []
    for noise in ("convex", "gaussian"):
        for s, d in enumerate(diffs):
            records.append({"loss": "mse", "noise": noise, "training": "implicit", "seed": s,
                            "metrics": {k: 0.0 for k in PAIRED_METRICS}})
            flat = (-1.0) ** s
            records.append({"loss": "mse", "noise": noise, "training": "semi_implicit", "seed": s,
                            "metrics": {k: d if (k, noise) == ("fd_1d", "convex") else flat for k in PAIRED_METRICS}})
    return records


def test_the_verdict_is_read_after_holm_over_its_measures_and_cells():
    diffs = [1.0, 2.0, 0.5, 1.5]  # the paired t test alone: p = 0.03, its 95% interval excludes 0
    cells = grid_stats.paired(made_up_records(diffs))
    fd = next(c for c in cells if c["noise"] == "convex")["fd_1d"]
    assert fd["p"] == pytest.approx(scipy_stats.ttest_rel(diffs, [0.0] * 4).pvalue)
    assert 0.01 < fd["p"] < 0.05 and fd["ci_low"] > 0
    tests = len(cells) * len(VERDICT_METRICS)
    assert fd["p_holm"] == pytest.approx(tests * fd["p"]), "the smallest of the six p-values, times six"
    assert grid_stats.reading(next(c for c in cells if c["noise"] == "convex"), "fd_1d").startswith("no clear difference")
    assert fd["mde"] == pytest.approx(grid_stats.min_detectable_effect(fd["se"], 3, 0.05 / tests))
    assert fd["mde"] > grid_stats.min_detectable_effect(fd["se"], 3), "Holm's strictest level asks for more"
    secondary = next(c for c in cells if c["noise"] == "convex")["test_mse_inverse"]
    assert "p_holm" not in secondary and secondary["p"] == pytest.approx(1.0)
    assert grid_stats.judge({**fd, "p_holm": fd["p"]}) == WORSE, "unadjusted, the same difference reads worse"


@pytest.mark.parametrize("sampler, words", [("ddim", "DDIM at 20 steps"), ("ddpm", "the ancestral DDPM sampler")])
def test_the_report_names_the_sampler_its_quality_was_measured_with(tmp_path, sampler, words):
    runs = [made_up_run(tmp_path / "runs", t, s, sampler=sampler) for t in ("implicit", "semi_implicit") for s in (0, 1)]
    aggregate(runs, tmp_path / "out")
    assert f"of samples drawn with {words} (the runs' `sampler`)." in (tmp_path / "out" / "report.md").read_text()


def test_per_class_figure_has_one_row_per_class_of_generated_and_real_signals(tmp_path):
    per_class = 3
    samples, y = torch.randn(NUM_CLASSES * per_class, 40), torch.arange(NUM_CLASSES * per_class) % NUM_CLASSES
    x_real, y_real = torch.randn(200, 40), torch.arange(200) % NUM_CLASSES
    fig = per_class_grid(samples, y, x_real, y_real, tmp_path / "per_class.png", per_class)
    assert (tmp_path / "per_class.png").read_bytes()[:4] == b"\x89PNG"
    panels = [ax for ax in fig.axes if ax.axison]
    assert len(panels) == NUM_CLASSES * 2 * per_class, "one panel per signal"
    assert all(len(ax.lines) == 1 for ax in panels), "one signal per panel"
    rows = {ax.get_subplotspec().rowspan.start for ax in panels}
    assert rows == set(range(NUM_CLASSES))
    assert [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel()] == [f"digit {d}" for d in range(NUM_CLASSES)]
    assert {t.get_text() for t in fig.texts} == {"generated samples", "real test signals"}
    colors = {ax.lines[0].get_color() for ax in panels}
    assert len(colors) == 2, "the two kinds in two colours"


@pytest.mark.parametrize("name", ["grid-60ep", "digits"])
def test_the_committed_grid_findings_are_stated_with_the_current_statistics(tmp_path, name):
    """scripts/restate-grid.py on a copy of the committed folder: it rewrites nothing (the findings are current),
    every verdict reading carries its Holm-adjusted p, and the report links only figures that are there."""
    root = Path(__file__).resolve().parents[2]
    folder = shutil.copytree(root / "findings" / name, tmp_path / name)
    runpy.run_path(str(root / "scripts" / "restate-grid.py"), run_name="restate")["restate"](folder)
    assert (folder / "report.md").read_text() == (root / "findings" / name / "report.md").read_text(), \
        "run scripts/restate-grid.py and commit findings/"
    cells = json.loads((folder / "summary.json").read_text())["paired"]
    assert all(0 <= c[k]["p"] <= c[k]["p_holm"] <= 1 for c in cells for k, _ in VERDICT_METRICS)
    for link in re.findall(r"\]\((figures/[^)]+)\)", (folder / "report.md").read_text()):
        assert (folder / link).exists(), link
