"""Every bad configuration is a one-line error naming the key; every list of valid values is config.CHOICES."""

import pytest

from pydiffusion.config import CHOICES, DEFAULTS, ConfigError, load_config, parse_overrides, validate

BAD = [
    ({"T": 1}, "'T'.*>= 2"),
    ({"T": 2.5}, "'T' must be int"),
    ({"loss": "l1"}, "'loss'.*mse, kl"),
    ({"noise": "uniform"}, "'noise'.*gaussian, convex"),
    ({"training": "explicit"}, "'training'.*implicit, semi_implicit, consistency"),
    ({"prediction": "score"}, "'prediction'.*eps, x0, v"),
    ({"schedule": "sigmoid"}, "'schedule'"),
    ({"lr": -1e-3}, "'lr'.*> 0"),
    ({"lr": "fast"}, "'lr' must be float"),
    ({"epochs": 0}, "'epochs'"),
    ({"batch_size": 0}, "'batch_size'"),
    ({"channels": 12}, "'channels'.*multiple of 8"),
    ({"channel_mult": [1, 2, 2, 2]}, "'channel_mult'"),
    ({"cfg_dropout": 1.0}, "'cfg_dropout'"),
    ({"ema_decay": 1.0}, "'ema_decay'"),
    ({"eta": 2.0}, "'eta'"),
    ({"sample_steps": 50}, "'sample_steps'.*<= T"),
    ({"psnr_timesteps": [5, 30]}, "'psnr_timesteps'"),
    ({"device": "tpu"}, "'device'.*auto, cpu, cuda"),
    ({"wandb_mode": "cloud"}, "'wandb_mode'"),
    ({"attention": "yes"}, "'attention' must be bool"),
    ({"w_inverse": -1.0}, "'w_inverse'"),
    ({"learning_rate": 1e-3}, "unknown config key 'learning_rate'"),
    ({"conditioning": "film"}, "'conditioning' is 'film'; choose one of input, embedding"),
    ({"train_fraction": 0.0}, r"'train_fraction' is 0.0; it must be in \(0, 1\]"),
    ({"train_fraction": 1.5}, r"'train_fraction' is 1.5; it must be in \(0, 1\]"),
    ({"train_fraction": "half"}, "'train_fraction' must be float"),
]


@pytest.mark.parametrize("cfg,message", BAD, ids=[next(iter(c)) for c, _ in BAD])
def test_bad_config_names_the_key(cfg, message):
    with pytest.raises(ConfigError, match=message) as err:
        validate(cfg)
    assert "\n" not in str(err.value)


def test_defaults_are_valid_and_yaml_numbers_are_read():
    assert validate({}) == {**DEFAULTS, "clip": 5.0}
    assert validate({"lr": "1e-3"})["lr"] == 1e-3  # YAML 1.1 reads 1e-3 as a string
    assert validate({"lr": 1})["lr"] == 1.0
    assert parse_overrides(["epochs=5", "channel_mult=[1,2]", "attention=false"]) == {
        "epochs": 5, "channel_mult": [1, 2], "attention": False}
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["epochs"])


def test_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: [1\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad)
    good = tmp_path / "good.yaml"
    good.write_text("epochs: 7\nloss: kl\n")
    cfg = load_config(good, ["epochs=9"])
    assert cfg["epochs"] == 9 and cfg["loss"] == "kl"


def test_paths_kernels_and_cli_take_the_config_choices():
    import argparse

    from pydiffusion.cli.main import build_parser
    from pydiffusion.diffusion import reference
    from pydiffusion.diffusion.paths import NoisePath

    for kind in CHOICES["noise"]:
        for schedule in CHOICES["schedule"]:
            NoisePath(kind, 4, schedule)
    assert reference.PREDICTION_CODES == {"eps": 0, "x0": 1, "v": 2}, "the kernels' enum Prediction"
    (commands,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    (sampler,) = [a for a in commands.choices["sample"]._actions if a.dest == "sampler"]
    assert tuple(sampler.choices) == CHOICES["sampler"]
