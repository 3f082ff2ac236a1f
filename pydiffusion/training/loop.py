"""The training loop: AdamW, cosine LR with warm-up, EMA, gradient clipping and accumulation,
bf16 autocast on CUDA, atomic checkpoints and exact resume.

`train(cfg, out_dir)` writes into out_dir: config.yaml, history.json (one dict per epoch),
checkpoint.pt (the resumable state, every `checkpoint_every` epochs and at the end; the one before
it is kept as checkpoint.prev.pt), and at the end model.pt (config, EMA weights, history) and
metrics.json (test metrics of the EMA weights). Rerunning with the same out_dir resumes from the
newest readable checkpoint and, on the CPU, ends with the same numbers as an uninterrupted run: the
data order, t, eps and label dropout all come from generators whose states are checkpointed. One
process at a time trains into a directory (a lock on out_dir/.lock).
"""
import copy
import logging
import math
import sys
import time
from pathlib import Path

import torch
import yaml
from tqdm import tqdm

from pydiffusion.checkpoints import CHECKPOINT, COMMAND, MODEL, resume_state, save_checkpoint, set_threads
from pydiffusion.config import ConfigError, validate
from pydiffusion.data.datasets import data_shape, load_dataset
from pydiffusion.data.splits import evaluation_data, train_subset
from pydiffusion.diffusion.denoiser import Denoiser
from pydiffusion.diffusion.paths import NoisePath
from pydiffusion.evaluation import metrics
from pydiffusion.files import RunLock, check_writable, remove_stale_temporaries, save_json, save_text, save_torch
from pydiffusion.nets.backbones import build_model, count_parameters
from pydiffusion.training.tracking import Tracker
from pydiffusion.training.trainers import build_trainer

logger = logging.getLogger(__name__)



