"""Fused ops vs the eager PyTorch composite vs torch.compile of that composite.

Times q_sample and posterior_step (v-prediction, eta = 0.5, clip 5, random per-sample t and
s = t - 1) at [4096, 40] (an MNIST-1D batch), 1M and 16M float32 elements, and norm_film_silu forward and
backward (the UNet block's GroupNorm -> FiLM -> SiLU, channels-last [B, 32, 1, 40]: B = 128 at 4096x40, the
first block of a training batch) at the same numbers of elements, with 1 and 2 threads on
the CPU, and on a GPU when present, with GB/s against a device-to-device copy measured in the same
run. The three variants are timed in rotation (fused, eager, compiled, fused, ...) so that load
from other processes falls on all of them alike; each sample is enough back-to-back calls to last
about 20 ms, and the figure is the median sample. Prints medians and ratios and writes JSON with
the machine's description to bench/results/kernels-<device>-<host>.json.

    python bench/kernels.py [--repeats 15] [--threads 1 2] [--shapes 4096x40 1M 16M] [--devices cpu cuda] [--out FILE]

Targets (the kernel issue): on the CPU both ops >= 3x eager and no slower than torch.compile at
[4096, 40]; on a GPU >= 80% of the copy bandwidth at 16M elements.
"""
import argparse
import datetime
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from pydiffusion.diffusion import ops, reference
from pydiffusion.diffusion.paths import NoisePath
from pydiffusion.files import save_json

SHAPES = {"4096x40": (4096, 40), "1M": (25_000, 40), "16M": (400_000, 40)}
VARIANTS = ("fused", "eager", "compiled")


def _sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def _calls_per_sample(fn, device, target_s=0.02):
    for _ in range(3):
        fn()
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return max(1, int(target_s / max(time.perf_counter() - t0, 1e-6)))


def median_times(fns: dict, repeats: int, device: str) -> dict:
    """Median seconds per call of each function, sampled in rotation."""
    number = {k: _calls_per_sample(fn, device) for k, fn in fns.items()}
    samples = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(number[k]):
                fn()
            _sync(device)
            samples[k].append((time.perf_counter() - t0) / number[k])
    return {k: statistics.median(v) for k, v in samples.items()}


