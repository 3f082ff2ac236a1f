"""The grid report: report.md (the verdict in words, tables, figures) and summary.csv from the grid's
statistics (pydiffusion.reporting.grid_stats). The aggregate job that writes them is pydiffusion.reporting.aggregate.
"""
import csv
import io
import logging
import math

from pydiffusion.config import MNIST1D
from pydiffusion.files import save_text
from pydiffusion.reporting.grid_stats import (
    AXES,
    METRICS,
    PAIRED_METRICS,
    VERDICT_METRICS,
    reading,
    verdict_tally,
)
from pydiffusion.reporting.markdown import fmt, md_table, mean_spread

logger = logging.getLogger(__name__)


def verdict(cells):
    """Plain-words answer to "does semi-implicit training help?" from the paired comparisons."""
    if not cells:
        return "No loss x noise cell has both implicit and semi-implicit runs, so there is nothing to compare."
    tally = verdict_tally(cells)
    if tally is None:
        head = ["With one seed per configuration there is no confidence interval, so no conclusion: "
                "run more seeds (the default grid has three)."]
    else:
        head = []
        for words, better, worse, n in tally:
            if better == n:
                head.append(f"On {words}, semi-implicit training is better in every loss x noise cell.")
            elif worse == n:
                head.append(f"On {words}, semi-implicit training is worse in every loss x noise cell.")
            elif better == worse == 0:
                head.append(f"On {words}, no cell shows a clear difference (after Holm-Bonferroni).")
            else:
                head.append(f"On {words}, semi-implicit training is better in {better}, worse in {worse} and "
                            f"indistinguishable in {n - better - worse} of {n} cells.")
    lines = []
    for c in cells:
        parts = []
        for key, _ in VERDICT_METRICS:
            if key in c:
                e = c[key]
                parts.append(f"{key} {e['diff']:+.4g} (95% CI {fmt(e['ci_low'])} .. {fmt(e['ci_high'])}, "
                             f"p (Holm) {fmt(e.get('p_holm', math.nan))}: {reading(c, key)})")
        lines.append(f"- **{c['loss']} / {c['noise']}**, semi-implicit minus implicit over {c['seeds']}: " + "; ".join(parts))
    tests = sum(key in c for c in cells for key, _ in VERDICT_METRICS)
    family = (f"Each of these {tests} readings (the measures above x cells) is one test of one family: it is read "
              f"from its paired t test's p-value after Holm-Bonferroni over all {tests} (p (Holm) < 0.05), so the "
              "chance that any of them is a false alarm is at most 5%.")
    note = ("Semi-implicit training also learns the inverse map (z = 1), which implicit training never sees, so its "
            "inverse test MSE is lower by construction; the question is what the extra objectives cost or give the "
            "denoiser and its samples.")
    return "\n".join([*head, "", family, "", note, "", *lines])


def write_csv(summary, path):
    keys = sorted({k for row in summary for k, v in row.items() if isinstance(v, dict)})
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["config", *AXES, "n_seeds"] + [f"{k}_{s}" for k in keys for s in ("mean", "std")])
    for row in summary:
        w.writerow([row["config"], *(row[a] for a in AXES), row["n_seeds"]]
                   + [row[k][s] if k in row else "" for k in keys for s in ("mean", "std")])
    save_text(buf.getvalue(), path)


def _samplers_section(rows):
    table = md_table(["sampler", "steps", "guidance", "accuracy of guided samples", "FD-1D", "FD floor",
                    "s per 1,000 samples"],
                   [[r["sampler"], r["steps"], r["guidance"], fmt(r["accuracy"]), fmt(r["fd_1d"]), fmt(r["fd_floor"]),
                     fmt(r["seconds_per_1000"])] for r in rows])
    return ["## Samplers on the best configuration", "",
            "Each row draws the same number of samples from the same starting noise (guidance 0 is "
            "unconditional, so it has no accuracy).", "", table, ""]


def guidance_section(rows):
    table = md_table(["guidance", "scale", "accuracy of guided samples", "FD-1D", "FD floor", "coverage entropy",
                    "s per 1,000 samples"],
                   [[r["guidance"], r["scale"], fmt(r["accuracy"]), fmt(r["fd_1d"]), fmt(r["fd_floor"]),
                     fmt(r["coverage_entropy"]), fmt(r["seconds_per_1000"])] for r in rows])
    return ["## Guidance on the best configuration", "",
            "Classifier-free guidance of the conditional network at scale g, against classifier guidance of the "
            "unconditional network (g = 0) by a noise-aware classifier p(y | x_t, t) at scale c (docs/math.md#guidance); "
            "DDIM at the run's steps, the same starting noise for every row. Accuracy is fidelity to the asked "
            "class (the reference classifier's); FD-1D and the coverage entropy of the predicted classes measure how "
            "close to the data and how diverse the samples are.", "", table, "",
            "![accuracy against FD-1D per guidance scale](figures/guidance.png)", ""]


