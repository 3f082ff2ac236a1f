"""The validation split (data.splits): class-stratified, fixed by its own seed, disjoint from what a run trains on,
checked at the edge, and what a run is evaluated on when eval_split asks for it; the model is the same either way."""
import json

import pytest
import torch

from pydiffusion.config import ConfigError, validate
from pydiffusion.data.labels import NUM_CLASSES
from pydiffusion.data.mnist1d import load_mnist1d
from pydiffusion.data.splits import evaluation_data, train_subset, validation_split
from pydiffusion.training import loop


@pytest.fixture(scope="module")
def data(data_cache):
    return load_mnist1d(data_cache)


def test_the_validation_split_is_stratified_fixed_and_disjoint_from_training(data):
    x, y, _, _ = data
    kept, held = validation_split(y, 0.1)
    expected = sum(max(1, round(0.1 * (y == c).sum().item())) for c in range(NUM_CLASSES))
    assert len(held) == expected and len(kept) == 4000 - expected and 395 <= expected <= 405
    assert not set(kept.tolist()) & set(held.tolist()) and sorted(kept.tolist() + held.tolist()) == list(range(4000))
    for c in range(NUM_CLASSES):
        share = (y[held] == c).sum().item() / (y == c).sum().item()
        assert share == pytest.approx(0.1, abs=0.005), f"class {c} is held out at its own share"
    again = validation_split(y, 0.1)
    assert torch.equal(again[1], held), "the split is fixed by its own seed, not the run's"
    assert not torch.equal(held, train_subset(y, 0.1)), "not the same signals as train_fraction's subset"
    assert set(held.tolist()) <= set(validation_split(y, 0.2)[1].tolist()), "a larger split holds a smaller one"
    everything, none = validation_split(y, 0.0)
    assert len(none) == 0 and torch.equal(everything, torch.arange(4000))


def test_evaluation_data_picks_the_validation_split_or_the_test_set(data):
    x, y, x_test, y_test = data
    xv, yv, x_eval, y_eval = evaluation_data(data, 0.1, "validation")
    xt, yt, x_eval_test, _ = evaluation_data(data, 0.1, "test")
    assert torch.equal(xv, xt) and torch.equal(yv, yt), "the same training signals either way"
    assert len(xv) + len(x_eval) == len(x) and torch.equal(x_eval_test, x_test)
    held = validation_split(y, 0.1)[1]
    assert torch.equal(x_eval, x[held]) and torch.equal(y_eval, y[held])
    assert not (x_eval[:, None, :] == xv[None, :, :]).all(-1).any(), "no validation signal is trained on"
    assert all(torch.equal(a, b) for a, b in zip(evaluation_data(data), data)), "fraction 0: the data set as it is"


@pytest.mark.parametrize("cfg, message", [
    ({"eval_split": "validation"}, "no validation split; set validation_fraction"),
    ({"validation_fraction": 0.6}, r"'validation_fraction' is 0.6; it must be in \[0, 0.5\]"),
    ({"validation_fraction": -0.1}, "validation_fraction"),
    ({"eval_split": "train"}, "choose one of test, validation"),
])
def test_bad_split_settings_are_one_line_before_any_work(cfg, message):
    with pytest.raises(ConfigError, match=message) as e:
        validate(cfg)
    assert "\n" not in str(e.value)


def test_a_run_evaluated_on_validation_trains_the_same_model_as_on_test(tmp_path, data_cache):
    small = {"epochs": 1, "channels": 8, "emb_dim": 8, "channel_mult": [1], "attention": False, "batch_size": 500,
             "psnr_timesteps": [5], "validation_fraction": 0.1, "data_cache": str(data_cache), "threads": 1}
    on_test = loop.train({**small, "eval_split": "test"}, tmp_path / "test", log=lambda _: None)
    on_validation = loop.train({**small, "eval_split": "validation"}, tmp_path / "validation", log=lambda _: None)
    assert on_test["final_loss"] == on_validation["final_loss"], "one training, two evaluations"
    assert on_test["test_mse_forward"] != on_validation["test_mse_forward"]
    whole = loop.train({**small, "validation_fraction": 0.0}, tmp_path / "whole", log=lambda _: None)
    assert whole["final_loss"] != on_test["final_loss"], "holding signals out changes what is trained on"
    saved = json.loads((tmp_path / "validation" / "metrics.json").read_text())
    assert saved["test_mse_forward"] == on_validation["test_mse_forward"]
