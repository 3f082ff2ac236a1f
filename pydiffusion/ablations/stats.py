"""Statistics of the ablation study (docs/math.md#ablation-statistics): a configuration against its family's
reference over seeds. Welch's difference of means with its t interval, p-value and minimum detectable effect (the default: a changed
architecture or length breaks the pairing by seed), the paired difference where runs do pair, Hedges' g with
its interval, Holm-Bonferroni over the cells of a family, and the FD ratio's interval with the floor's noise.
"""
import math
import statistics

from scipy import stats

from pydiffusion.reporting.grid_stats import ALPHA as ALPHA  # every test's level, after Holm-Bonferroni within a family
from pydiffusion.reporting.grid_stats import METRICS
from pydiffusion.reporting.grid_stats import holm as holm
from pydiffusion.reporting.grid_stats import min_detectable_effect as min_detectable_effect

# a reading: the configuration against its reference (semi-implicit, a technique, a positive control)
BETTER, WORSE, UNCLEAR = "better", "worse", "no clear difference"


def judged_metrics(classifiers) -> list:
    """(key, name, lower is better) of every measure a comparison is judged on: the forward test MSE, and
    FD-1D, guided accuracy and coverage with each classifier (the first one's keys unsuffixed); names and
    directions are grid_stats.METRICS'."""
    out = [("test_mse_forward", METRICS["test_mse_forward"].name, METRICS["test_mse_forward"].lower)]
    for i, classifier in enumerate(classifiers):
        suffix = "" if i == 0 else f"_{classifier}"
        out += [(f"{key}{suffix}", f"{METRICS[key].name} ({classifier})", METRICS[key].lower)
                for key in ("fd_1d", "sample_acc_guided", "coverage_entropy")]
    return out


def _mean_var(values):
    return statistics.fmean(values), statistics.variance(values)


def _t_test(diff, se, df, level):
    """(low, high, p) of a t statistic diff / se with df degrees of freedom; se = 0 gives a point interval."""
    if se == 0:
        return diff, diff, 1.0 if diff == 0 else 0.0
    half = stats.t.ppf(0.5 + level / 2, df) * se
    return diff - half, diff + half, float(2 * stats.t.sf(abs(diff / se), df))


def welch(a, b, level=0.95) -> dict:
    """mean(a) - mean(b), its Welch t interval and two-sided p-value (unequal variances, Welch-Satterthwaite df);
    nan interval and p with fewer than two values on either side."""
    if len(a) < 2 or len(b) < 2:
        return {"diff": statistics.fmean(a) - statistics.fmean(b), "ci_low": math.nan, "ci_high": math.nan,
                "p": math.nan, "df": math.nan, "se": math.nan}
    (ma, va), (mb, vb) = _mean_var(a), _mean_var(b)
    qa, qb = va / len(a), vb / len(b)
    se = math.sqrt(qa + qb)
    df = (qa + qb) ** 2 / (qa**2 / (len(a) - 1) + qb**2 / (len(b) - 1)) if se > 0 else len(a) + len(b) - 2
    low, high, p = _t_test(ma - mb, se, df, level)
    return {"diff": ma - mb, "ci_low": low, "ci_high": high, "p": p, "df": df, "se": se}


def paired(a, b, level=0.95) -> dict:
    """mean(a_i - b_i) over pairs, its t interval and two-sided p-value (n - 1 df)."""
    if len(a) != len(b):
        raise ValueError(f"paired: {len(a)} and {len(b)} values do not pair")
    diffs = [x - y for x, y in zip(a, b)]
    if len(diffs) < 2:
        return {"diff": statistics.fmean(diffs), "ci_low": math.nan, "ci_high": math.nan, "p": math.nan, "df": math.nan}
    mean = statistics.fmean(diffs)
    low, high, p = _t_test(mean, statistics.stdev(diffs) / math.sqrt(len(diffs)), len(diffs) - 1, level)
    return {"diff": mean, "ci_low": low, "ci_high": high, "p": p, "df": len(diffs) - 1}


def hedges_g(a, b, level=0.95) -> dict:
    """Hedges' g of a against b: (mean(a) - mean(b)) / pooled sd, times J = 1 - 3 / (4 (na + nb) - 9), with
    the normal interval of Hedges & Olkin, var(g) = (na + nb) / (na nb) + g^2 / (2 (na + nb)). Zero spread in
    both groups has no standardised effect: nan."""
    na, nb = len(a), len(b)
    if na < 2 or nb < 2:
        return {"g": math.nan, "ci_low": math.nan, "ci_high": math.nan}
    (ma, va), (mb, vb) = _mean_var(a), _mean_var(b)
    pooled = math.sqrt(((na - 1) * va + (nb - 1) * vb) / (na + nb - 2))
    if pooled == 0:
        return {"g": math.nan, "ci_low": math.nan, "ci_high": math.nan}
    g = (1 - 3 / (4 * (na + nb) - 9)) * (ma - mb) / pooled
    half = stats.norm.ppf(0.5 + level / 2) * math.sqrt((na + nb) / (na * nb) + g**2 / (2 * (na + nb)))
    return {"g": g, "ci_low": g - half, "ci_high": g + half}


def ratio_interval(values, floor_mean, floor_sd, level=0.95) -> dict:
    """mean(values) / floor_mean, the FD ratio, with an interval on the log scale that adds the seeds' standard
    error of the mean FD and the floor's own spread over train subsets (its sd, not the sd of its mean: the
    subsets share the test set), relative: var(log r) = (se / mean)^2 + (floor_sd / floor_mean)^2, with the
    t quantile of the seeds (n - 1 df; normal for one seed, whose own spread is then unknown and left out)."""
    mean = statistics.fmean(values)
    rel_se = statistics.stdev(values) / math.sqrt(len(values)) / mean if len(values) > 1 else 0.0
    spread = math.sqrt(rel_se**2 + (floor_sd / floor_mean) ** 2)
    q = stats.t.ppf(0.5 + level / 2, len(values) - 1) if len(values) > 1 else stats.norm.ppf(0.5 + level / 2)
    ratio = mean / floor_mean
    return {"ratio": ratio, "ci_low": ratio * math.exp(-q * spread), "ci_high": ratio * math.exp(q * spread)}
