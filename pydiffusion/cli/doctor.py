"""`pydiffusion doctor`: a pre-flight check of every part a run needs, one line each; exit 1 if any fails."""
import os
import platform
import time

from pydiffusion.data.mnist1d import load_mnist1d
from pydiffusion.diffusion import ops
from pydiffusion.training.tracking import has_api_key

HELP = "check imports, ops backend, W&B mode, data generation and CUDA"


def add_arguments(parser):
    pass


def _imports():
    import mnist1d  # noqa: F401  (imported to check that it imports)
    import torch
    import wandb
    import yaml  # noqa: F401
    return f"python {platform.python_version()}, torch {torch.__version__}, wandb {wandb.__version__}"


def _wandb_mode():
    where = "WANDB_API_KEY set" if os.environ.get("WANDB_API_KEY") else (
        "WANDB_API_KEY not set, key from `wandb login` found" if has_api_key() else "WANDB_API_KEY not set, no netrc key")
    return f"{where}; wandb_mode online would run {'online' if has_api_key() else 'offline'}"


def _data():
    t0 = time.perf_counter()
    x, _, x_test, _ = load_mnist1d()
    return f"{x.shape[0]}+{x_test.shape[0]} signals in {time.perf_counter() - t0:.1f} s"


def _cuda():
    import torch
    if not torch.cuda.is_available():
        return "no CUDA GPU (training runs on the CPU)"
    return f"{torch.cuda.get_device_name()} (ops backend {ops.backend('cuda')})"


def run(args):
    failed = False
    for name, fn in [("imports", _imports), ("ops backend", lambda: ops.backend("cpu")), ("W&B", _wandb_mode),
                     ("data", _data), ("CUDA", _cuda)]:
        try:
            print(f"ok    {name}: {fn()}")
        except Exception as e:  # report every failure, not just the first
            failed = True
            print(f"FAIL  {name}: {type(e).__name__}: {e}")
    return 1 if failed else 0
