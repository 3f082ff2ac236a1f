"""The CLI end to end on a tiny config: train, evaluate, sample, plot, data, doctor."""
import json
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from pydiffusion.checkpoints import load_denoiser
from pydiffusion.cli import main as cli
from pydiffusion.config import validate
from pydiffusion.diffusion.samplers import SAMPLERS, draw_class_samples
from pydiffusion.training.loop import train

PNG = b"\x89PNG\r\n\x1a\n"


def run(*args, **kw):
    return subprocess.run([sys.executable, "-m", "pydiffusion.cli.main", *args], capture_output=True, text=True, **kw)


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

    from pydiffusion.cli.main import build_parser

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
    from pydiffusion.data.mnist1d import load_mnist1d
    from pydiffusion.nets.classifiers import save_classifier, train_classifier

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


@pytest.fixture(scope="module")
def sampled_run(tmp_path_factory):
    """A finished tiny run whose config sets every default of `pydiffusion sample` away from the built-in ones."""
    from helpers.configs import TINY

    out = tmp_path_factory.mktemp("sampled") / "run"
    train(validate({**TINY, "epochs": 2, "training": "semi_implicit", "sampler": "dpmpp_2m", "sample_steps": 5,
                    "guidance": 2.0, "n_samples": 20}), out, log=lambda s: None)
    return out


@pytest.fixture
def main(monkeypatch, capsys):
    """cli.main in this process (it sets warnings.showwarning; monkeypatch puts it back)."""
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)

    def run_main(*args):
        code = cli.main([str(a) for a in args])
        assert code == 0, capsys.readouterr().err
        return capsys.readouterr().out

    return run_main


def test_sample_defaults_come_from_the_run_config(sampled_run, tmp_path, main):
    main("sample", "--run", sampled_run, "--out", tmp_path / "s.pt")
    s = torch.load(tmp_path / "s.pt", weights_only=True)
    assert {k: s[k] for k in ("sampler", "steps", "eta", "guidance", "seed")} == {
        "sampler": "dpmpp_2m", "steps": 5, "eta": 0.0, "guidance": 2.0, "seed": 0}
    denoiser, _ = load_denoiser(sampled_run)
    x, y = draw_class_samples(denoiser, 20, "dpmpp_2m", 5, 0.0, 2.0, seed=0)
    assert torch.equal(s["x"], x) and torch.equal(s["y"], y) and x.shape == (20, 40)


def test_sample_writes_npy_png_and_a_trajectory_gif(sampled_run, tmp_path, main):
    main("sample", "--run", sampled_run, "--out", tmp_path / "s.pt")
    main("sample", "--run", sampled_run, "--out", tmp_path / "s.npy")
    x = np.load(tmp_path / "s.npy")
    assert x.dtype == np.float32 and np.array_equal(x, torch.load(tmp_path / "s.pt", weights_only=True)["x"].numpy())
    out = main("sample", "--run", sampled_run, "--out", tmp_path / "s.png", "--trajectory", tmp_path / "t.gif")
    assert "t.gif" in out
    png = (tmp_path / "s.png").read_bytes()
    assert png[:8] == PNG and len(png) > 10_000
    with Image.open(tmp_path / "s.png") as image:
        width, height = image.size
    assert height > 300 and width > 100, "ten rows of two panels"
    gif = (tmp_path / "t.gif").read_bytes()
    assert gif[:6] == b"GIF89a"
    with Image.open(tmp_path / "t.gif") as image:
        assert image.n_frames == 6, "x_T and one frame per step of the run's 5"


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_sample_one_class_with_every_sampler(sampled_run, tmp_path, main, sampler):
    # each sampler given the values it uses (one it would ignore is refused: tests/integration/test_reliability.py)
    chosen = {"ddim": ["--steps", "4", "--eta", "0.5"], "ddpm": [], "dpmpp_2m": ["--steps", "4"]}[sampler]
    main("sample", "--run", sampled_run, "--sampler", sampler, *chosen, "--class", "3", "--n", "7",
         "--out", tmp_path / "s.pt")
    s = torch.load(tmp_path / "s.pt", weights_only=True)
    assert s["y"].tolist() == [3] * 7 and s["x"].shape == (7, 40) and torch.isfinite(s["x"]).all()
    assert (s["steps"], s["eta"]) == {"ddim": (4, 0.5), "ddpm": (20, 1.0), "dpmpp_2m": (4, 0.0)}[sampler], \
        "the settings the sampler really used"


def test_plot_writes_the_loss_curves(sampled_run, tmp_path, main):
    out = main("plot", "--run", sampled_run, "--out", tmp_path / "loss.png")
    assert "2 epochs" in out
    png = (tmp_path / "loss.png").read_bytes()
    assert png[:8] == PNG and len(png) > 10_000
