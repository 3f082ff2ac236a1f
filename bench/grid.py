"""The default grid's wall time from a fresh clone, where it goes, and its verdict, against a baseline.

    python bench/grid.py [--baseline REF] [--config KEY=VALUE ...] [--baseline-config KEY=VALUE ...]
    python bench/grid.py --baseline-results DIR --baseline-wall SECONDS   (a baseline grid run earlier)
    python bench/grid.py --keep DIR        (and keep the grid's results: report.md, figures, summary, logs)

Clones this repository's HEAD (and REF) into a temporary folder and there, as a new user would, times
`make .venv/.installed` (the set-up of `make run`) and then the grid (`snakemake --profile profiles/local`,
from an empty results directory). For each grid it reads
- the per-rule split from Snakemake's benchmark files (jobs, total and longest seconds of each rule);
- training examples/s per mode (metrics.json: examples seen / train_time_s, one thread per job) and the
  GFLOP/s they make (FLOP per example counted with torch.utils.flop_counter), against a 2048^3 float32
  matmul on one thread measured in the same run;
- the verdict: for each loss x noise cell and metric, the reading of the paired semi-implicit minus
  implicit interval (better / worse / no clear difference), compared cell by cell with the baseline's
  and with the committed findings/grid-30ep/report.md.
Prints the speed-up (baseline wall / this wall) and writes bench/results/grid-<host>.json.
"""
import argparse
import csv
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
FINDINGS = ROOT / "findings" / "grid-30ep" / "report.md"


def timed(cmd, cwd, log):
    t0 = time.perf_counter()
    with open(log, "w") as f:
        r = subprocess.run(cmd, cwd=cwd, stdout=f, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed in {cwd}; see {log}")
    return time.perf_counter() - t0


def fresh_grid(ref, tmp, config):
    """Clone ref, set it up and run its grid; returns (checkout, results, setup_s, grid_s)."""
    checkout = tmp / f"clone-{ref}"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(checkout)], check=True)
    subprocess.run(["git", "checkout", "-q", ref], cwd=checkout, check=True)
    setup = timed(["make", ".venv/.installed"], checkout, tmp / f"setup-{ref}.log")
    results = checkout / "results"
    grid = timed([str(checkout / ".venv/bin/snakemake"), "--profile", "profiles/local", "--config", *config],
                 checkout, tmp / f"grid-{ref}.log")
    return checkout, results, setup, grid


def rule_split(results):
    """{rule: {"jobs", "total_s", "max_s", "cpu_s"}} from Snakemake's benchmark files: wall seconds of the
    rule's jobs in all and of the longest, and their CPU seconds (which other load on the machine hardly
    changes, unlike wall time)."""
    split = {}
    for tsv in sorted((results / "benchmarks").rglob("*.tsv")):
        rule = tsv.parent.name if tsv.parent != results / "benchmarks" else tsv.stem
        row = next(csv.DictReader(tsv.open(), delimiter="\t"))
        seconds = float(row["s"])
        out = split.setdefault(rule, {"jobs": 0, "total_s": 0.0, "max_s": 0.0, "cpu_s": 0.0})
        out["jobs"] += 1
        out["total_s"] += seconds
        out["max_s"] = max(out["max_s"], seconds)
        out["cpu_s"] += float(row["cpu_time"])
    return split


def flop_per_example(training, cfg_overrides=None):
    """FLOP of one training example (forward + backward) of the default UNet, by torch.utils.flop_counter."""
    from torch.utils.flop_counter import FlopCounterMode

    from pydiffusion.config import validate
    from pydiffusion.diffusion.denoiser import Denoiser
    from pydiffusion.diffusion.paths import NoisePath
    from pydiffusion.nets.backbones import build_model
    from pydiffusion.training.trainers import build_trainer

    cfg = validate({**(cfg_overrides or {}), "training": training})
    model = build_model(cfg)
    trainer = build_trainer(cfg, Denoiser.from_config(model, NoisePath(cfg["noise"], cfg["T"]), cfg))
    x0, y = torch.randn(cfg["batch_size"], 40), torch.arange(cfg["batch_size"]) % 10
    with FlopCounterMode(display=False) as counter:
        trainer(x0, y, torch.Generator().manual_seed(0))["loss"].backward()
    return counter.get_total_flops() / cfg["batch_size"]


