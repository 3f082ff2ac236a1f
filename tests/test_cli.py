"""The CLI end to end on a tiny config: train, evaluate, sample, data, doctor."""
import json
import subprocess
import sys

import torch
import yaml


def run(*args, **kw):
    return subprocess.run([sys.executable, "-m", "pydiffusion.cli", *args], capture_output=True, text=True, **kw)


def test_cli_end_to_end(tmp_path, tiny_cfg):
    cfg_file = tmp_path / "tiny.yaml"
    cfg_file.write_text(yaml.safe_dump({**tiny_cfg, "epochs": 2, "wandb_mode": "offline"}))
    out = tmp_path / "run"
    r = run("train", "--config", str(cfg_file), "--out", str(out), "--set", "training=semi_implicit", "noise=convex",
            env={**__import__("os").environ, "WANDB_API_KEY": ""})
    assert r.returncode == 0, r.stderr
    assert "parameters" in r.stdout and "test_mse=" in r.stdout
    assert "epoch 2:" in r.stdout, "plain log lines when not on a terminal"
    for name in ("config.yaml", "history.json", "checkpoint.pt", "metrics.json"):
        assert (out / name).exists(), name
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["training"] == "semi_implicit" and saved["noise"] == "convex" and saved["epochs"] == 2
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["training"] == "semi_implicit" and metrics["epochs"] == 2
    assert list((out / "wandb").glob("offline-run-*")), "offline W&B run under the run directory"

    r = run("evaluate", "--run", str(out), "--out", str(tmp_path / "m.json"))
    assert r.returncode == 0, r.stderr
    again = json.loads((tmp_path / "m.json").read_text())
    assert {k: again[k] for k in ("test_mse", "test_kl", "psnr_t10")} == {k: metrics[k] for k in ("test_mse", "test_kl", "psnr_t10")}

    r = run("sample", "--run", str(out), "--n", "30", "--steps", "5", "--out", str(tmp_path / "s.pt"))
    assert r.returncode == 0, r.stderr
    s = torch.load(tmp_path / "s.pt")
    assert s["x"].shape == (30, 40) and s["y"].tolist() == [i % 10 for i in range(30)]
    assert torch.isfinite(s["x"]).all()
    r = run("sample", "--run", str(out), "--n", "30", "--steps", "5", "--out", str(tmp_path / "s2.pt"))
    assert torch.equal(torch.load(tmp_path / "s2.pt")["x"], s["x"]), "same seed, same samples"

    r = run("sample", "--run", str(out), "--steps", "50", "--out", str(tmp_path / "x.pt"))
    assert r.returncode == 2 and "--steps is 50" in r.stderr
    r = run("evaluate", "--run", str(tmp_path / "missing"))
    assert r.returncode == 2 and "train first" in r.stderr


def test_cli_data_and_doctor(tmp_path):
    r = run("data", "--cache", str(tmp_path))
    assert r.returncode == 0 and "4000 train, 1000 test" in r.stdout
    assert list(tmp_path.glob("mnist1d-*.pt"))
    r = run("doctor")
    assert r.returncode == 0, r.stdout
    for part in ("imports", "ops backend", "W&B", "data", "CUDA"):
        assert f"ok    {part}:" in r.stdout
    assert "WANDB_API_KEY" in r.stdout


def test_version_and_help_cover_every_command_and_option():
    import argparse
    from importlib.metadata import version

    from pydiffusion.cli import build_parser

    r = run("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"pydiffusion {version('pydiffusion-mnist1d')}"
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    top = run("--help").stdout
    for name, command in sub.choices.items():
        assert name in top and name in parser.description, f"{name} missing from the top-level help"
        for action in command._actions:
            assert action.help, f"pydiffusion {name} {action.option_strings} has no help"
        text = command.format_help()
        for action in command._actions:
            if action.default not in (None, [], argparse.SUPPRESS) and action.nargs != 0:
                assert "default" in action.help or f"(default: {action.default})" in " ".join(text.split()), \
                    f"pydiffusion {name} {action.option_strings}: default not shown"


def test_train_with_a_classifier_also_writes_what_quality_and_sample_write(tmp_path, tiny_cfg):
    # the workflow's one process per job must give the numbers of the separate commands
    from pydiffusion.data import load_mnist1d
    from pydiffusion.quality import save_classifier, train_classifier

    x, y, x_test, y_test = load_mnist1d()
    classifier, acc = train_classifier(x[:500], y[:500], x_test, y_test, epochs=1, log=lambda s: None)
    save_classifier(classifier, acc, tmp_path / "c.pt")
    cfg_file = tmp_path / "tiny.yaml"
    cfg_file.write_text(yaml.safe_dump({**tiny_cfg, "epochs": 1, "wandb_mode": "offline"}))
    out = tmp_path / "run"
    r = run("train", "--config", str(cfg_file), "--out", str(out), "--classifier", str(tmp_path / "c.pt"),
            "--quality-samples", "100", "--samples", "30", env={**__import__("os").environ, "WANDB_API_KEY": ""})
    assert r.returncode == 0, r.stderr
    assert len(list((out / "wandb").glob("offline-run-*"))) == 1, "quality and samples go into the training's W&B run"
    quality = json.loads((out / "quality.json").read_text())
    assert 0 <= quality["sample_acc_guided"] <= 1 and quality["fd_1d"] > 0
    samples = torch.load(out / "samples.pt", weights_only=True)

    r = run("quality", "--run", str(out), "--classifier", str(tmp_path / "c.pt"), "--n", "100",
            "--out", str(tmp_path / "q.json"))
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "q.json").read_text()) == quality
    r = run("sample", "--run", str(out), "--n", "30", "--out", str(tmp_path / "s.pt"))
    assert r.returncode == 0, r.stderr
    separate = torch.load(tmp_path / "s.pt", weights_only=True)
    assert torch.equal(separate["x"], samples["x"]) and torch.equal(separate["y"], samples["y"])


def test_train_refuses_a_bad_classifier_before_training(tmp_path, tiny_cfg):
    (tmp_path / "c.pt").write_bytes(b"not a classifier")
    r = run("train", "--out", str(tmp_path / "run"), "--classifier", str(tmp_path / "c.pt"), "--set", "epochs=1")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "c.pt" in r.stderr, r.stderr
    assert not (tmp_path / "run").exists()
