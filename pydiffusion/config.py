"""Training configuration: defaults, and validation at the edge.

A config is a flat mapping; every key, its type and its valid values are declared once in
DEFAULTS / CHOICES / CHECKS below, and a trainer plugin (`training: mypkg.mod:MyTrainer` or an entry point of the
group TRAINER_GROUP) declares its own keys beside them: validate imports it to read them (trainer_spec).
`load_config` merges a YAML file and `key=value` overrides onto the defaults and raises ConfigError (one line
naming the key and the valid choices) before any work starts.
"""
import importlib
import math
import os
import sys
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, entry_points, version
from pathlib import Path

import yaml

DISTRIBUTION = "pydiffusion-mnist1d"  # the name pip knows the package by
try:  # the version of the installed package, which runs, exports and --version name
    VERSION = version(DISTRIBUTION)
except PackageNotFoundError:  # the source tree on sys.path without an install
    VERSION = "0+unknown"

MNIST1D = "mnist1d"  # the default data set, and the one a file written without a dataset key was trained on

DEFAULTS = {
    # data
    "dataset": MNIST1D,          # mnist1d, or an image set: digits, mnist, fashion_mnist, cifar10 (docs/datasets.md)
    "data_dir": None,            # folder of the image sets' files (default $PYDIFFUSION_DATA or ~/.cache/pydiffusion/data)
    "data_cache": None,          # folder for the generated MNIST-1D (default $PYDIFFUSION_CACHE or ~/.cache/pydiffusion)
    "train_fraction": 1.0,       # train on this class-stratified share of the training set (data.splits.train_subset)
    "validation_fraction": 0.0,  # hold this class-stratified share of the training set out of training (data.splits)
    "eval_split": "test",        # evaluate on the test set, or on the validation split (where choices are made)
    # diffusion
    "noise": "gaussian",
    "schedule": "linear",
    "T": 20,
    "prediction": "v",           # well-conditioned x0_hat at low SNR (a_T is ~0.004 at T = 20); eps, x0, mu too
    "clip": 5.0,                 # clamp x0_hat to [-clip, clip]; 0 disables
    "loss": "mse",
    "training": "implicit",      # implicit, semi_implicit, consistency, an installed trainer plugin, or module:Class
    # semi-implicit loss weights (docs/math.md#training-modes) and consistency weight
    "w_forward": 1.0,
    "w_inverse": 1.0,
    "w_rt_fi": 0.5,
    "w_rt_if": 0.5,
    "detach_intermediate": True,
    "w_consistency": 0.5,
    # model
    "model": "unet",
    "conditioning": "input",     # where the direction z enters: the input channel, or also the FiLM embedding
    "channels": 32,
    "channel_mult": [1, 2, 2],    # 32-64-64: about 0.42M parameters
    "blocks_per_level": 1,
    "attention": True,
    "emb_dim": 128,
    "cfg_dropout": 0.1,
    # optimisation
    "epochs": 30,
    "batch_size": 128,
    "lr": 2e-3,
    "weight_decay": 0.0,
    "warmup_epochs": 1,
    "grad_clip": 1.0,
    "ema_decay": 0.995,
    "accum_steps": 1,
    "seed": 0,
    "device": "auto",
    "threads": 0,                # torch intra-op threads; 0 keeps torch's default
    "checkpoint_every": 5,
    # evaluation and sampling
    "eval_seed": 1234,
    "psnr_timesteps": [5, 10, 15],
    "sampler": "ddim",
    "sample_steps": 20,
    "eta": 0.0,
    "guidance": 1.0,
    "n_samples": 100,
    # tracking
    "wandb_mode": "disabled",
    "wandb_entity": None,        # W&B user or team; None: your default entity
    "wandb_project": "pydiffusion-mnist1d",
    "wandb_group": None,
    "wandb_name": None,
}

# network passes (forward + backward) per training example of each built-in training mode: the relative cost of
# an epoch (the workflow runs the dearest jobs first and estimates the time left from it). A trainer plugin
# declares its own (`passes`, see trainer_spec); the built-in modes' keys are in DEFAULTS, so every stored
# config has them.
TRAINING_PASSES = {"implicit": 1, "semi_implicit": 4, "consistency": 2}
TRAINER_GROUP = "pydiffusion.trainers"  # the entry-point group of trainer plugins (docs/your-idea.md)

