"""How long to train: sample quality of one configuration against the number of epochs.

    python bench/epochs.py [--epochs 20 30 45 60] [--seeds 0 1] [--set KEY=VALUE ...]

Trains the configuration (default: mse / convex / implicit, the best of the 30-epoch grid) for each
epoch count and seed with `pydiffusion train --classifier` (the grid's own job: the cosine schedule
spans the whole run, so every length is its own run), and prints FD-1D, its ratio to the floor and the
guided accuracy, the mean over seeds. The default grid's length is the shortest after which these
stop improving beyond the seed-to-seed spread. Writes bench/results/epochs-<host>.json.
"""
import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYDIFFUSION = [sys.executable, "-m", "pydiffusion.cli.main"]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, nargs="+", default=[20, 30, 45, 60])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--set", nargs="*", default=["loss=mse", "noise=convex", "training=implicit"])
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        subprocess.run([*PYDIFFUSION, "classifier", "--threads", "1", "--out", str(tmp / "classifier.pt")], check=True,
                       capture_output=True)
        for epochs in args.epochs:
            runs = []
            for seed in args.seeds:
                out = tmp / f"e{epochs}-s{seed}"
                subprocess.run([*PYDIFFUSION, "train", "--out", str(out), "--classifier", str(tmp / "classifier.pt"),
                                "--set", *args.set, f"epochs={epochs}", f"seed={seed}", "threads=1"],
                               check=True, capture_output=True)
                q = json.loads((out / "quality.json").read_text())
                m = json.loads((out / "metrics.json").read_text())
                runs.append({"seed": seed, **{k: q[k] for k in ("fd_1d", "fd_ratio", "sample_acc_guided")},
                             "test_mse_forward": m["test_mse_forward"], "train_time_s": m["train_time_s"]})
            row = {"epochs": epochs, "runs": runs,
                   **{k: statistics.fmean(r[k] for r in runs)
                      for k in ("fd_1d", "fd_ratio", "sample_acc_guided", "test_mse_forward", "train_time_s")}}
            rows.append(row)
            print(f"{epochs:3d} epochs: FD-1D {row['fd_1d']:.3f} (x{row['fd_ratio']:.2f} of its floor), guided accuracy "
                  f"{row['sample_acc_guided']:.3f}, forward test MSE {row['test_mse_forward']:.4f}, "
                  f"{row['train_time_s']:.0f} s of training (mean of seeds {args.seeds})", flush=True)
    target = ROOT / "bench" / "results" / f"epochs-{platform.node()}.json"
    target.write_text(json.dumps({"set": args.set, "seeds": args.seeds, "rows": rows}, indent=2) + "\n")
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
