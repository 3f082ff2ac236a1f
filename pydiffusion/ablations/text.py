"""The ablation study's report.md, in words and tables, from the numbers of pydiffusion.ablations.summary: the
answer to "does any setting make semi-implicit training help?", each family's comparisons, the configurations,
the sample draws, the reference classifiers and the FD floor's spread, and "What would change the verdict",
generated from the numbers (the prose is for people to edit).
"""
import itertools
import math

from pydiffusion.ablations.stats import ALPHA, BETTER, UNCLEAR, WORSE, judged_metrics
from pydiffusion.config import CHOICES
from pydiffusion.reporting.markdown import fmt, md_table, mean_spread

OPEN_IMPROVEMENT = 0.05  # an interval that still allows this relative improvement leaves the question open
SUBJECT = "semi-implicit training"  # what a study's configurations try, unless its section names it (subject)


def _ci(e, low="ci_low", high="ci_high"):
    return f"{fmt(e[low])} .. {fmt(e[high])}"


def _pairs(comparisons):
    """{(family, configuration, reference): [its rows, one per cell]} in the report's order."""
    out = {}
    for c in comparisons:
        out.setdefault((c["family"], c["config"], c["reference"]), []).append(c)
    return out


def best_case(rows, key, lower):
    """The most favourable end of the 95% intervals of a measure over cells, relative to the reference mean:
    the largest improvement the data still allow (negative = better for lower-is-better measures)."""
    ends = [(e["ci_low"] if lower else e["ci_high"]) / abs(e["reference_mean"]) for r in rows
            if (e := r["metrics"].get(key)) and not math.isnan(e["ci_low"]) and e["reference_mean"] != 0]
    return (min(ends) if lower else max(ends)) if ends else math.nan


def verdict(comparisons, judged, subject=SUBJECT):
    helped = [(c, key) for c in comparisons for key, _, _ in judged if c["metrics"].get(key, {}).get("reading") == BETTER]
    words = {key: w for key, w, _ in judged}
    if not helped:
        return [f"**No.** In none of the {len(comparisons)} comparisons (configuration against its reference, per "
                f"cell) is {subject} better on any of the {len(judged)} measures after Holm-Bonferroni "
                f"within its family (alpha {ALPHA})."]
    lines = [f"**Yes, in part.** {subject[0].upper() + subject[1:]} is better than its reference (Holm-Bonferroni "
             f"within the family, alpha {ALPHA}) in:", ""]
    for c, key in helped:
        e = c["metrics"][key]
        lines.append(f"- {c['family']}: **{c['config']}** vs {c['reference']}, {c['cell']}: {words[key]} "
                     f"{fmt(e['diff'])} ({_ci(e)}), Hedges' g {fmt(e['g'])}, p (Holm) {fmt(e['p_holm'])}")
    return lines + ["", "Each such setting belongs in the default grid as a configuration of its own."]


def family_section(family, rows, judged):
    words = {key: w for key, w, _ in judged}
    readings = [m["reading"] for r in rows for m in r["metrics"].values()]
    table = [[f"{r['config']} vs {r['reference']}", r["cell"], words[key], fmt(e["diff"]), _ci(e),
              f"{fmt(e['g'])} ({_ci(e, 'g_low', 'g_high')})", fmt(e["p"]), fmt(e["p_holm"]), e["reading"],
              fmt(e.get("mde", math.nan))]
             for r in rows for key, _, _ in judged if (e := r["metrics"].get(key))]
    return [f"### {family}", "",
            f"{len(rows)} comparisons x {len(judged)} measures: the configuration better in {readings.count(BETTER)}, "
            f"worse in {readings.count(WORSE)}, no clear difference in {readings.count(UNCLEAR)}. Time ratio (reference / "
            f"configuration training seconds): " + ", ".join(f"{r['config']} vs {r['reference']} {r['cell']} "
                                                            f"{_time_ratio(r)}" for r in rows) + ".", "",
            md_table(["comparison", "cell", "measure", "difference", "95% CI", "Hedges' g (95% CI)", "p", "p (Holm)",
                      "reading", "MDE (80% power)"], table), ""]


