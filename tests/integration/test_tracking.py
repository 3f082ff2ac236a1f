"""W&B tracking with real wandb, offline: what a run's .wandb files hold after training and
evaluation, where the API key may come from, and that the key is written nowhere."""
import json
import os
import struct
import subprocess
import sys

import numpy as np
import pytest
import torch
import wandb
import yaml
from helpers.runs import made_up_run
from PIL import Image
from wandb.proto import wandb_internal_pb2

from pydiffusion.checkpoints import RESUMABLE_CHANGES
from pydiffusion.config import ConfigError, validate
from pydiffusion.files import save_torch
from pydiffusion.nets.classifiers import Classifier, save_classifier
from pydiffusion.reporting.export import export_run
from pydiffusion.reporting.figures import samples_grid
from pydiffusion.training.tracking import Tracker, log_quality, resolve_mode

FAKE_KEY = "0123456789abcdef" * 2 + "01234567"  # 40 hex digits, the shape of a W&B API key


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    for name in ("WANDB_API_KEY", "WANDB_BASE_URL", "NETRC"):
        monkeypatch.delenv(name, raising=False)


def records(wandb_file):
    """The records of a .wandb file: wandb's LevelDB-style log of 32 KiB blocks after a 7-byte
    header, each record 7 bytes (crc, length, kind: 1 full, 2 first, 3 middle, 4 last) + data."""
    data, pos, chunk = wandb_file.read_bytes(), 7, b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # no room for a record header: the block ends in padding
            pos += 32768 - pos % 32768
            continue
        _, n, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:
            break
        chunk, pos = chunk + data[pos + 7:pos + 7 + n], pos + 7 + n
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunk)
            chunk = b""
            yield record


def folders(run_dir):
    """The offline W&B folders of a run directory, oldest first, each with its records by kind."""
    out = []
    for folder in sorted((run_dir / "wandb").glob("offline-run-*")):
        by_kind = {}
        for r in records(next(folder.glob("run-*.wandb"))):
            by_kind.setdefault(r.WhichOneof("record_type"), []).append(r)
        out.append((folder, by_kind))
    return out


def summary(by_kind):
    """The final summary of one folder: its summary records applied in order."""
    out = {}
    for r in by_kind.get("summary", []):
        for item in r.summary.update:
            key = item.key or item.nested_key[0]
            if item.key or len(item.nested_key) == 1:
                out[key] = json.loads(item.value_json)
            else:
                out.setdefault(key, {})[item.nested_key[-1]] = json.loads(item.value_json)
    return out


