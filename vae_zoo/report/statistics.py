"""The statistics behind the report's numbers: each model's mean and 95 % interval over seeds,
the best mean of a metric, and the comparison of two models with its interval, p-value and the
Holm correction over every comparison of a report.

Every interval is a two-sided 95 % Student-t interval and every p-value a two-sided t-test of
"no difference"; only the standard error and its degrees of freedom depend on the data:

- One value per run (FID, MIG, MSE, ...), one model: `mean_interval`, the t interval over its
  seeds (n - 1 degrees of freedom).
- One value per run, two models: `welch_difference`, Welch's (1947) test of the difference of
  the means over seeds, unequal variances, Welch-Satterthwaite degrees of freedom. Seeds of two
  models are not paired: their trainings share nothing but the seed number.
- One value per (seed, image), two models on the same seeds and the same images (the per-image
  NLL, ELBO, IWAE bounds): `paired_image_difference`. The differences d[s, i] = A[s, i] - B[s, i]
  (paired: seed s of both models, image i of both) follow the two-way crossed random-effects
  model d[s, i] = delta + a_s + g_i + e[s, i] (seed effects a, image effects g shared by every
  seed, residual e), the design of Clark (1973) and Baayen, Davidson & Bates (2008) with seeds
  for subjects and images for items. The mean of d estimates delta with variance
  sigma_a²/S + sigma_g²/I + sigma_e²/(S·I) = (MS_seed + MS_image - MS_residual) / (S·I) in the
  mean squares of the two-way ANOVA without replication; the degrees of freedom are
  Satterthwaite's (1946) for that linear combination. Both seeds and images count as random, so
  the verdict is about the model's training (a new seed) on the data distribution (new images).

  Why not a hierarchical bootstrap (Davison & Hinkley 1997, §3.8; Ren et al. 2010): with three
  seeds, a bootstrap over seeds sees at most three seed means, its percentile interval never
  leaves their range, and on null data whose seeds differ it rejects about 25 % of the time (the
  tests simulate it); resampling images independently within each seed also misses the image
  effects the seeds share. The t reference with the ANOVA variance stays calibrated from two
  seeds on (tests/test_statistics.py checks its false-positive rate and coverage), is exact
  under normal effects, and needs no random draws, so reports stay byte-identical.

Across a report, `holm` adjusts every p-value (Holm 1979: step-down Bonferroni, family-wise error
rate 5 % over all comparisons of every dataset and metric); a difference is *detected* when its
adjusted p-value is below 0.05. The intervals shown stay the unadjusted 95 % ones, so an
interval can exclude 0 while the adjusted p-value says "no detectable difference";
`verdict` words it after the adjusted decision.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import special

from vae_zoo.harness.store import FINISHED

LEVEL = 0.95  # of every interval
ALPHA = 0.05  # family-wise error rate of the Holm-corrected verdicts


@dataclass(frozen=True)
class Estimate:
    """A mean, or a difference of means, with its 95 % interval and the two-sided p-value of
    "it is 0". `low`, `high`, `p` and `df` are NaN when it cannot be tested (too few seeds)."""

    value: float
    low: float
    high: float
    p: float
    df: float  # degrees of freedom of the t reference; inf when there is no spread at all

    @property
    def tested(self) -> bool:
        return not math.isnan(self.p)


def _untested(value: float) -> Estimate:
    return Estimate(float(value), math.nan, math.nan, math.nan, math.nan)


def _exact(value: float) -> Estimate:
    """No spread at all (every value equal): the limit of the t-test, p = 0 unless value is 0."""
    return Estimate(float(value), float(value), float(value), float(value == 0), math.inf)


def _t_estimate(value: float, variance: float, df: float) -> Estimate:
    """The t interval and two-sided p-value of `value` with standard error sqrt(variance)."""
    if variance == 0:
        return _exact(value)
    standard_error = math.sqrt(variance)
    # scipy.special's Student-t CDF and its inverse: what scipy.stats.t computes, without the
    # per-call overhead that thousands of comparisons would add up.
    half_width = special.stdtrit(df, 0.5 + LEVEL / 2) * standard_error
    p = 2 * special.stdtr(df, -abs(value) / standard_error)
    return Estimate(float(value), float(value - half_width), float(value + half_width),
                    float(p), float(df))


def mean_interval(values) -> Estimate:
    """Mean of per-seed values with its Student-t 95 % interval (n - 1 degrees of freedom);
    untested with fewer than two values."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2:
        return _untested(values.mean() if len(values) else math.nan)
    return _t_estimate(values.mean(), values.var(ddof=1) / len(values), len(values) - 1)


