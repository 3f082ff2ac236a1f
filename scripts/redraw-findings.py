"""Redraw the committed grid findings' figures that their summary.json holds enough for (figures/metrics.png and
figures/paired.png), with the current figure code. The others need the runs' histories, samples or weights, which
are not committed: they are redrawn by rerunning the grid (make run).

    .venv/bin/python scripts/redraw-findings.py [findings/grid-60ep ...]   (default: every findings/*/ of a grid)
"""
import json
import sys
from pathlib import Path

from pydiffusion.files import save_figure
from pydiffusion.reporting.grid_figures import metric_bars, paired_differences

ROOT = Path(__file__).resolve().parents[1]


def redraw(folder: Path):
    summary = json.loads((folder / "summary.json").read_text())
    save_figure(metric_bars(summary["configurations"]), folder / "figures" / "metrics.png")
    save_figure(paired_differences(summary["paired"]), folder / "figures" / "paired.png")
    print(f"redrew {folder / 'figures'}/metrics.png and paired.png")


if __name__ == "__main__":
    folders = [Path(a) for a in sys.argv[1:]] or sorted(
        f for f in (ROOT / "findings").iterdir() if (f / "summary.json").exists() and "paired" in json.loads(
            (f / "summary.json").read_text()))
    for folder in folders:
        redraw(folder)