def cases(shape, device):
    path = NoisePath("gaussian", 20)
    a, s = path.a.to(device), path.s.to(device)
    g = torch.Generator(device=device).manual_seed(0)
    x, e, o, z = (torch.randn(shape, generator=g, device=device) for _ in range(4))
    t = torch.randint(1, 21, (shape[0],), generator=g, device=device)
    si = t - 1
    comp_q = torch.compile(reference.q_sample, dynamic=False, fullgraph=True)
    comp_p = torch.compile(reference.posterior_step, dynamic=False, fullgraph=True)
    fused_q, fused_p = torch.ops.pydiffusion.q_sample, torch.ops.pydiffusion.posterior_step
    n = x.numel() * x.element_size()
    block = block_case(x.numel() // (32 * 40), device, g)
    return {
        "q_sample": ({"fused": lambda: fused_q(x, e, t, a, s), "eager": lambda: reference.q_sample(x, e, t, a, s),
                      "compiled": lambda: comp_q(x, e, t, a, s)}, 3 * n),
        "posterior_step": ({"fused": lambda: fused_p(x, o, t, si, a, s, z, 0.5, 2, 5.0),
                            "eager": lambda: reference.posterior_step(x, o, t, si, a, s, z, 0.5, "v", 5.0),
                            "compiled": lambda: comp_p(x, o, t, si, a, s, z, 0.5, "v", 5.0)}, 5 * n),
        "norm_film_silu": (block, 5 * n),
        "copy": (lambda: x.clone(), 2 * n),
    }


def block_case(B, device, g):
    """norm_film_silu forward and backward on [B, 32, 1, 40] channels-last with FiLM, three ways."""
    x = torch.randn(B, 32, 1, 40, generator=g, device=device).contiguous(memory_format=torch.channels_last)
    w, b = torch.randn(32, generator=g, device=device), torch.randn(32, generator=g, device=device)
    scale, shift = (torch.randn(B, 32, generator=g, device=device) for _ in range(2))
    inputs = [v.requires_grad_() for v in (x, w, b, scale, shift)]
    grad = torch.randn_like(x)
    compiled = torch.compile(reference.norm_film_silu, dynamic=False, fullgraph=True)

    def forward_backward(f):
        return lambda: torch.autograd.grad(f(*inputs), inputs, grad)

    return {"fused": forward_backward(lambda *a: torch.ops.pydiffusion.norm_film_silu(*a, 8, 1e-5)[0]),
            "eager": forward_backward(lambda *a: reference.norm_film_silu(*a, 8, 1e-5)),
            "compiled": forward_backward(lambda *a: compiled(*a, 8, 1e-5))}


def cpu_name():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device):
    m = {"host": platform.node(), "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
         "torch": torch.__version__, "python": platform.python_version(), "cpu": cpu_name(),
         "logical_cpus": os.cpu_count(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
         "ops_backend": ops.backend(device)}
    if hasattr(os, "getloadavg"):
        m["load_average_at_start"] = [round(v, 2) for v in os.getloadavg()]
    if device == "cuda":
        m["gpu"] = torch.cuda.get_device_name()
        m["cuda"] = torch.version.cuda
    return m


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    p.add_argument("--out", type=Path, help="JSON path (default bench/results/kernels-<device>-<host>.json)")
    p.add_argument("--devices", nargs="+", default=["cpu", "cuda"], choices=["cpu", "cuda"],
                   help="where to measure (cuda only where a GPU is present)")
    args = p.parse_args()
    if ops.backend("cpu") != "cpp":
        raise SystemExit("the extension pydiffusion.diffusion._C is not built (or PYDIFFUSION_BACKEND=torch); run `make` "
                         "(pip install --no-build-isolation -e .)")
    devices = [d for d in args.devices
               if d == "cpu" or (torch.cuda.is_available() and ops.backend("cuda") == "cuda")]
    for device in devices:
        result = {"machine": machine(device), "device": device, "dtype": "float32", "repeats": args.repeats,
                  "unit": "microseconds per call, median", "rows": []}
        for threads in (args.threads if device == "cpu" else [torch.get_num_threads()]):
            torch.set_num_threads(threads)
            for name in args.shapes:
                c = cases(SHAPES[name], device)
                copy_fn, copy_bytes = c.pop("copy")
                copy_s = median_times({"copy": copy_fn}, args.repeats, device)["copy"] if device == "cuda" else None
                for op, (fns, nbytes) in c.items():
                    times = median_times(fns, args.repeats, device)
                    row = {"op": op, "shape": name, "elements": SHAPES[name][0] * SHAPES[name][1], "threads": threads,
                           **{f"{k}_us": round(v * 1e6, 2) for k, v in times.items()},
                           "speedup_vs_eager": round(times["eager"] / times["fused"], 3),
                           "speedup_vs_compiled": round(times["compiled"] / times["fused"], 3)}
                    extra = ""
                    if device == "cuda":
                        row["fused_GBps"] = round(nbytes / times["fused"] / 1e9, 1)
                        row["copy_GBps"] = round(copy_bytes / copy_s / 1e9, 1)
                        row["fraction_of_copy"] = round(row["fused_GBps"] / row["copy_GBps"], 3)
                        extra = f"  {row['fused_GBps']:.0f} GB/s = {row['fraction_of_copy']:.0%} of copy"
                    result["rows"].append(row)
                    print(f"{device} threads={threads} {op:15s} {name:8s} fused {row['fused_us']:10.1f} us  "
                          f"eager {row['eager_us']:10.1f} us (x{row['speedup_vs_eager']:.2f})  "
                          f"compiled {row['compiled_us']:10.1f} us (x{row['speedup_vs_compiled']:.2f}){extra}",
                          flush=True)
        small = [r for r in result["rows"] if r["shape"] == "4096x40"]
        if device == "cpu" and small:
            result["targets_4096x40"] = {
                "at_least_3x_eager": all(r["speedup_vs_eager"] >= 3 for r in small),
                "no_slower_than_compiled": all(r["speedup_vs_compiled"] >= 1 for r in small)}
        big = [r for r in result["rows"] if r["shape"] == "16M"]
        if device == "cuda" and big:
            result["targets_16M"] = {"at_least_80pct_of_copy": all(r["fraction_of_copy"] >= 0.8 for r in big)}
        if hasattr(os, "getloadavg"):
            result["machine"]["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
        out = Path(__file__).parent / "results" / f"kernels-{device}-{platform.node()}.json"
        if args.out:
            out = args.out if len(devices) == 1 else args.out.with_name(f"{args.out.stem}-{device}{args.out.suffix}")
        save_json(result, out)
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