def quality_sampler(records) -> str:
    """The sampler(s) the runs' sample quality was measured with, in words."""
    words = {"ddpm": "the ancestral DDPM sampler", "ddim": "DDIM", "dpmpp_2m": "DPM-Solver++(2M)"}
    return " and ".join(f"{words.get(s, s)} at {n} steps" if s != "ddpm" else words[s]
                        for s, n in sorted({(r.get("sampler", "ddim"), r.get("sample_steps")) for r in records},
                                           key=str))


def test_set(records) -> str:
    """What the runs were evaluated on, in words: their data sets' test sets, or the validation splits held out of
    their training sets (eval_split)."""
    names = {MNIST1D: "1,000 MNIST-1D test signals", "digits": "500 test images of the 8 x 8 digits"}
    kinds = set()
    for r in records:
        dataset = r.get("dataset", MNIST1D)
        if r.get("eval_split", "test") == "validation":
            kinds.add(f"validation split of the {dataset} training set ({r['validation_fraction']:.0%}, held out of "
                      "training, class-stratified)")
        else:
            kinds.add(names.get(dataset, f"{dataset} test set"))
    return " and ".join(sorted(kinds))


def markdown(records, summary, cells, best, best_key, samplers=None, guidance=None):
    main = [k for k in METRICS if all(k in row for row in summary)]
    rows = [[row["config"], row["n_seeds"]] + [mean_spread(row[k]["mean"], row[k]["std"], row["n_seeds"]) for k in main]
            for row in summary]
    paired_rows = []
    for c in cells:
        for key in PAIRED_METRICS:
            if key in c:
                e = c[key]
                paired_rows.append([f"{c['loss']} / {c['noise']}", key, fmt(e["diff"]),
                                    f"{fmt(e['ci_low'])} .. {fmt(e['ci_high'])}", e["n"], fmt(e.get("p", math.nan)),
                                    fmt(e["p_holm"]) if "p_holm" in e else "-", reading(c, key),
                                    fmt(e.get("mde", math.nan))])
    seeds = sorted({r["seed"] for r in records})
    parts = [
        "# pydiffusion grid report",
        "",
        f"{len(records)} runs: {len(summary)} configurations x seeds {seeds}. Metrics are means ± standard deviation "
        f"over seeds; every test metric uses the EMA weights on the {test_set(records)} with fixed noise. "
        "Test KL is the full variational bound in nats per dimension; FD-1D is the Fréchet distance in the reference "
        "classifier's features (a 1-D CNN on signals, a 2-D CNN on images), of samples drawn with "
        f"{quality_sampler(records)} (the runs' `sampler`).",
        "",
        "## Does semi-implicit training help?",
        "",
        verdict(cells),
        "",
        "## Results per configuration",
        "",
        md_table(["configuration", "seeds"] + main, rows),
        "",
        "## Paired comparison: semi-implicit minus implicit (same seed)",
        "",
        "95% t confidence intervals over seeds and the paired t test's p-value. For errors and the bound, below zero "
        "favours semi-implicit; for PSNR, accuracy and coverage, above zero does. The verdict's measures "
        f"({', '.join(key for key, _ in VERDICT_METRICS)}) are read from p (Holm), adjusted over all of them and "
        "the cells; the other rows are secondary and read from their unadjusted interval (p (Holm) -). MDE: the "
        "minimum detectable effect, the smallest true difference (either sign) that the paired t test finds with "
        "80% power given the seeds' spread of the differences (for the verdict's measures at Holm's strictest "
        "level, 0.05 over the number of its tests; else at 0.05): a \"no clear difference\" rules out effects "
        "larger than about it, not effects below it (n/a with one seed).",
        "",
        md_table(["cell", "metric", "mean difference", "95% CI", "seeds", "p", "p (Holm)", "reading",
                  "MDE (80% power)"], paired_rows),
        "",
        "## Best configuration",
        "",
        f"**{best}** (lowest mean {best_key}).",
        "",
        *(_samplers_section(samplers) if samplers else []),
        *(guidance_section(guidance) if guidance else []),
        "## Figures",
        "",
        "![training loss](figures/loss_curves.png)",
        "",
        "![loss components](figures/components.png)",
        "",
        "![test metrics](figures/metrics.png)",
        "",
        "![paired comparison](figures/paired.png)",
        "",
        "![forward test MSE at each timestep, and semi-implicit over implicit](figures/test_mse_t.png)",
        "",
        "![samples](figures/samples.png)",
        "",
        *(["![best configuration, samples per class](figures/best_per_class.png)", "",
           "![reverse trajectory](figures/trajectory.png) ![animated](figures/trajectory.gif)", "",
           "![forward vs reverse](figures/forward_reverse.png)", "",
           "![FD-1D against sampler steps](figures/samplers.png)", ""] if samplers else []),
    ]
    return "\n".join(parts)
