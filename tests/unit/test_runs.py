"""The Python face: load_run gives a Run of a run directory or an export, Run.sample draws with the run's own settings,
export_run writes safetensors, JSON and a model card that load_exported and the commands read back; a malformed or
mismatched export is one clear line."""
import json

import pytest
import torch
from helpers.runs import made_up_run
from safetensors.torch import load_file, save_file

import pydiffusion
from pydiffusion.cli.main import main
from pydiffusion.config import ConfigError
from pydiffusion.files import UnreadableFileError
from pydiffusion.reporting.export import CARD, SAMPLES_FIGURE
from pydiffusion.reporting.grid_stats import METRICS
from pydiffusion.reporting.markdown import fmt
from pydiffusion.runs import check_memory


@pytest.fixture
def trained(tmp_path):
    run = made_up_run(tmp_path / "runs", "semi_implicit", seed=1, model=True)
    (run / "command.txt").write_text("pydiffusion train --out somewhere --set epochs=2\n")
    quality = json.loads((run / "quality.json").read_text())
    (run / "quality.json").write_text(json.dumps({**quality, "fd_floor": 0.5}))  # as evaluate_quality writes it
    return run


@pytest.fixture
def exported(trained, tmp_path):
    return pydiffusion.export_run(trained, tmp_path / "export")


def test_a_run_holds_its_config_metrics_quality_history_command_and_denoiser(trained):
    run = pydiffusion.load_run(trained)
    assert run.config["training"] == "semi_implicit" and run.config["seed"] == 1
    assert run.metrics == json.loads((trained / "metrics.json").read_text())
    assert run.quality["fd_1d"] == json.loads((trained / "quality.json").read_text())["fd_1d"]
    saved = torch.load(trained / "model.pt", weights_only=True)
    assert run.history == saved["history"] and run.command == "pydiffusion train --out somewhere --set epochs=2"
    state = saved["ema"]
    assert all(torch.equal(v, state[k]) for k, v in run.denoiser.model.state_dict().items())
    assert not run.denoiser.model.training and not run.exported


def test_sample_uses_the_runs_settings_and_its_arguments(trained):
    run = pydiffusion.load_run(trained)
    assert run.sample_settings() == {"sampler": "ddim", "steps": run.config["sample_steps"], "eta": run.config["eta"],
                                     "guidance": run.config["guidance"]}
    x, y = run.sample(12, seed=5)
    assert x.shape == (12, 40) and y.tolist() == [i % 10 for i in range(12)]
    again, _ = run.sample(12, seed=5)
    other, _ = run.sample(12, seed=6)
    assert torch.equal(x, again) and not torch.equal(x, other)
    threes, y3 = run.sample(4, label=3, sampler="dpmpp_2m", steps=5, guidance=2.0)
    assert y3.tolist() == [3] * 4 and not torch.equal(threes, x[:4])
    assert run.sample_settings(sampler="ddpm") == {"sampler": "ddpm", "steps": run.config["T"], "eta": 1.0,
                                                   "guidance": run.config["guidance"]}
    x, y, trajectory = run.sample(3, steps=4, trajectory=True)
    assert len(trajectory) == 5 and torch.equal(trajectory[-1], x)


@pytest.mark.parametrize("kwargs, message", [
    ({"n": 0}, "n is 0"),
    ({"n": 2, "label": 10}, "label is 10"),
    ({"n": 2, "steps": 0}, "steps is 0"),
    ({"n": 2, "steps": 999}, "steps is 999; it must be in [1, T="),
    ({"n": 2, "sampler": "euler"}, "sampler is 'euler'; choose one of ddim"),
    ({"n": 2, "guidance": -1.0}, "guidance is -1.0"),
    ({"n": 2, "eta": float("nan")}, "eta is nan; it must be a finite number"),
    ({"n": 2, "label": 3, "guidance": 0.0}, "class 3 needs guidance > 0"),
    ({"n": 2, "classifier_scale": 1.0}, "needs a noise-aware classifier"),
])
def test_a_bad_sample_argument_is_a_config_error_naming_it(trained, kwargs, message):
    with pytest.raises(ConfigError) as e:
        pydiffusion.load_run(trained).sample(**kwargs)
    assert message in str(e.value)


def test_samples_that_would_not_fit_in_memory_are_refused_before_sampling():
    wide = {"channels": 512, "channel_mult": [1, 2]}
    check_memory(wide, (40,), 10, 21)
    with pytest.raises(ConfigError, match=r"n is 100,000: drawing them at once needs about \d+\.\d GiB, more than half"):
        check_memory(wide, (40,), 100_000, 21)
    with pytest.raises(ConfigError, match="draw at most about"):
        check_memory(wide, (3, 32, 32), 20_000, 1)


