"""The grid's progress lines: jobs done, the share of the training done and the time left."""
import json

import pytest
import torch

from pydiffusion.config import TRAINING_PASSES, trainer_spec, validate
from pydiffusion.diffusion.denoiser import Denoiser
from pydiffusion.diffusion.paths import NoisePath
from pydiffusion.progress import RATE_WINDOW_S, GridProgress, format_duration
from pydiffusion.training.trainers import build_trainer


def write_history(run, epochs):
    run.mkdir(parents=True, exist_ok=True)
    (run / "history.json").write_text(json.dumps([{"epoch": e + 1} for e in range(epochs)]))


def test_time_left_is_the_work_left_at_the_recent_rate(tmp_path):
    now = [100.0]
    implicit, semi = tmp_path / "implicit", tmp_path / "semi"
    write_history(semi, 2)  # done before this start (a resumed grid): counts as done, not towards the rate
    progress = GridProgress({implicit: 1, semi: 4}, epochs=10, clock=lambda: now[0])
    assert progress.line() == "0/2 grid jobs done, 16% of the training (0 s so far)"
    now[0] += 60
    write_history(implicit, 10)
    (implicit / "samples.pt").write_bytes(b"")
    write_history(semi, 4)
    # 10 + 4 * 4 = 26 of 50 units done, 18 of them in these 60 s: 24 units left take 24 * 60 / 18 = 80 s
    assert progress.line() == "1/2 grid jobs done, 52% of the training; about 1 min 20 s left (1 min 00 s so far)"
    write_history(semi, 10)
    assert "about" not in progress.line() and "100% of the training" in progress.line()


def test_time_left_recovers_from_a_pause_within_the_rate_window(tmp_path):
    now, run = [0.0], tmp_path / "run"
    progress = GridProgress({run: 1}, epochs=100, clock=lambda: now[0])

    def minutes_of_training(minutes, epochs):  # one epoch a minute, a progress line each minute
        for _ in range(minutes):
            now[0] += 60
            epochs += 1
            write_history(run, epochs)
            line = progress.line()
        return epochs, line

    epochs, line = minutes_of_training(10, 0)
    assert "about 1 h 30 min left" in line  # 90 epochs at one a minute
    now[0] += 3600  # suspended for an hour: no work, no progress line
    epochs, line = minutes_of_training(1, epochs)
    assert "about 1 h 30 min left" not in line  # the window still spans the pause
    epochs, line = minutes_of_training(RATE_WINDOW_S // 60, epochs)
    assert f"about {100 - epochs} min 00 s left" in line  # the window is past the pause: one epoch a minute again


def test_unreadable_history_counts_as_no_epochs(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "history.json").write_text("[{")  # being replaced
    assert GridProgress({tmp_path / "run": 1}, epochs=3).work_done() == 0


@pytest.mark.parametrize("seconds, text", [(0.4, "0 s"), (59, "59 s"), (61, "1 min 01 s"), (3725, "1 h 02 min")])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


@pytest.mark.parametrize("training", [*TRAINING_PASSES, "min_snr", "immiscible"])
def test_training_passes_are_the_network_passes_of_each_trainer(training):
    # the cost the workflow schedules and estimates with is what the trainer really does
    cfg = validate({"training": training, "channels": 16, "emb_dim": 32})
    seen = []

    def model(x, t, z, y):
        seen.append(x.shape[0])
        return x * torch.ones((), requires_grad=True)

    x0 = torch.randn(8, 40)
    build_trainer(cfg, Denoiser(model, NoisePath(cfg["noise"], cfg["T"])))(x0, torch.arange(8) % 10, torch.Generator())
    assert sum(seen) == trainer_spec(training).passes * 8
