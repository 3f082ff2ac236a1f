"""Reliability: files this program did not just write are never trusted, broken ones are named in
one line, an interrupted or damaged run resumes, and every bad input is one line and exit 2 with
nothing left behind."""
import json
import os
import shutil
import struct
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from helpers.image_files import write_idx_set
from helpers.timings import without_timings

from pydiffusion.cli import main as cli
from pydiffusion.config import validate
from pydiffusion.data.datasets import IDX_FILES
from pydiffusion.diffusion.paths import NoisePath
from pydiffusion.files import RunLock, UnreadableFileError
from pydiffusion.nets.classifiers import Classifier, save_classifier
from pydiffusion.nets.noisy_classifier import NoisyClassifier, save_noisy_classifier
from pydiffusion.reporting.grid_stats import load_runs
from pydiffusion.training.loop import train

QUIET = lambda *a: None  # noqa: E731


class CodePayload:
    """Pickles to a call of os.system: loading it with weights_only=False runs the command."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def run_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "pydiffusion.cli.main", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=600)


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got:\n{stderr}"
    assert "Traceback" not in stderr
    return lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished tiny run (1 epoch), shared read-only by the tests of this module."""
    from helpers.configs import TINY

    out = tmp_path_factory.mktemp("trained") / "run"
    train(validate({**TINY, "epochs": 1}), out, log=QUIET)
    return out