def welch_difference(a, b) -> Estimate:
    """mean(a) - mean(b) for two models' per-seed values (Welch 1947): standard error
    sqrt(s_a²/n_a + s_b²/n_b), degrees of freedom (s_a²/n_a + s_b²/n_b)² /
    ((s_a²/n_a)²/(n_a - 1) + (s_b²/n_b)²/(n_b - 1)). Untested unless both have two values."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) < 2 or len(b) < 2:
        difference = a.mean() - b.mean() if len(a) and len(b) else math.nan
        return _untested(difference)
    variance_a, variance_b = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    variance = variance_a + variance_b
    if variance == 0:
        return _exact(a.mean() - b.mean())
    df = variance**2 / (variance_a**2 / (len(a) - 1) + variance_b**2 / (len(b) - 1))
    return _t_estimate(a.mean() - b.mean(), variance, df)


def crossed_mean(values) -> Estimate:
    """Mean of a (seeds, images) table in which seeds and images are both random and crossed
    (every seed measured on the same images), with its 95 % interval and p-value against 0.

    Mean squares of the two-way ANOVA without replication (S seeds, I images):
    MS_seed = I·Σ_s (m_s - m)² / (S - 1), MS_image = S·Σ_i (m_i - m)² / (I - 1),
    MS_residual = Σ (y_si - m_s - m_i + m)² / ((S - 1)(I - 1)). The variance of the mean is
    (MS_seed + MS_image - MS_residual) / (S·I), never taken below MS_residual / (S·I) (the
    residual part alone); its degrees of freedom are Satterthwaite's,
    (S·I·variance)² / (MS_seed²/(S - 1) + MS_image²/(I - 1) + MS_residual²/((S - 1)(I - 1))).
    Untested with fewer than two seeds or two images.
    """
    values = np.asarray(values, dtype=np.float64)  # (seeds, images)
    seeds, images = values.shape
    mean = values.mean()
    if seeds < 2 or images < 2:
        return _untested(mean)
    seed_means, image_means = values.mean(axis=1), values.mean(axis=0)
    ms_seed = images * np.sum((seed_means - mean) ** 2) / (seeds - 1)
    ms_image = seeds * np.sum((image_means - mean) ** 2) / (images - 1)
    residuals = values - seed_means[:, None] - image_means[None, :] + mean
    ms_residual = np.sum(residuals**2) / ((seeds - 1) * (images - 1))
    combined = max(ms_seed + ms_image - ms_residual, ms_residual)
    if combined == 0:
        return _exact(mean)
    df = combined**2 / (ms_seed**2 / (seeds - 1) + ms_image**2 / (images - 1)
                        + ms_residual**2 / ((seeds - 1) * (images - 1)))
    return _t_estimate(mean, combined / (seeds * images), df)


def paired_image_difference(a, b) -> Estimate:
    """mean(a) - mean(b) for two models' (seeds, images) values on the same seeds (rows) and the
    same images (columns): `crossed_mean` of the paired differences a - b."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired values need one shape, got {a.shape} and {b.shape}")
    return crossed_mean(a - b)


def holm(p_values) -> np.ndarray:
    """Holm's (1979) step-down adjusted p-values: the i-th smallest of m p-values becomes
    max over j ≤ i of min(1, (m - j + 1)·p_(j)). NaN (untested) entries stay NaN and do not
    count in m. Rejecting where the adjusted value is below α holds the family-wise error
    rate at α."""
    p = np.asarray(p_values, dtype=np.float64)
    adjusted = np.full(p.shape, np.nan)
    tested = np.flatnonzero(~np.isnan(p))
    order = tested[np.argsort(p[tested], kind="stable")]
    factors = len(order) - np.arange(len(order))
    adjusted[order] = np.minimum(np.maximum.accumulate(factors * p[order]), 1.0)
    return adjusted


