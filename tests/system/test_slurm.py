"""The SLURM profile against a real one-node SLURM cluster started on localhost."""
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from helpers.timings import without_timings
from helpers.workflow import ROOT, snakemake

pytestmark = pytest.mark.slurm
SCRIPT = ROOT / "scripts" / "slurm-cluster.sh"


def slurm_profile(out):
    """profiles/slurm with the status checks of a one-node test cluster (5 s, not the plugin's 40 s) and its
    job logs under this test's results."""
    return ("--profile", "profiles/slurm", "--slurm-init-seconds-before-status-checks", "5",
            "--seconds-between-status-checks", "5", "--slurm-logdir", str(out / "logs" / "slurm"))


@pytest.fixture(scope="module")
def cluster():
    if os.geteuid() != 0:
        pytest.skip("starting SLURM daemons needs root")
    r = subprocess.run([str(SCRIPT), "start"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    try:
        yield
    finally:
        subprocess.run([str(SCRIPT), "stop"], capture_output=True, text=True, timeout=60)


def test_smoke_grid_runs_under_slurm(cluster, tmp_path):
    out = tmp_path / "results"
    r = snakemake(*slurm_profile(out), "--configfile", "config/smoke.yaml", "--config", f"results={out}", timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "submitted with SLURM jobid" in r.stdout + r.stderr
    for run in ("mse-gaussian-implicit", "mse-gaussian-semi_implicit"):
        log = (out / "logs" / "train" / f"{run}-seed0.log").read_text()
        job = re.search(r"SLURM_JOB_ID=(\d+)", log)
        assert job, f"the training job of {run} did not run under SLURM:\n{log}"
        assert (out / "runs" / run / "seed0" / "metrics.json").exists()
    assert "## Does semi-implicit training help?" in (out / "report.md").read_text()


def test_failing_job_makes_snakemake_fail_not_hang(cluster, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("the failure used here is asking for CUDA on a machine without a GPU")
    cfg = yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text())
    cfg["grid"]["training"] = ["implicit"]
    cfg["train"]["device"] = "cuda"  # valid config, fails inside the job: no GPU on this node
    bad = tmp_path / "cuda.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "results"
    # the training job as the target, so nothing else (the classifier) keeps the run going after it fails;
    # the plugin notices the failure within its polling interval and snakemake must then exit, not wait
    target = out / "runs" / "mse-gaussian-implicit" / "seed0" / "metrics.json"
    t0 = time.monotonic()
    r = snakemake(str(target), *slurm_profile(out), "--configfile", str(bad), "--config", f"results={out}",
                  "--retries", "0", timeout=600)
    assert r.returncode != 0
    assert time.monotonic() - t0 < 300, "snakemake took too long to give up on a failed SLURM job"
    assert re.search(r"SLURM-job '\d+' failed", r.stdout + r.stderr)
    log = (out / "logs" / "train" / "mse-gaussian-implicit-seed0.log").read_text()
    assert "no CUDA GPU is available" in log
    assert not (out / "report.md").exists()


def test_gpu_request_reaches_sbatch(cluster, tmp_path):
    """resources: train: gpus: 1 asks SLURM for a GPU (--gpus=1); the local node has none, so SLURM refuses."""
    cfg = yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text())
    cfg["grid"]["training"] = ["implicit"]
    cfg["resources"]["train"]["gpus"] = 1
    gpu = tmp_path / "gpu.yaml"
    gpu.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "results"
    target = out / "runs" / "mse-gaussian-implicit" / "seed0" / "metrics.json"
    r = snakemake(str(target), *slurm_profile(out), "--configfile", str(gpu), "--config", f"results={out}",
                  "--retries", "0", "--verbose", timeout=300)
    text = r.stdout + r.stderr
    train_call = next(line for line in text.splitlines() if line.startswith("sbatch call:") and "rule_train/" in line)
    assert "--gpus=1" in train_call
    other_calls = [line for line in text.splitlines() if line.startswith("sbatch call:") and "rule_train/" not in line]
    assert other_calls and not any("--gpus" in line for line in other_calls)
    assert r.returncode != 0 and "generic resource" in text


def test_a_job_killed_by_its_time_limit_is_retried_with_more_time_and_resumes(cluster, tmp_path):
    """runtime: 1 (minute) for a job of ~2.5 minutes: SLURM kills it, the retry gets 2 minutes (runtime x attempt),
    resumes from the last checkpoint and ends with the metrics of an uninterrupted run."""
    import json
    import threading

    cfg = yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text())
    cfg["grid"]["training"] = ["implicit"]
    # 90 epochs of about 1 s each: the first attempt must hit its 1-minute limit even on a quiet machine (45
    # epochs and the evaluation once fitted in it); the retries (2 and 3 minutes) finish the rest
    cfg["train"].update(epochs=90, checkpoint_every=1, wandb_mode="disabled")
    cfg["resources"]["train"]["runtime"] = 1
    cfg_file = tmp_path / "timelimit.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "results"
    run = out / "runs" / "mse-gaussian-implicit" / "seed0"
    reference = {}

    def train_uninterrupted():  # on the other core, from the same train.yaml and data as the SLURM job
        t0 = time.monotonic()
        while not (out / "train.yaml").exists() or not list((out / "data").glob("mnist1d-*.pt")):
            if time.monotonic() - t0 > 300:
                return
            time.sleep(1)
        time.sleep(1)
        reference["run"] = subprocess.run(
            [str(Path(sys.executable).parent / "pydiffusion"), "train",
             "--config", str(out / "train.yaml"), "--out", str(tmp_path / "reference"), "--set", "loss=mse",
             "noise=gaussian", "training=implicit", "seed=0", "threads=1", f"data_cache={out / 'data'}"],
            capture_output=True, text=True, timeout=900)

    helper = threading.Thread(target=train_uninterrupted)
    helper.start()
    r = snakemake(str(run / "metrics.json"), *slurm_profile(out), "--retries", "2", "--configfile",
                  str(cfg_file), "--config", f"results={out}", timeout=1200)
    helper.join()
    assert r.returncode == 0, r.stderr[-3000:]
    log = (out / "logs" / "train" / "mse-gaussian-implicit-seed0.log").read_text()
    # the last attempt's log (Snakemake starts it afresh): a retry with more time than the 1-minute limit
    # (2 minutes, or 3 on a loaded machine where the second attempt hit its limit too)
    limits = [int(m) for m in re.findall(r"runtime=(\d+)min", log)]
    assert limits and limits[-1] >= 2, log
    resumed = [line for line in log.splitlines() if line.startswith("resuming")]
    assert resumed and int(resumed[0].rsplit(" ", 1)[1]) >= 1, log
    slurm_logs = list((out / "logs" / "slurm" / "rule_train").rglob("*.log"))
    assert any("DUE TO TIME LIMIT" in p.read_text(errors="replace") for p in slurm_logs), "no job hit its time limit"
    assert reference["run"].returncode == 0, reference["run"].stderr[-2000:]
    assert without_timings(json.loads((run / "metrics.json").read_text())) == without_timings(
        json.loads((tmp_path / "reference" / "metrics.json").read_text()))
