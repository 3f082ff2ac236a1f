"""Weights & Biases tracking: config, per-epoch losses, test metrics.

Online only when asked for and WANDB_API_KEY is set in the environment; otherwise offline
(runs land under the run directory; `wandb sync` uploads them later). An unreachable server
falls back to offline with a warning (wandb waits WANDB_INIT_TIMEOUT seconds, 90 by default). The key is read by
wandb itself from the environment and is never written or printed here.
"""
import os
import uuid
import warnings
from pathlib import Path

from .io import save_text


def resolve_mode(requested: str) -> str:
    if requested == "online" and not os.environ.get("WANDB_API_KEY"):
        warnings.warn("wandb_mode is online but WANDB_API_KEY is not set; tracking offline instead", stacklevel=2)
        return "offline"
    return requested


class Tracker:
    """One W&B run per training run, resumed under the same id when training resumes."""

    def __init__(self, cfg: dict, out_dir: Path):
        self.run = None
        mode = resolve_mode(cfg["wandb_mode"])
        if mode == "disabled":
            return
        import wandb

        id_file = Path(out_dir) / "wandb_id.txt"
        if not id_file.exists():
            save_text(uuid.uuid4().hex[:12], id_file)
        def init(mode):
            return wandb.init(
                project=cfg["wandb_project"], group=cfg["wandb_group"], name=cfg["wandb_name"] or Path(out_dir).name,
                config=cfg, dir=str(out_dir), mode=mode, id=id_file.read_text().strip(), resume="allow",
                settings=wandb.Settings(quiet=True, console="off"),
            )

        try:
            self.run = init(mode)
        except wandb.errors.Error as e:
            if mode != "online":
                raise
            # experiments go on without W&B: the offline run can be uploaded once the server is back
            reason = " ".join(str(e).split())[:200]
            warnings.warn(f"W&B is unreachable ({reason}); tracking offline instead (upload later with "
                          f"`wandb sync {out_dir}/wandb/offline-run-*`)", stacklevel=2)
            wandb.teardown()  # the failed attempt still holds the run id in wandb's service process
            self.run = init("offline")

    def log(self, values: dict, step: int):
        if self.run is not None:
            self.run.log(values, step=step)

    def summary(self, values: dict):
        if self.run is not None:
            self.run.summary.update(values)

    def finish(self):
        if self.run is not None:
            self.run.finish()
            self.run = None