def test_the_export_is_safetensors_and_json_and_loads_back_the_same_model(trained, exported):
    run = pydiffusion.load_run(trained)
    weights = load_file(exported / "model.safetensors")
    assert weights.keys() == run.denoiser.model.state_dict().keys()
    assert all(torch.equal(weights[k], v) for k, v in run.denoiser.model.state_dict().items())
    assert json.loads((exported / "config.json").read_text()) == run.config
    assert json.loads((exported / "metrics.json").read_text()) == run.metrics
    assert json.loads((exported / "quality.json").read_text()) == run.quality
    assert not list(exported.glob("*.pt")), "an export holds no pickle"
    back = pydiffusion.load_exported(exported)
    assert back.exported and back.config == run.config and back.metrics == run.metrics
    assert torch.equal(back.sample(10, seed=2)[0], run.sample(10, seed=2)[0])


def test_the_model_card_says_what_the_model_is_its_metrics_beside_the_floor_and_how_it_was_made(trained, exported):
    card = (exported / CARD).read_text()
    run = pydiffusion.load_run(trained)
    assert card.startswith("---\nlicense: mit\n")
    assert "semi-implicit" in card and "MNIST-1D" in card and f"{run.config['epochs']} epochs" in card
    for key in ("test_mse_forward", "fd_1d", "sample_acc_guided"):
        row = next(line for line in card.splitlines() if line.startswith(f"| `{key}`"))
        value = fmt({**run.metrics, **run.quality}[key])
        beside = f" (floor {fmt(run.quality['fd_floor'])})" if key == "fd_1d" else ""
        assert METRICS[key].words in row and f"| {value}{beside} |" in row, row
    assert "(lower is better)" in card and "(higher is better)" in card
    assert f"floor, {fmt(run.quality['fd_floor'])}," in card
    assert "ddim, 20 steps" in card and run.command in card
    assert "pydiffusion train --config config.json" in card and "@software{pydiffusion" in card
    assert f"]({SAMPLES_FIGURE})" in card and (exported / SAMPLES_FIGURE).stat().st_size > 1000


def test_sample_and_evaluate_commands_take_an_export(trained, exported, tmp_path, capsys):
    assert main(["sample", "--run", str(exported), "--n", "6", "--out", str(tmp_path / "e.pt")]) == 0
    assert main(["sample", "--run", str(trained), "--n", "6", "--out", str(tmp_path / "r.pt")]) == 0
    from_export = torch.load(tmp_path / "e.pt", weights_only=True)
    from_run = torch.load(tmp_path / "r.pt", weights_only=True)
    assert torch.equal(from_export["x"], from_run["x"])


def test_export_refuses_an_unfinished_run_and_a_folder_it_would_clobber(trained, tmp_path, capsys):
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    for out, message in ((tmp_path / "a-file", "is a file"), (tmp_path / "busy", "holds other files")):
        assert main(["export", "--run", str(trained), "--out", str(out)]) == 2
        assert message in capsys.readouterr().err
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"
    (trained / "metrics.json").unlink()
    assert main(["export", "--run", str(trained), "--out", str(tmp_path / "new")]) == 2
    assert "has not finished training" in capsys.readouterr().err and not (tmp_path / "new").exists()


def _break_shape(folder):
    weights = load_file(folder / "model.safetensors")
    key = next(k for k, v in weights.items() if v.dim() > 1)
    weights[key] = torch.zeros(3, 3)
    save_file(weights, folder / "model.safetensors")


def _drop_key(folder):
    weights = load_file(folder / "model.safetensors")
    weights.pop(next(iter(weights)))
    save_file(weights, folder / "model.safetensors")


def _edit_config(change):
    def edit(folder):
        cfg = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps(change(cfg)))
    return edit


@pytest.mark.parametrize("damage, message", [
    (lambda f: (f / "model.safetensors").write_bytes((f / "model.safetensors").read_bytes()[:500]), "not a safetensors file"),
    (lambda f: (f / "model.safetensors").write_bytes(b""), "not a safetensors file"),
    (_break_shape, "weights do not fit its architecture"),
    (_drop_key, "weights do not fit its architecture (Error(s) in loading state_dict for UNet1D: Missing key"),
    (_edit_config(lambda c: {**c, "channels": 32}), "weights do not fit its architecture"),
    (_edit_config(lambda c: {**c, "no_such_key": 1}), "its config is refused (unknown config key 'no_such_key'"),
    (_edit_config(lambda c: {**c, "T": 1}), "its config is refused (config key 'T' is 1"),
    (_edit_config(lambda c: [c]), "must hold a mapping of config keys"),
    (lambda f: (f / "config.json").write_text("{not json"), "is not valid JSON"),
    (lambda f: (f / "config.json").unlink(), "does not exist"),
])
def test_a_malformed_or_mismatched_export_is_one_line(exported, tmp_path, capsys, damage, message):
    damage(exported)
    assert main(["sample", "--run", str(exported), "--n", "2", "--out", str(tmp_path / "s.pt")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err, err
    with pytest.raises((UnreadableFileError, FileNotFoundError)):
        pydiffusion.load_exported(exported)


def test_load_exported_needs_an_export(trained):
    with pytest.raises(FileNotFoundError, match="holds no model.safetensors; export a run into it"):
        pydiffusion.load_exported(trained)