def control_section(comparisons, judged):
    """The positive controls, first: did the design find the improvement a control is known to bring?"""
    words = {key: w for key, w, _ in judged}
    lines, found, total = [], 0, 0
    for (family, name, reference), rows in _pairs(comparisons).items():
        for r in rows:
            better = [f"{words[k]} {fmt(e['diff'])} ({_ci(e)})" for k, _, _ in judged
                      if (e := r["metrics"].get(k)) and e["reading"] == BETTER]
            found, total = found + len(better), total + len(r["metrics"])
            lines.append(f"- {family}: **{name}** vs {reference}, {r['cell']}: better on {len(better)} of "
                         f"{len(r['metrics'])} measures" + (f": {'; '.join(better)}" if better else ""))
    head = (f"The design detects the controls' improvement in {found} of {total} readings (Holm-Bonferroni within the "
            f"family, alpha {ALPHA}), so it can see an effect of their size; each comparison's MDE column below says "
            "how large an effect a \"no clear difference\" still leaves possible." if found else
            f"The design does not detect the controls' improvement in any of {total} readings: its \"no clear "
            "difference\" readings below say little; run more seeds or longer before reading them.")
    return [head, "", *lines, ""]


def _time_ratio(row):
    """The ratio of CPU seconds, or of wall-clock seconds (marked) where a run has no CPU time."""
    return fmt(row["time_ratio"]) + ("" if row["time_basis"] == "train_cpu_s" else " (wall-clock)")


def _mean_sd(metrics, key):
    return mean_spread(metrics[key]["mean"], metrics[key]["sd"], metrics[key].get("n", 2)) if key in metrics else "n/a"


def configurations_section(summary, classifiers):
    head = ["configuration", "cell", "epochs", "seeds", "forward test MSE"]
    head += [f"{w} ({c})" for c in classifiers for w in ("FD-1D", "FD ratio (95% CI)", "accuracy", "coverage")]
    rows = []
    for row in summary:
        m = row["metrics"]
        cells = [row["config"], row["cell"], row["epochs"], row["n_seeds"], _mean_sd(m, "test_mse_forward")]
        for i, c in enumerate(classifiers):
            suffix = "" if i == 0 else f"_{c}"
            ratio = row.get("fd_ratio", {}).get(c)
            cells += [_mean_sd(m, f"fd_1d{suffix}"), f"{fmt(ratio['ratio'])} ({_ci(ratio)})" if ratio else "n/a",
                      _mean_sd(m, f"sample_acc_guided{suffix}"), _mean_sd(m, f"coverage_entropy{suffix}")]
        rows.append(cells + [_mean_sd(m, "train_cpu_s"), _mean_sd(m, "train_time_s")])
    return md_table(head + ["training CPU s", "training wall-clock s"], rows)


def draws_section(summary, classifiers):
    keys = ["fd_1d" if i == 0 else f"fd_1d_{c}" for i, c in enumerate(classifiers)]
    draws = sorted({k.rsplit("_draw", 1)[1] for row in summary for k in row["metrics"] if "_draw" in k}, key=int)
    rows = [[row["config"], row["cell"]] + [fmt(row["metrics"].get(f"{k}_draw{d}", {}).get("mean", math.nan))
                                            for k in keys for d in draws] for row in summary]
    return md_table(["configuration", "cell"] + [f"{k} draw {d}" for k in keys for d in draws], rows)


def floor_section(floor):
    rows = [[name, fmt(f["test_acc"]), ", ".join(fmt(v) for v in f["values"]), f"{fmt(f['mean'])} ± {fmt(f['sd'])}",
             f"{100 * f['sd'] / f['mean']:.0f}%"] for name, f in floor.items()]
    return md_table(["classifier", "test accuracy", "FD floor per disjoint train subset", "mean ± sd", "sd / mean"], rows)


def missing_cells(section):
    return [f"{lo}-{no}" for lo, no in itertools.product(CHOICES["loss"], CHOICES["noise"])
            if f"{lo}-{no}" not in section["cells"]]


