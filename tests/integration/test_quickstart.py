"""docs/quickstart.md runs as written: its Python blocks, extracted and executed in order in an empty folder (so the
page cannot rot), and the commands it names for the same steps (train, export, sample --run EXPORT)."""
import json
import os
import re
import subprocess
import sys

import torch
from helpers.workflow import ROOT
from safetensors.torch import load_file

QUICKSTART = ROOT / "docs" / "quickstart.md"


def python_blocks(markdown: str) -> list:
    return re.findall(r"^```python\n(.*?)^```$", markdown, re.S | re.M)


def test_the_quickstart_blocks_run_in_order(tmp_path, monkeypatch, capsys):
    blocks = python_blocks(QUICKSTART.read_text())
    assert len(blocks) >= 4, "the quickstart has lost its code"
    monkeypatch.chdir(tmp_path)
    namespace = {}
    for i, block in enumerate(blocks):
        exec(compile(block, f"{QUICKSTART.name} block {i + 1}", "exec"), namespace)
    printed = capsys.readouterr().out.splitlines()
    assert printed[-2] == "True", "the export draws the samples the run drew"
    assert namespace["run"].metrics["epochs"] == 2 and (tmp_path / "runs" / "first" / "model.pt").exists()
    assert {p.name for p in (tmp_path / "exports" / "first").iterdir()} >= {
        "model.safetensors", "config.json", "history.json", "metrics.json", "samples.png", "README.md"}
    assert namespace["config"]["training"] == namespace["run"].config["training"]


def cli(*args, cwd):
    r = subprocess.run([sys.executable, "-m", "pydiffusion.cli.main", *args], capture_output=True, text=True, cwd=cwd,
                       env={**os.environ, "WANDB_API_KEY": ""})
    assert r.returncode == 0, r.stderr
    return r


def test_train_export_and_sample_an_export_from_the_command_line(tmp_path, tiny_cfg):
    train = ["train", "--out", "run", "--set", "epochs=2", "channels=16", "emb_dim=32", "threads=1",
             "wandb_mode=disabled", "n_samples=10"]
    cli(*train, cwd=tmp_path)
    assert (tmp_path / "run" / "command.txt").read_text() == "pydiffusion " + " ".join(train) + "\n"
    r = cli("export", "--run", "run", "--out", "export", cwd=tmp_path)
    assert "exported run into export" in r.stdout
    card = (tmp_path / "export" / "README.md").read_text()
    assert "pydiffusion " + " ".join(train) in card, "the card quotes the command that trained the model"
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert f"{metrics['test_mse_forward']:.4g}" in card
    weights = load_file(tmp_path / "export" / "model.safetensors")
    ema = torch.load(tmp_path / "run" / "model.pt", weights_only=True)["ema"]
    assert weights.keys() == ema.keys() and all(torch.equal(weights[k], ema[k]) for k in ema)
    for source in ("run", "export"):
        cli("sample", "--run", source, "--n", "10", "--seed", "4", "--out", f"{source}.pt", cwd=tmp_path)
    a, b = (torch.load(tmp_path / f"{s}.pt", weights_only=True) for s in ("run", "export"))
    assert torch.equal(a["x"], b["x"]) and a["sampler"] == b["sampler"]
    cli("train", "--config", "export/config.json", "--out", "again", cwd=tmp_path)
    again = json.loads((tmp_path / "again" / "metrics.json").read_text())
    assert again["test_mse_forward"] == metrics["test_mse_forward"], "the card's retraining command gives the same run"
