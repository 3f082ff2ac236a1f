import hashlib
import itertools
import json
import os
import sys
from pathlib import Path

import jsonschema
import yaml
from snakemake.settings.types import DeploymentMethod

from pydiffusion.config import (
    CHOICES,
    DEFAULTS,
    TRAINING_PASSES,
    ConfigError,
    add_import_path,
    validate as validate_train,
)
from pydiffusion.data.datasets import MissingDataError, check_files
from pydiffusion.progress import GridProgress

# ---- the config, checked once before any job: a bad value is one line naming where it came from ----

# Snakemake reads nested --config values (`train={epochs: 30}`, `seeds=[0, 1]`) as text; read them
# as YAML, as `pydiffusion train --set` does, except where the value is text by design.
TEXT_KEYS = {"results", "container"} | {
    k for k, v in DEFAULTS.items() if v is None or isinstance(v, str)
}


def read_as_yaml(value):
    if isinstance(value, dict):
        return {k: v if k in TEXT_KEYS else read_as_yaml(v) for k, v in value.items()}
    if isinstance(value, list):
        return [read_as_yaml(v) for v in value]
    return yaml.safe_load(value) if isinstance(value, str) else value


def _sets(mapping, keys) -> bool:
    for key in keys:
        if isinstance(mapping, str):
            mapping = yaml.safe_load(mapping)
        if not isinstance(mapping, dict) or key not in mapping:
            return False
        mapping = mapping[key]
    return True


def config_source(keys) -> str:
    """Where the value at config[keys[0]][keys[1]]... came from: --config, the last --configfile
    that sets it, or the workflow's own config/config.yaml."""
    if not keys or _sets(dict(workflow.config_settings.config), keys):
        return "--config"
    for f in reversed(workflow.config_settings.configfiles):
        if _sets(yaml.safe_load(Path(f).read_text()), keys):
            rel = os.path.relpath(f)
            return f"--configfile {f if rel.startswith('..') else rel}"
    return "config/config.yaml"


def config_error(keys, message):
    """One line on stderr and exit status 2, as the CLI does (a traceback here helps nobody)."""
    where = config_source(keys) + (f", section {keys[0]}" if len(keys) > 1 else "")
    print(f"pydiffusion: error: {where}: {message}", file=sys.stderr)
    sys.exit(2)


try:
    config.update(read_as_yaml(config))
except yaml.YAMLError as e:
    config_error((), f"a value is not valid YAML ({' '.join(str(e).split())})")


def read_schema(name):
    return yaml.safe_load(
        (Path(workflow.basedir) / "workflow" / "schemas" / name).read_text()
    )


def check_schema(section, schema, where=()):
    """Stop with one line at the first value of `section` (config[where...]) that the schema refuses; then
    fill in the schema's defaults."""
    error = jsonschema.exceptions.best_match(
        jsonschema.Draft202012Validator(schema).iter_errors(section)
    )
    if error is not None:
        path, message = where + tuple(error.absolute_path), error.message
        if error.validator == "additionalProperties" and error.schema.get(
            "properties"
        ):  # name the unknown key itself, and the known ones
            known = error.schema["properties"]
            path += (sorted(set(error.instance) - set(known))[0],)
            message = f"unknown key; valid keys: {', '.join(known)}"
        top = path[len(where)] if len(path) > len(where) else None
        hint = schema["properties"].get(top, {}).get("description") if top else None
        config_error(
            path[:2],
            f"{'.'.join(map(str, path)) or 'the config'}: {message}"
            + (f" (expected {hint})" if hint else ""),
        )
    for key, prop in schema["properties"].items():
        if "default" in prop:
            section.setdefault(key, prop["default"])


_schema = read_schema("config.schema.yaml")
# the grid's axes take the values pydiffusion.config.CHOICES lists, and its training axis the built-in modes (the
# schema names no values; a trainer plugin is a configuration of a study, config/techniques.yaml)
GRID_AXES = {**CHOICES, "training": tuple(TRAINING_PASSES)}
for _axis, _prop in _schema["properties"]["grid"]["properties"].items():
    _prop["items"]["enum"] = list(GRID_AXES[_axis])
check_schema(config, _schema)
# your own modules (a trainer plugin, `training: module:Class`): importable here, while the study is read, and in
# every job, which inherits PYTHONPATH (a SLURM job re-reads this file on its node, so it sets it there too)
try:
    add_import_path(config["plugin_path"])