def verdict(a: str, b: str, difference: Estimate, p_holm: float, direction: str,
            number: Callable[[float], str] = "{:.3g}".format, unit: str | None = None) -> str:
    """The plain-words finding of `difference` = mean(a) - mean(b) on a metric where `direction`
    ("min" or "max") is better, decided by the Holm-adjusted p-value:
    "`a` beats `b` by 0.61 nats [0.48, 0.74]" (the improvement and its unadjusted 95 % interval,
    oriented so that positive is better), "no detectable difference between `a` and `b`
    (a − b: -0.20 nats [-0.90, 0.50])", or "`a` and `b` not compared: fewer than two seeds"."""
    units = f" {unit}" if unit else ""
    if not difference.tested:
        return f"`{a}` and `{b}` not compared: fewer than two seeds"
    if not p_holm < ALPHA:  # NaN included: a difference without a verdict is not detected
        return (f"no detectable difference between `{a}` and `{b}` (`{a}` − `{b}`: "
                f"{number(difference.value)}{units} [{number(difference.low)}, "
                f"{number(difference.high)}])")
    better = 1 if direction == "max" else -1
    improvement = better * difference.value
    low, high = sorted((better * difference.low, better * difference.high))
    if improvement < 0:
        a, b, improvement, low, high = b, a, -improvement, -high, -low
    return f"`{a}` beats `{b}` by {number(improvement)}{units} [{number(low)}, {number(high)}]"


# --------------------------------------------------------------------------- per-model tables


def aggregate(runs: pd.DataFrame, models: list[str], dataset: str,
              metrics: list[str]) -> pd.DataFrame:
    """One row per model of `models` (in that order): finished and failed seed counts, then
    mean, std, n and the 95 % t interval (`low`, `high`; `mean_interval`) of each metric over
    the model's finished runs on `dataset`.

    The standard deviation is the sample one (ddof=1); it and the interval are NaN with fewer
    than two values. A run missing a metric is left out of that metric's n.
    """
    runs = runs[runs["dataset"] == dataset]
    rows = []
    for model in models:
        model_runs = runs[runs["model"] == model]
        finished = model_runs[model_runs["status"] == FINISHED]
        row = {
            "dataset": dataset,
            "model": model,
            "seeds": len(finished),
            "failed": len(model_runs) - len(finished),
        }
        for metric in metrics:
            values = finished[metric].dropna() if metric in finished else pd.Series(dtype=float)
            interval = mean_interval(values.to_numpy(dtype=np.float64))
            row[f"{metric}_mean"] = interval.value
            row[f"{metric}_std"] = values.std(ddof=1) if len(values) > 1 else np.nan
            row[f"{metric}_n"] = len(values)
            row[f"{metric}_low"] = interval.low
            row[f"{metric}_high"] = interval.high
        rows.append(row)
    return pd.DataFrame(rows)


def ranked(table: pd.DataFrame, metric: str, direction: str) -> pd.DataFrame:
    """The rows of an `aggregate` table that have a mean on `metric`, best first ("min": lowest
    first; "max": highest first); ties keep the table's order."""
    column = f"{metric}_mean"
    if column not in table:
        return table.iloc[0:0]
    rows = table.dropna(subset=[column])
    return rows.sort_values(column, ascending=direction == "min", kind="stable")


def best_models(table: pd.DataFrame, metric: str, direction: str | None) -> list[str]:
    """The models with the best mean on a metric that has a direction (ties all win).

    Nothing is marked when the metric has no better direction or fewer than two models have it.
    """
    if direction is None:
        return []
    rows = ranked(table, metric, direction)
    if len(rows) < 2:
        return []
    best = rows[f"{metric}_mean"].iloc[0]
    return [model for model, mean in zip(rows["model"], rows[f"{metric}_mean"]) if mean == best]
