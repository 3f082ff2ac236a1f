"""The ablation study's parts: the direction embedding, the training subsets, the per-timestep test MSE, the
second reference classifier with several sample draws, the statistics on known answers, the study's plan, and
a smoke run of its workflow."""
import json
import math

import pytest
import torch
import yaml
from scipy import stats
from workflow_helpers import ROOT, job_counts, snakemake

from pydiffusion.ablations import stats as st
from pydiffusion.ablations.plan import read_study
from pydiffusion.ablations.stats import WORSE
from pydiffusion.config import ConfigError, validate
from pydiffusion.data.labels import NUM_CLASSES
from pydiffusion.data.mnist1d import load_mnist1d, train_subset
from pydiffusion.diffusion import ops
from pydiffusion.diffusion.denoiser import Denoiser
from pydiffusion.diffusion.paths import NoisePath
from pydiffusion.evaluation.metrics import held_out_metrics
from pydiffusion.nets.backbones import build_model

TINY = {"channels": 8, "emb_dim": 32}


def _film_inputs(model, z):
    """The embedding every FiLM layer of `model` receives for one batch with direction z."""
    seen = []
    hooks = [m.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].clone()))
             for name, m in model.named_modules() if name.endswith("film")]
    g = torch.Generator().manual_seed(0)
    x, t, y = torch.randn(4, 40, generator=g), torch.tensor([1, 5, 9, 20]), torch.tensor([0, 3, 7, 9])
    with torch.no_grad():
        out = model(x, t, torch.full_like(t, z), y)
    for h in hooks:
        h.remove()
    return seen, out


@pytest.mark.parametrize("model", ["unet", "mlp"])
def test_the_direction_embedding_reaches_every_film_layer(model):
    for conditioning, reaches in (("input", False), ("embedding", True)):
        torch.manual_seed(0)
        net = build_model(validate({**TINY, "model": model, "conditioning": conditioning}))
        for p in net.parameters():  # the zero-initialised output layers would hide every difference
            torch.nn.init.normal_(p, std=0.1)
        forward, out0 = _film_inputs(net, 0)
        inverse, out1 = _film_inputs(net, 1)
        assert len(forward) == len(inverse) >= 3
        assert all(not torch.equal(a, b) for a, b in zip(forward, inverse)) == reaches, conditioning
        assert all(torch.equal(a, b) for a, b in zip(forward, inverse)) != reaches, conditioning
        assert not torch.equal(out0, out1)  # z also enters as an input channel in both
    default = build_model(validate(TINY)).state_dict()
    assert not any("direction" in k for k in default)  # a default network is the network it was before


def test_train_subset_is_stratified_stable_and_nested(data_cache):
    x, y, _, _ = load_mnist1d(data_cache)
    torch.manual_seed(123)  # the run's seed must not matter
    tenth = train_subset(y, 0.1)
    torch.manual_seed(7)
    assert torch.equal(tenth, train_subset(y, 0.1))
    quarter = train_subset(y, 0.25)
    for c in range(NUM_CLASSES):
        n_c = int((y == c).sum())
        assert int((y[tenth] == c).sum()) == round(0.1 * n_c) and int((y[quarter] == c).sum()) == round(0.25 * n_c)
    assert set(tenth.tolist()) < set(quarter.tolist())
    assert torch.equal(tenth, tenth.unique()) and torch.equal(train_subset(y, 1.0), torch.arange(len(y)))


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


def test_welch_and_paired_match_scipy():
    a, b = [1.0, 2.0, 3.0, 4.5, 2.2], [2.0, 3.0, 5.0, 6.0, 7.0, 4.1]
    w, ref = st.welch(a, b), stats.ttest_ind(a, b, equal_var=False)
    ci = ref.confidence_interval(0.95)
    assert w["p"] == pytest.approx(ref.pvalue) and w["df"] == pytest.approx(ref.df)
    assert (w["ci_low"], w["ci_high"]) == pytest.approx((ci.low, ci.high))
    assert w["diff"] == pytest.approx(sum(a) / 5 - sum(b) / 6)
    p, ref = st.paired(a, b[:5]), stats.ttest_rel(a, b[:5])
    ci = ref.confidence_interval(0.95)
    assert p["p"] == pytest.approx(ref.pvalue) and (p["ci_low"], p["ci_high"]) == pytest.approx((ci.low, ci.high))
    assert st.welch([1.0, 1.0], [1.0, 1.0])["p"] == 1.0 and st.welch([1.0, 1.0], [2.0, 2.0])["p"] == 0.0
    assert math.isnan(st.welch([1.0], [2.0, 3.0])["p"])


