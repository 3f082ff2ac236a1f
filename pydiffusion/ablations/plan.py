"""The ablation study's plan (config/ablations.yaml, docs/architecture.md#the-ablation-study): named
configurations, each a base cell (loss x noise) plus config overrides, trained for a multiple of one knob,
`base_epochs`, and grouped into families of comparisons against a reference configuration.

`read_study(section, shared)` checks the `ablations:` section of the workflow's config (its shape is checked
before by workflow/schemas/ablations.schema.yaml) and returns every configuration's full training config;
a bad value is a ConfigError naming the configuration or family. With `run_families`, the study is those
families and the configurations they compare, nothing else.
"""
from dataclasses import dataclass

from pydiffusion.config import CHOICES, DEFAULTS, TRAINING_PASSES, ConfigError, trainer_spec, validate

# keys a configuration may not set: the workflow sets them per job (cells, seeds, the data) or from epochs_x
WORKFLOW_KEYS = ("loss", "noise", "seed", "data_cache", "data_dir", "epochs", "checkpoint_every", "threads")
# the study's own keys of a configuration, beside pydiffusion config keys
STUDY_KEYS = ("epochs_x", "match")
CHECKPOINTS_PER_RUN = 10  # checkpoint_every = epochs // 10: a resumed job loses at most a tenth of its run


@dataclass
class Study:
    configs: dict        # configuration name -> training config (validated; loss, noise and seed from the job)
    families: dict       # family name -> [(configuration, its reference), ...]
    cells: list          # ["mse-convex", ...]: loss-noise
    epochs_x: dict       # configuration name -> its epochs over base_epochs, as asked (matching included)

    def epoch_cost(self, name: str) -> float:
        """Relative cost of one epoch of a configuration: network passes x width x share of the data (width 64
        measured 2.3x width 32 on one CPU thread, not the 4x of its FLOPs: small convolutions are not
        compute-bound)."""
        cfg = self.configs[name]
        return trainer_spec(cfg["training"]).passes * cfg["channels"] / 32 * cfg["train_fraction"]


def _epochs_factor(spec, training, section) -> float:
    """epochs_x, times the matching factor: the measured seconds per epoch of semi-implicit over implicit
    (wallclock_ratio, a study setting), or the ratio of network passes per example (evaluations)."""
    factor = spec.get("epochs_x", 1)
    match = spec.get("match")
    if match == "wallclock":
        return factor * section["wallclock_ratio"]
    if match == "evaluations":
        return factor * TRAINING_PASSES["semi_implicit"] / trainer_spec(training).passes
    return factor


def _check_cells(cells):
    for cell in cells:
        loss, _, noise = cell.partition("-")
        if loss not in CHOICES["loss"] or noise not in CHOICES["noise"]:
            raise ConfigError(f"ablations.cells: {cell!r} is not loss-noise with loss in {', '.join(CHOICES['loss'])} "
                              f"and noise in {', '.join(CHOICES['noise'])} (for example mse-convex)")


def read_study(section: dict, shared: dict) -> Study:
    """The study of an `ablations:` section, on top of the workflow's shared `train:` settings."""
    cells = list(section["cells"])
    _check_cells(cells)
    loss, noise = cells[0].split("-")
    configs, epochs_x = {}, {}
    for name, spec in section["configurations"].items():
        where = f"ablations.configurations.{name}"
        bad = sorted(set(spec) & set(WORKFLOW_KEYS))
        if bad:
            raise ConfigError(f"{where}: {bad[0]!r} is set by the study (cells, seeds, base_epochs x epochs_x); remove it")
        overrides = {k: v for k, v in spec.items() if k not in STUDY_KEYS}
        training = {**shared, **overrides}.get("training", DEFAULTS["training"])
        try:
            trainer_spec(training)
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None
        if spec.get("match") == "wallclock" and training != "implicit":
            raise ConfigError(f"{where}: match: wallclock scales implicit training by wallclock_ratio; it needs "
                              f"training: implicit")
        epochs_x[name] = _epochs_factor(spec, training, section)
        epochs = max(1, round(section["base_epochs"] * epochs_x[name]))
        try:
            cfg = validate({**shared, **overrides, "loss": loss, "noise": noise, "epochs": epochs,
                            "checkpoint_every": max(1, epochs // CHECKPOINTS_PER_RUN),
                            "wandb_group": f"ablations-{name}"})
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None
        configs[name] = {k: v for k, v in cfg.items() if k not in ("loss", "noise", "seed", "data_cache", "data_dir")}
    families = {}
    for family, spec in section["families"].items():
        pairs = []
        for item in spec["configurations"]:
            name, reference = next(iter(item.items())) if isinstance(item, dict) else (item, spec["reference"])
            for role, value in (("configuration", name), ("reference", reference)):
                if value not in configs:
                    raise ConfigError(f"ablations.families.{family}: {role} {value!r} is not one of the configurations "
                                      f"({', '.join(configs)})")
            if name == reference:
                raise ConfigError(f"ablations.families.{family}: {name!r} is compared with itself")
            pairs.append((name, reference))
        families[family] = pairs
    unknown = [f for f in section.get("controls", []) if f not in families]
    if unknown:
        raise ConfigError(f"ablations.controls: {unknown[0]!r} is not one of the families ({', '.join(families)})")
    if section.get("run_families"):
        families = _chosen_families(families, section["run_families"])
        used = {name for pairs in families.values() for pair in pairs for name in pair}
        configs = {name: cfg for name, cfg in configs.items() if name in used}
        epochs_x = {name: x for name, x in epochs_x.items() if name in used}
    return Study(configs, families, cells, epochs_x)


def _chosen_families(families: dict, chosen: list) -> dict:
    """The families named in run_families (a study run family by family, into the same results, shares the runs
    of a reference two families compare with)."""
    unknown = [f for f in chosen if f not in families]
    if unknown:
        raise ConfigError(f"ablations.run_families: {unknown[0]!r} is not one of the families ({', '.join(families)})")
    return {f: families[f] for f in chosen}
