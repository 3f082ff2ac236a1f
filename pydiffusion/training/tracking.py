"""Weights & Biases tracking: one W&B run per training run holds its config, per-epoch losses and
test metrics, and then, added by `pydiffusion quality` and `pydiffusion sample` (or by `pydiffusion
train --classifier` in the same process), its sample quality, a figure of its samples and a GIF of one
reverse trajectory (drawn and rendered by those commands; the tracker only logs the files).

Online only when asked for and wandb will find an API key: WANDB_API_KEY, or the netrc entry that
`wandb login` writes. Here we only check that a key is there. wandb reads the key itself, and it
is never written or printed here. Otherwise offline: runs land under the run directory and
`wandb sync` uploads them later. An unreachable server falls back to offline with a warning
after at most WANDB_INIT_TIMEOUT seconds (15 by default here; wandb's own default is 90).

Every wandb.init of a run (training, resumed training, each evaluation command) uses the id in
RUN/wandb_id.txt with resume="allow". Online, that appends to the one run. Offline, each init
writes its own folder RUN/wandb/offline-run-<time>-<id>. Each folder records that it resumes the
run, and `wandb sync` of all of them uploads the folders of one id one after the other, in order of
start time (as wandb 0.31 documents it; README.md, "Weights & Biases", says what was checked).
"""
import netrc
import os
import uuid
import warnings
from pathlib import Path
from urllib.parse import urlsplit

from pydiffusion.checkpoints import MODEL
from pydiffusion.files import save_text

ID_FILE = "wandb_id.txt"
INIT_TIMEOUT_S = 15  # how long an unreachable server may hold training up (wandb's own default is 90 s)


def init_timeout() -> float:
    """Seconds wandb.init waits for the server before the run goes on offline: $WANDB_INIT_TIMEOUT, else
    INIT_TIMEOUT_S."""
    try:
        return float(os.environ.get("WANDB_INIT_TIMEOUT") or INIT_TIMEOUT_S)
    except ValueError:
        return INIT_TIMEOUT_S


def has_api_key() -> bool:
    """Whether wandb will find an API key: WANDB_API_KEY, or a netrc entry for the W&B host
    ($WANDB_BASE_URL, default api.wandb.ai) in $NETRC or ~/.netrc, where `wandb login` puts it.
    Only whether it is there is tested."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlsplit(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").netloc
    try:
        entry = netrc.netrc(os.environ.get("NETRC") or Path.home() / ".netrc").authenticators(host)
    except (OSError, netrc.NetrcParseError):  # no netrc file, or one wandb cannot read either
        return False
    return bool(entry and entry[2])


def resolve_mode(requested: str) -> str:
    if requested == "online" and not has_api_key():
        warnings.warn("wandb_mode is online but no W&B API key was found (set WANDB_API_KEY or run `wandb login`); "
                      "tracking offline instead", stacklevel=2)
        return "offline"
    return requested


class Tracker:
    """The W&B run of a training run: created by its training, resumed under the same id by a
    resumed training and by each evaluation."""

    def __init__(self, cfg: dict, out_dir: Path):
        self.run = None
        self.cfg = cfg
        mode = resolve_mode(cfg["wandb_mode"])
        if mode == "disabled":
            return
        import wandb

        id_file = Path(out_dir) / ID_FILE
        if not id_file.exists():
            save_text(uuid.uuid4().hex[:12], id_file)

        def init(mode):
            # job_type stays "train" when an evaluation resumes the run: W&B keeps one job type per run
            return wandb.init(
                entity=cfg["wandb_entity"], project=cfg["wandb_project"], group=cfg["wandb_group"],
                name=cfg["wandb_name"] or Path(out_dir).name, job_type="train",
                tags=[cfg["loss"], cfg["noise"], cfg["training"]],
                config=cfg, dir=str(out_dir), mode=mode, id=id_file.read_text().strip(), resume="allow",
                settings=wandb.Settings(quiet=True, console="off", init_timeout=init_timeout()),
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
        # curves against the epoch, not W&B's step counter (resumes and evaluations move it too); an
        # offline folder has no definitions from the server, so every init defines them again
        self.run.define_metric("epoch")
        self.run.define_metric("*", step_metric="epoch")
        self.run.define_metric("loss", step_metric="epoch", summary="min")

    def log(self, values: dict, step: int):
        if self.run is not None:
            self.run.log(values, step=step)

    def summary(self, values: dict):
        # metrics.json repeats the run's config (loss: "mse", noise, training, seed, epochs); the
        # config holds those already, and the summary's `loss` is the minimum of the loss curve
        if self.run is not None:
            self.run.summary.update({k: v for k, v in values.items() if k not in self.cfg})

    @property
    def active(self) -> bool:
        return self.run is not None

    def log_media(self, files: dict):
        """Figures (.png) and animations (.gif) {name: (file, caption)} into the run, at its final epoch."""
        if self.run is None:
            return
        import wandb

        media = {name: wandb.Video(str(file), format="gif", caption=caption) if Path(file).suffix == ".gif"
                 else wandb.Image(str(file), caption=caption) for name, (file, caption) in files.items()}
        # W&B's steps only go up: offline, an init starts counting at 0 again
        epochs = self.cfg["epochs"]
        self.run.log({**media, "epoch": epochs}, step=max(self.run.step, epochs + 1))

    def log_model(self, folder, name: str, description: str, metadata: dict):
        """The files of `folder` (an export) as a W&B model artifact of this run."""
        if self.run is None:
            return
        import wandb

        artifact = wandb.Artifact(name, type="model", description=description, metadata=metadata)
        artifact.add_dir(str(folder))
        self.run.log_artifact(artifact)

    def finish(self):
        if self.run is not None:
            self.run.finish()
            self.run = None


def resume_tracker(cfg: dict, run_dir) -> Tracker | None:
    """The W&B run of a finished training, resumed, or None where the training was not tracked."""
    run_dir = Path(run_dir)
    if cfg["wandb_mode"] == "disabled" or not (run_dir / ID_FILE).exists():
        return None
    if not (run_dir / MODEL).exists():
        # online, a second process writing into the run that training is still writing would clash
        warnings.warn(f"{run_dir} is still training; its W&B run gets no evaluation results", stacklevel=3)
        return None
    return Tracker(cfg, run_dir)


def log_quality(cfg: dict, run_dir, quality: dict):
    """Put the sample-quality metrics (`pydiffusion quality`) into the summary of the run's W&B run."""
    tracker = resume_tracker(cfg, run_dir)
    if tracker is None:
        return
    try:
        tracker.summary(quality)
    finally:
        tracker.finish()
