"""Training throughput per mode and DDIM sampling time for the default model, on the CPU.

Prints medians over repeats (examples/s; seconds per 1,000 samples), the ratio of each mode to
implicit training measured in the same run, and the issue's targets; writes the numbers with
the machine's description to bench/results/train-cpu-<host>.json.

    python bench/train.py [--threads 1 2] [--repeats 5] [--steps 8]

It also measures, per mode at one thread (the grid's jobs), the UNet with its fused GroupNorm-FiLM-SiLU op
(ops.norm_film_silu) against the same UNet on the PyTorch modules, in rotation so that other load falls on both.
"""
import argparse
import platform
import statistics
import time
from pathlib import Path
from unittest import mock

import torch

from pydiffusion.config import validate
from pydiffusion.data.mnist1d import load_mnist1d
from pydiffusion.diffusion import ops
from pydiffusion.diffusion.denoiser import Denoiser
from pydiffusion.diffusion.paths import NoisePath
from pydiffusion.diffusion.samplers import sample_ddim
from pydiffusion.files import save_json
from pydiffusion.nets.backbones import build_model, count_parameters
from pydiffusion.training.trainers import build_trainer

TARGETS = {"implicit_ex_per_s_2threads": 1500, "semi_implicit_ratio": 1 / 3, "ddim20_s_per_1000": 4.0}


def cpu_name():
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def train_throughput(training, x, y, steps, repeats):
    cfg = validate({"training": training})
    torch.manual_seed(0)
    model = build_model(cfg)
    trainer = build_trainer(cfg, Denoiser.from_config(model, NoisePath(cfg["noise"], cfg["T"]), cfg))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], fused=True)
    gen = torch.Generator().manual_seed(0)
    bs = cfg["batch_size"]

    def step(i):
        lo = (i * bs) % (x.shape[0] - bs)
        loss = trainer(x[lo:lo + bs], y[lo:lo + bs], gen)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg["grad_clip"])
        opt.step()

    for i in range(3):
        step(i)
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for i in range(steps):
            step(i)
        rates.append(steps * bs / (time.perf_counter() - t0))
    return statistics.median(rates), count_parameters(model)


def block_speedup(training, x, y, steps, repeats):
    """Examples/s of one mode with the fused block op and with the PyTorch modules, measured in rotation."""
    rates = {"fused": [], "modules": []}
    for _ in range(repeats):
        rates["fused"].append(train_throughput(training, x, y, steps, 1)[0])
        with mock.patch.object(ops, "norm_backend", lambda *a: "torch"):
            rates["modules"].append(train_throughput(training, x, y, steps, 1)[0])
    fused, plain = statistics.median(rates["fused"]), statistics.median(rates["modules"])
    return {"fused_ex_per_s": fused, "modules_ex_per_s": plain, "speedup": fused / plain}


def ddim_time(n, repeats):
    cfg = validate({})
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    path = NoisePath(cfg["noise"], cfg["T"])
    y = torch.arange(n) % 10
    f = Denoiser.from_config(model, path, cfg).guided(y, 1.0)
    x = torch.randn(n, 40, generator=torch.Generator().manual_seed(0))
    sample_ddim(f, x, 20)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        sample_ddim(f, x, 20)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--steps", type=int, default=8)
    args = p.parse_args()
    x, y, _, _ = load_mnist1d()
    result = {"machine": {"cpu": cpu_name(), "host": platform.node(), "torch": torch.__version__,
                          "ops_backend": ops.backend("cpu")}, "targets": TARGETS, "runs": []}
    for threads in args.threads:
        torch.set_num_threads(threads)
        rates = {}
        for training in ("implicit", "semi_implicit", "consistency"):
            rates[training], n_params = train_throughput(training, x, y, args.steps, args.repeats)
        ddim = ddim_time(1000, args.repeats)
        run = {"threads": threads, "n_params": n_params, "ex_per_s": rates,
               "ratio_to_implicit": {k: v / rates["implicit"] for k, v in rates.items()},
               "ddim20_s_per_1000": ddim}
        result["runs"].append(run)
        print(f"threads={threads}  UNet {n_params:,} params  (median of {args.repeats})")
        for k, v in rates.items():
            print(f"  {k:14s} {v:8.0f} ex/s   x{v / rates['implicit']:.2f} of implicit")
        print(f"  DDIM-20        {ddim:8.2f} s per 1,000 samples")
    torch.set_num_threads(1)
    result["fused_block"] = {}
    for training in ("implicit", "semi_implicit"):
        b = result["fused_block"][training] = block_speedup(training, x, y, args.steps, args.repeats)
        print(f"fused block, 1 thread: {training:14s} {b['fused_ex_per_s']:8.0f} ex/s against {b['modules_ex_per_s']:.0f} "
              f"on the modules: x{b['speedup']:.3f}")
    two = next((r for r in result["runs"] if r["threads"] == 2), None)
    if two:
        print(f"targets (2 threads): implicit {two['ex_per_s']['implicit']:.0f} >= 1500 ex/s; semi-implicit "
              f"x{two['ratio_to_implicit']['semi_implicit']:.2f} >= x0.33; DDIM-20 {two['ddim20_s_per_1000']:.2f} <= 4 s")
    out = Path(__file__).parent / "results" / f"train-cpu-{platform.node()}.json"
    save_json(result, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
