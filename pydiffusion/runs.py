"""A trained run from Python, and the functions the commands call for it.

    import pydiffusion
    run = pydiffusion.load_run("results/runs/mse-gaussian-implicit/seed0")   # a run directory or an export
    x, y = run.sample(16, label=3)                                           # the run's own sampler by default

`load_run(folder)` gives a `Run`: its config, metrics, sample quality, history and EMA denoiser, of a run
directory (`pydiffusion train`) or an export (`pydiffusion export`; `load_exported` insists on one). `Run.sample`
draws class-conditional samples with the run's sampler, steps, eta and guidance unless told otherwise.
`train(config, out)` trains one configuration (resuming from out's checkpoint) and returns its Run.
"""
import math
import os
from dataclasses import dataclass
from pathlib import Path

from pydiffusion.checkpoints import COMMAND, EXPORT_WEIGHTS, build_denoiser, is_export, read_trained, set_threads
from pydiffusion.config import CHOICES, ConfigError, check_classifier_scale, check_value, load_config
from pydiffusion.data.labels import NUM_CLASSES
from pydiffusion.diffusion.denoiser import Denoiser
from pydiffusion.diffusion.samplers import draw_class_samples, run_sampler
from pydiffusion.files import load_json
from pydiffusion.training import loop

METRICS_FILE, QUALITY_FILE = "metrics.json", "quality.json"


def sample_settings(cfg: dict, T: int, sampler=None, steps=None, eta=None, guidance=None) -> dict:
    """{sampler, steps, eta, guidance}: each as given, or else the run's config key; steps and eta as the
    sampler really uses them (DDPM: all T steps, eta 1; DPM-Solver++(2M): eta 0). A bad value is a ConfigError."""
    if sampler is not None and sampler not in CHOICES["sampler"]:
        raise ConfigError(f"sampler is {sampler!r}; choose one of {', '.join(CHOICES['sampler'])}")
    for name, key, value in (("steps", "sample_steps", steps), ("eta", "eta", eta), ("guidance", "guidance", guidance)):
        if value is not None:
            check_value(name, key, value)
    if steps is not None and steps > T:
        raise ConfigError(f"steps is {steps}; it must be in [1, T={T}]")
    chosen = sampler or cfg["sampler"]
    # a value typed for a sampler that would ignore it is refused, not dropped
    if chosen == "ddpm" and steps is not None and steps != T:
        raise ConfigError(f"steps is {steps}, but ddpm always takes all T={T} steps; leave steps out, or use ddim or "
                          f"dpmpp_2m for fewer")
    for name, ignores in (("ddpm", 1.0), ("dpmpp_2m", 0.0)):
        if chosen == name and eta is not None and eta != ignores:
            raise ConfigError(f"eta is {eta}, but {name} always runs with eta {ignores:g}; leave eta out, or use ddim "
                              f"to choose it")
    sampler, steps, eta = run_sampler(cfg, T, sampler, steps, eta)
    return {"sampler": sampler, "steps": steps, "eta": eta, "guidance": cfg["guidance"] if guidance is None else guidance}


# bytes a sampler holds per sample, over the sample's own size and per unit of network width (channels x its largest
# multiplier): measured, the default UNet drawing 500-4,000 MNIST-1D samples with DDIM peaked at 116-147 KB a
# sample, 11-14 x 40 x 4 B x 64
ACTIVATION_BYTES_PER_WIDTH = 16


def check_memory(cfg: dict, sample_shape, n: int, copies: int):
    """A ConfigError, before any sampling, where n samples (`copies` of x each: the trajectory) would not fit in this
    machine's memory: every sample is one batch."""
    width = cfg["channels"] * max(cfg["channel_mult"])
    need = n * math.prod(sample_shape) * 4 * (copies + ACTIVATION_BYTES_PER_WIDTH * width)
    have = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    if need > have / 2:
        fit = max(1, int(n * have / 2 / need))
        raise ConfigError(f"n is {n:,}: drawing them at once needs about {need / 2**30:.1f} GiB, more than half of this "
                          f"machine's {have / 2**30:.0f} GiB; draw at most about {fit:,} per call (with different seeds)")


def _optional_json(file: Path):
    return load_json(file, "run file", "delete it and rerun the command that wrote it") if file.exists() else None