def _files(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


# ---- files that hold code are refused, and their payload never runs ---------------------------

def test_a_checkpoint_that_holds_code_is_refused_and_does_not_run(tmp_path, trained):
    marker = tmp_path / "payload-ran"
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    torch.save({**state, "model": CodePayload(marker)}, run / "checkpoint.pt")
    (run / "model.pt").unlink()
    (run / "checkpoint.prev.pt").unlink(missing_ok=True)
    assert not marker.exists()
    for args in (("evaluate", "--run", run), ("sample", "--run", run, "--out", tmp_path / "s.pt"),
                 ("train", "--out", run, "--set", "epochs=1", "channels=16", "emb_dim=32", "threads=1",
                  "batch_size=64", "wandb_mode=disabled", "n_samples=10")):
        r = run_cli(*args)
        line = one_error_line(r.stderr)
        assert r.returncode == 2 and "refused: loading them could run code" in line and str(run / "checkpoint.pt") in line
        assert not marker.exists(), f"the payload ran under {args[0]}"
    assert not (tmp_path / "s.pt").exists()
    # the run directory is left as it was: nothing deleted, nothing written
    assert not (run / "metrics.json").exists() or json.loads((run / "metrics.json").read_text())


def test_model_classifier_and_data_cache_holding_code_are_refused(tmp_path, trained):
    marker = tmp_path / "payload-ran"
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    torch.save({"config": {}, "ema": CodePayload(marker), "history": [], "epoch": 1}, run / "model.pt")
    r = run_cli("evaluate", "--run", run)
    assert r.returncode == 2 and "refused" in one_error_line(r.stderr) and "model.pt" in r.stderr

    bad_classifier = tmp_path / "classifier.pt"
    torch.save({"state_dict": CodePayload(marker), "test_acc": 1.0, "arch": {}}, bad_classifier)
    r = run_cli("quality", "--run", trained, "--classifier", bad_classifier, "--out", tmp_path / "q.json")
    assert r.returncode == 2 and "refused" in one_error_line(r.stderr) and "classifier.pt" in r.stderr
    assert not (tmp_path / "q.json").exists()

    # a data cache is only a cache: refused, generated again, and training goes on
    cache = tmp_path / "cache"
    cache.mkdir()
    from pydiffusion.data.mnist1d import load_mnist1d

    good = load_mnist1d(os.environ["PYDIFFUSION_CACHE"])
    name = next(p.name for p in Path(os.environ["PYDIFFUSION_CACHE"]).glob("mnist1d-*.pt"))
    torch.save({"x": CodePayload(marker)}, cache / name)
    with pytest.warns(UserWarning, match="refused"):
        again = load_mnist1d(cache)
    assert all(torch.equal(a, b) for a, b in zip(again, good))
    assert not marker.exists()


# ---- damaged files -----------------------------------------------------------------------------

def test_a_damaged_checkpoint_falls_back_to_the_one_before_and_resumes_exactly(tmp_path, tiny_cfg):
    cfg = validate({**tiny_cfg, "epochs": 3, "checkpoint_every": 1})
    straight = train(cfg, tmp_path / "straight", log=QUIET)

    def crash_in_epoch_3(line):
        if line.startswith("epoch 3:"):
            raise KeyboardInterrupt

    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(cfg, run, log=crash_in_epoch_3)
    assert torch.load(run / "checkpoint.prev.pt", weights_only=True)["epoch"] == 1
    data = (run / "checkpoint.pt").read_bytes()
    (run / "checkpoint.pt").write_bytes(data[: len(data) // 2])  # a torn write
    (run / ".checkpoint.pt.k1ll3d.tmp").write_bytes(b"half a checkpoint")  # a killed atomic write
    lines = []
    resumed = train(cfg, run, log=lines.append)
    assert any("checkpoint.pt is truncated" in line for line in lines)
    assert any("resuming from checkpoint.prev.pt instead" in line for line in lines)
    assert any("resuming" in line and "from epoch 1" in line for line in lines)
    assert any("removed 1 temporary file" in line for line in lines)
    assert not (run / ".checkpoint.pt.k1ll3d.tmp").exists()
    assert without_timings(resumed) == without_timings(straight)


def test_a_damaged_checkpoint_never_displaces_the_good_one_before_it(tmp_path, tiny_cfg, monkeypatch):
    """Resumed from checkpoint.prev.pt past a damaged checkpoint.pt, a kill during the first save must leave the good
    checkpoint.prev.pt: the damaged file is written over, not rotated over it."""
    cfg = validate({**tiny_cfg, "epochs": 3, "checkpoint_every": 1})
    straight = train(cfg, tmp_path / "straight", log=QUIET)
    def crash_in_epoch_3(line):
        if line.startswith("epoch 3:"):
            raise KeyboardInterrupt

    two = tmp_path / "two"  # checkpoint.pt of epoch 2, checkpoint.prev.pt of epoch 1
    with pytest.raises(KeyboardInterrupt):
        train(cfg, two, log=crash_in_epoch_3)
    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.yaml", "history.json", "checkpoint.prev.pt"):
        shutil.copy(two / name, run / name)
    good_prev = (run / "checkpoint.prev.pt").read_bytes()
    (run / "checkpoint.pt").write_bytes((two / "checkpoint.pt").read_bytes()[:1000])

    def killed(state, path):  # the process dies while the new checkpoint is being written
        raise KeyboardInterrupt

    monkeypatch.setattr("pydiffusion.checkpoints.save_torch", killed)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, run, log=QUIET)
    monkeypatch.undo()
    assert (run / "checkpoint.prev.pt").read_bytes() == good_prev
    lines = []
    resumed = train(cfg, run, log=lines.append)
    assert any("resuming from checkpoint.prev.pt instead" in line for line in lines)
    assert without_timings(resumed) == without_timings(straight), "the run resumed from epoch 1 as if never hit"
    assert torch.load(run / "checkpoint.prev.pt", weights_only=True)["epoch"] == 2, "rotation goes on once it is good"


@pytest.mark.parametrize("damage", ["empty", "truncated", "random"])
def test_no_readable_checkpoint_is_one_line_naming_the_files(tmp_path, trained, damage):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    (run / "model.pt").unlink()
    good = (run / "checkpoint.pt").read_bytes()
    broken = {"empty": b"", "truncated": good[:1000], "random": os.urandom(5000)}[damage]
    for name in ("checkpoint.pt", "checkpoint.prev.pt"):
        (run / name).write_bytes(broken)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg))
    r = run_cli("train", "--config", cfg_file, "--out", run)
    assert r.returncode == 2
    assert "no readable checkpoint" in one_error_line(r.stderr) and "checkpoint.pt, checkpoint.prev.pt" in r.stderr
    r = run_cli("evaluate", "--run", run)
    assert r.returncode == 2 and str(run / "checkpoint.pt") in one_error_line(r.stderr)
    assert (run / "checkpoint.pt").read_bytes() == broken, "nothing is deleted behind the user's back"


