"""The grid resumes whatever killed it: Snakemake itself (its trainer left running), or a training
job killed and retried by the local executor. Each resumed run ends with the metrics of an
uninterrupted one. (A SLURM time limit: tests/system/test_slurm.py.)"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from helpers.timings import without_timings
from helpers.workflow import ROOT, snakemake

RUN = Path("runs") / "mse-gaussian-implicit" / "seed0"


def resume_config(tmp_path, epochs=8) -> Path:
    """The smoke grid cut to one training job that checkpoints every epoch (~30 s on one core)."""
    cfg = yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text())
    cfg["grid"]["training"] = ["implicit"]
    cfg["train"].update(epochs=epochs, checkpoint_every=1, wandb_mode="disabled")
    path = tmp_path / "resume.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def start(*args) -> subprocess.Popen:
    """snakemake in its own session, as a user starts it, so that killing it leaves its jobs alone."""
    env = {**os.environ, "PATH": os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep)
                                                 if Path(p) != Path(sys.executable).parent)}
    return subprocess.Popen([str(Path(sys.executable).parent / "snakemake"), *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def trainer_pids(run_dir: Path) -> list:
    """The Python processes training into run_dir (not the shells that started them)."""
    r = subprocess.run(["pgrep", "-f", f"bin/pydiffusion train .*--out {run_dir} "], capture_output=True, text=True)
    return [int(p) for p in r.stdout.split()]


def wait_for_checkpoint(run_dir: Path, epoch: int, proc: subprocess.Popen, timeout=600):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        assert proc.poll() is None, f"snakemake ended before epoch {epoch}:\n{proc.stdout.read()[-3000:]}"
        try:
            if torch.load(run_dir / "checkpoint.pt", weights_only=True)["epoch"] >= epoch:
                return
        except (FileNotFoundError, RuntimeError, EOFError):
            pass
        time.sleep(0.5)
    raise AssertionError(f"no checkpoint of epoch {epoch} in {run_dir} after {timeout} s")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("uninterrupted")
    out = tmp / "results"
    r = snakemake(str(out / RUN / "metrics.json"), "--profile", "profiles/local", "--configfile", str(resume_config(tmp)),
                  "--config", f"results={out}")
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads((out / RUN / "metrics.json").read_text())


def test_killed_snakemake_then_rerun_waits_for_its_orphan_and_resumes(tmp_path, uninterrupted):
    out = tmp_path / "results"
    args = (str(out / RUN / "metrics.json"), "--profile", "profiles/local", "--configfile", str(resume_config(tmp_path)),
            "--config", f"results={out}")
    proc = start(*args)
    try:
        wait_for_checkpoint(out / RUN, 2, proc)
        os.kill(proc.pid, signal.SIGKILL)  # Snakemake alone: its training job goes on, orphaned
        proc.wait()
        orphans = trainer_pids(out / RUN)
        assert orphans, "the trainer should outlive a kill -9 of snakemake"
        r = snakemake("--unlock", *args)
        assert r.returncode == 0, r.stderr[-3000:]
        r = snakemake(*args)
        assert r.returncode == 0, r.stderr[-3000:]
        log = (out / "logs" / "train" / "mse-gaussian-implicit-seed0.log").read_text()
        assert f"waiting for pid {orphans[0]}" in log, log
        assert "resuming" in log
        assert not trainer_pids(out / RUN)
        assert without_timings(json.loads((out / RUN / "metrics.json").read_text())) == without_timings(uninterrupted)
    finally:
        for pid in trainer_pids(out / RUN):
            os.kill(pid, signal.SIGKILL)


def test_training_job_killed_and_retried_by_the_local_executor_resumes(tmp_path, uninterrupted):
    out = tmp_path / "results"
    proc = start(str(out / RUN / "metrics.json"), "--profile", "profiles/local", "--retries", "1", "--configfile",
                 str(resume_config(tmp_path)), "--config", f"results={out}")
    try:
        wait_for_checkpoint(out / RUN, 2, proc)
        (pid,) = trainer_pids(out / RUN)
        os.kill(pid, signal.SIGKILL)
        output, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, output[-3000:]
        log = (out / "logs" / "train" / "mse-gaussian-implicit-seed0.log").read_text()
        resumed = [line for line in log.splitlines() if "resuming" in line]
        assert resumed and int(resumed[0].rsplit(" ", 1)[1]) >= 2, log
        assert without_timings(json.loads((out / RUN / "metrics.json").read_text())) == without_timings(uninterrupted)
    finally:
        proc.kill()
        for pid in trainer_pids(out / RUN):
            os.kill(pid, signal.SIGKILL)