@dataclass(frozen=True)
class Run:
    """A trained run: `config` (every key, validated), `metrics` (metrics.json: the test metrics; None while it
    trains), `quality` (quality.json: sample quality; None where it was not measured), `history` (one dict per
    epoch), `command` (the command line that trained it, where recorded) and `denoiser` (the EMA network on the
    CPU, in eval mode)."""
    folder: Path
    config: dict
    denoiser: Denoiser
    history: list
    metrics: dict | None
    quality: dict | None
    command: str | None

    @property
    def exported(self) -> bool:
        return is_export(self.folder)

    def sample_settings(self, sampler=None, steps=None, eta=None, guidance=None) -> dict:
        """The {sampler, steps, eta, guidance} that `sample` uses with these arguments."""
        return sample_settings(self.config, self.denoiser.path.T, sampler, steps, eta, guidance)

    def sample(self, n: int, label=None, sampler=None, steps=None, eta=None, guidance=None, seed: int = 0, *,
               classifier=None, classifier_scale: float = 0.0, trajectory: bool = False):
        """(x [n, ...], y [n]) of n class-conditional samples: labels 0..9 in turn, or all `label`. The sampler,
        its steps and eta and the classifier-free guidance scale are the run's own (its config) unless given;
        guidance 0 draws unconditional samples. `classifier`: a noise-aware classifier of the run's path
        (nets.noisy_classifier) for classifier guidance at `classifier_scale`. x_T and the sampler's noise come
        from `seed`. With `trajectory`, the reverse trajectory [x_T, ..., x_0] is a third item."""
        check_value("n", "n_samples", n)
        check_value("seed", "seed", seed)
        if label is not None and not (isinstance(label, int) and 0 <= label < NUM_CLASSES):
            raise ConfigError(f"label is {label!r}; it must be a class in 0..{NUM_CLASSES - 1}")
        check_classifier_scale("classifier_scale", classifier_scale)
        if classifier_scale > 0 and classifier is None:
            raise ConfigError("a classifier scale > 0 needs a noise-aware classifier (`pydiffusion noisy-classifier`)")
        settings = self.sample_settings(sampler, steps, eta, guidance)
        check_memory(self.config, self.denoiser.model.sample_shape, n, settings["steps"] + 1 if trajectory else 1)
        if label is not None and settings["guidance"] == 0 and classifier_scale == 0:
            raise ConfigError(f"class {label} needs guidance > 0 or a classifier scale > 0 (guidance 0 alone draws "
                              f"unconditional samples)")
        return draw_class_samples(self.denoiser, n, **settings, seed=seed, label=label, trajectory=trajectory,
                                  classifier=classifier, classifier_scale=classifier_scale)


def load_run(folder) -> Run:
    """The Run of a run directory (model.pt once trained, else its newest checkpoint) or of an export. A missing,
    damaged or mismatched file is one clear error (FileNotFoundError, files.UnreadableFileError); no file is
    unpickled beyond tensors and plain containers."""
    folder = Path(folder)
    state = read_trained(folder)
    denoiser, cfg = build_denoiser(state, folder)
    set_threads(cfg)
    command = (folder / COMMAND).read_text().strip() if (folder / COMMAND).is_file() else None
    return Run(folder, cfg, denoiser, state["history"], _optional_json(folder / METRICS_FILE),
               _optional_json(folder / QUALITY_FILE), command)


def load_exported(folder) -> Run:
    """The Run of an export (`pydiffusion export`): model.safetensors and config.json, nothing unpickled."""
    if not is_export(folder):
        raise FileNotFoundError(f"{folder} holds no {EXPORT_WEIGHTS}; export a run into it with "
                                f"`pydiffusion export --run RUN --out {folder}`")
    return load_run(folder)


def train(config=None, out="run", *, wait: bool = False, restart_on_config_change: bool = False, evaluate=None,
          command=None) -> Run:
    """Train one configuration into the folder `out` (resuming from its checkpoint) and return its Run.

    `config`: a dict of config keys (the rest default; every key: pydiffusion/config.py), a YAML file, or None for
    the defaults. `command`: the command line recorded in out/command.txt (default: this call). `wait`,
    `restart_on_config_change` and `evaluate`: as training.loop.train."""
    if isinstance(config, dict):
        cfg = load_config(None, config)
    else:
        cfg = load_config(config)
    if command is None:
        command = f"pydiffusion.train({config!r}, {str(out)!r})"
    loop.train(cfg, out, wait=wait, restart_on_config_change=restart_on_config_change, evaluate=evaluate,
               command=command)
    return load_run(out)