def what_would_change(section, comparisons, floor, judged, controls=()):
    """The ruled-out and the open questions of the comparisons; `controls`: the positive controls' comparisons
    (run, but not part of the verdict)."""
    lines, open_items = ["### Ruled out", ""], []
    key_words = [(k, w, lower) for k, w, lower in judged if k.startswith(("test_mse", "fd_1d"))]
    for (family, name, reference), rows in _pairs(comparisons).items():
        readings = [m["reading"] for r in rows for m in r["metrics"].values()]
        best = ", ".join(f"{w} {100 * best_case(rows, k, lower):+.0f}%" for k, w, lower in key_words)
        if BETTER not in readings:
            lines.append(f"- {family}: {name} vs {reference}: better in none of {len(readings)} readings (worse in "
                         f"{readings.count(WORSE)}); the most favourable ends of its 95% intervals are {best} of the "
                         f"reference mean (lower is better for these measures: a positive change is worse).")
        for r in rows:
            for k, w, lower in key_words:
                gain = best_case([r], k, lower)
                if r["metrics"].get(k, {}).get("reading") == UNCLEAR and (-gain if lower else gain) >= OPEN_IMPROVEMENT:
                    open_items.append(f"- {name} vs {reference}, {r['cell']}: no clear difference in {w}, and its "
                                      f"interval still allows {100 * gain:+.0f}%: more seeds would settle it.")
            fd = [r["metrics"].get(k, {}).get("reading") for k, w, _ in judged if k.startswith("fd_1d")]
            if len(set(fd)) > 1:
                open_items.append(f"- {name} vs {reference}, {r['cell']}: the classifiers disagree on FD-1D ({', '.join(fd)}).")
            if section["configurations"][reference].get("match") == "wallclock" and abs(r["time_ratio"] - 1) > 0.1:
                open_items.append(f"- {name} vs {reference}, {r['cell']}: matched wall-clock only roughly (realised time "
                                  f"ratio {_time_ratio(r)}, wallclock_ratio {section['wallclock_ratio']}).")
    if len(lines) == 2:
        lines.append("- Nothing: every comparison is better than its reference in at least one reading (above).")
    missing = missing_cells(section)
    if missing:
        open_items.append(f"- The cells {', '.join(missing)} were not run (the study runs {', '.join(section['cells'])} "
                          f"only, to fit the machine).")
    not_run = [f for f in section["families"] if f not in {c["family"] for c in [*comparisons, *controls]}]
    if not_run:
        open_items.append(f"- The families {', '.join(not_run)} were not run in this report (ablations.run_families); "
                          "rerun without it, into the same results, to add them.")
    open_items.append(f"- Longer training: every run is {section['base_epochs']} epochs times its epochs_x.")
    spread = ", ".join(f"{n} ±{100 * f['sd'] / f['mean']:.0f}%" for n, f in floor.items())
    open_items.append(f"- The FD floor moves across train subsets ({spread}); the FD ratios' intervals include it.")
    return lines + ["", "### What remains", ""] + open_items


def markdown(section, configs, summary, comparisons, floor, classifiers, n_runs):
    judged = judged_metrics(classifiers)
    subject = section.get("subject", SUBJECT)
    controls = [c for c in comparisons if c["family"] in section.get("controls", [])]
    comparisons = [c for c in comparisons if c not in controls]
    seeds = sorted({r["metrics"]["test_mse_forward"]["n"] for r in summary})
    missing = missing_cells(section)
    scope = (f" The study runs the cells {', '.join(section['cells'])} only; {', '.join(missing)} are left out to fit "
             "the machine." if missing else "")
    parts = ["# pydiffusion ablation study", "",
             f"{n_runs} runs: {len(configs)} configurations x cells {', '.join(section['cells'])} x {'/'.join(map(str, seeds))} "
             f"seeds, base length {section['base_epochs']} epochs (a configuration trains base x epochs_x), "
             f"{section['draws']} sample draws per model, reference classifiers "
             + ", ".join(f"{c} (test accuracy {fmt(floor[c]['test_acc'])})" for c in classifiers)
             + ". Each comparison is a configuration against its family's reference, per cell: Welch's difference "
               "(configuration minus reference) with its 95% t interval, Hedges' g with its 95% interval, and p-values "
               "adjusted by Holm-Bonferroni over the family's comparisons x cells, per measure, and the minimum "
               "detectable effect (MDE): the smallest true difference its test finds with 80% power at Holm's strictest "
               "level (alpha / the family's comparisons x cells), from the seeds' spread (docs/math.md)."
             + scope, ""]
    if controls:
        parts += ["## Positive control: can the design detect an improvement?", "", *control_section(controls, judged)]
    parts += [f"## Does any setting make {subject} help?", "", *verdict(comparisons, judged, subject), "",
              "## Families", ""]
    by_family = {}
    for c in controls + comparisons:
        by_family.setdefault(c["family"], []).append(c)
    for family, rows in by_family.items():
        parts += family_section(family, rows, judged)
    parts += ["## Configurations", "", "Means ± sd over seeds; FD ratio = mean FD-1D / mean FD floor, its interval "
              "from the seeds and the floor's spread over train subsets. Training CPU seconds are the job's own, all "
              "threads (n/a for runs trained before they were recorded); wall-clock seconds grow with other work on the "
              "machine.", "", configurations_section(summary, classifiers),
              "", "## Sample draws", "", "Mean FD-1D over seeds of each independent sample set.", "",
              draws_section(summary, classifiers), "",
              "## Reference classifiers and the FD floor", "", floor_section(floor), "",
              "## Figures", "", "![per-timestep test MSE, and over the reference's](figures/curves.png)", "",
              "![effect sizes](figures/effects.png)", "",
              "## What would change the verdict", "", *what_would_change(section, comparisons, floor, judged, controls), ""]
    return "\n".join(parts)