def test_resolve_mode_accepts_the_key_of_wandb_login(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.warns(UserWarning, match="no W&B API key was found"):
        assert resolve_mode("online") == "offline"
    netrc = tmp_path / ".netrc"  # what `wandb login` writes; only its presence is looked at
    netrc.write_text(f"machine api.wandb.ai\n  login user\n  password {FAKE_KEY}\n")
    netrc.chmod(0o600)
    assert resolve_mode("online") == "online"
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.example.org")  # a key for another host does not count
    with pytest.warns(UserWarning):
        assert resolve_mode("online") == "offline"
    other = tmp_path / "elsewhere" / "netrc"
    other.parent.mkdir()
    other.write_text(f"machine wandb.example.org login user password {FAKE_KEY}\n")
    monkeypatch.setenv("NETRC", str(other))
    assert resolve_mode("online") == "online"
    other.write_text("machine wandb.example.org login user password\n")  # broken: wandb could not use it either
    with pytest.warns(UserWarning):
        assert resolve_mode("online") == "offline"
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    assert resolve_mode("online") == "online"
    assert resolve_mode("offline") == "offline" and resolve_mode("disabled") == "disabled"


def test_wandb_entity_is_checked_and_resumable():
    assert validate({})["wandb_entity"] is None and validate({"wandb_entity": "my-team"})["wandb_entity"] == "my-team"
    with pytest.raises(ConfigError, match="'wandb_entity'"):
        validate({"wandb_entity": " "})
    assert "wandb_entity" in RESUMABLE_CHANGES


def test_training_run_has_tags_job_type_and_loss_curve_against_the_epoch(tmp_path, tiny_cfg):
    cfg = validate({**tiny_cfg, "wandb_mode": "offline", "wandb_entity": "my-team", "noise": "convex"})
    tracker = Tracker(cfg, tmp_path)
    for epoch, loss in enumerate([0.9, 0.5, 0.7], start=1):
        tracker.log({"epoch": epoch, "loss": loss, "lr": 1e-3}, step=epoch)
    tracker.summary({"loss": "mse", "noise": "convex", "seed": 0, "test_mse": 0.25})  # as metrics.json has it
    tracker.finish()
    wandb.teardown()  # run.finish() returns before wandb's service process has closed the .wandb file
    [(_, by_kind)] = folders(tmp_path)
    run = by_kind["run"][0].run
    assert run.run_id == (tmp_path / "wandb_id.txt").read_text() and run.resume
    assert run.job_type == "train" and list(run.tags) == ["mse", "convex", "implicit"] and run.entity == "my-team"
    metrics = {m.metric.name or m.metric.glob_name: m.metric for m in by_kind["metric"]}
    assert metrics["*"].step_metric == "epoch" and metrics["loss"].step_metric == "epoch"
    assert metrics["loss"].summary.min
    s = summary(by_kind)
    assert s["loss"] == {"min": 0.5}, "the summary keeps the loss curve's minimum, not the loss's name"
    assert s["test_mse"] == 0.25 and s["epoch"] == 3 and "noise" not in s


def test_evaluation_of_an_unfinished_or_untracked_run_adds_nothing(tmp_path, tiny_cfg):
    cfg = validate({**tiny_cfg, "wandb_mode": "offline"})
    log_quality(cfg, tmp_path, {"fd_1d": 1.0})  # no wandb_id.txt: training was not tracked
    (tmp_path / "wandb_id.txt").write_text("abc123")
    log_quality({**cfg, "wandb_mode": "disabled"}, tmp_path, {"fd_1d": 1.0})
    with pytest.warns(UserWarning, match="still training"):
        log_quality(cfg, tmp_path, {"fd_1d": 1.0})  # no model.pt yet
    assert not (tmp_path / "wandb").exists()


def test_quality_and_samples_reach_the_training_run_and_the_key_is_written_nowhere(tmp_path):
    """train, quality and sample, each its own process as in the workflow, with a key in the
    environment and wandb_mode offline; the smallest model, one epoch: only what is tracked matters."""
    cfg_file, run, classifier = tmp_path / "small.yaml", tmp_path / "run", tmp_path / "classifier.pt"
    cfg_file.write_text(yaml.safe_dump({"channels": 8, "channel_mult": [1], "emb_dim": 16, "attention": False, "epochs": 1,
                                        "batch_size": 500, "threads": 1, "psnr_timesteps": [10], "sample_steps": 5,
                                        "wandb_mode": "offline"}))
    torch.manual_seed(0)
    save_classifier(Classifier(width=8, features=16).eval(), 0.1, classifier)  # untrained: the metrics need not be good
    env = {**os.environ, "WANDB_API_KEY": FAKE_KEY}
    for args in (("train", "--config", cfg_file, "--out", run),
                 ("quality", "--run", run, "--classifier", classifier, "--n", "10", "--out", tmp_path / "q.json"),
                 ("sample", "--run", run, "--n", "20", "--out", tmp_path / "s.pt")):
        r = subprocess.run([sys.executable, "-m", "pydiffusion.cli.main", *map(str, args)], capture_output=True, text=True,
                           env=env)
        assert r.returncode == 0, r.stderr

    train, quality, sample = folders(run)  # one folder per process; `wandb sync` uploads them in this order
    run_id = (run / "wandb_id.txt").read_text()
    for _, by_kind in (train, quality, sample):
        r = by_kind["run"][0].run
        assert r.run_id == run_id and r.resume, "every folder resumes the one run"
        assert r.job_type == "train" and list(r.tags) == ["mse", "gaussian", "implicit"]
    assert {"test_mse", "test_kl"} <= set(summary(train[1]))
    q = json.loads((tmp_path / "q.json").read_text())
    assert {k: summary(quality[1])[k] for k in q} == q and {"fd_1d", "fd_floor", "sample_acc_guided"} <= set(q)

    folder, by_kind = sample
    assert {"samples", "trajectory"} <= set(summary(by_kind))
    [png] = (folder / "files" / "media" / "images").glob("samples_*.png")
    [gif] = (folder / "files" / "media" / "videos").glob("trajectory_*.gif")
    s = torch.load(tmp_path / "s.pt", weights_only=True)
    samples_grid(s["x"], s["y"], tmp_path / "grid.png", per_class=8)  # the figure `pydiffusion sample` draws
    assert np.array_equal(np.asarray(Image.open(png)), np.asarray(Image.open(tmp_path / "grid.png"))), \
        "the logged figure is the samples' grid, one row per class"
    assert Image.open(gif).n_frames == 5 + 1, "x_T and each DDIM step"
    [history] = by_kind["history"]
    assert history.history.step.num == 2, "after the training's last step (epoch 1)"

    leaked = [p for p in run.rglob("*") if p.is_file() and FAKE_KEY.encode() in p.read_bytes()]
    assert not leaked, f"the API key is in {leaked}"


def test_an_export_of_a_tracked_run_is_logged_as_its_model_artifact(tmp_path):
    run_dir = made_up_run(tmp_path, "implicit", seed=0, model=True)
    state = torch.load(run_dir / "model.pt", weights_only=True)
    state["config"]["wandb_mode"] = "offline"
    save_torch(state, run_dir / "model.pt")
    Tracker(validate(state["config"]), run_dir).finish()  # as training leaves it: wandb_id.txt and its first folder
    export_run(run_dir, tmp_path / "export")
    wandb.teardown()
    by_kind = folders(run_dir)[-1][1]
    [record] = by_kind["artifact"]
    artifact = record.artifact
    assert artifact.type == "model" and artifact.name == "model-mse-gaussian-implicit-seed0"
    assert {entry.path for entry in artifact.manifest.contents} == {p.name for p in (tmp_path / "export").iterdir()}
    assert json.loads(artifact.metadata)["test_mse_forward"] == 1.0