except ConfigError as e:
    config_error(("plugin_path",), str(e))
# the ablation study (config/ablations.yaml): its section's own schema; workflow/rules/ablations.smk reads it
ABLATIONS = "ablations" in config
if ABLATIONS:
    check_schema(
        config["ablations"], read_schema("ablations.schema.yaml"), ("ablations",)
    )
config["resources"]["train"].setdefault("gpus", 0)
for _axis, _use in [
    *[(k, "grid: / seeds: / results:") for k in ("loss", "noise", "training", "seed")],
    ("data_cache", "results:"),
    ("data_dir", "the top-level data_dir:"),
]:
    if _axis in config["train"]:
        config_error(
            ("train", _axis),
            f"{_axis!r} is set by the workflow; use {_use} instead",
        )
try:
    TRAIN = validate_train(
        {**config["train"], "loss": "mse", "noise": "gaussian", "training": "implicit"}
    )
except ConfigError as e:
    _key = next((k for k in config["train"] if repr(k) in str(e)), None)
    config_error(("train", _key) if _key else ("train", ""), str(e))

# data_dir is where the image sets' files are, not a setting (not part of GRID_ID): the jobs find it as
# $PYDIFFUSION_DATA, set here in this process and in every job's (they re-read this file, as for PATH
# below). Set, not read: so not in `envvars:`, which would require it from every user.
if config["data_dir"] is not None:
    os.environ.update(
        PYDIFFUSION_DATA=str(Path(config["data_dir"]).expanduser().resolve())
    )
# a missing data file stops the workflow here, not in every job
try:
    check_files(TRAIN["dataset"])
except MissingDataError as e:
    config_error(
        ("data_dir",) if config["data_dir"] is not None else ("train", "dataset"),
        str(e),
    )

R = config["results"]
SEEDS = (
    list(range(config["seeds"]))
    if isinstance(config["seeds"], int)
    else config["seeds"]
)
GRID = list(
    itertools.product(
        config["grid"]["loss"], config["grid"]["noise"], config["grid"]["training"]
    )
)
CONFIGS = [f"{l}-{n}-{t}" for l, n, t in GRID]
RUNS = [f"{R}/runs/{c}/seed{s}" for c in CONFIGS for s in SEEDS]
# the relative cost of an epoch of each run: the grid's progress and time left count training work
EPOCH_COST = {
    f"{R}/runs/{l}-{n}-{t}/seed{s}": TRAINING_PASSES[t]
    for l, n, t in GRID
    for s in SEEDS
}
# epochs of each run: one number for the grid (workflow/rules/ablations.smk sets both per run for the study)
RUN_EPOCHS = TRAIN["epochs"]
# the grid's identity (its W&B group): every key but how often progress is logged, the noise-aware
# classifiers' epochs and where the data files are, so that a rerun with another value of these does
# not rerun the training jobs
NOT_GRID_ID = ("progress_seconds", "noisy_classifier_epochs", "data_dir", "plugin_path")
GRID_ID = hashlib.sha256(
    json.dumps(
        {k: v for k, v in config.items() if k not in NOT_GRID_ID},
        sort_keys=True,
        default=str,
    ).encode()
).hexdigest()[:8]

# the shared settings every job trains with (the workflow adds loss, noise, training, seed, data_cache)
SHARED = {
    **config["train"],
    "wandb_group": config["train"].get("wandb_group") or f"grid-{GRID_ID}",
}
TRAIN_RES = config["resources"]["train"]
# The image for every job, used where the workflow runs with --software-deployment-method apptainer.
CONTAINER = config["container"]
# Jobs in the image call its `pydiffusion`; bare jobs the one beside the Python running Snakemake, so
# `.venv/bin/snakemake` works without an activated venv (locally and in SLURM jobs, which re-read this
# file). PATH is declared with `envvars:` in the Snakefile.
if DeploymentMethod.APPTAINER not in workflow.deployment_settings.deployment_method:
    os.environ["PATH"] = (
        f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    )


wildcard_constraints:
    loss="|".join(CHOICES["loss"]),
    noise="|".join(CHOICES["noise"]),
    training="|".join(GRID_AXES["training"]),
    seed=r"\d+",
