"""The SLURM profile against a real one-node SLURM cluster started on localhost."""
import json
import os
import re
import shutil
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


# Faults a cluster really has: a node that goes down, a job cancelled by hand, two snakemakes on one results
# folder. One training job each (the smoke grid cut to implicit training, 8 epochs checkpointed every epoch).
RUN = Path("runs") / "mse-gaussian-implicit" / "seed0"
TRAIN_LOG = Path("logs") / "train" / "mse-gaussian-implicit-seed0.log"


def fault_config(tmp_path, epochs=8) -> Path:
    cfg = yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text())
    cfg["grid"]["training"] = ["implicit"]
    cfg["train"].update(epochs=epochs, checkpoint_every=1, wandb_mode="disabled")
    path = tmp_path / f"faults-{epochs}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The faults' run trained without one (local profile): its results folder."""
    tmp = tmp_path_factory.mktemp("uninterrupted")
    out = tmp / "results"
    r = snakemake(str(out / RUN / "metrics.json"), "--profile", "profiles/local", "--configfile", str(fault_config(tmp)),
                  "--config", f"results={out}")
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def seeded(tmp_path, reference: Path) -> Path:
    """A results folder holding the reference's data set and classifier (copies, times kept): only the training
    job (and train.yaml) runs, as after a first call that got that far."""
    out = tmp_path / "results"
    shutil.copytree(reference / "data", out / "data")
    shutil.copy2(reference / "classifier.pt", out / "classifier.pt")
    return out


class Snakemake:
    """snakemake in the background, its output in a file (a pipe nobody reads would fill and stop it)."""

    def __init__(self, tmp_path, name, *args):
        env = {**os.environ, "PATH": os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep)
                                                     if Path(p) != Path(sys.executable).parent)}
        self.out = tmp_path / f"{name}.out"
        with open(self.out, "w") as f:
            self.proc = subprocess.Popen([str(Path(sys.executable).parent / "snakemake"), *args], cwd=ROOT, env=env,
                                         stdout=f, stderr=subprocess.STDOUT, text=True)

    def wait(self, timeout=600) -> tuple:
        self.proc.wait(timeout=timeout)
        return self.proc.returncode, self.out.read_text()

    def stop(self):  # SIGTERM: snakemake cancels its SLURM jobs
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def wait_for(condition, what, sm: Snakemake, timeout=300):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        assert sm.proc.poll() is None, f"snakemake ended before {what}:\n{sm.out.read_text()[-3000:]}"
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"no {what} after {timeout} s:\n{sm.out.read_text()[-3000:]}")


def epochs_done(run_dir: Path) -> int:
    try:
        return len(json.loads((run_dir / "history.json").read_text()))
    except (FileNotFoundError, json.JSONDecodeError):
        return 0


def train_log(out: Path) -> str:
    try:
        return (out / TRAIN_LOG).read_text()
    except FileNotFoundError:
        return ""


def job_of(out: Path):
    """The SLURM job id of the training job's attempt now writing its log (Snakemake starts the log afresh)."""
    m = re.search(r"SLURM_JOB_ID=(\d+)", train_log(out))
    return m and m.group(1)


def resumed_from(log: str) -> list:
    return [int(m) for m in re.findall(r"^resuming \S+ from epoch (\d+)$", log, re.M)]


def assert_uninterrupted_result(out: Path, reference: Path, epochs=8):
    assert [h["epoch"] for h in json.loads((out / RUN / "history.json").read_text())] == list(range(1, epochs + 1))
    assert without_timings(json.loads((out / RUN / "metrics.json").read_text())) == without_timings(
        json.loads((reference / RUN / "metrics.json").read_text()))


NODE = "localhost"  # scripts/slurm-cluster.sh


def node_back_up():
    """ReturnToService=2 returns the node as soon as its slurmd registers again; resume it if it has not."""
    for _ in range(60):
        state = subprocess.run(["sinfo", "-h", "-N", "-n", NODE, "-o", "%T"], capture_output=True, text=True).stdout
        if "down" not in state and "drain" not in state:
            return
        subprocess.run(["scontrol", "update", f"nodename={NODE}", "state=resume"], capture_output=True)
        time.sleep(1)
    raise AssertionError(f"node {NODE} stays {state.strip()}")


