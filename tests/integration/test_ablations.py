"""The ablation study end to end: training on a subset, the per-timestep test MSE, the second reference
classifier with several sample draws, the planned 240 jobs, and a smoke run of its workflow."""
import json
import math

import pytest
import torch
from helpers.workflow import job_counts, snakemake

from pydiffusion.config import ConfigError, validate
from pydiffusion.data.labels import NUM_CLASSES
from pydiffusion.data.mnist1d import load_mnist1d
from pydiffusion.data.splits import train_subset
from pydiffusion.diffusion import ops
from pydiffusion.diffusion.denoiser import Denoiser
from pydiffusion.diffusion.paths import NoisePath
from pydiffusion.evaluation.metrics import held_out_metrics
from pydiffusion.nets.backbones import build_model

TINY = {"channels": 8, "emb_dim": 32}


def test_training_on_a_fraction_uses_the_subset(tmp_path, tiny_cfg, data_cache):
    from pydiffusion.training.loop import train, training_signals

    cfg = validate({**tiny_cfg, "train_fraction": 0.1, "epochs": 1})
    x, y, _, _ = load_mnist1d(data_cache)
    xs, ys = training_signals(cfg, x, y)
    n = sum(round(0.1 * int((y == c).sum())) for c in range(NUM_CLASSES))
    assert torch.equal(xs, x[train_subset(y, 0.1)]) and torch.equal(ys, y[train_subset(y, 0.1)]) and len(ys) == n
    train(cfg, tmp_path / "run", log=lambda s: None)
    assert len(json.loads((tmp_path / "run" / "history.json").read_text())) == 1
    with pytest.raises(ConfigError, match=rf"more than the {n} training signals \(train_fraction 0.1\)"):
        train(validate({**cfg, "batch_size": 500}), tmp_path / "big", log=lambda s: None)


def test_the_per_timestep_curve_is_the_bound_noise_error_and_averages_to_the_scalar(data_cache):
    cfg = validate(TINY)
    torch.manual_seed(0)
    model = build_model(cfg)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.05)
    path = NoisePath("gaussian", cfg["T"])
    denoiser = Denoiser.from_config(model.eval(), path, cfg)
    _, _, x_test, y_test = load_mnist1d(data_cache)
    m = held_out_metrics(denoiser, x_test, y_test, seed=5)
    curve = m["test_mse_forward_t"]
    assert len(curve) == cfg["T"] and curve[-1] > curve[0]
    # the noise draws of held_out_metrics, in its order: t, eps, then the bound's noise per t
    gen = torch.Generator().manual_seed(5)
    t = torch.randint(1, cfg["T"] + 1, (len(x_test),), generator=gen)
    eps = torch.randn(x_test.shape, generator=gen)
    eps_bound = torch.randn((cfg["T"],) + tuple(x_test.shape), generator=gen)
    with torch.no_grad():
        for k in (1, 11, 20):
            tk = torch.full_like(t, k)
            err = denoiser.x0(ops.q_sample(x_test, eps_bound[k - 1], tk, path), tk, y_test) - x_test
            assert curve[k - 1] == pytest.approx(err.pow(2).mean().item(), rel=1e-6)
        per_signal = (denoiser.x0(ops.q_sample(x_test, eps, t, path), t, y_test) - x_test).pow(2).mean(1)
    assert m["test_mse_forward"] == pytest.approx(per_signal.mean().item(), rel=1e-6)
    # the scalar draws one t per signal; the curve's mean over t is the same expectation: within 4 standard errors
    se = per_signal.std().item() / math.sqrt(len(per_signal))
    assert abs(sum(curve) / len(curve) - m["test_mse_forward"]) < 4 * se


def test_gru_classifier_and_two_draws(tmp_path):
    from pydiffusion.evaluation.quality import evaluate_quality, fd_floor, floor_spread
    from pydiffusion.nets.classifiers import Classifier, GRUClassifier, classifier_name, load_classifier, save_classifier

    torch.manual_seed(0)
    cnn, gru = Classifier(width=8, features=16).eval(), GRUClassifier(hidden=8, features=16).eval()
    save_classifier(gru, 0.5, tmp_path / "gru.pt")
    loaded, acc = load_classifier(tmp_path / "gru.pt")
    x = torch.randn(5, 40)
    assert classifier_name(loaded) == "gru" and acc == 0.5 and torch.equal(loaded(x), gru(x))
    cfg = validate(TINY)
    torch.manual_seed(0)
    model = build_model(cfg)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.1)
    denoiser = Denoiser.from_config(model.eval(), NoisePath("gaussian", 20), cfg)
    g = torch.Generator().manual_seed(0)
    data = (torch.randn(300, 40, generator=g), torch.arange(300) % 10, torch.randn(100, 40, generator=g),
            torch.arange(100) % 10)
    one = evaluate_quality(denoiser, cfg, cnn, data, n=60, steps=5)
    two = evaluate_quality(denoiser, cfg, cnn, data, n=60, steps=5, more_classifiers=[gru], draws=2)
    for key in ("fd_1d", "sample_acc_guided", "coverage_entropy", "fd_1d_unconditional", "nn_dist"):
        assert two[f"{key}_draw0"] == one[key]  # draw 0 is the single draw, whatever else is measured
        assert two[key] == pytest.approx((two[f"{key}_draw0"] + two[f"{key}_draw1"]) / 2)
    for key in ("fd_1d", "fd_1d_unconditional", "nn_dist"):  # two sample sets (a count like accuracy may tie)
        assert two[f"{key}_draw1"] != two[f"{key}_draw0"]
    assert two["fd_floor"] == one["fd_floor"] and {"fd_1d_gru", "fd_floor_gru", "fd_ratio_gru",
                                                   "sample_acc_guided_gru_draw1"} <= set(two)
    with pytest.raises(ValueError, match="different architectures"):
        evaluate_quality(denoiser, cfg, cnn, data, n=60, steps=5, more_classifiers=[cnn])
    spread = floor_spread(cnn, data[0], data[2], 60, k=7)
    assert len(spread) == 5 and spread[0] == fd_floor(cnn, data[0], data[2], 60)  # 300 // 60 disjoint subsets


