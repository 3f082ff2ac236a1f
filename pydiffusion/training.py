"""The training loop: AdamW, cosine LR with warm-up, EMA, gradient clipping and accumulation,
bf16 autocast on CUDA, atomic checkpoints and exact resume.

`train(cfg, out_dir)` writes into out_dir: config.yaml, history.json (one dict per epoch),
checkpoint.pt (every `checkpoint_every` epochs and at the end) and metrics.json (EMA weights).
Rerunning with the same out_dir resumes from the checkpoint and, on the CPU, ends with the same
numbers as an uninterrupted run: the data order, t, eps and label dropout all come from
generators whose states are checkpointed.
"""
import copy
import math
import sys
import time
from pathlib import Path

import torch
import yaml

from . import metrics
from .config import ConfigError, validate
from .data import load_mnist1d
from .io import save_json, save_text, save_torch
from .models import build_model, count_parameters
from .paths import NoisePath
from .tracking import Tracker
from .trainers import build_trainer

# keys that only affect evaluation, sampling, tracking or where the run executes: changing them
# between a run and its resumption is allowed
RESUMABLE_CHANGES = {"device", "threads", "checkpoint_every", "eval_seed", "psnr_timesteps", "sampler", "sample_steps",
                     "eta", "guidance", "n_samples", "wandb_mode", "wandb_project", "wandb_group", "wandb_name",
                     "data_cache", "epochs"}


class TrainingError(RuntimeError):
    """Training cannot go on (a non-finite loss); the last good checkpoint is kept."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("config key 'device' is 'cuda' but no CUDA GPU is available; use device: auto or cpu")
    return torch.device(name)


def set_threads(cfg: dict):
    """Use the config's intra-op thread count (float reductions, hence results, depend on it)."""
    if cfg["threads"]:
        torch.set_num_threads(cfg["threads"])


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


def load_run(run_dir):
    """(ema_model, path, cfg) of a trained run, on the CPU, in eval mode, with the run's thread count."""
    run_dir = Path(run_dir)
    ckpt_file = run_dir / "checkpoint.pt"
    if not ckpt_file.exists():
        raise FileNotFoundError(f"{ckpt_file} does not exist; train first with `pydiffusion train --out {run_dir}`")
    ckpt = torch.load(ckpt_file, map_location="cpu", weights_only=False)
    cfg = validate(ckpt["config"])
    set_threads(cfg)
    model = build_model(cfg)
    model.load_state_dict(ckpt["ema"])
    return model.eval(), NoisePath(cfg["noise"], cfg["T"], cfg["schedule"]), cfg


def _check_resumable(saved: dict, cfg: dict, ckpt_file: Path):
    for key in sorted(set(cfg) - RESUMABLE_CHANGES):
        if saved.get(key) != cfg[key]:
            raise ConfigError(f"config key {key!r} is {cfg[key]!r} but the checkpoint {ckpt_file} was trained with "
                              f"{saved.get(key)!r}; use a new --out directory or the original value")


class _Progress:
    """A tqdm bar on a terminal, one plain log line per epoch otherwise."""

    def __init__(self, total: int, initial: int, log):
        self.log, self.bar = log, None
        if sys.stderr.isatty():
            from tqdm import tqdm
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


