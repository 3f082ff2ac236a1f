"""The trainer interface: built-in modes and plugins (an entry point or module:Class) declare the same things,
config.validate reads a plugin's own keys at the edge, and the two worked techniques do what their papers say."""
import itertools
import os
import sys
import textwrap

import pytest
import torch
import yaml

from pydiffusion.config import DEFAULTS, TRAINING_PASSES, ConfigError, add_import_path, installed_trainers, trainer_spec, validate
from pydiffusion.diffusion.denoiser import Denoiser
from pydiffusion.diffusion.paths import NoisePath
from pydiffusion.training import loop
from pydiffusion.training.immiscible import ImmiscibleTrainer, assign_noise
from pydiffusion.training.min_snr import MinSNRTrainer, min_snr_weights
from pydiffusion.training.trainers import BUILT_IN, build_trainer, trainer_class

PLUGIN = '''
from pydiffusion.training.trainers import ImplicitTrainer


class ScaledTrainer(ImplicitTrainer):
    """Implicit training with the loss times `loss_scale`."""

    options = {"loss_scale": 2.0, "tag": "x"}
    checks = {"loss_scale": (lambda v: v > 0, "> 0")}

    def __init__(self, denoiser, loss="mse", cfg_dropout=0.1, loss_scale=2.0, tag="x"):
        super().__init__(denoiser, loss, cfg_dropout)
        self.loss_scale = loss_scale

    def __call__(self, x0, y, gen):
        out = super().__call__(x0, y, gen)
        return {**out, "loss": self.loss_scale * out["loss"]}
'''


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    (tmp_path / "my_trainers.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "my_trainers:ScaledTrainer"


def test_the_built_in_modes_declare_the_interface_a_plugin_does():
    for name, cls in BUILT_IN.items():
        assert cls.passes == TRAINING_PASSES[name] == trainer_spec(name).passes
        assert all(DEFAULTS[k] == v for k, v in cls.options.items()), "built-in keys are DEFAULTS' keys"
        assert trainer_class(name) is cls
    assert {"min_snr", "immiscible"} <= set(installed_trainers()), "the worked plugins are entry points"
    assert trainer_class("min_snr") is MinSNRTrainer and trainer_class("immiscible") is ImmiscibleTrainer


def test_a_plugin_by_module_and_class_gets_its_own_keys_checked_and_stored(plugin, tmp_path):
    cfg = validate({"training": plugin})
    assert cfg["loss_scale"] == 2.0 and cfg["tag"] == "x", "its defaults are filled in"
    assert validate({"training": plugin, "loss_scale": 3})["loss_scale"] == 3.0
    with pytest.raises(ConfigError, match="config key 'loss_scale' is -1.0; it must be > 0"):
        validate({"training": plugin, "loss_scale": -1})
    with pytest.raises(ConfigError, match="config key 'tag' must be str, got 3"):
        validate({"training": plugin, "tag": 3})
    with pytest.raises(ConfigError, match="unknown config key 'loss_scale'"):
        validate({"loss_scale": 3.0})
    out = tmp_path / "run"
    small = {"training": plugin, "epochs": 1, "channels": 8, "emb_dim": 8, "channel_mult": [1], "attention": False,
             "batch_size": 500, "psnr_timesteps": [5], "loss_scale": 3.0, "data_cache": str(tmp_path / "data")}
    loop.train(small, out, log=lambda _: None)
    assert yaml.safe_load((out / "config.yaml").read_text())["loss_scale"] == 3.0
    history = yaml.safe_load((out / "history.json").read_text())
    assert history[0]["loss"] == pytest.approx(3.0 * history[0]["forward"], rel=1e-5), "the plugin's loss trained"
    with pytest.raises(ConfigError, match="loss_scale"):  # checked on resume: another value is another run
        loop.train({**small, "loss_scale": 4.0}, out, log=lambda _: None)


@pytest.mark.parametrize("body,message", [
    ("class T:\n    pass", "must declare `components`"),
    ("class T:\n    components = ('forward',)", "must declare `passes`"),
    ("class T:\n    components = ('forward',)\n    passes = 0", "must declare `passes`"),
    ("class T:\n    components = ('forward',)\n    passes = 1", r"must have a `from_config\(denoiser, cfg\)`"),
    ("from pydiffusion.training.trainers import ImplicitTrainer\nclass T(ImplicitTrainer):\n    options = {'lr': 1.0}",
     "option 'lr' is a pydiffusion key with default 0.002"),
    ("from pydiffusion.training.trainers import ImplicitTrainer\nclass T(ImplicitTrainer):\n    options = {'k': object()}",
     "option 'k' has default"),
    ("from pydiffusion.training.trainers import ImplicitTrainer\nclass T(ImplicitTrainer):\n    checks = {'k': 1}",
     "`checks` must be a dict of some of its options"),
    ("raise RuntimeError('the plugin is broken')", "importing 'bad_trainer' failed: RuntimeError: the plugin is broken"),
    ("T = 3", "module 'bad_trainer' has no class 'T'"),
])
def test_a_bad_plugin_is_one_line_naming_it(body, message, tmp_path, monkeypatch):
    (tmp_path / "bad_trainer.py").write_text(textwrap.dedent(body) + "\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "bad_trainer", raising=False)  # each case's own module
    with pytest.raises(ConfigError, match=message) as e:
        validate({"training": "bad_trainer:T"})
    assert "\n" not in str(e.value)


def test_an_unknown_name_lists_the_installed_trainers():
    with pytest.raises(ConfigError, match="choose one of implicit, semi_implicit, consistency, .*min_snr.*, or a class "
                                          "as module:Class"):
        validate({"training": "explicit"})


@pytest.mark.parametrize("noise", ["gaussian", "convex"])
@pytest.mark.parametrize("prediction", ["v", "eps", "x0"])
def test_min_snr_weighs_the_x0_error_by_min_snr_gamma(noise, prediction):
    path = NoisePath(noise, 20)
    weights = min_snr_weights(Denoiser(None, path, prediction), 5.0).double()
    snr = path.snr()[1:]
    clipped = snr.clamp(max=5.0)
    a, s = path.a[1:], path.s[1:]
    # the paper's weights for the variance-preserving path (v: min(SNR, g) / (SNR + 1)); on the convex path the
    # x0-space weighting: d x0_hat / d v = -s / (a^2 + s^2)
    expected = {"eps": clipped / snr, "x0": clipped,
                "v": clipped * s**2 / (a**2 + s**2) ** 2}[prediction]
    if noise == "gaussian" and prediction == "v":
        assert torch.allclose(expected, clipped / (snr + 1))
    assert torch.allclose(weights[1:], expected, rtol=1e-6) and weights[0] == 0


def test_min_snr_trainer_weighs_each_example_by_its_timestep():
    cfg = validate({"training": "min_snr", "snr_gamma": 1.0})
    trainer = build_trainer(cfg, Denoiser(lambda x, t, z, y: torch.zeros_like(x), NoisePath("gaussian", 20), "v"))
    x0 = torch.randn(64, 40)
    gen = torch.Generator().manual_seed(3)
    parts = trainer(x0, torch.arange(64) % 10, gen)
    t, eps, _ = trainer.draw(x0, torch.arange(64) % 10, torch.Generator().manual_seed(3))
    target = trainer.denoiser.target(x0, eps, t)
    expected = (trainer.weights[t] * (target**2).mean(dim=1)).mean()
    assert torch.allclose(parts["loss"], expected, rtol=1e-5)


def test_immiscible_assignment_is_the_permutation_of_least_total_distance():
    gen = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(6, 40, generator=gen), torch.randn(6, 40, generator=gen)
    assigned = assign_noise(x0, eps)
    assert sorted(map(tuple, assigned.tolist())) == sorted(map(tuple, eps.tolist())), "a permutation of the noise"
    cost = torch.cdist(x0, eps)
    best = min(sum(cost[i, j] for i, j in enumerate(p)) for p in itertools.permutations(range(6)))
    assert torch.linalg.norm(x0 - assigned, dim=1).sum() == pytest.approx(best.item(), rel=1e-5)
    assert torch.linalg.norm(x0 - assigned, dim=1).sum() <= torch.linalg.norm(x0 - eps, dim=1).sum()


def test_immiscible_noises_with_the_assigned_noise_and_is_reproducible():
    cfg = validate({"training": "immiscible"})
    trainer = build_trainer(cfg, Denoiser(lambda x, t, z, y: torch.zeros_like(x), NoisePath("convex", 20), "v"))
    x0, y = torch.randn(32, 40), torch.arange(32) % 10
    first = trainer(x0, y, torch.Generator().manual_seed(1))["loss"]
    assert first == trainer(x0, y, torch.Generator().manual_seed(1))["loss"]
    t, eps, _ = trainer.draw(x0, y, torch.Generator().manual_seed(1))
    plain = ImmiscibleTrainer.__mro__[1].draw(trainer, x0, y, torch.Generator().manual_seed(1))[1]
    assert not torch.equal(eps, plain) and torch.equal(eps, assign_noise(x0, plain))


def test_plugin_path_makes_a_folder_importable_here_and_in_the_processes_started(tmp_path, monkeypatch):
    (tmp_path / "my_trainers.py").write_text(PLUGIN)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    assert add_import_path([tmp_path]) == [str(tmp_path.resolve())]
    assert os.environ["PYTHONPATH"] == f"{tmp_path.resolve()}{os.pathsep}/elsewhere"
    assert validate({"training": "my_trainers:ScaledTrainer"})["loss_scale"] == 2.0
    with pytest.raises(ConfigError, match=r"plugin_path\[1\] '.*nowhere' is not a folder"):
        add_import_path([tmp_path, tmp_path / "nowhere"])