def test_aggregate_names_an_unreadable_run_file(tmp_path, trained):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    assert load_runs([run])[0]["metrics"]["test_mse"] > 0
    text = (run / "metrics.json").read_text()
    (run / "metrics.json").write_text(text[: len(text) // 2])
    with pytest.raises(UnreadableFileError, match=f"{run / 'metrics.json'} is not valid JSON.*rerun the workflow"):
        load_runs([run])
    (run / "metrics.json").write_text(text)
    (run / "history.json").write_text("{}")
    with pytest.raises(UnreadableFileError, match="history.json is not a loss history"):
        load_runs([run])


# ---- one writer per run directory ---------------------------------------------------------------

def test_a_second_trainer_waits_for_the_first_and_then_resumes(tmp_path, trained):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    cfg = validate(yaml.safe_load((run / "config.yaml").read_text()))
    before = json.loads((run / "metrics.json").read_text())
    lines, released = [], threading.Event()

    def hold():
        with RunLock(run):
            time.sleep(2)
            released.set()

    holder = threading.Thread(target=hold)
    holder.start()
    time.sleep(0.3)
    with pytest.raises(Exception, match="in use by another pydiffusion process"):
        train(cfg, run, log=QUIET)
    again = train(cfg, run, log=lines.append, wait=True)
    holder.join()
    assert released.is_set() and any(line.startswith("waiting for pid") for line in lines)
    assert any("resuming" in line and "from epoch 1" in line for line in lines)
    assert without_timings(again) == without_timings(before)


# ---- W&B: experiments go on without it -----------------------------------------------------------

def test_unreachable_wandb_server_falls_back_to_offline_within_seconds(tmp_path):
    import socket

    with socket.socket() as closed:  # a local port that nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k != "WANDB_INIT_TIMEOUT"}  # the project's default wait
    proc = subprocess.Popen([sys.executable, "-m", "pydiffusion.cli.main", "train", "--out", str(out), "--set",
                             "epochs=1", "channels=16", "emb_dim=32", "threads=1", "batch_size=256", "wandb_mode=online"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**env, "WANDB_API_KEY": "0" * 40, "WANDB_BASE_URL": f"http://127.0.0.1:{port}"})
    seen = {}  # when the line before W&B starts (the model's size) and the first epoch's line came
    for line in proc.stdout:
        for key, mark in (("start", "parameters;"), ("epoch", "epoch 1:")):
            if mark in line:
                seen.setdefault(key, time.monotonic())
    stderr = proc.stderr.read()
    assert proc.wait(timeout=600) == 0, stderr
    r = subprocess.CompletedProcess(proc.args, 0, "", stderr)
    epoch_s = json.loads((out / "history.json").read_text())[0]["time_s"]
    waited = seen["epoch"] - seen["start"] - epoch_s
    assert waited < 25, f"the unreachable server held training up for {waited:.0f} s"
    assert "pydiffusion: warning: W&B is unreachable" in r.stderr and "Traceback" not in r.stderr
    assert (out / "metrics.json").exists() and list((out / "wandb").glob("offline-run-*"))
    assert "0" * 40 not in "".join(p.read_text(errors="ignore") for p in out.rglob("*") if p.is_file()
                                   and p.suffix in (".yaml", ".json", ".txt", ".log"))


# ---- file systems that refuse writes: one line, before any work where it can be known first ----------------

@pytest.fixture
def mount(tmp_path):
    """make(name, size, read_only): a real tmpfs mounted under tmp_path, to fill up or to refuse every write."""
    mounted = []

    def make(name, size="4m", read_only=False):
        folder = tmp_path / name
        folder.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}" + (",ro" if read_only else ""), "tmpfs",
                            str(folder)], capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"mounting a tmpfs needs root (CAP_SYS_ADMIN): {r.stderr.strip()}")
        mounted.append(folder)
        return folder

    yield make
    for folder in reversed(mounted):
        subprocess.run(["umount", str(folder)], check=False)


TINY_SETS = ["--set", "epochs=1", "channels=16", "emb_dim=32", "threads=1", "batch_size=64", "wandb_mode=disabled",
             "n_samples=10"]


def test_an_output_on_a_read_only_file_system_is_one_line_before_any_work(mount, trained, capsys):
    ro = mount("ro", read_only=True)
    for args in (["train", "--out", ro / "run", *TINY_SETS], ["sample", "--run", trained, "--out", ro / "s.pt"],
                 ["noisy-classifier", "--out", ro / "nc.pt"], ["export", "--run", trained, "--out", ro / "export"],
                 ["evaluate", "--run", trained, "--out", ro / "m.json"], ["data", "--cache", ro / "cache"],
                 ["classifier", "--out", ro / "c.pt"]):
        code = cli.main([str(a) for a in args])
        captured = capsys.readouterr()
        line = one_error_line(captured.err)
        assert code == 2 and "cannot be written: the file system is read-only" in line, (args[0], line)
        assert "epoch" not in captured.out, f"{args[0]} worked before it found it could not write"


def test_an_unwritable_data_cache_is_a_warning_and_training_goes_on(mount, tmp_path):
    ro = mount("cache", read_only=True)
    r = run_cli("train", "--out", tmp_path / "run", *TINY_SETS, f"data_cache={ro}")
    assert r.returncode == 0, r.stderr
    [warning] = [line for line in r.stderr.splitlines() if line.strip()]
    assert warning.startswith("pydiffusion: warning: MNIST-1D is not cached") and "read-only" in warning
    assert (tmp_path / "run" / "metrics.json").exists()


def test_a_full_disk_during_training_is_one_line_and_keeps_the_checkpoint_before(mount, tmp_path, tiny_cfg):
    cfg = validate({**tiny_cfg, "epochs": 3, "checkpoint_every": 1})
    straight = train(cfg, tmp_path / "straight", log=QUIET)
    size = (tmp_path / "straight" / "checkpoint.pt").stat().st_size
    full = mount("full", size=f"{size * 3 // 2 // 1024}k")  # room for one checkpoint, not for two
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg))
    r = run_cli("train", "--config", cfg_file, "--out", full / "run")
    line = one_error_line(r.stderr)
    assert r.returncode == 2 and "no space left on the device (free some space)" in line, line
    assert "checkpoint.pt keeps what it held before" in line
    assert not list((full / "run").glob(".*.tmp")), "nothing half-written is left"
    kept = [torch.load(f, weights_only=True)["epoch"] for f in sorted((full / "run").glob("checkpoint*.pt"))]
    assert kept and min(kept) >= 1, "a readable checkpoint of the epochs done survives"
    moved = tmp_path / "moved"
    shutil.copytree(full / "run", moved)
    assert without_timings(train(cfg, moved, log=QUIET)) == without_timings(straight)


