"""The GPU half of scripts/gpu-check.sh: the best configuration (mse / convex / implicit) trained for 60 epochs in
float32 and under bf16 autocast (examples/s and the held-out metrics), and one whole default grid job timed eagerly
and with its network compiled by torch.compile(mode="reduce-overhead"); merged with the kernel benchmark's JSON into
bench/results/gpu-<device>.json. Without a CUDA GPU it stops with one line (exit status 3).

    python bench/gpu.py --kernels FILE [--epochs 60] [--out FILE]
"""
import argparse
import contextlib
import datetime
import json
import platform
import re
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import torch

from pydiffusion.config import validate
from pydiffusion.training import loop

NO_GPU = 3  # the exit status without a GPU, which scripts/gpu-check.sh passes on
BEST = {"loss": "mse", "noise": "convex", "training": "implicit"}
# what the JSON holds (the README's "GPU check" section describes it; tests/integration/test_gpu_check.py checks it)
SCHEMA = {"device": str, "date": str, "torch": str, "cuda": str, "kernels": dict, "training": dict, "grid_job": dict}
TRAINING_KEYS = ("precision", "epochs", "ex_per_s", "train_time_s", "test_mse_forward", "test_kl", "psnr_t10")
GRID_JOB_KEYS = ("mode", "wall_s", "train_time_s", "test_mse_forward")


def device_slug(name: str) -> str:
    """A file-name form of a device's name: 'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3'."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def train_once(cfg: dict, precision: str, compiled: bool, device: str = "cuda") -> dict:
    """loop.train of cfg on `device` in a fresh folder: float32 or bf16 autocast, the network eager or compiled."""
    autocast = torch.autocast(device, dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
    build = loop.build_model

    def compiled_model(*args, **kwargs):
        model = build(*args, **kwargs)
        model.compile(mode="reduce-overhead")  # in place: the state dict keeps its keys
        return model

    patch = mock.patch.object(loop, "build_model", compiled_model) if compiled else contextlib.nullcontext()
    with tempfile.TemporaryDirectory() as out, autocast, patch:
        t0 = time.perf_counter()
        metrics = loop.train({**cfg, "device": device}, out, log=lambda _: None)
        wall = time.perf_counter() - t0
    n_train = 4000 * cfg["train_fraction"]
    return {**metrics, "wall_s": wall, "ex_per_s": metrics["epochs"] * n_train / metrics["train_time_s"]}


def measure(kernels: dict, epochs: int = 60, grid: dict | None = None, device: str = "cuda",
            grid_modes=("eager", "reduce-overhead")) -> dict:
    """The JSON: the best configuration at `epochs` in both precisions, and the grid job (`grid`, default the grid's
    own job at its 60 epochs) in each of grid_modes."""
    best = validate({**BEST, "epochs": epochs, "wandb_mode": "disabled", "threads": 0})
    training = []
    for precision in ("float32", "bf16"):
        m = train_once(best, precision, compiled=False, device=device)
        training.append({"precision": precision, **{k: m[k] for k in TRAINING_KEYS if k in m}})
        print(f"best configuration, {precision}: {m['ex_per_s']:.0f} ex/s, forward test MSE {m['test_mse_forward']:.4f}",
              flush=True)
    job = validate({**BEST, "wandb_mode": "disabled", "threads": 0, **(grid or {})})
    jobs = []
    for mode in grid_modes:
        m = train_once(job, "float32", compiled=mode != "eager", device=device)
        jobs.append({"mode": mode, **{k: m[k] for k in GRID_JOB_KEYS if k in m}})
        print(f"grid job, {mode}: {m['wall_s']:.1f} s", flush=True)
    name = torch.cuda.get_device_name() if device == "cuda" else f"cpu ({platform.processor() or platform.machine()})"
    return {"device": name, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "torch": torch.__version__, "cuda": str(torch.version.cuda), "kernels": kernels,
            "training": {"rows": training}, "grid_job": {"rows": jobs}}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kernels", type=Path, required=True, help="bench/kernels.py's JSON of the same GPU")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("gpu-check: no CUDA GPU here (torch.cuda.is_available() is False); nothing was measured", file=sys.stderr)
        raise SystemExit(NO_GPU)
    result = measure(json.loads(args.kernels.read_text()), args.epochs)
    out = args.out or Path(__file__).parent / "results" / f"gpu-{device_slug(result['device'])}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
