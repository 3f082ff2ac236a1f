"""Bad configuration at the edges: the CLI refuses it before any work, and the workflow's schema and wildcards
take exactly config.CHOICES."""
import subprocess
import sys

from helpers.workflow import job_counts, snakemake

from pydiffusion.config import CHOICES, TRAINING_PASSES


def test_cli_rejects_bad_config_before_any_work(tmp_path):
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "pydiffusion.cli.main", "train", "--out", str(out), "--set", "T=1"],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip() == "pydiffusion train: error: config key 'T' is 1; it must be an integer >= 2"
    assert not out.exists(), "nothing may be written for a bad config"


def test_the_workflow_schema_and_wildcards_take_exactly_the_config_choices(tmp_path):
    every = {**{axis: list(CHOICES[axis]) for axis in ("loss", "noise")}, "training": list(TRAINING_PASSES)}
    r = snakemake("-n", "--config", f"grid={every}", "seeds=1", f"results={tmp_path / 'out'}")
    assert r.returncode == 0, r.stderr
    assert job_counts(r.stdout)["train"] == len(every["loss"]) * len(every["noise"]) * len(every["training"])
    r = snakemake("-n", "--config", "grid={loss: [l1], noise: [gaussian], training: [implicit]}",
                  f"results={tmp_path / 'out'}")
    assert r.returncode == 2 and f"grid.loss.0: 'l1' is not one of {list(CHOICES['loss'])}" in r.stderr, r.stderr
