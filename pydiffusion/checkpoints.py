"""A run directory's saved state: the checkpoint files training writes, resuming from them, and loading a
trained run's EMA model back (from model.pt, or from the newest checkpoint while the run still trains, or from an
export's model.safetensors and config.json).

Which file holds what, and which of them are trusted on read: docs/architecture.md.
"""
from pathlib import Path

import torch
from safetensors.torch import load_file as load_safetensors

from pydiffusion.config import DEFAULTS, ConfigError, validate
from pydiffusion.data.datasets import data_shape
from pydiffusion.diffusion.denoiser import Denoiser
from pydiffusion.diffusion.paths import NoisePath
from pydiffusion.files import (
    UnreadableFileError,
    UnsafeFileError,
    build_and_load,
    load_json,
    load_torch,
    rename,
    save_torch,
)
from pydiffusion.nets.backbones import build_model

# keys that only affect evaluation, sampling, tracking or where the run executes: changing them
# between a run and its resumption is allowed (not `epochs`: the LR schedule depends on it)
RESUMABLE_CHANGES = {"data_dir", "device", "threads", "checkpoint_every", "eval_seed", "psnr_timesteps", "sampler", "sample_steps",
                     "eta", "guidance", "n_samples", "wandb_mode", "wandb_entity", "wandb_project", "wandb_group",
                     "wandb_name", "data_cache"}
CHECKPOINT, PREVIOUS_CHECKPOINT, MODEL = "checkpoint.pt", "checkpoint.prev.pt", "model.pt"
COMMAND = "command.txt"  # the command line of the last training into the directory
# an export (`pydiffusion export`): files any safetensors or JSON reader opens, without this package
EXPORT_WEIGHTS, EXPORT_CONFIG, EXPORT_HISTORY = "model.safetensors", "config.json", "history.json"
CHECKPOINT_KEYS = ("config", "model", "ema", "optimizer", "data_gen", "noise_gen", "history", "step", "epoch")
# a history.json record holds the loss, its components and these; the timings (of a record and of metrics.json)
# differ from run to run, where everything else is the same on the CPU for the same seed
EPOCH_TIMINGS = ("time_s", "cpu_s")
EPOCH_FIELDS = ("epoch", "lr", *EPOCH_TIMINGS)
TIMINGS = (*EPOCH_TIMINGS, "train_time_s", "train_cpu_s")


def set_threads(cfg: dict):
    """Use the config's intra-op thread count (float reductions, hence results, depend on it)."""
    if cfg["threads"]:
        torch.set_num_threads(cfg["threads"])


def _read_state(file: Path, keys, fix: str) -> dict:
    state = load_torch(file, "run file", fix)
    missing = [k for k in keys if not isinstance(state, dict) or k not in state]
    if missing:
        raise UnreadableFileError(f"run file {file} is not a pydiffusion {file.stem} (no {missing[0]!r}); {fix}")
    return state


def read_run(run_dir) -> dict:
    """config, EMA weights, history and epoch of a run: model.pt once training has finished, else
    the EMA of its newest checkpoint (so a run can be evaluated while it trains)."""
    run_dir = Path(run_dir)
    fix = f"retrain with `pydiffusion train --out {run_dir}`"
    if (run_dir / MODEL).exists():
        return _read_state(run_dir / MODEL, ("config", "ema", "history", "epoch"), fix)
    for name in (CHECKPOINT, PREVIOUS_CHECKPOINT):
        if (run_dir / name).exists():
            return _read_state(run_dir / name, CHECKPOINT_KEYS, fix)
    raise FileNotFoundError(f"{run_dir} holds no {MODEL} or {CHECKPOINT}; train first with "
                            f"`pydiffusion train --out {run_dir}`")


def is_export(folder) -> bool:
    """Whether `folder` is an export (`pydiffusion export`) rather than a run directory."""
    return (Path(folder) / EXPORT_WEIGHTS).exists()


def read_export(folder) -> dict:
    """config, EMA weights and history of an export: JSON and safetensors only, nothing unpickled. A
    malformed file is an UnreadableFileError naming it."""
    folder = Path(folder)
    fix = "export the run again with `pydiffusion export --run RUN --out DIR`"
    cfg = load_json(folder / EXPORT_CONFIG, "export config", fix)
    if not isinstance(cfg, dict):
        raise UnreadableFileError(f"export config {folder / EXPORT_CONFIG} must hold a mapping of config keys; {fix}")
    history = load_json(folder / EXPORT_HISTORY, "export history", fix) if (folder / EXPORT_HISTORY).exists() else []
    try:
        ema = load_safetensors(folder / EXPORT_WEIGHTS)
    except Exception as e:  # safetensors raises its own SafetensorError, or OSError, by the kind of damage
        raise UnreadableFileError(f"export weights {folder / EXPORT_WEIGHTS} are not a safetensors file "
                                  f"({' '.join(str(e).split())[:120]}); {fix}") from None
    return {"config": cfg, "ema": ema, "history": history, "epoch": len(history)}


