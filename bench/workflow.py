"""Workflow benchmarks: planning a 1,000-job grid, and the smoke grid locally vs through SLURM.

    python bench/workflow.py [--slurm]      (--slurm starts a local one-node SLURM; needs root)

Medians of repeated plans; one timed run of each smoke grid (each run trains from scratch).
Writes bench/results/workflow-<host>.json.
"""
import argparse
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from workflow_helpers import job_counts, snakemake  # noqa: E402

from pydiffusion.files import save_json  # noqa: E402


def timed(*args):
    t0 = time.perf_counter()
    r = snakemake(*args, timeout=3600)
    if r.returncode != 0:
        raise SystemExit(f"snakemake {' '.join(args)} failed:\n{r.stderr[-3000:]}")
    return time.perf_counter() - t0, r


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--slurm", action="store_true", help="also run the smoke grid through a local SLURM")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    out = {"host": platform.node()}
    tmp = Path(tempfile.mkdtemp())
    plans = []
    for _ in range(args.repeats):
        dt, r = timed("-n", "--quiet", "--config", "seeds=125", f"results={tmp / 'plan'}")
        plans.append(dt)
    _, r = timed("-n", "--config", "seeds=125", f"results={tmp / 'plan'}")
    out["plan_1000_train_jobs_s"] = statistics.median(plans)
    out["plan_jobs"] = job_counts(r.stdout)
    print(f"plan of {out['plan_jobs']['train']} training jobs ({out['plan_jobs']['total']} in all): "
          f"median {out['plan_1000_train_jobs_s']:.2f} s (target < 10 s)")
    out["smoke_local_s"], _ = timed("--profile", "profiles/local", "--configfile", "config/smoke.yaml",
                                    "--config", f"results={tmp / 'local'}")
    print(f"smoke grid, local profile: {out['smoke_local_s']:.1f} s (target < 120 s)")
    if args.slurm:
        script = ROOT / "scripts" / "slurm-cluster.sh"
        subprocess.run([str(script), "start"], check=True, capture_output=True)
        try:
            # a one-node cluster: status checks every 5 s instead of the profile's 40 s
            out["smoke_slurm_s"], _ = timed("--profile", "profiles/slurm", "--slurm-init-seconds-before-status-checks", "5",
                                            "--seconds-between-status-checks", "5", "--configfile", "config/smoke.yaml",
                                            "--config", f"results={tmp / 'slurm'}")
        finally:
            subprocess.run([str(script), "stop"], capture_output=True)
        print(f"smoke grid, SLURM profile: {out['smoke_slurm_s']:.1f} s "
              f"(x{out['smoke_slurm_s'] / out['smoke_local_s']:.2f} of local)")
    shutil.rmtree(tmp, ignore_errors=True)
    path = ROOT / "bench" / "results" / f"workflow-{platform.node()}.json"
    save_json(out, path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
