"""The data sets through the CLI and the workflow: one-line errors for missing data before any work, reading an
image set, and which keys make up the grid's identity."""
import subprocess
import sys

import yaml
from helpers.image_files import write_idx_set
from helpers.workflow import ROOT, snakemake

from pydiffusion.data.datasets import (
    IDX_FILES,
)


def cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "pydiffusion.cli.main", *args], capture_output=True, text=True, **kw)


def test_cli_missing_data_is_one_line_before_any_work(tmp_path):
    out = tmp_path / "run"
    r = cli("train", "--out", str(out), "--set", "dataset=mnist", f"data_dir={tmp_path / 'nonexistent'}")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("pydiffusion train: error: dataset 'mnist' needs ")
    assert str(tmp_path / "nonexistent" / "mnist") in r.stderr and IDX_FILES[0] in r.stderr
    assert not out.exists()
    r = cli("train", "--out", str(out), "--set", "dataset=svhn")
    assert r.returncode == 2 and r.stderr.startswith("pydiffusion train: error: config key 'dataset' is 'svhn'")


def test_cli_data_reads_an_image_set(tmp_path):
    write_idx_set(tmp_path / "mnist", gz=True)
    r = cli("data", "--dataset", "mnist", "--data-dir", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"mnist: 6 train, 4 test images of 1 x 28 x 28 (channels x height x width), read from " \
                               f"{tmp_path / 'mnist'}"


def workflow_config(tmp_path, train, **top):
    base = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    base["train"].update(train)
    base.update(top)
    file = tmp_path / "config.yaml"
    file.write_text(yaml.safe_dump(base))
    return file


def test_workflow_missing_data_fails_at_parse_time(tmp_path):
    file = workflow_config(tmp_path, {"dataset": "mnist"}, data_dir=str(tmp_path / "empty"))
    r = snakemake("-n", "--configfile", str(file), "--config", f"results={tmp_path / 'out'}")
    text = r.stdout + r.stderr
    assert r.returncode == 2 and "Traceback" not in text, text
    errors = [line for line in text.splitlines() if "error" in line.lower()]
    assert errors == [errors[0]] and errors[0].startswith(f"pydiffusion: error: --configfile {file}: dataset 'mnist' needs")
    assert str(tmp_path / "empty" / "mnist") in errors[0]
    assert not (tmp_path / "out").exists()
    r = snakemake("-n", "--configfile", str(file), "--config", f"results={tmp_path / 'out'}",
                  "train={dataset: mnist, data_dir: /data}")
    assert "'data_dir' is set by the workflow; use the top-level data_dir: instead" in r.stderr, r.stderr


def grid_group(tmp_path, train, **top) -> str:
    """The W&B group (grid-<GRID_ID>) the workflow writes into train.yaml (the same results folder each time: it is
    part of the grid's identity)."""
    out = tmp_path / "out"
    (out / "train.yaml").unlink(missing_ok=True)
    file = workflow_config(tmp_path, train, **top)
    r = snakemake("--cores", "1", str(out / "train.yaml"), "--configfile", str(file), "--config", f"results={out}")
    assert r.returncode == 0, r.stderr
    shared = yaml.safe_load((out / "train.yaml").read_text())
    assert "data_dir" not in shared
    return shared["wandb_group"]


def test_data_dir_is_not_part_of_the_grid_identity_and_dataset_is(tmp_path):
    write_idx_set(tmp_path / "data" / "mnist")
    group = grid_group(tmp_path, {"dataset": "mnist"}, data_dir=str(tmp_path / "data"))
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "data").rename(tmp_path / "elsewhere" / "data")
    assert grid_group(tmp_path, {"dataset": "mnist"}, data_dir=str(tmp_path / "elsewhere" / "data")) == group
    assert grid_group(tmp_path, {"dataset": "digits"}) != group
