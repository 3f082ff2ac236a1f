"""The Snakemake workflow: planning, config validation, and the smoke grid end to end."""
import csv
import json
import re

import pytest
import torch
import yaml
from helpers.workflow import ROOT, job_counts, snakemake

from pydiffusion.runs import load_exported, load_run


def test_default_grid_plans_24_training_jobs():
    r = snakemake("-n", "--config", "results=/tmp/pydiffusion-plan")
    assert r.returncode == 0, r.stderr
    counts = job_counts(r.stdout)
    assert counts["train"] == 24 and "evaluate" not in counts  # one process per job trains and evaluates
    assert counts["data"] == 1 and counts["aggregate"] == 1


def test_seed_count_and_smoke_plan():
    r = snakemake("-n", "--configfile", "config/smoke.yaml", "--config", "seeds=5")
    assert r.returncode == 0, r.stderr
    assert job_counts(r.stdout)["train"] == 2 * 5


def test_nested_values_from_the_command_line_keep_their_types(tmp_path):
    # Snakemake hands nested --config values over as text; the jobs must get numbers and lists.
    out = tmp_path / "out"
    r = snakemake("--cores", "1", str(out / "train.yaml"), "--config",
                  "train={epochs: 30, channel_mult: [1, 2], wandb_mode: disabled}", f"results={out}")
    assert r.returncode == 0, r.stderr
    shared = yaml.safe_load((out / "train.yaml").read_text())
    assert shared["epochs"] == 30 and shared["channel_mult"] == [1, 2] and shared["wandb_mode"] == "disabled"
    assert shared["T"] == 20  # the rest of config/config.yaml's train: section is kept
    r = snakemake("-n", "--config", "seeds=[3, 7]", f"results={tmp_path / 'plan'}")
    assert r.returncode == 0, r.stderr
    assert "seed3" in r.stdout and "seed7" in r.stdout and "seed0" not in r.stdout


def one_config_error(r) -> str:
    """A bad config stops snakemake with exit 2 and one line naming the value's source, no traceback."""
    text = r.stdout + r.stderr
    assert r.returncode == 2, text
    assert "Traceback" not in text and 'File "' not in text, text
    errors = [line for line in text.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("pydiffusion: error: "), text
    return errors[0]


@pytest.mark.parametrize("config,message", [
    ({"grid": {"loss": ["l1"], "noise": ["gaussian"], "training": ["implicit"]}}, "grid.loss.0: 'l1' is not one of"),
    ({"seeds": []}, "seeds: [] should be non-empty"),
    ({"seeds": [1, 1]}, "seeds: [1, 1] has non-unique elements"),
    ({"resources": {"train": {"mem_mb": 10}}}, "resources.train.mem_mb: 10 is less than the minimum of 100"),
    ({"train": {"lr": -1}}, "section train: config key 'lr' is -1"),
    ({"train": {"lr": float("inf")}}, "section train: config key 'lr' is inf; it must be a finite number"),
    ({"train": {"epoch": 3}}, "section train: unknown config key 'epoch'"),
    ({"train": {"loss": "kl"}}, "section train: 'loss' is set by the workflow"),
    ({"train": {"eval_seed": 2**64}}, "section train: config key 'eval_seed' is 18446744073709551616"),
    ({"samplez": 3}, "samplez: unknown key; valid keys: grid, seeds, train"),
    ({"quality_samples": 5}, "quality_samples: 5 is less than the minimum of 100"),
])
def test_bad_config_file_fails_before_any_job(tmp_path, config, message):
    base = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    for key, value in config.items():
        base[key] = {**base[key], **value} if isinstance(value, dict) and key in ("train", "resources") else value
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(base))
    r = snakemake("-n", "--configfile", str(bad), "--config", f"results={tmp_path / 'out'}")
    line = one_config_error(r)
    assert line.startswith(f"pydiffusion: error: --configfile {bad}") and message in line, line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value,message", [
    ("train={epochs: three}", "--config, section train: config key 'epochs' must be int, got 'three'"),
    ("train={epochs: [1}", "--config: a value is not valid YAML"),
    ("train={channel_mult: [1, 2, 2, 2]}", "--config, section train: config key 'channel_mult'"),
    ("seeds=0", "--config: seeds: 0 is less than the minimum of 1 (expected a list of seeds, or a count N"),
    ("grid={loss: [mse], noise: [brownian], training: [implicit]}", "--config, section grid: grid.noise.0: 'brownian'"),
    ("results=", "--config: results: None is not of type 'string'"),
    ("resources={train: {gpu: 1}}", "--config, section resources: resources.train.gpu: unknown key; valid keys: mem_mb"),
])
def test_bad_command_line_config_fails_before_any_job(tmp_path, value, message):
    r = snakemake("-n", "--config", value, *([] if value.startswith("results") else [f"results={tmp_path / 'out'}"]))
    assert message in one_config_error(r)
    assert not (tmp_path / "out").exists()


REPORT_SECTIONS = ["# pydiffusion grid report", "## Does semi-implicit training help?", "## Results per configuration",
                   "## Paired comparison", "## Best configuration", "## Samplers on the best configuration",
                   "## Figures"]
FIGURES = ["loss_curves", "components", "metrics", "paired", "test_mse_t", "samples", "best_per_class", "trajectory",
           "forward_reverse", "samplers"]