# The one list of each key's valid values: the noise paths, the kernels' prediction codes (the first three
# predictions; reference.PREDICTION_CODES numbers them in this order, as csrc/diffusion_math.h does; mu is
# read out by the denoiser and reaches the kernel as an x0 prediction), the CLI's
# choices, and the workflow's grid axes (its schema and wildcard constraints, workflow/rules/common.smk)
# all read it.
CHOICES = {
    "dataset": (MNIST1D, "digits", "mnist", "fashion_mnist", "cifar10"),  # the names of datasets.SHAPES (a test checks)
    "eval_split": ("test", "validation"),
    "noise": ("gaussian", "convex"),
    "schedule": ("linear", "quadratic", "cosine"),
    "prediction": ("eps", "x0", "v", "mu"),
    "loss": ("mse", "kl"),
    "model": ("unet", "mlp"),
    "conditioning": ("input", "embedding"),
    "device": ("auto", "cpu", "cuda"),
    "sampler": ("ddim", "ddpm", "dpmpp_2m"),  # the names of sampling.SAMPLERS (imports torch; a test checks)
    "wandb_mode": ("disabled", "offline", "online"),
}

# seeds feed torch.Generator.manual_seed (64 bits) after small offsets
MAX_SEED = 2**63
MAX_GUIDANCE = 100.0  # guidance scales in use are 0-10; beyond 100 every sample sits at the clip
MAX_SAMPLES = 100_000  # samples in one call: one batch, so memory grows with it

# key -> (predicate, description of the valid values)
CHECKS = {
    "train_fraction": (lambda v: 0 < v <= 1, "in (0, 1] (the share of the training set)"),
    "validation_fraction": (lambda v: 0 <= v <= 0.5, "in [0, 0.5] (the share of the training set held out; 0: none)"),
    "T": (lambda v: v >= 2, "an integer >= 2"),
    "clip": (lambda v: v >= 0, ">= 0 (0 disables clamping)"),
    "channels": (lambda v: v >= 8 and v % 8 == 0, "a multiple of 8, >= 8 (GroupNorm uses 8 groups)"),
    "channel_mult": (lambda v: 1 <= len(v) <= 3 and all(isinstance(m, int) and m >= 1 for m in v),
                     "a list of 1 to 3 positive integers (40 -> 20 -> 10)"),
    "blocks_per_level": (lambda v: v >= 1, "an integer >= 1"),
    "emb_dim": (lambda v: v >= 8 and v % 2 == 0, "an even integer >= 8"),
    "cfg_dropout": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "epochs": (lambda v: v >= 1, "an integer >= 1"),
    "batch_size": (lambda v: v >= 1, "an integer >= 1"),
    "lr": (lambda v: v > 0, "> 0"),
    "weight_decay": (lambda v: v >= 0, ">= 0"),
    "warmup_epochs": (lambda v: v >= 0, ">= 0"),
    "grad_clip": (lambda v: v >= 0, ">= 0 (0 disables clipping)"),
    "ema_decay": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "accum_steps": (lambda v: v >= 1, "an integer >= 1"),
    "seed": (lambda v: 0 <= v < MAX_SEED, f"an integer in [0, {MAX_SEED})"),
    "eval_seed": (lambda v: 0 <= v < MAX_SEED, f"an integer in [0, {MAX_SEED})"),
    "threads": (lambda v: v >= 0, "an integer >= 0 (0 keeps torch's default)"),
    "checkpoint_every": (lambda v: v >= 1, "an integer >= 1 (epochs)"),
    "psnr_timesteps": (lambda v: len(v) >= 1 and all(isinstance(t, int) and t >= 1 for t in v),
                       "a non-empty list of timesteps in [1, T]"),
    "sample_steps": (lambda v: v >= 1, "an integer >= 1 (at most T)"),
    "eta": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "guidance": (lambda v: 0 <= v <= MAX_GUIDANCE, f"in [0, {MAX_GUIDANCE}] (1 = conditional, 0 = unconditional; "
                                                    f"larger scales only saturate the samples)"),
    "n_samples": (lambda v: 1 <= v <= MAX_SAMPLES, f"an integer in [1, {MAX_SAMPLES:,}] (draw more in several calls "
                                                   f"with different seeds)"),
    "wandb_entity": (lambda v: v is None or v.strip() != "", "a W&B user or team name, or null for your default entity"),
    **{k: (lambda v: v >= 0, ">= 0") for k in ("w_forward", "w_inverse", "w_rt_fi", "w_rt_if", "w_consistency")},
}


class ConfigError(ValueError):
    """A bad configuration: the message names the key and what is valid."""


def _type_ok(default, value):
    if default is None:
        return value is None or isinstance(value, str)
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, type(default))


def _yaml_float(text: str):
    """YAML 1.1 reads `1e-3` (no dot) as a string; researchers mean the number."""
    try:
        return float(text)
    except ValueError:
        return text