def test_the_study_plans_240_training_jobs_and_refuses_bad_values(tmp_path):
    r = snakemake("-n", "--configfile", "config/ablations.yaml", "--config", f"results={tmp_path / 'plan'}")
    assert r.returncode == 0, r.stderr
    counts = job_counts(r.stdout)
    assert counts["ablation_train"] == 24 * 2 * 5 and counts["reference_classifier"] == 2
    assert counts["ablation_report"] == 1 and "train" not in counts and "aggregate" not in counts
    r = snakemake("-n", "--configfile", "config/ablations.yaml", "--config", f"results={tmp_path / 'plan'}",
                  "ablations={run_families: [weights, conditioning]}")
    assert r.returncode == 0, r.stderr
    assert job_counts(r.stdout)["ablation_train"] == 6 * 2 * 5, "implicit_x0, semi_x0, implicit, fi, fi_embedding, semi_embedding"
    for value, message in (
            ("ablations={base_epochs: 0}", "--config, section ablations: ablations.base_epochs: 0 is less than the minimum"),
            ("ablations={classifiers: {vgg: 0}}", "--config, section ablations: ablations.classifiers: 'vgg' is not one of"),
            ("ablations={configurations: {semi: {lr: -1}}}", "--config: ablations.configurations.semi: config key 'lr'")):
        r = snakemake("-n", "--configfile", "config/ablations.yaml", "--config", value, f"results={tmp_path / 'x'}")
        errors = [line for line in (r.stdout + r.stderr).splitlines() if "error" in line.lower()]
        assert r.returncode == 2 and len(errors) == 1 and "Traceback" not in r.stderr, r.stdout + r.stderr
        assert errors[0].startswith(f"pydiffusion: error: {message}"), errors
    assert not (tmp_path / "x").exists()


def test_the_smoke_study_runs_and_reports(tmp_path):
    out = tmp_path / "results"
    r = snakemake("--profile", "profiles/local", "--configfile", "config/ablations-smoke.yaml", "--config", f"results={out}")
    assert r.returncode == 0, r.stderr[-3000:]
    report = (out / "report.md").read_text()
    for section in ("# pydiffusion ablation study", "## Does any setting make semi-implicit training help?",
                    "### roundtrip", "## Configurations", "## Sample draws", "## Reference classifiers and the FD floor",
                    "## What would change the verdict", "### Ruled out", "### What remains"):
        assert section in report, section
    for fig in ("curves", "effects"):
        assert (out / "figures" / f"{fig}.png").stat().st_size > 10_000 and f"figures/{fig}.png" in report
    summary = json.loads((out / "summary.json").read_text())
    assert [(c["config"], c["reference"], c["cell"]) for c in summary["comparisons"]] == [("semi", "implicit", "mse-gaussian")]
    effect = summary["comparisons"][0]["metrics"]["fd_1d_gru"]
    assert effect["n"] == [2, 2] and 0 <= effect["p"] <= effect["p_holm"] <= 1 and effect["g_low"] < effect["g_high"]
    assert {row["config"]: len(row["curve"]) for row in summary["configurations"]} == {"implicit": 20, "semi": 20}
    assert summary["comparisons"][0]["time_basis"] == "train_cpu_s" and "| training CPU s |" in report
    assert all(row["metrics"]["train_cpu_s"]["n"] == 2 for row in summary["configurations"])
    assert set(summary["floors"]) == {"cnn", "gru"} and len(summary["floors"]["cnn"]["values"]) == 5
    q = json.loads((out / "runs" / "semi" / "mse-gaussian" / "seed1" / "quality.json").read_text())
    assert q["fd_1d_gru"] == pytest.approx((q["fd_1d_gru_draw0"] + q["fd_1d_gru_draw1"]) / 2)
    r = snakemake("--profile", "profiles/local", "--configfile", "config/ablations-smoke.yaml", "--config", f"results={out}",
                  "-n")
    assert r.returncode == 0 and "Nothing to be done" in r.stdout + r.stderr