class TrainingError(RuntimeError):
    """Training cannot go on (a non-finite loss); the last good checkpoint is kept."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("config key 'device' is 'cuda' but no CUDA GPU is available; use device: auto or cpu")
    return torch.device(name)


def lr_at(step: int, total: int, warmup: int, base: float) -> float:
    """Linear warm-up to `base`, then cosine decay to 0 at `total`."""
    if step < warmup:
        return base * (step + 1) / warmup
    return base * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


@torch.no_grad()
def ema_update(ema, model, decay: float, step: int):
    """EMA with warm-up: the effective decay grows from 0.1 so early averages are not stale."""
    d = min(decay, (1 + step) / (10 + step))
    torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1 - d)


def _check_out_dir(out_dir: Path):
    for parent in (out_dir, *out_dir.parents):
        if parent.exists():
            if not parent.is_dir():
                where = "is" if parent == out_dir else f"is under {parent}, which is"
                raise ConfigError(f"--out {out_dir} {where} a file, not a directory; choose another --out")
            break
    check_writable(out_dir, "--out")


def training_signals(cfg: dict, x, y):
    """The signals a run trains on: all of (x, y) (the training set without its validation split), or the fixed
    subset train_fraction asks for."""
    if cfg["train_fraction"] == 1:
        return x, y
    idx = train_subset(y, cfg["train_fraction"])
    return x[idx], y[idx]


def _check_batches(cfg: dict, n_train: int):
    if cfg["batch_size"] > n_train:
        raise ConfigError(f"config key 'batch_size' is {cfg['batch_size']}, more than the {n_train} training "
                          f"signals (train_fraction {cfg['train_fraction']:g}); use at most {n_train}")
    batches = n_train // cfg["batch_size"]
    if cfg["accum_steps"] > batches:
        raise ConfigError(f"config key 'accum_steps' is {cfg['accum_steps']}, but an epoch has only {batches} batches "
                          f"of {cfg['batch_size']}; use accum_steps <= {batches} or a smaller batch_size")


class _Progress:
    """A tqdm bar on a terminal, one plain log line per epoch otherwise."""

    def __init__(self, total: int, initial: int, log):
        self.log, self.bar = log, None
        if sys.stderr.isatty():
            self.bar = tqdm(total=total, initial=initial, unit="epoch", dynamic_ncols=True)

    def update(self, rec: dict):
        parts = " ".join(f"{k}={v:.4g}" for k, v in rec.items() if k not in ("epoch",))
        if self.bar is not None:
            self.bar.set_postfix_str(parts)
            self.bar.update(1)
        else:
            self.log(f"epoch {rec['epoch']}: {parts}")

    def close(self):
        if self.bar is not None:
            self.bar.close()


def train(cfg: dict, out_dir, log=logger.info, wait: bool = False, restart_on_config_change: bool = False,
          evaluate=None, command=None) -> dict:
    """Train one configuration into out_dir (resuming if it holds a checkpoint); returns the metrics.

    Every check runs before anything is written. `wait`: if another process trains into out_dir,
    wait for it (then resume from its checkpoint) instead of failing. `restart_on_config_change`:
    a checkpoint of a different configuration is discarded instead of stopping the run.
    `evaluate(ema_denoiser, cfg, (x, y, x_eval, y_eval), tracker)` (data.splits.evaluation_data): more evaluation of the final
    model after metrics.json, with the run's W&B run still open (the workflow's sample quality).
    `log` takes the progress lines, one string each (default: this module's logger). `command`: the command
    line that asked for this training, kept in out_dir/command.txt (what a model card quotes)."""
    cfg = validate(cfg)
    out_dir = Path(out_dir)
    _check_out_dir(out_dir)
    device = resolve_device(cfg["device"])
    set_threads(cfg)
    data = evaluation_data(load_dataset(cfg["dataset"], cfg["data_dir"], cfg["data_cache"]),
                           cfg["validation_fraction"], cfg["eval_split"])
    _check_batches(cfg, training_signals(cfg, *data[:2])[0].shape[0])
    with RunLock(out_dir, wait=wait, log=log):
        stale = remove_stale_temporaries(out_dir)
        if stale:
            log(f"removed {len(stale)} temporary file(s) of an interrupted write in {out_dir}")
        if command is not None:
            save_text(command + "\n", out_dir / COMMAND)
        return _train_locked(cfg, out_dir, device, data, log, restart_on_config_change, evaluate)


class _TrainingState:
    """What a checkpoint holds besides the history: the network, its EMA, the optimizer and both generators."""

    def __init__(self, cfg: dict, model, device):
        self.model = model
        self.ema = copy.deepcopy(model).requires_grad_(False)
        self.opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"],
                                     fused=device.type in ("cpu", "cuda"))
        self.data_gen = torch.Generator().manual_seed(cfg["seed"])
        self.noise_gen = torch.Generator(device=device).manual_seed(cfg["seed"] + 1)

    def load(self, ckpt: dict):
        self.model.load_state_dict(ckpt["model"])
        self.ema.load_state_dict(ckpt["ema"])
        self.opt.load_state_dict(ckpt["optimizer"])
        self.data_gen.set_state(ckpt["data_gen"])
        self.noise_gen.set_state(ckpt["noise_gen"])

    def checkpoint(self, cfg: dict, history: list, step: int, epoch: int) -> dict:
        return {"config": cfg, "model": self.model.state_dict(), "ema": self.ema.state_dict(),
                "optimizer": self.opt.state_dict(), "data_gen": self.data_gen.get_state(),
                "noise_gen": self.noise_gen.get_state(), "history": history, "step": step, "epoch": epoch}


def _train_epoch(cfg, state: _TrainingState, trainer, x, y, epoch: int, step: int, schedule: tuple, last_good) -> tuple:
    """One epoch over a fresh permutation of (x, y): (its history record, the optimizer step after it).
    schedule: (steps per epoch, total steps, warm-up steps) of the learning rate."""
    steps_per_epoch, total_steps, warmup = schedule
    state.model.train()
    t0, cpu0 = time.perf_counter(), time.process_time()
    perm = torch.randperm(x.shape[0], generator=state.data_gen).to(x.device)
    sums, n_micro = {}, 0
    for micro in range(steps_per_epoch * cfg["accum_steps"]):
        idx = perm[micro * cfg["batch_size"]:(micro + 1) * cfg["batch_size"]]
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=x.device.type == "cuda"):
            parts = trainer(x[idx], y[idx], state.noise_gen)
        if not torch.isfinite(parts["loss"]):
            raise TrainingError(f"non-finite loss {parts['loss'].item()} at epoch {epoch + 1}, step {step + 1}; "
                                f"the last good checkpoint is {last_good if last_good.exists() else 'none'} "
                                f"(try a lower lr or grad_clip)")
        (parts["loss"] / cfg["accum_steps"]).backward()
        for k, v in parts.items():
            sums[k] = sums.get(k, 0.0) + v.item()
        n_micro += 1
        if n_micro % cfg["accum_steps"] == 0:
            for g in state.opt.param_groups:
                g["lr"] = lr_at(step, total_steps, warmup, cfg["lr"])
            if cfg["grad_clip"] > 0:
                torch.nn.utils.clip_grad_norm_(state.model.parameters(), cfg["grad_clip"])
            state.opt.step()
            state.opt.zero_grad(set_to_none=True)
            ema_update(state.ema, state.model, cfg["ema_decay"], step)
            step += 1
    # cpu_s: this process's CPU seconds, all threads; unlike time_s, other work on the machine does not inflate it
    rec = {"epoch": epoch + 1, **{k: v / n_micro for k, v in sums.items()}, "lr": state.opt.param_groups[0]["lr"],
           "time_s": time.perf_counter() - t0, "cpu_s": time.process_time() - cpu0}
    return rec, step


def _train_locked(cfg, out_dir, device, data, log, restart_on_config_change, evaluate) -> dict:
    """Train on training_signals(cfg, x, y); `evaluate` gets the whole data set (the FD floor and the copying
    distance are properties of the data, the same for every run)."""
    x_eval, y_eval = data[2:]
    x, y = training_signals(cfg, *data[:2])
    path = NoisePath(cfg["noise"], cfg["T"], cfg["schedule"])
    torch.manual_seed(cfg["seed"])
    model = build_model(cfg, data_shape(cfg["dataset"])).to(device)
    trainer = build_trainer(cfg, Denoiser.from_config(model, path, cfg))
    state = _TrainingState(cfg, model, device)
    steps_per_epoch = x.shape[0] // cfg["batch_size"] // cfg["accum_steps"]
    schedule = (steps_per_epoch, cfg["epochs"] * steps_per_epoch, round(cfg["warmup_epochs"] * steps_per_epoch))
    n_params = count_parameters(model)

    history, step, start_epoch = [], 0, 0
    ckpt, checkpoint_is_good = resume_state(out_dir, cfg, restart_on_config_change, log)
    if ckpt is not None:
        state.load(ckpt)
        history, step, start_epoch = ckpt["history"], ckpt["step"], ckpt["epoch"]
        save_json(history, out_dir / "history.json")  # it may hold epochs after the checkpoint, or be gone
        log(f"resuming {out_dir} from epoch {start_epoch}")
    if start_epoch < cfg["epochs"]:  # the outputs of an earlier training in this directory are stale
        for name in (MODEL, "metrics.json"):
            (out_dir / name).unlink(missing_ok=True)
    save_text(yaml.safe_dump(cfg, sort_keys=False), out_dir / "config.yaml")
    log(f"{cfg['model']} with {n_params:,} parameters; {cfg['training']} {cfg['loss']} on the {cfg['noise']} path, "
        f"{cfg['epochs']} epochs on {device}")

    tracker = Tracker(cfg, out_dir)
    progress = _Progress(cfg["epochs"], start_epoch, log)
    x_dev, y_dev = x.to(device), y.to(device)
    try:
        for epoch in range(start_epoch, cfg["epochs"]):
            rec, step = _train_epoch(cfg, state, trainer, x_dev, y_dev, epoch, step, schedule, out_dir / CHECKPOINT)
            history.append(rec)
            tracker.log(rec, step=epoch + 1)
            progress.update(rec)
            if (epoch + 1) % cfg["checkpoint_every"] == 0 or epoch + 1 == cfg["epochs"]:
                save_checkpoint(state.checkpoint(cfg, history, step, epoch + 1), out_dir, checkpoint_is_good)
                checkpoint_is_good = True
            save_json(history, out_dir / "history.json")
        save_torch({"config": cfg, "ema": state.ema.state_dict(), "history": history, "epoch": cfg["epochs"]},
                   out_dir / MODEL)
        result = evaluate_run(Denoiser.from_config(state.ema, path, cfg), cfg, history, x_eval, y_eval, n_params)
        save_json(result, out_dir / "metrics.json")
        tracker.summary(result)
        if evaluate is not None:  # on the CPU, as checkpoints.load_denoiser gives it
            evaluate(Denoiser.from_config(state.ema.cpu().eval(), path, cfg), cfg, data, tracker)
    finally:
        progress.close()
        tracker.finish()
    return result


def evaluate_run(denoiser, cfg, history, x_eval, y_eval, n_params) -> dict:
    """metrics.json: test metrics of the EMA denoiser, convergence figures, wall time and CPU time, size."""
    out = metrics.held_out_metrics(denoiser, x_eval, y_eval, cfg["psnr_timesteps"], cfg["eval_seed"])
    out.update(metrics.convergence([h["loss"] for h in history]))
    out["train_time_s"] = sum(h["time_s"] for h in history)
    if all("cpu_s" in h for h in history):  # a run resumed from a checkpoint of older code lacks some
        out["train_cpu_s"] = sum(h["cpu_s"] for h in history)
    out["n_params"] = n_params
    out["epochs"] = len(history)
    return {k: cfg[k] for k in ("loss", "noise", "training", "seed")} | out