def read_trained(folder) -> dict:
    """read_export of an export, else read_run of a run directory."""
    return read_export(folder) if is_export(folder) else read_run(folder)


def build_denoiser(state: dict, source) -> tuple:
    """(denoiser, cfg): the EMA network of a read_trained state on the CPU, in eval mode, read through the run's
    path and parameterisation; its validated config. A config the code refuses, or weights that do not fit it, is
    an UnreadableFileError naming `source`."""
    try:
        cfg = validate(state["config"])
    except ConfigError as e:
        raise UnreadableFileError(f"{source}: its config is refused ({e}); retrain or export it again") from None
    model = build_and_load(lambda: build_model(cfg, data_shape(cfg["dataset"])), state["ema"], str(source),
                           "retrain or export it again")
    return Denoiser.from_config(model.eval(), NoisePath(cfg["noise"], cfg["T"], cfg["schedule"]), cfg), cfg


def load_denoiser(folder) -> tuple:
    """(denoiser, cfg) of a trained run directory or an export (build_denoiser); the run's thread count set."""
    denoiser, cfg = build_denoiser(read_trained(folder), folder)
    set_threads(cfg)
    return denoiser, cfg


def save_checkpoint(state: dict, out_dir: Path, current_is_good: bool):
    """The resumable state (CHECKPOINT_KEYS) into out_dir/checkpoint.pt, atomically and durably.

    `current_is_good`: the checkpoint.pt there now was read back or written by this process. Only then does it
    become checkpoint.prev.pt (the fallback if the new one is ever damaged); a damaged one is written over, so
    the good checkpoint.prev.pt stays until a new checkpoint.pt is complete."""
    if current_is_good and (out_dir / CHECKPOINT).exists():
        rename(out_dir / CHECKPOINT, out_dir / PREVIOUS_CHECKPOINT)
    save_torch(state, out_dir / CHECKPOINT)


def _changed_keys(saved: dict, cfg: dict) -> list:
    # a key added to config.DEFAULTS after the checkpoint was written: its default is the behaviour it trained with
    return [k for k in sorted(set(cfg) - RESUMABLE_CHANGES) if saved.get(k, DEFAULTS.get(k)) != cfg[k]]


def resume_state(out_dir: Path, cfg: dict, restart_on_config_change: bool, log) -> tuple:
    """(the newest readable checkpoint of this configuration, or None to train from scratch; whether checkpoint.pt
    is that checkpoint, so that save_checkpoint may keep it as the previous one). `log` gets what happened (a line
    each).

    A broken checkpoint (truncated, empty, foreign) falls back to the one before it, with a
    warning; one that holds code stops the run: someone wrote it on purpose."""
    files = [out_dir / name for name in (CHECKPOINT, PREVIOUS_CHECKPOINT) if (out_dir / name).exists()]
    broken = []
    for file in files:
        fix = f"delete it (and {PREVIOUS_CHECKPOINT}) to train {out_dir} from scratch"
        try:
            state = _read_state(file, CHECKPOINT_KEYS, fix)
        except UnsafeFileError:
            raise
        except UnreadableFileError as e:
            log(f"warning: {e}")
            broken.append(file)
            continue
        changed = _changed_keys(state["config"], cfg)
        if not changed:
            if broken:
                log(f"warning: resuming from {file.name} instead")
            return state, file.name == CHECKPOINT
        key = changed[0]
        if not restart_on_config_change:
            raise ConfigError(f"config key {key!r} is {cfg[key]!r} but the checkpoint {file} was trained with "
                              f"{state['config'].get(key)!r}; use a new --out directory or the original value")
        log(f"the checkpoint in {out_dir} was trained with {key}={state['config'].get(key)!r}; starting over")
        break
    else:
        if not broken:
            return None, False
        raise UnreadableFileError(f"no readable checkpoint in {out_dir} ({', '.join(f.name for f in broken)} broken); "
                                  f"delete them to train from scratch")
    for file in files:
        file.unlink()
    return None, False