def test_hedges_g_holm_and_the_ratio_interval_on_known_answers():
    # means 2 and 5, both sd 1: d = -3, J = 1 - 3 / (4 * 6 - 9) = 0.8, g = -2.4,
    # var(g) = 6 / 9 + 2.4^2 / 12 = 1.14667, half width 1.959964 * 1.070825 = 2.098779
    g = st.hedges_g([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])
    assert (g["g"], g["ci_low"], g["ci_high"]) == pytest.approx((-2.4, -4.498779, -0.301221), abs=1e-6)
    assert math.isnan(st.hedges_g([1.0, 1.0], [2.0, 2.0])["g"])
    # sorted 0.005 (x4), 0.01 (x3), 0.03 (x2), 0.04 (x1, raised to the running maximum 0.06)
    assert st.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    adjusted = st.holm([0.02, math.nan, 0.04])
    assert adjusted[0] == pytest.approx(0.04) and math.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.04)
    assert st.holm([0.5, 0.6]) == [1.0, 1.0]
    # one seed: only the floor's spread, 0.2 / 1.0 on the log scale, normal quantile
    r = st.ratio_interval([2.0], 1.0, 0.2)
    assert (r["ratio"], r["ci_low"], r["ci_high"]) == pytest.approx((2.0, 2 * math.exp(-0.391993), 2 * math.exp(0.391993)))
    wider = st.ratio_interval([1.9, 2.1], 1.0, 0.2)
    assert wider["ci_low"] < r["ci_low"] and wider["ci_high"] > r["ci_high"]  # the seeds' spread adds to it


def _study():
    return yaml.safe_load((ROOT / "config" / "ablations.yaml").read_text())["ablations"]


def test_the_study_plan_of_config_ablations():
    shared = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())["train"]
    study = read_study(_study(), shared)
    assert len(study.configs) == 24 and study.cells == ["mse-convex", "mse-gaussian"]
    epochs = {name: cfg["epochs"] for name, cfg in study.configs.items()}
    assert epochs["implicit"] == 30 and epochs["semi_3x"] == 90 and epochs["implicit_2x_evaluations"] == 240
    assert epochs["implicit_3x_wallclock"] == round(30 * 3 * 3.02) and epochs["semi_data10"] == 300
    assert study.configs["fi_embedding"]["conditioning"] == "embedding" and study.configs["fi"]["w_rt_if"] == 0
    assert study.configs["semi_x0"]["prediction"] == "x0" and study.configs["fi_w64"]["channels"] == 64
    assert ("semi_3x", "implicit_3x_wallclock") in study.families["budget"]
    assert all(p[1] == "implicit" for p in study.families["roundtrip"])


def test_run_families_trains_only_the_chosen_families_and_the_report_names_the_rest():
    from pydiffusion.ablations.text import what_would_change

    section = {**_study(), "run_families": ["weights", "conditioning"]}
    study = read_study(section, {})
    assert list(study.families) == ["weights", "conditioning"]
    assert set(study.configs) == set(study.epochs_x) == {"implicit_x0", "semi_x0", "implicit", "fi", "fi_embedding",
                                                         "semi_embedding"}
    assert study.configs["semi_x0"] == read_study(_study(), {}).configs["semi_x0"], "the same run as in the full study"
    e = {"reading": WORSE, "ci_low": 0.1, "ci_high": 0.2, "reference_mean": 1.0}
    rows = [{"family": "weights", "config": "semi_x0", "reference": "implicit_x0", "cell": "mse-convex",
             "time_ratio": 1.0, "metrics": {"test_mse_forward": e}}]
    floor = {"cnn": {"mean": 0.5, "sd": 0.05}}
    text = "\n".join(what_would_change(section, rows, floor, [("test_mse_forward", "forward test MSE", True)]))
    others = [f for f in section["families"] if f != "weights"]
    assert f"- The families {', '.join(others)} were not run in this report (ablations.run_families)" in text
    every_family_run = {**_study(), "families": {"weights": section["families"]["weights"]}}
    assert "were not run in this report" not in "\n".join(what_would_change(every_family_run, rows, floor, []))


