"""The ablation study's in-process parts: the direction embedding, the training subsets, the statistics on
known answers, the study's plan and its one-line errors, the time ratios and the curves figure."""
import math

import pytest
import torch
import yaml
from helpers.workflow import ROOT
from scipy import stats

from pydiffusion.ablations import stats as st
from pydiffusion.ablations.plan import read_study
from pydiffusion.ablations.stats import WORSE
from pydiffusion.config import ConfigError, validate
from pydiffusion.data.labels import NUM_CLASSES
from pydiffusion.data.mnist1d import load_mnist1d
from pydiffusion.data.splits import train_subset
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


def test_the_minimum_detectable_effect_is_found_with_80_percent_power():
    # known answers: the normal limit (z_0.975 + z_0.8) se, and a paired t test of 5 seeds, d_z = 1.682 (G*Power)
    assert st.min_detectable_effect(1.0, 1e5) == pytest.approx(stats.norm.ppf(0.975) + stats.norm.ppf(0.8), rel=1e-3)
    assert st.min_detectable_effect(1.0 / math.sqrt(5), 4) == pytest.approx(1.682, abs=2e-3)
    assert st.min_detectable_effect(0.0, 4) == 0 and math.isnan(st.min_detectable_effect(math.nan, math.nan))
    assert st.min_detectable_effect(1.0, 4, alpha=0.05 / 4) > st.min_detectable_effect(1.0, 4), "stricter level: larger"
    # and by simulation: a true difference of the MDE over 5 pairs of spread 1 is found 80% of the time (the paired
    # t test is the noncentral t exactly; Welch's test, with its df estimated, a little less often)
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(4000, 5, generator=gen, dtype=torch.float64)
    mde = st.min_detectable_effect(1 / math.sqrt(5), 4)
    found = sum(st.paired((a[i] + mde).tolist(), [0.0] * 5)["p"] < 0.05 for i in range(4000)) / 4000
    assert found == pytest.approx(0.8, abs=0.02)


def test_the_techniques_study_puts_its_control_first_and_outside_the_verdict():
    from pydiffusion.ablations.text import markdown

    section = yaml.safe_load((ROOT / "config" / "techniques.yaml").read_text())["ablations"]
    study = read_study(section, {})
    assert study.configs["min_snr"]["training"] == "min_snr" and study.configs["min_snr"]["snr_gamma"] == 5
    assert study.configs["immiscible_2x"]["epochs"] == 2 * study.configs["immiscible"]["epochs"]
    assert study.epoch_cost("min_snr") == study.epoch_cost("implicit") == 1, "plugins declare their cost"
    better = {"diff": -0.1, "ci_low": -0.2, "ci_high": -0.05, "g": -2.0, "g_low": -3.0, "g_high": -1.0, "p": 0.001,
              "p_holm": 0.002, "reading": st.BETTER, "mde": 0.07, "reference_mean": 1.0}
    unclear = {**better, "diff": 0.01, "ci_low": -0.1, "ci_high": 0.12, "p": 0.8, "p_holm": 0.9, "reading": st.UNCLEAR}
    rows = [{"family": f, "config": c, "reference": r, "cell": "mse-convex", "time_ratio": 1.0,
             "time_basis": "train_cpu_s", "metrics": {"test_mse_forward": e}}
            for f, c, r, e in [("control", "implicit_2x", "implicit", better), ("min_snr", "min_snr", "implicit", unclear)]]
    floor = {"cnn": {"mean": 0.5, "sd": 0.05, "test_acc": 0.9, "values": [0.5]}}
    summary = [{"config": c, "cell": "mse-convex", "epochs": 20, "n_seeds": 5, "metrics": {"test_mse_forward":
               {"mean": 0.4, "sd": 0.01, "n": 5}}} for c in ("implicit", "implicit_2x", "min_snr")]
    text = markdown(section, study.configs, summary, rows, floor, ["cnn"], 15)
    control, question = text.index("## Positive control"), text.index("## Does any setting make a training technique help?")
    assert control < question, "the control comes first"
    assert "The design detects the controls' improvement in 1 of 1 readings" in text
    assert "**No.** In none of the 1 comparisons" in text, "the control is not a technique: outside the verdict"
    assert "| min_snr vs implicit | mse-convex | forward test MSE | 0.01 |" in text and "| no clear difference | 0.07 |" in text
    assert "- The families immiscible were not run in this report" in text, "a control is not a family left out"


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
    (lambda s: s.update(controls=["budgt"]), "ablations.controls: 'budgt' is not one of the families"),
    (lambda s: s["configurations"]["semi"].update(training="min_snr", loss="kl"), "'loss' is set by the study"),
    (lambda s: s["configurations"]["semi"].update(training="nomodule.here:Trainer"),
     "configurations.semi: config key 'training' is 'nomodule.here:Trainer', but module 'nomodule' is not found"),
    (lambda s: s["configurations"]["semi"].update(snr_gamma=5), "configurations.semi: unknown config key 'snr_gamma'"),
    (lambda s: s["configurations"]["semi"].update(training="min_snr", snr_gamma=0),
     "configurations.semi: config key 'snr_gamma' is 0.0; it must be > 0"),
])
def test_a_bad_study_is_one_line_naming_the_configuration(change, message):
    section = _study()
    change(section)
    with pytest.raises(ConfigError, match=message) as e:
        read_study(section, {})
    assert "\n" not in str(e.value)


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


def test_nothing_ruled_out_is_said_in_words():
    from pydiffusion.ablations.text import what_would_change

    e = {"reading": st.BETTER, "ci_low": -0.2, "ci_high": -0.1, "reference_mean": 1.0}
    rows = [{"family": "weights", "config": "semi_x0", "reference": "implicit_x0", "cell": "mse-convex",
             "time_ratio": 1.0, "metrics": {"test_mse_forward": e}}]
    lines = what_would_change(_study(), rows, {"cnn": {"mean": 0.5, "sd": 0.05}},
                              [("test_mse_forward", "forward test MSE", True)])
    ruled_out = lines[lines.index("### Ruled out") + 2]
    assert ruled_out == "- Nothing: every comparison is better than its reference in at least one reading (above)."
    worse = [{**rows[0], "metrics": {"test_mse_forward": {**e, "reading": st.WORSE}}}]
    assert "Nothing" not in "\n".join(what_would_change(_study(), worse, {"cnn": {"mean": 0.5, "sd": 0.05}}, []))