@dataclass(frozen=True)
class TrainerSpec:
    """What the configuration needs to know of a training mode: its cost and its own keys."""
    name: str
    passes: float                                # network passes per training example (implicit: 1)
    options: dict = field(default_factory=dict)  # its own config keys -> default
    checks: dict = field(default_factory=dict)   # key -> (predicate, description of the valid values)
    check_config: object = None                  # config -> None, or a message naming what is wrong and the fix


def add_import_path(folders) -> list:
    """Put folders (a trainer plugin's, the workflow's plugin_path) first on sys.path and on PYTHONPATH, so that this
    process and the processes it starts import from them; returns them resolved. ConfigError if one is not a folder."""
    resolved = []
    for i, folder in enumerate(folders):
        if not Path(folder).is_dir():
            raise ConfigError(f"plugin_path[{i}] {str(folder)!r} is not a folder")
        resolved.append(str(Path(folder).resolve()))
    sys.path[:0] = [f for f in resolved if f not in sys.path]
    if resolved:
        old = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p not in resolved]
        os.environ["PYTHONPATH"] = os.pathsep.join([*resolved, *old])
    return resolved


def installed_trainers() -> dict:
    """{name: entry point} of the trainers installed under the entry-point group TRAINER_GROUP."""
    return {ep.name: ep for ep in entry_points(group=TRAINER_GROUP)}


def _trainer_choices() -> str:
    names = dict.fromkeys([*TRAINING_PASSES, *installed_trainers()])
    return f"{', '.join(names)}, or a class as module:Class"


def load_trainer_class(name: str):
    """The class of a trainer plugin named by `training`: an installed entry point's name, or module:Class
    (imported from sys.path); ConfigError, one line, if it cannot be had."""
    where = f"config key 'training' is {name!r}"
    module_name, sep, class_name = name.partition(":")
    if not sep:
        found = installed_trainers().get(name)
        if found is None:
            raise ConfigError(f"{where}; choose one of {_trainer_choices()}")
        module_name, _, class_name = found.value.partition(":")
    if not module_name or not class_name:
        raise ConfigError(f"{where}; name a trainer class as module:Class, for example mypkg.trainers:MyTrainer")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        raise ConfigError(f"{where}, but module {e.name!r} is not found; install it or add its folder to "
                          f"PYTHONPATH") from None
    except Exception as e:  # the plugin's own code failed on import: say which and how, in one line
        raise ConfigError(f"{where}, but importing {module_name!r} failed: {type(e).__name__}: "
                          f"{_first_line(e)}") from None
    cls = getattr(module, class_name, None)
    if not isinstance(cls, type):
        raise ConfigError(f"{where}, but module {module_name!r} has no class {class_name!r}")
    return cls


def _plugin_spec(name: str, cls) -> TrainerSpec:
    """The TrainerSpec a plugin class declares, checked (docs/your-idea.md#the-trainer-interface)."""
    where = f"trainer {name!r}"
    components = getattr(cls, "components", None)
    if not (isinstance(components, tuple) and components and all(isinstance(c, str) for c in components)):
        raise ConfigError(f"{where} must declare `components`, a non-empty tuple of the loss names it returns")
    passes = getattr(cls, "passes", None)
    if not (isinstance(passes, (int, float)) and not isinstance(passes, bool) and passes > 0):
        raise ConfigError(f"{where} must declare `passes`, its network passes per training example (> 0; "
                          f"implicit training is 1)")
    if not callable(getattr(cls, "from_config", None)):
        raise ConfigError(f"{where} must have a `from_config(denoiser, cfg)` class method (subclass "
                          f"pydiffusion.training.trainers.ImplicitTrainer to inherit it)")
    options, checks = getattr(cls, "options", {}), getattr(cls, "checks", {})
    if not isinstance(options, dict) or not all(isinstance(k, str) for k in options):
        raise ConfigError(f"{where}: `options` must be a dict of its config keys and their defaults")
    for key, default in options.items():
        if key in DEFAULTS and default != DEFAULTS[key]:
            raise ConfigError(f"{where}: option {key!r} is a pydiffusion key with default {DEFAULTS[key]!r}, not "
                              f"{default!r}; rename the option")
        if not (default is None or isinstance(default, (bool, int, float, str, list))):
            raise ConfigError(f"{where}: option {key!r} has default {default!r}; a default is a number, a string, "
                              f"a boolean, a list or None")
    if not isinstance(checks, dict) or set(checks) - set(options):
        raise ConfigError(f"{where}: `checks` must be a dict of some of its options -> (predicate, description)")
    return TrainerSpec(name, float(passes), dict(options), dict(checks), getattr(cls, "check_config", None))