def matmul_gflops(n=2048, repeats=5):
    """Median GFLOP/s of an n^3 float32 matmul on one thread: the attainable peak of this core."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    torch.set_num_threads(threads)
    return 2 * n**3 / statistics.median(times) / 1e9


def training_speed(results, flops, peak):
    """Per training mode: median examples/s over its runs and the GFLOP/s that makes."""
    rates = {}
    for metrics in results.glob("runs/*/seed*/metrics.json"):
        m = json.loads(metrics.read_text())
        cfg = yaml.safe_load((metrics.parent / "config.yaml").read_text())
        examples = m["epochs"] * (4000 // cfg["batch_size"]) * cfg["batch_size"]
        rates.setdefault(m["training"], []).append(examples / m["train_time_s"])
    out = {}
    for training, values in rates.items():
        ex_s = statistics.median(values)
        gflops = ex_s * flops[training] / 1e9
        out[training] = {"runs": len(values), "examples_per_s": ex_s, "gflop_per_s": gflops,
                         "share_of_matmul_peak": gflops / peak}
    return out


def verdict_of_summary(results):
    """{"loss / noise metric": reading} from a grid's summary.json, the report's words without their reason."""
    from pydiffusion.reporting.grid_stats import HIGHER_IS_BETTER, VERDICT_METRICS
    from pydiffusion.reporting.grid_stats import judge as _judge

    summary = json.loads((results / "summary.json").read_text())
    return {f"{c['loss']} / {c['noise']} {key}": _judge(c[key], key not in HIGHER_IS_BETTER).split(" (")[0]
            for c in summary["paired"] for key, _ in VERDICT_METRICS if key in c}


def verdict_of_report(report):
    """The same readings from the paired table of a committed report.md."""
    from pydiffusion.reporting.grid_stats import VERDICT_METRICS

    keys = {key for key, _ in VERDICT_METRICS}
    out = {}
    for cell, metric, reading in re.findall(r"^\| (\w+ / \w+) \| (\w+) \|[^|]*\|[^|]*\|[^|]*\| ([^|(]+?) (?:\(|\|)",
                                            report.read_text(), flags=re.M):
        if metric in keys:
            out[f"{cell} {metric}"] = reading.strip()
    return out


def disagreements(a, b):
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def measure(results, setup_s, grid_s, flops, peak):
    return {"setup_s": setup_s, "grid_s": grid_s, "wall_s": (setup_s or 0) + grid_s, "rules": rule_split(results),
            "training": training_speed(results, flops, peak), "verdict": verdict_of_summary(results)}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", nargs="*", default=[], help="--config values of this grid (default: none)")
    p.add_argument("--baseline", help="a git ref whose grid is run the same way, for the speed-up")
    p.add_argument("--baseline-config", nargs="*", default=["train={epochs: 30}"],
                   help="--config values of the baseline's grid")
    p.add_argument("--baseline-results", type=Path, help="the results folder of a baseline grid run earlier")
    p.add_argument("--baseline-wall", type=float, help="with --baseline-results: its grid's wall seconds")
    p.add_argument("--baseline-note", default="", help="how the baseline was run (recorded in the JSON)")
    p.add_argument("--keep", type=Path, help="copy this grid's results folder (report, figures, runs) here")
    args = p.parse_args()
    torch.set_num_threads(1)
    peak = matmul_gflops()
    flops = {t: flop_per_example(t) for t in ("implicit", "semi_implicit")}
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    out = {"host": platform.node(), "cores": len(os.sched_getaffinity(0)), "head": head,
           "matmul_1thread_gflop_per_s": peak, "flop_per_example": flops}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        _, results, setup_s, grid_s = fresh_grid("HEAD", tmp, args.config)
        out["this"] = {"ref": head, "config": args.config, **measure(results, setup_s, grid_s, flops, peak)}
        if args.keep:
            shutil.copytree(results, args.keep, ignore=shutil.ignore_patterns("wandb", "*.pt"))
        (ROOT / "bench" / "results").mkdir(exist_ok=True)
        if args.baseline:
            _, base_results, base_setup, base_grid = fresh_grid(args.baseline, tmp, args.baseline_config)
            out["baseline"] = {"ref": args.baseline, "config": args.baseline_config,
                               **measure(base_results, base_setup, base_grid, flops, peak)}
        elif args.baseline_results:
            out["baseline"] = {"results": str(args.baseline_results), "note": args.baseline_note,
                               **measure(args.baseline_results, None, args.baseline_wall, flops, peak)}
    this = out["this"]
    print(f"matmul 2048^3, 1 thread: {peak:.1f} GFLOP/s; FLOP per example: "
          + ", ".join(f"{k} {v / 1e6:.1f} M" for k, v in flops.items()))
    print(f"this ({head}): set-up {this['setup_s']:.0f} s + grid {this['grid_s']:.0f} s = {this['wall_s']:.0f} s")
    for name, run in [("this", this)] + ([("baseline", out["baseline"])] if "baseline" in out else []):
        for rule, r in run["rules"].items():
            print(f"  {name:8s} {rule:12s} {r['jobs']:3d} jobs  {r['total_s']:7.1f} s in all, longest {r['max_s']:6.1f} s, "
                  f"{r['cpu_s']:7.1f} CPU s")
        for training, t in run["training"].items():
            print(f"  {name:8s} {training:14s} {t['examples_per_s']:6.0f} ex/s  {t['gflop_per_s']:5.1f} GFLOP/s "
                  f"({100 * t['share_of_matmul_peak']:.0f}% of the matmul)")
    if "baseline" in out:
        base = out["baseline"]
        out["speedup_grid"] = base["grid_s"] / this["grid_s"]
        out["speedup_cpu"] = (sum(r["cpu_s"] for r in base["rules"].values())
                              / sum(r["cpu_s"] for r in this["rules"].values()))
        out["verdict_disagreements_with_baseline"] = disagreements(this["verdict"], base["verdict"])
        print(f"speed-up of the grid against the baseline: x{out['speedup_grid']:.2f} in wall time "
              f"({base['grid_s']:.0f} s -> {this['grid_s']:.0f} s), x{out['speedup_cpu']:.2f} in the jobs' CPU time")
        print(f"verdict cells that differ from the baseline's: {out['verdict_disagreements_with_baseline'] or 'none'}")
    if FINDINGS.exists():
        committed = verdict_of_report(FINDINGS)
        out["verdict_disagreements_with_findings"] = disagreements(this["verdict"], committed)
        print(f"verdict cells that differ from {FINDINGS.relative_to(ROOT)}: "
              f"{out['verdict_disagreements_with_findings'] or 'none'} (of {len(committed)})")
    target = ROOT / "bench" / "results" / f"grid-{platform.node()}.json"
    target.write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")
    print(f"wrote {target}")
    sys.exit(0)


if __name__ == "__main__":
    main()