def test_local_profile_runs_the_smoke_grid(tmp_path):
    out = tmp_path / "results"
    r = snakemake("--profile", "profiles/local", "--configfile", "config/smoke.yaml", "--config", f"results={out}",
                  "progress_seconds=2")
    assert r.returncode == 0, r.stderr[-3000:]
    assert re.search(r"\d/2 grid jobs done, \d+% of the training", r.stderr), r.stderr[-3000:]  # the progress lines
    report = (out / "report.md").read_text()
    for section in REPORT_SECTIONS:
        assert section in report, section
    for fig in FIGURES:
        assert (out / "figures" / f"{fig}.png").stat().st_size > 10_000, fig
        assert f"figures/{fig}.png" in report
    summary = json.loads((out / "summary.json").read_text())
    configs = {c["config"]: c for c in summary["configurations"]}
    assert set(configs) == {"mse-gaussian-implicit", "mse-gaussian-semi_implicit"}
    semi = configs["mse-gaussian-semi_implicit"]
    for key in ("test_mse", "test_mse_forward", "test_mse_inverse", "test_mae", "test_kl", "psnr_t10", "train_time_s",
                "epochs_to_5pct", "loss_increases", "fd_1d", "fd_floor", "sample_acc_guided", "coverage_entropy",
                "nn_dist"):
        assert set(semi[key]) == {"mean", "std", "min", "max"}, key
    assert summary["paired"][0]["test_mse_inverse"]["n"] == 1
    assert summary["best"]["config"] in configs and summary["best"]["by"] == "fd_1d"
    samplers = json.loads((out / "samplers.json").read_text())["samplers"]
    assert {(r["sampler"], r["steps"], r["guidance"]) for r in samplers} >= {
        ("ddpm", 20, 1.0), ("ddim", 5, 1.0), ("ddim", 20, 1.0), ("dpmpp_2m", 10, 1.0), ("ddim", 20, 0.0), ("ddim", 20, 3.0)}
    assert (out / "figures" / "trajectory.gif").read_bytes()[:6] == b"GIF89a"
    best = out / "best-model"  # the best configuration's first seed, exported
    exported = load_exported(best)
    assert exported.config == load_run(out / "runs" / summary["best"]["config"] / "seed0").config
    assert "pydiffusion train --wait --restart-on-config-change" in (best / "README.md").read_text()
    assert "ddim steps=5 guidance=1.0: FD-1D" in (out / "logs" / "aggregate.log").read_text(), "progress in its log"
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert len(rows) == 2 and float(rows[0]["test_mse_mean"]) > 0
    for run in ("mse-gaussian-implicit", "mse-gaussian-semi_implicit"):
        d = out / "runs" / run / "seed0"
        assert (d / "metrics.json").exists() and (d / "samples.pt").exists() and (d / "checkpoint.pt").exists()
        assert 0 <= json.loads((d / "quality.json").read_text())["sample_acc_guided"] <= 1
        # one process trains, evaluates and samples: one offline W&B run folder, and the best run's export a second
        assert len(list((d / "wandb").glob("offline-run-*"))) == 1 + (run == summary["best"]["config"])
        assert (out / "benchmarks" / "train" / f"{run}-seed0.tsv").exists()
        assert "SLURM_JOB_ID=none" in (out / "logs" / "train" / f"{run}-seed0.log").read_text()
    # a rerun has nothing to do
    r = snakemake("--profile", "profiles/local", "--configfile", "config/smoke.yaml", "--config", f"results={out}", "-n")
    assert r.returncode == 0 and "Nothing to be done" in r.stdout + r.stderr
    # the browsable HTML report
    html = tmp_path / "report.html"
    r = snakemake("--configfile", "config/smoke.yaml", "--config", f"results={out}", "--report", str(html))
    assert r.returncode == 0, r.stderr[-3000:]
    assert html.stat().st_size > 100_000


def test_the_smoke_grid_on_images(tmp_path):
    """The same workflow on the 8 x 8 digits: a 2-D UNet, a 2-D reference classifier and noise-aware classifier,
    SSIM beside PSNR, the report's figures drawn as images."""
    out = tmp_path / "results"
    r = snakemake("--profile", "profiles/local", "--configfile", "config/digits-smoke.yaml", "--config", f"results={out}")
    assert r.returncode == 0, r.stderr[-3000:]
    report = (out / "report.md").read_text()
    assert "500 test images of the 8 x 8 digits" in report and "## Guidance on the best configuration" in report
    for fig in FIGURES + ["guidance"]:
        assert (out / "figures" / f"{fig}.png").stat().st_size > 5_000, fig
    summary = json.loads((out / "summary.json").read_text())
    semi = {c["config"]: c for c in summary["configurations"]}["mse-convex-semi_implicit"]
    assert 0 < semi["ssim_t10"]["mean"] <= 1 and semi["psnr_t10"]["mean"] > 0
    assert "ssim_t10" in summary["paired"][0]
    run = out / "runs" / "mse-convex-implicit" / "seed0"
    samples = torch.load(run / "samples.pt", weights_only=True)
    assert samples["x"].shape == (20, 1, 8, 8)
    assert "dataset: digits" in (run / "config.yaml").read_text()
    assert "(cnn, digits)" in (out / "logs" / "classifier.log").read_text()