def trainer_spec(name) -> TrainerSpec:
    """The TrainerSpec of a `training` value: a built-in mode (no import) or a plugin (imported)."""
    if not isinstance(name, str):
        raise ConfigError(f"config key 'training' must be str, got {name!r}")
    if name in TRAINING_PASSES:
        return TrainerSpec(name, TRAINING_PASSES[name])
    return _plugin_spec(name, load_trainer_class(name))


def validate(cfg: dict) -> dict:
    """Return a complete, checked copy of `cfg` (defaults filled in, the trainer's own keys too); raise ConfigError."""
    spec = trainer_spec(cfg.get("training", DEFAULTS["training"]))
    defaults, checks = {**DEFAULTS, **spec.options}, {**CHECKS, **spec.checks}
    unknown = sorted(set(cfg) - set(defaults))
    if unknown:
        own = f"; trainer {spec.name!r} adds {', '.join(spec.options)}" if set(spec.options) - set(DEFAULTS) else ""
        raise ConfigError(f"unknown config key {unknown[0]!r}; valid keys: {', '.join(DEFAULTS)}{own}")
    out = {**defaults, **cfg}
    for key, value in out.items():
        default = defaults[key]
        if isinstance(default, float) and isinstance(value, str):
            value = _yaml_float(value)
        if not _type_ok(default, value):
            expected = "a string or null" if default is None else type(default).__name__
            raise ConfigError(f"config key {key!r} must be {expected}, got {value!r}")
        if isinstance(default, float):
            out[key] = value = float(value)
            if not math.isfinite(value):
                raise ConfigError(f"config key {key!r} is {value!r}; it must be a finite number")
        if key in CHOICES and value not in CHOICES[key]:
            raise ConfigError(f"config key {key!r} is {value!r}; choose one of {', '.join(CHOICES[key])}")
        if key in checks and not checks[key][0](value):
            raise ConfigError(f"config key {key!r} is {value!r}; it must be {checks[key][1]}")
    if out["eval_split"] == "validation" and out["validation_fraction"] == 0:
        raise ConfigError("config key 'eval_split' is 'validation' but validation_fraction is 0, so there is no "
                          "validation split; set validation_fraction (for example 0.1) or eval_split: test")
    if out["sample_steps"] > out["T"]:
        raise ConfigError(f"config key 'sample_steps' is {out['sample_steps']}; it must be <= T ({out['T']})")
    bad = [t for t in out["psnr_timesteps"] if t > out["T"]]
    if bad:
        raise ConfigError(f"config key 'psnr_timesteps' has {bad[0]} > T ({out['T']}); use timesteps in [1, T]")
    problem = spec.check_config(out) if spec.check_config is not None else None
    if problem:
        raise ConfigError(f"trainer {spec.name!r}: {problem}")
    return out


def check_value(name: str, key: str, value):
    """A value that stands in for the config key `key` (a command-line option, an argument), by that key's own rule
    (CHECKS); `name` names it in the error."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{name} is {value}; it must be a finite number")
    if not _type_ok(DEFAULTS[key], value):
        raise ConfigError(f"{name} is {value!r}; it must be {type(DEFAULTS[key]).__name__}")
    valid, description = CHECKS[key]
    if not valid(value):
        raise ConfigError(f"{name} is {value}; it must be {description}")


def check_classifier_scale(name: str, value):
    """A classifier-guidance scale: a finite number in [0, MAX_GUIDANCE]."""
    if not (isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= MAX_GUIDANCE):
        raise ConfigError(f"{name} is {value}; it must be a number in [0, {MAX_GUIDANCE:g}] (0 = no classifier guidance)")


def parse_overrides(pairs) -> dict:
    """['key=value', ...] -> dict, each value parsed as YAML (so 3, 1e-3, true, [1,2] work)."""
    out = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {pair!r} is not key=value (for example --set epochs=5)")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise ConfigError(f"override {pair!r}: the value is not valid YAML ({_first_line(e)}); "
                              f"quote lists whole, for example --set 'channel_mult=[1, 2]'") from None
    return out


def _first_line(e: Exception) -> str:
    return " ".join(str(e).split())


def load_config(path=None, overrides=None) -> dict:
    """Defaults <- YAML file <- overrides, validated."""
    cfg = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist")
        try:
            cfg = yaml.safe_load(path.read_bytes().decode("utf-8")) or {}
        except UnicodeDecodeError as e:
            raise ConfigError(f"config file {str(path)!r} is not UTF-8 text (byte {e.start}); save it as UTF-8") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {str(path)!r} is not valid YAML ({_first_line(e)})") from None
        if not isinstance(cfg, dict):
            raise ConfigError(f"config file {str(path)!r} must hold a mapping of key: value")
    cfg.update(parse_overrides(overrides) if not isinstance(overrides, dict) else overrides)
    return validate(cfg)
