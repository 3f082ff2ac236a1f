"""Fused ops vs the eager PyTorch composite vs torch.compile of that composite.

Times q_sample and posterior_step (v-prediction, eta = 0.5, clip 5) at [4096, 40] (an MNIST-1D
batch), 1M and 16M float32 elements, with 1 and 2 threads on the CPU (and on a GPU when present,
with GB/s against a device-to-device copy measured in the same run). Prints medians and ratios and
writes JSON with the machine's description to bench/results/kernels-<device>-<host>.json.

    python bench/kernels.py [--repeats 15] [--threads 1 2]
"""
import argparse
import platform
import statistics
import time
from pathlib import Path

import torch

from pydiffusion import ops, reference
from pydiffusion.io import save_json
from pydiffusion.paths import NoisePath

SHAPES = {"4096x40": (4096, 40), "1M": (25_000, 40), "16M": (400_000, 40)}


def median_time(fn, repeats, device):
    """Median seconds per call; each sample runs enough calls to last about 20 ms."""
    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    for _ in range(3):
        fn()
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    once = max(time.perf_counter() - t0, 1e-6)
    number = max(1, int(0.02 / once))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        sync()
        times.append((time.perf_counter() - t0) / number)
    return statistics.median(times)


def cases(shape, device):
    path = NoisePath("gaussian", 20)
    a, s = path.a.to(device), path.s.to(device)
    g = torch.Generator(device=device).manual_seed(0)
    x, e, o, z = (torch.randn(shape, generator=g, device=device) for _ in range(4))
    t = torch.randint(1, 21, (shape[0],), generator=g, device=device)
    si = t - 1
    eager_q = reference.q_sample
    eager_p = reference.posterior_step
    comp_q = torch.compile(reference.q_sample, dynamic=False)
    comp_p = torch.compile(reference.posterior_step, dynamic=False)
    fused_q, fused_p = torch.ops.pydiffusion.q_sample, torch.ops.pydiffusion.posterior_step
    return {
        "q_sample": {"fused": lambda: fused_q(x, e, t, a, s), "eager": lambda: eager_q(x, e, t, a, s),
                     "compiled": lambda: comp_q(x, e, t, a, s), "bytes": 3 * x.numel() * 4},
        "posterior_step": {"fused": lambda: fused_p(x, o, t, si, a, s, z, 0.5, 2, 5.0),
                           "eager": lambda: eager_p(x, o, t, si, a, s, z, 0.5, "v", 5.0),
                           "compiled": lambda: comp_p(x, o, t, si, a, s, z, 0.5, "v", 5.0),
                           "bytes": 5 * x.numel() * 4},
        "copy": (lambda: x.clone(), 2 * x.numel() * 4),
    }


def cpu_name():
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = p.parse_args()
    if ops.backend("cpu") != "cpp":
        raise SystemExit("the extension pydiffusion._C is not built; run `make` (pip install --no-build-isolation -e .)")
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() and ops.backend("cuda") == "cuda" else [])
    for device in devices:
        result = {"machine": {"device": torch.cuda.get_device_name() if device == "cuda" else cpu_name(),
                              "host": platform.node(), "torch": torch.__version__, "cores": torch.get_num_threads()},
                  "dtype": "float32", "repeats": args.repeats, "rows": []}
        for threads in (args.threads if device == "cpu" else [torch.get_num_threads()]):
            torch.set_num_threads(threads)
            for name, shape in SHAPES.items():
                c = cases(shape, device)
                copy_fn, copy_bytes = c.pop("copy")
                copy_s = median_time(copy_fn, args.repeats, device)
                for op, fns in c.items():
                    times = {k: median_time(fns[k], args.repeats, device) for k in ("fused", "eager", "compiled")}
                    row = {"op": op, "shape": name, "threads": threads, **{f"{k}_us": v * 1e6 for k, v in times.items()},
                           "speedup_vs_eager": times["eager"] / times["fused"],
                           "speedup_vs_compiled": times["compiled"] / times["fused"]}
                    if device == "cuda":
                        row["fused_GBps"] = fns["bytes"] / times["fused"] / 1e9
                        row["copy_GBps"] = copy_bytes / copy_s / 1e9
                        row["fraction_of_copy"] = row["fused_GBps"] / row["copy_GBps"]
                    result["rows"].append(row)
                    extra = f"  {row['fused_GBps']:.0f} GB/s = {row['fraction_of_copy']:.0%} of copy" if device == "cuda" else ""
                    print(f"{device} threads={threads} {op:15s} {name:8s} fused {row['fused_us']:9.1f} us  "
                          f"eager {row['eager_us']:9.1f} us (x{row['speedup_vs_eager']:.2f})  "
                          f"compiled {row['compiled_us']:9.1f} us (x{row['speedup_vs_compiled']:.2f}){extra}")
        out = Path(__file__).parent / "results" / f"kernels-{device}-{platform.node()}.json"
        save_json(result, out)
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
