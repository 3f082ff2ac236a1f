import hashlib
import itertools
import json

import yaml

from pydiffusion.config import DEFAULTS, ConfigError, validate as validate_train

# `--config 'train={epochs: 30}'` reaches us with every nested value a string (Snakemake reads
# nested command-line values with YAML's BaseLoader); read those as YAML, as `pydiffusion train --set` does.
def _from_text(value):
    if isinstance(value, list):
        return [_from_text(v) for v in value]
    return yaml.safe_load(value) if isinstance(value, str) else value


_TEXT_KEYS = {k for k, v in DEFAULTS.items() if v is None or isinstance(v, str)}
config["train"] = {k: v if k in _TEXT_KEYS else _from_text(v) for k, v in config["train"].items()}
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

wildcard_constraints:
    loss="mse|kl",
    noise="gaussian|convex",
    training="implicit|semi_implicit|consistency",
    seed=r"\d+",