# ---- bad input: one line, exit 2, nothing left behind --------------------------------------------

T = ["train", "--out", "{run}"]
CASES = {
    # train: overrides
    "set-not-key-value": (T + ["--set", "epochs"], "is not key=value"),
    "set-empty-key": (T + ["--set", "=3"], "is not key=value"),
    "set-broken-list": (T + ["--set", "channel_mult=[1"], "not valid YAML"),
    "set-unknown-key": (T + ["--set", "epoch=3"], "unknown config key 'epoch'"),
    "epochs-zero": (T + ["--set", "epochs=0"], "'epochs' is 0"),
    "epochs-text": (T + ["--set", "epochs=three"], "'epochs' must be int"),
    "epochs-float": (T + ["--set", "epochs=2.5"], "'epochs' must be int"),
    "lr-negative": (T + ["--set", "lr=-1"], "'lr' is -1"),
    "lr-inf": (T + ["--set", "lr=inf"], "'lr' is inf; it must be a finite number"),
    "lr-nan": (T + ["--set", "lr=.nan"], "'lr' is nan; it must be a finite number"),
    "w-forward-inf": (T + ["--set", "w_forward=inf"], "'w_forward' is inf"),
    "w-rt-if-negative": (T + ["--set", "w_rt_if=-0.5"], "'w_rt_if' is -0.5"),
    "guidance-inf": (T + ["--set", "guidance=inf"], "'guidance' is inf"),
    "eta-above-one": (T + ["--set", "eta=2"], "'eta' is 2.0"),
    "noise-unknown": (T + ["--set", "noise=brownian"], "choose one of gaussian, convex"),
    "prediction-unknown": (T + ["--set", "prediction=score"], "choose one of eps, x0, v"),
    "loss-unknown": (T + ["--set", "loss=l1"], "choose one of mse, kl"),
    "training-unknown": (T + ["--set", "training=explicit"], "'training' is 'explicit'"),
    "training-module-missing": (T + ["--set", "training=nosuchpkg.trainers:Mine"], "module 'nosuchpkg' is not found"),
    "training-class-missing": (T + ["--set", "training=pydiffusion.training.min_snr:Nope"], "has no class 'Nope'"),
    "training-not-a-trainer": (T + ["--set", "training=json:JSONDecoder"], "must declare `components`"),
    "trainer-option-elsewhere": (T + ["--set", "snr_gamma=5"], "unknown config key 'snr_gamma'"),
    "trainer-option-bad": (T + ["--set", "training=min_snr", "snr_gamma=-1"], "'snr_gamma' is -1.0; it must be > 0"),
    "trainer-option-type": (T + ["--set", "training=min_snr", "snr_gamma=big"], "'snr_gamma' must be float"),
    "trainer-rule-across-keys": (T + ["--set", "training=min_snr", "loss=kl"], "min-SNR weighting weighs the mse loss"),
    "schedule-unknown": (T + ["--set", "schedule=sigmoid"], "'schedule' is 'sigmoid'"),
    "device-unknown": (T + ["--set", "device=tpu"], "'device' is 'tpu'"),
    "sampler-unknown": (T + ["--set", "sampler=euler"], "'sampler' is 'euler'"),
    "model-unknown": (T + ["--set", "model=transformer"], "'model' is 'transformer'"),
    "wandb-mode-unknown": (T + ["--set", "wandb_mode=cloud"], "'wandb_mode' is 'cloud'"),
    "seed-too-big": (T + ["--set", "seed=1180591620717411303424"], "'seed' is 1180591620717411303424"),
    "seed-negative": (T + ["--set", "seed=-1"], "'seed' is -1"),
    "eval-seed-too-big": (T + ["--set", "eval_seed=18446744073709551616"], "'eval_seed'"),
    "T-one": (T + ["--set", "T=1"], "'T' is 1"),
    "channels-not-multiple-of-8": (T + ["--set", "channels=12"], "a multiple of 8"),
    "channel-mult-too-long": (T + ["--set", "channel_mult=[1, 2, 2, 2]"], "'channel_mult'"),
    "channel-mult-zero": (T + ["--set", "channel_mult=[0]"], "'channel_mult'"),
    "channel-mult-text": (T + ["--set", "channel_mult=wide"], "'channel_mult' must be list"),
    "accum-steps-too-many": (T + ["--set", "accum_steps=100"], "'accum_steps' is 100, but an epoch has only 31 batches"),
    "batch-size-too-big": (T + ["--set", "batch_size=100000"], "'batch_size' is 100000, more than the 4000"),
    "batch-size-zero": (T + ["--set", "batch_size=0"], "'batch_size' is 0"),
    "config-sample-steps-above-T": (T + ["--set", "sample_steps=50"], "'sample_steps' is 50; it must be <= T"),
    "psnr-timestep-above-T": (T + ["--set", "psnr_timesteps=[25]"], "'psnr_timesteps' has 25 > T"),
    "psnr-timesteps-empty": (T + ["--set", "psnr_timesteps=[]"], "'psnr_timesteps'"),
    "cfg-dropout-one": (T + ["--set", "cfg_dropout=1"], "'cfg_dropout' is 1.0"),
    "ema-decay-one": (T + ["--set", "ema_decay=1"], "'ema_decay' is 1.0"),
    "attention-not-bool": (T + ["--set", "attention=maybe"], "'attention' must be bool"),
    "threads-negative": (T + ["--set", "threads=-1"], "'threads' is -1"),
    "checkpoint-every-zero": (T + ["--set", "checkpoint_every=0"], "'checkpoint_every' is 0"),
    "emb-dim-odd": (T + ["--set", "emb_dim=33"], "'emb_dim' is 33"),
    # train: config files and --out
    "config-missing": (T + ["--config", "{tmp}/missing.yaml"], "does not exist"),
    "config-not-utf8": (T + ["--config", "{tmp}/latin1.yaml"], "is not UTF-8 text"),
    "config-bad-yaml": (T + ["--config", "{tmp}/broken.yaml"], "is not valid YAML"),
    "config-a-list": (T + ["--config", "{tmp}/list.yaml"], "must hold a mapping"),
    "config-unknown-key": (T + ["--config", "{tmp}/unknown.yaml"], "unknown config key 'lrate'"),
    "out-is-a-file": (["train", "--out", "{tmp}/afile"], "is a file, not a directory"),
    "out-under-a-file": (["train", "--out", "{tmp}/afile/run"], "is under"),
    "out-in-use": (["train", "--out", "{busy}"], "is in use by another pydiffusion process"),
    "resume-changed-config": (["train", "--out", "{trained}", "--set", "channels=16", "emb_dim=32", "threads=1",
                               "batch_size=64", "epochs=1", "lr=0.01"], "'lr' is 0.01 but the checkpoint"),
    "train-without-out": (["train"], "the following arguments are required: --out"),
    # evaluate
    "evaluate-missing-run": (["evaluate", "--run", "{tmp}/nothing"], "train first"),
    "evaluate-empty-run": (["evaluate", "--run", "{tmp}/emptydir"], "holds no model.pt or checkpoint.pt"),
    "evaluate-truncated-model": (["evaluate", "--run", "{tmp}/truncated"], "model.pt is truncated"),
    "evaluate-empty-model": (["evaluate", "--run", "{tmp}/emptymodel"], "model.pt is empty"),
    "evaluate-foreign-model": (["evaluate", "--run", "{tmp}/foreign"], "is not a pydiffusion model (no 'config')"),
    "evaluate-out-directory": (["evaluate", "--run", "{trained}", "--out", "{tmp}"], "is a directory"),
    "evaluate-out-not-json": (["evaluate", "--run", "{trained}", "--out", "{tmp}/m.txt"], "must end in .json"),
    # sample
    "sample-out-directory": (["sample", "--run", "{trained}", "--out", "{tmp}"], "is a directory"),
    "sample-out-txt": (["sample", "--run", "{trained}", "--out", "{tmp}/s.txt"], "must end in .pt or .npy or .png"),
    "sample-out-under-file": (["sample", "--run", "{trained}", "--out", "{tmp}/afile/s.pt"], "is under"),
    "sample-steps-zero": (["sample", "--run", "{trained}", "--steps", "0", "--out", "{tmp}/s.pt"], "--steps is 0"),
    "sample-steps-above-T": (["sample", "--run", "{trained}", "--steps", "50", "--out", "{tmp}/s.pt"], "--steps is 50"),
    "sample-guidance-nan": (["sample", "--run", "{trained}", "--guidance", "nan", "--out", "{tmp}/s.pt"], "--guidance is nan"),
    "sample-guidance-inf": (["sample", "--run", "{trained}", "--guidance", "inf", "--out", "{tmp}/s.pt"], "--guidance is inf"),
    "sample-guidance-negative": (["sample", "--run", "{trained}", "--guidance", "-1", "--out", "{tmp}/s.pt"], "--guidance is -1"),
    "sample-eta-above-one": (["sample", "--run", "{trained}", "--eta", "2", "--out", "{tmp}/s.pt"], "--eta is 2.0"),
    "sample-eta-nan": (["sample", "--run", "{trained}", "--eta", "nan", "--out", "{tmp}/s.pt"], "--eta is nan"),
    "sample-n-zero": (["sample", "--run", "{trained}", "--n", "0", "--out", "{tmp}/s.pt"], "--n is 0"),
    "sample-n-text": (["sample", "--run", "{trained}", "--n", "many", "--out", "{tmp}/s.pt"], "invalid int value: 'many'"),
    "sample-seed-negative": (["sample", "--run", "{trained}", "--seed", "-1", "--out", "{tmp}/s.pt"], "--seed is -1"),
    "sample-unknown-sampler": (["sample", "--run", "{trained}", "--sampler", "euler", "--out", "{tmp}/s.pt"], "invalid choice: 'euler'"),
    "sample-class-too-big": (["sample", "--run", "{trained}", "--class", "10", "--out", "{tmp}/s.pt"], "--class is 10"),
    "sample-class-negative": (["sample", "--run", "{trained}", "--class", "-1", "--out", "{tmp}/s.pt"], "--class is -1"),
    "sample-class-unconditional": (["sample", "--run", "{trained}", "--class", "3", "--guidance", "0", "--out",
                                    "{tmp}/s.pt"], "--class 3 needs guidance > 0 or --classifier-scale > 0"),
    "sample-classifier-scale-alone": (["sample", "--run", "{trained}", "--classifier-scale", "2", "--out", "{tmp}/s.pt"],
                                      "--classifier-scale needs --noisy-classifier FILE"),
    "sample-classifier-scale-negative": (["sample", "--run", "{trained}", "--classifier-scale", "-1", "--out",
                                          "{tmp}/s.pt"], "--classifier-scale is -1.0; it must be a number in [0, 100]"),
    "sample-noisy-classifier-missing": (["sample", "--run", "{trained}", "--classifier-scale", "2", "--noisy-classifier",
                                         "{tmp}/none.pt", "--out", "{tmp}/s.pt"], "none.pt"),
    "sample-trajectory-not-gif": (["sample", "--run", "{trained}", "--trajectory", "{tmp}/t.png", "--out", "{tmp}/s.pt"],
                                  "--trajectory {tmp}/t.png must end in .gif"),
    "sample-trajectory-directory": (["sample", "--run", "{trained}", "--trajectory", "{tmp}", "--out", "{tmp}/s.pt"],
                                    "--trajectory {tmp} is a directory"),
    "sample-missing-run": (["sample", "--run", "{tmp}/nothing", "--out", "{tmp}/s.pt"], "train first"),
    "sample-without-run": (["sample", "--out", "{tmp}/s.pt"], "the following arguments are required: --run"),
    # plot
    "plot-missing-run": (["plot", "--run", "{tmp}/nothing", "--out", "{tmp}/l.png"], "history.json does not exist"),
    "plot-out-not-png": (["plot", "--run", "{trained}", "--out", "{tmp}/l.pdf"], "must end in .png"),
    "plot-empty-history": (["plot", "--run", "{tmp}/nohistory", "--out", "{tmp}/l.png"], "holds no epochs"),
    "plot-broken-history": (["plot", "--run", "{tmp}/brokenhistory", "--out", "{tmp}/l.png"], "is not valid JSON"),
    # quality and classifier
    "quality-missing-classifier": (["quality", "--run", "{trained}", "--classifier", "{tmp}/none.pt", "--out", "{tmp}/q.json"],
                                   "classifier {tmp}/none.pt does not exist"),
    "quality-truncated-classifier": (["quality", "--run", "{trained}", "--classifier", "{tmp}/truncated/model.pt",
                                      "--out", "{tmp}/q.json"], "is truncated or not a torch file"),
    "quality-foreign-classifier": (["quality", "--run", "{trained}", "--classifier", "{trained}/model.pt",
                                    "--out", "{tmp}/q.json"], "is not a pydiffusion classifier"),
    "quality-out-not-json": (["quality", "--run", "{trained}", "--classifier", "{tmp}/none.pt", "--out", "{tmp}/q.pt"],
                             "must end in .json"),
    "quality-n-too-small": (["quality", "--run", "{trained}", "--classifier", "{tmp}/none.pt", "--n", "5",
                             "--out", "{tmp}/q.json"], "need --n in [10, 100,000]"),
    "classifier-out-not-pt": (["classifier", "--out", "{tmp}/c.json"], "must end in .pt"),
    "classifier-out-directory": (["classifier", "--out", "{tmp}"], "is a directory"),
    "classifier-threads-negative": (["classifier", "--out", "{tmp}/c.pt", "--threads", "-2"], "--threads >= 0"),
    "quality-draws-zero": (["quality", "--run", "{trained}", "--classifier", "{tmp}/none.pt", "--draws", "0",
                            "--out", "{tmp}/q.json"], "--draws >= 1"),
    "quality-two-cnn-classifiers": (["quality", "--run", "{trained}", "--classifier", "{tmp}/cnn.pt", "{tmp}/cnn.pt",
                                     "--out", "{tmp}/q.json"], "are of architectures cnn, cnn; give at most one of each"),
    "train-quality-draws-zero": (T + ["--classifier", "{tmp}/cnn.pt", "--quality-draws", "0"], "--quality-draws >= 1"),
    "train-two-cnn-classifiers": (T + ["--classifier", "{tmp}/cnn.pt", "{tmp}/cnn.pt"], "give at most one of each"),
    "classifier-epochs-zero": (["classifier", "--out", "{tmp}/c.pt", "--epochs", "0"], "--epochs >= 1"),
    "classifier-arch-unknown": (["classifier", "--out", "{tmp}/c.pt", "--arch", "vgg"], "invalid choice: 'vgg'"),
    # values out of any range a user could mean, and values a sampler would ignore
    "guidance-huge": (T + ["--set", "guidance=1e308"], "'guidance' is 1e+308; it must be in [0, 100.0]"),
    "n-samples-huge": (T + ["--set", "n_samples=100000000000"], "'n_samples' is 100000000000; it must be an integer in"),
    "sample-guidance-huge": (["sample", "--run", "{trained}", "--guidance", "1e308", "--out", "{tmp}/s.pt"],
                             "--guidance is 1e+308; it must be in [0, 100.0]"),
    "sample-classifier-scale-huge": (["sample", "--run", "{trained}", "--classifier-scale", "1e308", "--out", "{tmp}/s.pt"],
                                     "--classifier-scale is 1e+308"),
    "sample-n-huge": (["sample", "--run", "{trained}", "--n", "100000000000", "--out", "{tmp}/s.pt"],
                      "--n is 100000000000; it must be an integer in [1, 100,000]"),
    "quality-n-huge": (["quality", "--run", "{trained}", "--classifier", "{tmp}/cnn.pt", "--n", "100000000000",
                        "--out", "{tmp}/q.json"], "need --n in [10, 100,000]"),
    "train-samples-huge": (T + ["--classifier", "{tmp}/cnn.pt", "--samples", "100000000000"], "--samples is 100000000000"),
    "sample-ddpm-steps": (["sample", "--run", "{trained}", "--sampler", "ddpm", "--steps", "5", "--out", "{tmp}/s.pt"],
                          "steps is 5, but ddpm always takes all T=20 steps"),
    "sample-ddpm-eta": (["sample", "--run", "{trained}", "--sampler", "ddpm", "--eta", "0", "--out", "{tmp}/s.pt"],
                        "eta is 0.0, but ddpm always runs with eta 1"),
    "sample-dpmpp-eta": (["sample", "--run", "{trained}", "--sampler", "dpmpp_2m", "--eta", "1", "--out", "{tmp}/s.pt"],
                         "eta is 1.0, but dpmpp_2m always runs with eta 0"),
    # files whose contents do not fit what they claim
    "evaluate-mismatched-model": (["evaluate", "--run", "{tmp}/mismatched"], "its weights do not fit its architecture"),
    "sample-mismatched-model": (["sample", "--run", "{tmp}/mismatched", "--out", "{tmp}/s.pt"],
                                "mismatched: its weights do not fit its architecture"),
    "evaluate-nan-model": (["evaluate", "--run", "{tmp}/nanmodel"], "holds non-finite weights (NaN or inf in"),
    "sample-nan-model": (["sample", "--run", "{tmp}/nanmodel", "--out", "{tmp}/s.pt"], "holds non-finite weights"),
    "sample-noisy-classifier-wrong-width": (["sample", "--run", "{trained}", "--classifier-scale", "2", "--noisy-classifier",
                                             "{tmp}/noisy-wide.pt", "--out", "{tmp}/s.pt"],
                                            "noisy-wide.pt: its weights do not fit its architecture"),
    "sample-noisy-classifier-unknown-arch": (["sample", "--run", "{trained}", "--classifier-scale", "2",
                                              "--noisy-classifier", "{tmp}/noisy-arch.pt", "--out", "{tmp}/s.pt"],
                                             "noisy-arch.pt: its architecture is not one this code builds"),
    "quality-noisy-classifier-as-reference": (["quality", "--run", "{trained}", "--classifier", "{tmp}/noisy.pt", "--out",
                                               "{tmp}/q.json"], "is a noise-aware classifier"),
    "data-idx-header-overflow": (["data", "--dataset", "mnist", "--data-dir", "{tmp}/idx"],
                                 "but its header says 4294967295 x 4294967295 x 4294967295"),
    # the command itself
    "unknown-command": (["frobnicate"], "invalid choice: 'frobnicate'"),
    "no-command": ([], "the following arguments are required: COMMAND"),
}
if not torch.cuda.is_available():
    CASES["device-cuda-without-gpu"] = (T + ["--set", "device=cuda"], "no CUDA GPU is available")


