"""Restate a committed study's report from the runs' numbers its summary.json holds, with the current statistics
and text: report.md, summary.json and figures/ (the minimum detectable effects, a positive control added since).

    .venv/bin/python scripts/restate-study.py findings/ablations [--families-from config/ablations.yaml]

--families-from takes the families, controls and subject of that study config (their configurations must be among the
runs: findings/ablations/ holds all 240, so its control, implicit_2x against implicit, needs no new run).
"""
import argparse
import json
from pathlib import Path

import yaml

from pydiffusion.ablations.plan import read_study
from pydiffusion.ablations.report_job import write_report


def restate(folder: Path, families_from: Path | None):
    summary = json.loads((folder / "summary.json").read_text())
    section = summary["section"]
    if families_from is not None:
        current = yaml.safe_load(families_from.read_text())["ablations"]
        section = {**section, "families": current["families"], "controls": current.get("controls", []),
                   **({"subject": current["subject"]} if "subject" in current else {})}
    study = read_study(section, {})
    records = summary["runs"]
    missing = {name for pairs in study.families.values() for pair in pairs for name in pair} - {r["config"] for r in records}
    if missing:
        raise SystemExit(f"{folder}: no runs of {', '.join(sorted(missing))}; rerun the study to add them")
    write_report(records, folder, section, study.configs, study.families, study.cells, list(summary["floors"]),
                 summary["floors"])
    print(f"restated {folder / 'report.md'}, summary.json and figures/")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--families-from", type=Path)
    args = parser.parse_args()
    restate(args.folder, args.families_from)