@pytest.mark.parametrize("requeue", ["by SLURM", "by the profile's retries"])
def test_a_training_job_whose_node_goes_down_is_retried_and_resumes(cluster, tmp_path, uninterrupted, requeue):
    """The node is set down mid-run, which kills its job. SLURM's default (JobRequeue=1) requeues the job under
    its id, and Snakemake waits for it; with --slurm-no-requeue (a site with JobRequeue=0) it ends NODE_FAIL and
    the profile's retries: 1 submits it again. Either way it resumes from its checkpoint and ends with the metrics
    of an uninterrupted run."""
    out = seeded(tmp_path, uninterrupted)
    sm = Snakemake(tmp_path, "snakemake", str(out / RUN / "metrics.json"), *slurm_profile(out), "--configfile",
                   str(fault_config(tmp_path)), "--config", f"results={out}",
                   *(() if requeue == "by SLURM" else ("--slurm-no-requeue",)))
    try:
        wait_for(lambda: epochs_done(out / RUN) >= 1, "epoch 1", sm)
        first = job_of(out)
        r = subprocess.run(["scontrol", "update", f"nodename={NODE}", "state=down", "reason=pydiffusion-test"],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        rc, output = sm.wait()
    finally:
        sm.stop()
        node_back_up()
    assert rc == 0, output[-3000:]
    log = train_log(out)
    assert resumed_from(log) and resumed_from(log)[0] >= 1, log
    if requeue == "by SLURM":
        assert job_of(out) == first, log  # the same job, run again
        job = subprocess.run(["scontrol", "show", "job", first], capture_output=True, text=True).stdout
        assert "Restarts=1" in job, job
        assert "failed" not in output
    else:
        assert f"SLURM-job '{first}' failed due to a node failure, SLURM status is: 'NODE_FAIL'" in output
        assert job_of(out) != first and "runtime=20min" in log, log  # the profile's retry: attempt 2
    assert_uninterrupted_result(out, uninterrupted)


def test_a_cancelled_job_is_retried_once_then_the_next_call_resumes(cluster, tmp_path, uninterrupted):
    """scancel mid-run: the profile's retries: 1 submits the job again and it resumes; cancelled again, the
    snakemake call fails, leaving the run incomplete (no metrics, no report) with its checkpoint. The next call
    resumes from that checkpoint and ends with the metrics of an uninterrupted run."""
    out = seeded(tmp_path, uninterrupted)
    args = (*slurm_profile(out), "--configfile", str(fault_config(tmp_path)), "--config", f"results={out}")
    sm = Snakemake(tmp_path, "first", *args)
    try:
        wait_for(lambda: epochs_done(out / RUN) >= 1, "epoch 1", sm)
        first = job_of(out)
        subprocess.run(["scancel", first], check=True)
        second = wait_for(lambda: job_of(out) not in (None, first) and resumed_from(train_log(out)) and job_of(out),
                          "a resumed retry", sm)
        assert resumed_from(train_log(out))[0] >= 1
        wait_for(lambda: epochs_done(out / RUN) > resumed_from(train_log(out))[0], "an epoch of the retry", sm)
        subprocess.run(["scancel", second], check=True)
        rc, output = sm.wait(timeout=300)
    finally:
        sm.stop()
    assert rc != 0
    cancelled = set(re.findall(r"SLURM-job '(\d+)' failed, SLURM status is: 'CANCELLED'", output))
    assert cancelled == {first, second}, output[-3000:]
    assert not (out / RUN / "metrics.json").exists() and not (out / "report.md").exists()
    checkpoint = torch.load(out / RUN / "checkpoint.pt", weights_only=True)["epoch"]
    assert checkpoint >= 2
    r = snakemake(*args, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert resumed_from(train_log(out)) == [checkpoint], train_log(out)
    assert_uninterrupted_result(out, uninterrupted)
    assert (out / "report.md").exists()


def test_two_snakemakes_on_one_results_folder_train_a_run_once_and_write_one_report(cluster, tmp_path, uninterrupted):
    """A second snakemake on the same results folder stops at once on Snakemake's lock. One started with --nolock
    submits a second training job for the run, whose trainer waits for the first one's lock on the run (.lock)
    and then finds the training done. The report is written once, by the first call, from the complete run."""
    out = seeded(tmp_path, uninterrupted)
    # 16 epochs: the --nolock job must start while the first trainer trains (it deletes the rule's outputs)
    args = (*slurm_profile(out), "--configfile", str(fault_config(tmp_path, epochs=16)), "--config", f"results={out}")
    first = Snakemake(tmp_path, "first", *args)
    nolock = None
    try:
        wait_for(lambda: epochs_done(out / RUN) >= 1, "epoch 1", first)
        holder = (out / RUN / ".lock").read_text().strip()
        nolock = Snakemake(tmp_path, "nolock", str(out / RUN / "metrics.json"), "--nolock", *args)
        second = snakemake(*args, timeout=300)
        assert second.returncode != 0
        assert "Directory cannot be locked" in second.stderr + second.stdout
        assert "submitted with SLURM jobid" not in second.stderr + second.stdout
        rc, output = first.wait()
        nolock_rc, nolock_output = nolock.wait()
    finally:
        first.stop()
        if nolock is not None:
            nolock.stop()
    assert rc == 0, output[-3000:]
    assert nolock_rc == 0, nolock_output[-3000:]
    log = train_log(out)  # the --nolock job's: it started last, and Snakemake starts a job's log afresh
    assert f"waiting for pid {holder}, which is still writing to {out / RUN}" in log, log
    assert resumed_from(log) == [16], log  # the first trainer's checkpoint of the last epoch: nothing to train
    assert [h["epoch"] for h in json.loads((out / RUN / "history.json").read_text())] == list(range(1, 17))
    assert output.count("rule aggregate:") == 1 and "rule aggregate:" not in nolock_output
    (run,) = json.loads((out / "summary.json").read_text())["runs"]
    metrics = json.loads((out / RUN / "metrics.json").read_text())
    assert metrics["epochs"] == 16  # the report's run is the complete one
    assert {k: run["metrics"][k] for k in ("test_mse", "final_loss")} == {k: metrics[k] for k in ("test_mse", "final_loss")}
    assert (out / "report.md").exists()