@pytest.mark.parametrize("change,message", [
    (lambda s: s["families"]["weights"].update(reference="nothing"), "families.weights: reference 'nothing' is not"),
    (lambda s: s["configurations"]["semi"].update(epochs=3), "configurations.semi: 'epochs' is set by the study"),
    (lambda s: s["configurations"]["semi"].update(w_rt_if=-1), "configurations.semi: config key 'w_rt_if' is -1"),
    (lambda s: s["configurations"]["semi"].update(match="wallclock"), "match: wallclock scales implicit training"),
    (lambda s: s.update(cells=["mse-brownian"]), "ablations.cells: 'mse-brownian' is not loss-noise"),
    (lambda s: s["families"]["weights"].update(configurations=["implicit_x0"]), "'implicit_x0' is compared with itself"),
    (lambda s: s.update(run_families=["weights", "budgett"]), "ablations.run_families: 'budgett' is not one of the families"),
])
def test_a_bad_study_is_one_line_naming_the_configuration(change, message):
    section = _study()
    change(section)
    with pytest.raises(ConfigError, match=message) as e:
        read_study(section, {})
    assert "\n" not in str(e.value)


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


@pytest.mark.slow
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


def test_time_ratios_are_of_cpu_seconds_unless_a_run_lacks_them():
    from pydiffusion.ablations.summary import compare, time_key
    from pydiffusion.ablations.text import family_section

    def record(config, seed, cpu):
        metrics = {"test_mse_forward": 0.1 + seed / 100, "train_time_s": 50.0 * cpu + 100}  # wall-clock: other work too
        return {"config": config, "cell": "mse-convex", "seed": seed,
                "metrics": metrics | ({"train_cpu_s": cpu} if cpu else {})}

    records = [record("implicit", s, 10.0) for s in range(2)] + [record("semi", s, 40.0) for s in range(2)]
    families = {"roundtrip": [("semi", "implicit")]}
    row = compare(records, families, ["mse-convex"], [])[0]
    assert time_key(records, ("implicit", "semi"), "mse-convex") == row["time_basis"] == "train_cpu_s"
    assert row["time_ratio"] == 0.25
    judged = [("test_mse_forward", "forward test MSE", True)]
    assert "semi vs implicit mse-convex 0.25." in "\n".join(family_section("roundtrip", [row], judged))
    records[0]["metrics"].pop("train_cpu_s")  # trained before CPU time was recorded: wall-clock for the cell
    row = compare(records, families, ["mse-convex"], [])[0]
    assert row["time_basis"] == "train_time_s" and row["time_ratio"] == pytest.approx(600 / 2100)
    assert "semi vs implicit mse-convex 0.2857 (wall-clock)." in "\n".join(family_section("roundtrip", [row], judged))


def test_curves_figure_gives_a_configuration_one_colour_in_both_panels():
    from pydiffusion.ablations.figures import curves_figure

    summary = [{"config": name, "cell": "mse-convex", "curve": [k + 1.0, k + 2.0, k + 3.0]}
               for k, name in enumerate(["implicit", "semi", "semi_rt_if_0"])]
    fig = curves_figure(summary, {"roundtrip": [("semi", "implicit"), ("semi_rt_if_0", "implicit")]}, ["mse-convex"])
    absolute, relative = fig.axes[:2]
    colors = {line.get_label(): line.get_color() for line in absolute.get_lines()}
    assert len(set(colors.values())) == 3
    ratios = {line.get_label(): line for line in relative.get_lines() if "/" in line.get_label()}
    assert set(ratios) == {"semi / implicit", "semi_rt_if_0 / implicit"}
    for label, line in ratios.items():
        assert line.get_color() == colors[label.split(" / ")[0]]
    assert list(ratios["semi / implicit"].get_ydata()) == [2 / 1, 3 / 2, 4 / 3]
