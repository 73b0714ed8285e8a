"""The statistics of an analysis: counts with confidence intervals over the examples, and
mean ± std with paired tests over seeds.

- `rate(events, population)`, `proportion(count, total)`: a fraction with its count and
  Wilson's 95% interval (scipy's `binomtest(...).proportion_ci`);
- `mean_interval(values)`: a mean over examples with a 95% bootstrap interval
  (scipy's `bootstrap`, resampling the examples);
- `over_seeds(values)`, `spread(values)`: mean ± std (ddof 1) of one number per seed;
- `paired_mean_test(differences)`: a t-test of paired differences (per image or per
  seed) against 0; `mcnemar_exact(a, b)`: McNemar's exact test of two classifiers.

scipy is imported on first use: `tfkd.analysis` does not pay for it on import.
"""

import numpy as np

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 2000


def wilson_interval(count, total, confidence=CONFIDENCE):
    """Wilson's score interval of the proportion count / total; (None, None) for total 0."""
    from scipy import stats

    if total == 0:
        return None, None
    interval = stats.binomtest(int(count), int(total)).proportion_ci(
        confidence_level=confidence, method="wilson")
    return float(interval.low), float(interval.high)


def proportion(count, total):
    """count / total as {"value", "count", "of", "ci95"} with Wilson's interval. With no
    example to count (total 0), value and interval are None: no rate, rather than 0."""
    count, total = int(count), int(total)
    return {"value": count / total if total else None, "count": count, "of": total,
            "ci95": list(wilson_interval(count, total))}


def rate(events, population=None):
    """The fraction of `population` (booleans, default: every example) where `events` holds,
    as `proportion` gives it."""
    events = np.asarray(events, dtype=bool)
    population = (np.ones_like(events) if population is None
                  else np.asarray(population, dtype=bool))
    return proportion(np.sum(events & population), np.sum(population))


def mean_interval(values, seed=0, weight=1):
    """The mean of per-example `values` with a 95% percentile bootstrap interval over the
    examples: {"value", "of", "ci95"}. `weight` is how many observations one example holds
    (views of a jitter), recorded in "of"; the examples, not the observations, are resampled,
    since observations of one example are not independent."""
    from scipy import stats

    values = np.asarray(values, dtype=np.float64).reshape(-1)
    mean = float(np.mean(values))
    if values.size < 2 or np.ptp(values) == 0:
        low = high = mean  # every resample gives the same mean
    else:
        # Percentile rather than BCa: BCa is undefined for the few-valued data (fractions of
        # views) it would often meet here.
        result = stats.bootstrap((values,), np.mean, confidence_level=CONFIDENCE,
                                 n_resamples=BOOTSTRAP_RESAMPLES, method="percentile",
                                 random_state=np.random.default_rng(seed))
        low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    return {"value": mean, "of": int(values.size * weight), "ci95": [low, high]}


def over_seeds(values):
    """{"mean", "std" (ddof 1; None for one seed), "n"} of one number per seed (None: a seed
    with no value, left out)."""
    kept = [float(v) for v in values if v is not None]
    if not kept:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": float(np.mean(kept)),
            "std": float(np.std(kept, ddof=1)) if len(kept) > 1 else None, "n": len(kept)}


def spread(values, digits=4):
    """mean ± std (ddof 1) of the values that are not None, as text; "-" for none."""
    summary = over_seeds(values)
    if summary["n"] == 0:
        return "-"
    if summary["n"] == 1:
        return f"{summary['mean']:.{digits}f}"
    return f"{summary['mean']:.{digits}f} ± {summary['std']:.{digits}f}"


def paired_mean_test(differences, alternative="greater", scale=1.0):
    """One-sample t-test of paired differences against 0 (scipy's ttest_1samp, which is
    ttest_rel of the two sides): per image, or one difference per seed.

    Where one side is an average of classifiers (the members' mean correctness) the
    differences take fractional values; over thousands of images the t-test's normal
    approximation is accurate. Returns {"mean", "se", "t", "p", "n"}, mean and standard error
    multiplied by `scale` (100: percentage points of a fraction). Without variance t is
    undefined and the data decide outright; with one difference there is no test (p None).
    """
    from scipy import stats

    d = np.asarray(differences, dtype=np.float64)
    if d.size < 2:
        return {"mean": scale * float(d.mean()) if d.size else None, "se": None, "t": None,
                "p": None, "n": int(d.size)}
    if np.all(d == d[0]):
        greater = d[0] > 0 if alternative == "greater" else d[0] < 0 if alternative == "less" \
            else d[0] != 0
        return {"mean": scale * float(d[0]), "se": 0.0, "t": None,
                "p": 0.0 if greater else 1.0, "n": int(d.size)}
    result = stats.ttest_1samp(d, 0.0, alternative=alternative)
    return {"mean": scale * float(d.mean()),
            "se": scale * float(d.std(ddof=1) / np.sqrt(len(d))),
            "t": float(result.statistic), "p": float(result.pvalue), "n": int(d.size)}


def mcnemar_exact(correct_a, correct_b, alternative="greater", scale=100.0):
    """McNemar's exact test of two classifiers on the same images: among the images exactly
    one of them gets right, is `a` the one more often than a fair coin says? `b_only` and
    `a_only` are those discordant counts; "greater" tests a > b. "mean" is the difference of
    the accuracies times `scale` (default: percentage points)."""
    from scipy import stats

    a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    a_only, b_only = int(np.sum(a & ~b)), int(np.sum(~a & b))
    n = a_only + b_only
    p = 1.0 if n == 0 else float(stats.binomtest(a_only, n, 0.5,
                                                 alternative=alternative).pvalue)
    return {"a_only": a_only, "b_only": b_only, "mean": scale * (a_only - b_only) / len(a),
            "p": p}
