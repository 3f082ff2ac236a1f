"""docs/your-idea.md runs as written: its trainer and study, extracted into an empty folder, run through the real
workflow (snakemake, the local profile) on a tiny version of the study, and the report reads as the page says."""
import os
import re
import subprocess
import sys

import yaml
from helpers.workflow import ROOT, snakemake

PAGE = ROOT / "docs" / "your-idea.md"
# the page's study, made tiny: one cell, 2 seeds, 1 and 2 epochs of a narrow network, short classifiers, one draw of
# few samples
TINY = ["seeds=2", "samples=10", "quality_samples=100", "ablations={base_epochs: 1, classifier_epochs: 1, cells: [mse-gaussian], draws: 1}",
        "train={channels: 16, emb_dim: 32, threads: 1, wandb_mode: offline}"]


def blocks(kind: str) -> list:
    return re.findall(rf"^```{kind}\n(.*?)^```$", PAGE.read_text(), re.S | re.M)


def test_the_page_is_the_size_it_promises():
    trainer, = blocks("python")
    study, = blocks("yaml")
    assert len(trainer.splitlines()) <= 35 and len(study.splitlines()) <= 20
    commands = "\n".join(blocks("bash"))
    assert ".venv/bin/snakemake --profile profiles/local --configfile ../p2-idea/study.yaml" in commands


def test_the_trainer_and_the_study_of_the_page_make_a_report(tmp_path):
    idea = tmp_path / "p2-idea"
    idea.mkdir()
    (idea / "p2_trainer.py").write_text(blocks("python")[0])
    (idea / "study.yaml").write_text(blocks("yaml")[0])
    study = yaml.safe_load(blocks("yaml")[0])
    assert study["plugin_path"] == ["../p2-idea"] and study["results"] == "results/p2-idea"
    out = tmp_path / "results"
    # the page's command, with the page's relative paths made this folder's
    r = snakemake("--profile", "profiles/local", "--configfile", str(idea / "study.yaml"), "--config",
                  f"results={out}", f"plugin_path=[{idea}]", *TINY)
    assert r.returncode == 0, r.stderr[-3000:]
    report = (out / "report.md").read_text()
    control = report.index("## Positive control: can the design detect an improvement?")
    assert control < report.index("## Does any setting make P2 weighting help?") < report.index("### p2")
    assert "| reading | MDE (80% power) |" in report
    assert "p2 vs implicit" in report and "implicit_2x vs implicit" in report
    cfg = yaml.safe_load((out / "runs" / "p2" / "mse-gaussian" / "seed1" / "config.yaml").read_text())
    assert cfg["training"] == "p2_trainer:P2Trainer" and cfg["p2_gamma"] == 1.0 and cfg["p2_k"] == 1.0


def test_the_pages_error_line_is_what_a_wrong_class_says(tmp_path):
    idea = tmp_path / "p2-idea"
    idea.mkdir()
    (idea / "p2_trainer.py").write_text(blocks("python")[0])
    quoted = re.search(r"`pydiffusion train --set training=p2_trainer:P2` says\s+`([^`]+)`", PAGE.read_text())
    r = subprocess.run([sys.executable, "-m", "pydiffusion.cli.main", "train", "--set", "training=p2_trainer:P2",
                        "--out", str(tmp_path / "run")], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(idea)})
    assert r.returncode == 2 and r.stderr.strip() == f"pydiffusion train: error: {quoted.group(1)}"
    assert not (tmp_path / "run").exists()
    bad = subprocess.run([sys.executable, "-m", "pydiffusion.cli.main", "train", "--set",
                          "training=p2_trainer:P2Trainer", "p2_gamma=-1", "--out", str(tmp_path / "run")],
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(idea)})
    assert bad.returncode == 2 and "config key 'p2_gamma' is -1.0; it must be >= 0" in bad.stderr


def test_a_missing_plugin_folder_is_one_line(tmp_path):
    r = snakemake("--profile", "profiles/local", "--configfile", "config/ablations-smoke.yaml", "--config",
                  f"results={tmp_path}", f"plugin_path=[{tmp_path / 'nowhere'}]", "-n")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].endswith(f"plugin_path[0] '{tmp_path / 'nowhere'}' is not a folder")
