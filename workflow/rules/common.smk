import hashlib
import itertools
import json
import os
import sys
from pathlib import Path

import yaml

from pydiffusion.config import ConfigError, validate as validate_train

R = config["results"]
SEEDS = list(range(config["seeds"])) if isinstance(config["seeds"], int) else config["seeds"]
CONFIGS = [f"{l}-{n}-{t}" for l, n, t in itertools.product(
    config["grid"]["loss"], config["grid"]["noise"], config["grid"]["training"])]
RUNS = [f"{R}/runs/{c}/seed{s}" for c in CONFIGS for s in SEEDS]
GRID_ID = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:8]

try:
    TRAIN = validate_train({**config["train"], "loss": "mse", "noise": "gaussian", "training": "implicit"})
except ConfigError as e:
    raise ValueError(f"config/config.yaml, section train: {e}") from None
for _axis in ("loss", "noise", "training", "seed", "data_cache"):
    if _axis in config["train"]:
        raise ValueError(f"config/config.yaml, section train: {_axis!r} is set by the workflow; "
                         f"use grid: / seeds: / results: instead")
# the shared settings every job trains with (the workflow adds loss, noise, training, seed, data_cache)
SHARED = {**config["train"], "wandb_group": config["train"].get("wandb_group") or f"grid-{GRID_ID}"}
TRAIN_RES = config["resources"]["train"]
CONTAINER = config.get("container") or None
if CONTAINER is None:
    # jobs run bare call `pydiffusion`: the one installed beside the Python running Snakemake, so
    # `.venv/bin/snakemake` works without an activated venv (locally and in SLURM jobs, which re-read this file)
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"

wildcard_constraints:
    loss="mse|kl",
    noise="gaussian|convex",
    training="implicit|semi_implicit|consistency",
    seed=r"\d+",
