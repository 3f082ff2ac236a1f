"""Restate a committed grid's findings from the runs' numbers its summary.json holds, with the current statistics and
text: summary.json's paired cells (p-values, Holm-Bonferroni over the verdict's tests, MDEs), report.md, and the
figures that summary.json holds enough for (figures/metrics.png, figures/paired.png). The other figures need the
runs' histories, samples or weights, which are not committed: the report keeps those that are there, and rerunning
the grid (make run) redraws them all.

    .venv/bin/python scripts/restate-grid.py [findings/grid-60ep ...]   (default: every findings/*/ of a grid)
"""
import json
import re
import sys
from pathlib import Path

import yaml

from pydiffusion.files import save_figure, save_json, save_text
from pydiffusion.reporting.grid_figures import metric_bars, paired_differences
from pydiffusion.reporting.grid_stats import paired
from pydiffusion.reporting.report import markdown

ROOT = Path(__file__).resolve().parents[1]


def _rows(path: Path, key: str):
    return json.loads(path.read_text())[key] if path.exists() else None


def restate(folder: Path):
    summary = json.loads((folder / "summary.json").read_text())
    train = yaml.safe_load((folder / "train.yaml").read_text()) if (folder / "train.yaml").exists() else {}
    # runs summarised before the report named its sampler carry it in the grid's train section only
    records = [{"sampler": train.get("sampler", "ddim"), "sample_steps": train.get("sample_steps"), **r}
               for r in summary["runs"]]
    cells = paired(records)
    save_json({**summary, "paired": cells}, folder / "summary.json")
    save_figure(metric_bars(summary["configurations"]), folder / "figures" / "metrics.png")
    save_figure(paired_differences(cells), folder / "figures" / "paired.png")
    guidance = _rows(folder / "guidance.json", "guidance") or _rows(folder / "guidance" / "guidance.json", "guidance")
    text = markdown(records, summary["configurations"], cells, summary["best"]["config"], summary["best"]["by"],
                    _rows(folder / "samplers.json", "samplers"), guidance)
    figures = re.compile(r"!\[[^\]]*\]\((figures/[^)]+)\)")
    kept = [line for line in text.splitlines()
            if not figures.search(line) or all((folder / f).exists() for f in figures.findall(line))]
    save_text("\n".join(kept) + "\n", folder / "report.md")
    print(f"restated {folder}: summary.json, report.md, figures/metrics.png and paired.png")


if __name__ == "__main__":
    folders = [Path(a) for a in sys.argv[1:]] or sorted(
        f for f in (ROOT / "findings").iterdir() if (f / "summary.json").exists() and "paired" in json.loads(
            (f / "summary.json").read_text()))
    for folder in folders:
        restate(folder)