def train(cfg: dict, out_dir, log=print) -> dict:
    """Train one configuration into out_dir (resuming if it holds a checkpoint); returns the metrics."""
    cfg = validate(cfg)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg["device"])
    set_threads(cfg)
    x, y, x_test, y_test = load_mnist1d(cfg["data_cache"])
    path = NoisePath(cfg["noise"], cfg["T"], cfg["schedule"])
    trainer = build_trainer(cfg, path)

    torch.manual_seed(cfg["seed"])
    model = build_model(cfg).to(device)
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"], fused=device.type in ("cpu", "cuda"))
    data_gen = torch.Generator().manual_seed(cfg["seed"])
    noise_gen = torch.Generator(device=device).manual_seed(cfg["seed"] + 1)
    micro_per_epoch = max(1, x.shape[0] // cfg["batch_size"])
    steps_per_epoch = max(1, micro_per_epoch // cfg["accum_steps"])
    total_steps, warmup = cfg["epochs"] * steps_per_epoch, round(cfg["warmup_epochs"] * steps_per_epoch)
    n_params = count_parameters(model)

    ckpt_file = out_dir / "checkpoint.pt"
    history, step, start_epoch = [], 0, 0
    if ckpt_file.exists():
        ckpt = torch.load(ckpt_file, map_location="cpu", weights_only=False)
        _check_resumable(ckpt["config"], cfg, ckpt_file)
        model.load_state_dict(ckpt["model"])
        ema.load_state_dict(ckpt["ema"])
        opt.load_state_dict(ckpt["optimizer"])
        data_gen.set_state(ckpt["data_gen"])
        noise_gen.set_state(ckpt["noise_gen"])
        history, step, start_epoch = ckpt["history"], ckpt["step"], ckpt["epoch"]
        log(f"resuming {out_dir} from epoch {start_epoch}")
    save_text(yaml.safe_dump(cfg, sort_keys=False), out_dir / "config.yaml")
    log(f"{cfg['model']} with {n_params:,} parameters; {cfg['training']} {cfg['loss']} on the {cfg['noise']} path, "
        f"{cfg['epochs']} epochs on {device}")

    def checkpoint(epoch):
        save_torch({"config": cfg, "model": model.state_dict(), "ema": ema.state_dict(), "optimizer": opt.state_dict(),
                    "data_gen": data_gen.get_state(), "noise_gen": noise_gen.get_state(), "history": history,
                    "step": step, "epoch": epoch}, ckpt_file)

    tracker = Tracker(cfg, out_dir)
    progress = _Progress(cfg["epochs"], start_epoch, log)
    x_dev, y_dev = x.to(device), y.to(device)
    try:
        for epoch in range(start_epoch, cfg["epochs"]):
            model.train()
            t0 = time.perf_counter()
            perm = torch.randperm(x.shape[0], generator=data_gen).to(device)
            sums, n_micro = {}, 0
            for micro in range(steps_per_epoch * cfg["accum_steps"]):
                idx = perm[micro * cfg["batch_size"]:(micro + 1) * cfg["batch_size"]]
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                    parts = trainer(model, x_dev[idx], y_dev[idx], noise_gen)
                if not torch.isfinite(parts["loss"]):
                    raise TrainingError(f"non-finite loss {parts['loss'].item()} at epoch {epoch + 1}, step {step + 1}; "
                                        f"the last good checkpoint is {ckpt_file if ckpt_file.exists() else 'none'} "
                                        f"(try a lower lr or grad_clip)")
                (parts["loss"] / cfg["accum_steps"]).backward()
                for k, v in parts.items():
                    sums[k] = sums.get(k, 0.0) + v.item()
                n_micro += 1
                if n_micro % cfg["accum_steps"] == 0:
                    for g in opt.param_groups:
                        g["lr"] = lr_at(step, total_steps, warmup, cfg["lr"])
                    if cfg["grad_clip"] > 0:
                        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg["grad_clip"])
                    opt.step()
                    opt.zero_grad(set_to_none=True)
                    ema_update(ema, model, cfg["ema_decay"], step)
                    step += 1
            rec = {"epoch": epoch + 1, **{k: v / n_micro for k, v in sums.items()},
                   "lr": opt.param_groups[0]["lr"], "time_s": time.perf_counter() - t0}
            history.append(rec)
            tracker.log(rec, step=epoch + 1)
            progress.update(rec)
            if (epoch + 1) % cfg["checkpoint_every"] == 0 or epoch + 1 == cfg["epochs"]:
                checkpoint(epoch + 1)
            save_json(history, out_dir / "history.json")
        result = evaluate_run(ema, path, cfg, history, x_test, y_test, n_params)
        save_json(result, out_dir / "metrics.json")
        tracker.summary(result)
    finally:
        progress.close()
        tracker.finish()
    return result


def evaluate_run(model, path, cfg, history, x_test, y_test, n_params) -> dict:
    """metrics.json: test metrics of the EMA model, convergence figures, wall time, size."""
    out = metrics.test_metrics(model, path, x_test, y_test, cfg["prediction"], cfg["clip"], cfg["psnr_timesteps"],
                               cfg["eval_seed"])
    out.update(metrics.convergence([h["loss"] for h in history]))
    out["train_time_s"] = sum(h["time_s"] for h in history)
    out["n_params"] = n_params
    out["epochs"] = len(history)
    return {k: cfg[k] for k in ("loss", "noise", "training", "seed")} | out