@pytest.fixture
def bad_inputs(tmp_path, trained):
    """The files the cases point at: broken configs, broken runs, a busy run directory."""
    (tmp_path / "latin1.yaml").write_bytes("lr: 0.001 # r\xe9sum\xe9\n".encode("latin-1"))
    (tmp_path / "broken.yaml").write_text("epochs: [1, 2\n")
    (tmp_path / "list.yaml").write_text("- epochs\n")
    (tmp_path / "unknown.yaml").write_text("lrate: 0.1\n")
    (tmp_path / "afile").write_text("not a directory\n")
    (tmp_path / "emptydir").mkdir()
    model = (trained / "model.pt").read_bytes()
    for name, content in (("truncated", model[:2000]), ("emptymodel", b"")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.pt").write_bytes(content)
    (tmp_path / "foreign").mkdir()
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign" / "model.pt")
    (tmp_path / "busy").mkdir()
    save_classifier(Classifier(width=8, features=8).eval(), 0.1, tmp_path / "cnn.pt")
    for name, content in (("nohistory", "[]\n"), ("brokenhistory", "[{\"epoch\": 1,\n")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "history.json").write_text(content)
    state = torch.load(trained / "model.pt", weights_only=True)
    for name, change in (("mismatched", lambda d: d["config"].update(channels=2 * d["config"]["channels"])),
                         ("nanmodel", lambda d: next(v for v in d["ema"].values() if v.is_floating_point()).fill_(
                             float("nan")))):
        broken = {**state, "config": dict(state["config"]), "ema": {k: v.clone() for k, v in state["ema"].items()}}
        change(broken)
        (tmp_path / name).mkdir()
        torch.save(broken, tmp_path / name / "model.pt")
    path = NoisePath(state["config"]["noise"], state["config"]["T"], state["config"]["schedule"])
    save_noisy_classifier(NoisyClassifier(path.T, width=8, emb_dim=16), path, {1: 0.5}, tmp_path / "noisy.pt")
    noisy = torch.load(tmp_path / "noisy.pt", weights_only=True)
    for name, arch in (("noisy-wide", {**noisy["arch"], "width": 16}), ("noisy-arch", {**noisy["arch"], "depth": 3})):
        torch.save({**noisy, "arch": arch}, tmp_path / f"{name}.pt")
    (tmp_path / "idx" / "mnist").mkdir(parents=True)
    write_idx_set(tmp_path / "idx" / "mnist")
    forged = bytes((0, 0, 8, 3)) + struct.pack(">3I", *[2**32 - 1] * 3) + bytes(100)
    (tmp_path / "idx" / "mnist" / IDX_FILES[0]).write_bytes(forged)
    return tmp_path


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(case, bad_inputs, trained, capsys):
    args, message = CASES[case]
    fill = {"tmp": bad_inputs, "run": bad_inputs / "run", "trained": trained, "busy": bad_inputs / "busy"}
    args = [a.format(**fill) for a in args]
    message = message.format(**fill)
    before_trained = {p: (trained / p).read_bytes() for p in _files(trained) if (trained / p).is_file()}
    showwarning = warnings.showwarning
    try:
        with RunLock(bad_inputs / "busy"):
            before_tmp = _files(bad_inputs)
            try:
                code = cli.main(args)
            except SystemExit as e:  # argparse's usage errors
                code = e.code
            after_tmp = _files(bad_inputs)
    finally:
        warnings.showwarning = showwarning
    err = capsys.readouterr().err
    line = one_error_line(err)
    assert code == 2, err
    assert line.startswith("pydiffusion") and "error:" in line and message in line, line
    assert after_tmp == before_tmp, "a failed command left files behind"
    assert {p: (trained / p).read_bytes() for p in before_trained} == before_trained, "a failed command changed a run"


def test_there_are_at_least_60_bad_input_cases():
    assert len(CASES) >= 60


def test_a_non_finite_loss_is_one_line_and_keeps_no_broken_state(tmp_path, data_cache):
    poisoned = tmp_path / "poisoned"
    poisoned.mkdir()
    src = next(data_cache.glob("mnist1d-*.pt"))
    d = torch.load(src, weights_only=True)
    d["x"][:, 0] = float("nan")
    torch.save(d, poisoned / src.name)
    out = tmp_path / "run"
    r = run_cli("train", "--out", out, "--set", "epochs=1", "channels=16", "emb_dim=32", "threads=1",
                f"data_cache={poisoned}")
    line = one_error_line(r.stderr)
    assert r.returncode == 2 and "non-finite loss nan at epoch 1, step 1" in line and "lower lr" in line
    assert not (out / "checkpoint.pt").exists() and not (out / "model.pt").exists()
