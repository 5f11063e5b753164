"""The report's statistics: against numbers worked out by hand, and by simulation, the error rates
they promise (no more than 5 % false positives on null data, 95 % coverage)."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from vae_zoo.report.statistics import (
    Estimate,
    aggregate,
    best_models,
    crossed_mean,
    holm,
    mean_interval,
    paired_image_difference,
    ranked,
    verdict,
    welch_difference,
)

T_975_2 = 4.302652729911275  # Student t, 97.5 % quantile, 2 degrees of freedom


def runs_table(rows):
    return pd.DataFrame(rows, columns=["dataset", "model", "seed", "status", "test_nll", "fid"])


RUNS = runs_table([
    # model a: three finished seeds, nll 10, 12, 14 (mean 12, sample std 2); fid on two of them
    ("d", "a", 0, "finished", 10.0, 1.0),
    ("d", "a", 1, "finished", 12.0, 3.0),
    ("d", "a", 2, "finished", 14.0, None),
    # model b: two finished seeds (nll 20, 21) and one failed run whose numbers do not count
    ("d", "b", 0, "finished", 20.0, 5.0),
    ("d", "b", 1, "finished", 21.0, 5.0),
    ("d", "b", 2, "failed", 0.0, 0.0),
    # model c: one seed; and a run on another dataset that must not leak in
    ("d", "c", 0, "finished", 30.0, 9.0),
    ("other", "a", 0, "finished", -100.0, -100.0),
])


# --------------------------------------------------------------------------- per-model tables


def test_aggregate_gives_mean_std_count_and_t_interval_over_finished_seeds_of_one_dataset():
    table = aggregate(RUNS, ["a", "b", "c"], "d", ["test_nll", "fid"])
    assert (table["dataset"] == "d").all()
    table = table.set_index("model")
    assert table.loc["a", "test_nll_mean"] == 12.0
    assert table.loc["a", "test_nll_std"] == pytest.approx(2.0)  # sqrt((4+0+4)/2)
    assert table.loc["a", "test_nll_n"] == 3
    # 12 ± t(0.975, 2)·2/√3
    half = T_975_2 * 2 / math.sqrt(3)
    assert table.loc["a", "test_nll_low"] == pytest.approx(12 - half)
    assert table.loc["a", "test_nll_high"] == pytest.approx(12 + half)
    # a missing value leaves the run out of that metric only
    assert table.loc["a", "fid_mean"] == 2.0
    assert table.loc["a", "fid_std"] == pytest.approx(math.sqrt(2.0))
    assert table.loc["a", "fid_n"] == 2
    assert (table.loc["a", "seeds"], table.loc["a", "failed"]) == (3, 0)
    # the failed run counts as failed and adds nothing to the statistics
    assert table.loc["b", "test_nll_mean"] == 20.5
    assert table.loc["b", "test_nll_std"] == pytest.approx(math.sqrt(0.5))
    assert (table.loc["b", "seeds"], table.loc["b", "failed"]) == (2, 1)
    # with equal values the interval shrinks to the point
    assert table.loc["b", "fid_low"] == table.loc["b", "fid_high"] == 5.0
    assert table.loc["c", "test_nll_mean"] == 30.0
    assert np.isnan(table.loc["c", "test_nll_std"])  # one value: no spread
    assert np.isnan(table.loc["c", "test_nll_low"]) and np.isnan(table.loc["c", "test_nll_high"])
    assert table.loc["c", "test_nll_n"] == 1


def test_aggregate_keeps_the_given_model_order_and_reports_a_metric_nobody_has_as_missing():
    table = aggregate(RUNS, ["c", "a"], "d", ["mig"])
    assert list(table["model"]) == ["c", "a"]
    assert table["mig_n"].tolist() == [0, 0]
    assert table["mig_mean"].isna().all() and table["mig_std"].isna().all()
    assert table["mig_low"].isna().all() and table["mig_high"].isna().all()


def test_ranked_puts_the_best_first_in_either_direction_and_drops_models_without_the_metric():
    table = aggregate(RUNS, ["a", "b", "c"], "d", ["test_nll", "mig"])
    assert list(ranked(table, "test_nll", "min")["model"]) == ["a", "b", "c"]
    assert list(ranked(table, "test_nll", "max")["model"]) == ["c", "b", "a"]
    assert ranked(table, "mig", "max").empty
    assert ranked(table, "absent", "max").empty


def test_ranked_keeps_the_table_order_among_equal_means():
    # 40 models in two tied groups: an unstable sort (numpy's quicksort) reorders them.
    models = [f"m{i:02d}" for i in range(40)]
    table = pd.DataFrame({"model": models, "x_mean": [1.0, 0.0] * 20})
    assert list(ranked(table, "x", "min")["model"]) == models[1::2] + models[0::2]
    assert list(ranked(table, "x", "max")["model"]) == models[0::2] + models[1::2]


def test_best_models_marks_the_best_mean_and_every_model_tied_with_it():
    table = pd.DataFrame({"model": ["a", "b", "c"], "x_mean": [3.0, 1.0, 1.0]})
    assert best_models(table, "x", "min") == ["b", "c"]
    assert best_models(table, "x", "max") == ["a"]


def test_best_models_marks_nothing_without_a_direction_or_with_fewer_than_two_models():
    table = pd.DataFrame({"model": ["a", "b"], "x_mean": [3.0, np.nan]})
    assert best_models(table, "x", None) == []
    assert best_models(table, "x", "min") == []  # only one model has the metric
    assert best_models(table, "y", "min") == []


# --------------------------------------------------------------------------- t intervals


def test_mean_interval_is_the_student_t_interval_over_seeds():
    estimate = mean_interval([10.0, 12.0, 14.0])
    half = T_975_2 * 2 / math.sqrt(3)
    assert (estimate.value, estimate.df) == (12.0, 2)
    assert (estimate.low, estimate.high) == pytest.approx((12 - half, 12 + half))
    assert estimate.p == pytest.approx(2 * stats.t.sf(12 / (2 / math.sqrt(3)), 2))
    assert estimate.tested


def test_mean_interval_of_one_value_is_untested_and_of_equal_values_is_the_point():
    one = mean_interval([5.0])
    assert one.value == 5.0 and not one.tested
    assert math.isnan(one.low) and math.isnan(one.high) and math.isnan(one.df)
    assert math.isnan(mean_interval([]).value)
    same = mean_interval([5.0, 5.0, 5.0])
    assert (same.value, same.low, same.high, same.p, same.df) == (5.0, 5.0, 5.0, 0.0, math.inf)
    assert mean_interval([0.0, 0.0]).p == 1.0  # no spread and exactly 0: nothing against 0


def test_welch_difference_against_a_hand_worked_example():
    # a: mean 2.5, s² 5/3, n 4; b: mean 4, s² 4, n 3.
    # variance = 5/12 + 4/3 = 1.75; df = 1.75² / ((5/12)²/3 + (4/3)²/2) = 3.0625 / 0.946759
    a, b = [1.0, 2.0, 3.0, 4.0], [2.0, 4.0, 6.0]
    estimate = welch_difference(a, b)
    df = 3.0625 / ((5 / 12) ** 2 / 3 + (4 / 3) ** 2 / 2)
    assert df == pytest.approx(3.234719, abs=1e-6)
    assert estimate.value == -1.5 and estimate.df == pytest.approx(df)
    half = stats.t.ppf(0.975, df) * math.sqrt(1.75)
    assert (estimate.low, estimate.high) == pytest.approx((-1.5 - half, -1.5 + half))
    assert estimate.p == pytest.approx(2 * stats.t.sf(1.5 / math.sqrt(1.75), df))
    # the same as scipy's Welch test
    assert estimate.p == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue)


def test_welch_difference_needs_two_seeds_of_each_model():
    assert not welch_difference([1.0, 2.0], [3.0]).tested
    assert welch_difference([1.0, 2.0], [3.0]).value == -1.5
    assert math.isnan(welch_difference([], [3.0, 4.0]).value)
    exact = welch_difference([2.0, 2.0], [1.0, 1.0, 1.0])  # no spread: the difference is exact
    assert (exact.value, exact.low, exact.high, exact.p) == (1.0, 1.0, 1.0, 0.0)


def test_crossed_mean_against_a_hand_worked_two_way_anova():
    # seeds × images; grand mean 3, seed means 2 and 4, image means 2, 3.5, 3.5.
    values = [[1.0, 2.0, 3.0],
              [3.0, 5.0, 4.0]]
    ms_seed = 3 * (1 + 1) / 1  # I·Σ(m_s - m)² / (S - 1) = 6
    ms_image = 2 * (1 + 0.25 + 0.25) / 2  # S·Σ(m_i - m)² / (I - 1) = 1.5
    ms_residual = 4 * 0.25 / 2  # residuals 0, ∓0.5, ±0.5 in each row: SS 1 over 2 df = 0.5
    combined = ms_seed + ms_image - ms_residual  # 7
    df = combined**2 / (ms_seed**2 / 1 + ms_image**2 / 2 + ms_residual**2 / 2)  # 49 / 37.25
    estimate = crossed_mean(values)
    assert estimate.value == 3.0 and estimate.df == pytest.approx(49 / 37.25)
    half = stats.t.ppf(0.975, df) * math.sqrt(combined / 6)
    assert (estimate.low, estimate.high) == pytest.approx((3 - half, 3 + half))
    assert estimate.p == pytest.approx(2 * stats.t.sf(3 / math.sqrt(7 / 6), df))


def test_crossed_mean_never_takes_the_variance_below_its_residual_part():
    # No seed or image effect, all residual: MS_seed = MS_image = 0, MS_residual = 4, so
    # MS_seed + MS_image - MS_residual < 0 and the variance is MS_residual / (S·I) = 1.
    estimate = crossed_mean([[1.0, -1.0], [-1.0, 1.0]])
    half = stats.t.ppf(0.975, 1.0)
    assert (estimate.value, estimate.df, estimate.p) == (0.0, 1.0, 1.0)
    assert (estimate.low, estimate.high) == pytest.approx((-half, half))


def test_crossed_mean_without_spread_is_exact_and_with_one_seed_or_image_untested():
    assert crossed_mean(np.full((3, 4), 2.0)) == Estimate(2.0, 2.0, 2.0, 0.0, math.inf)
    assert crossed_mean(np.zeros((3, 4))).p == 1.0
    assert not crossed_mean(np.ones((1, 5))).tested
    assert not crossed_mean(np.ones((5, 1))).tested
    assert crossed_mean([[1.0, 3.0]]).value == 2.0


def test_paired_image_difference_is_the_crossed_mean_of_the_paired_differences():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, (3, 50)), rng.normal(0, 1, (3, 50))
    assert paired_image_difference(a, b) == crossed_mean(a - b)
    with pytest.raises(ValueError, match="one shape"):
        paired_image_difference(a, b[:, :49])


# --------------------------------------------------------------------------- error rates


SEEDS, IMAGES = 3, 1000
# (seed sd, image sd, residual sd) of the paired differences: seeds dominate, images dominate,
# the residual (seed × image) dominates, and a mix of all three.
SCENARIOS = {"seeds": (1.0, 0.0, 1.0), "images": (0.0, 1.0, 1.0), "residual": (0.0, 0.0, 5.0),
             "mixed": (0.15, 0.5, 5.0)}


def _null_differences(rng, scenario, seeds=SEEDS, images=IMAGES, shift=0.0):
    """Paired differences d[s, i] = shift + seed effect + image effect (shared by the seeds,
    skewed) + residual (heavy-tailed)."""
    seed_sd, image_sd, residual_sd = SCENARIOS[scenario]
    seed = rng.normal(0, seed_sd, (seeds, 1))
    image = (rng.lognormal(0, 1, (1, images)) - math.exp(0.5)) * image_sd
    residual = rng.standard_t(3, (seeds, images)) * residual_sd / math.sqrt(3)
    return shift + seed + image + residual


def _plausible_at_most(k: int, n: int, rate: float) -> bool:
    """Whether k or more events in n trials are plausible (one-sided binomial p > 0.001) when
    the true rate is `rate`: the rate observed is `rate` at most, within Monte Carlo error."""
    return stats.binom.sf(k - 1, n, rate) > 0.001


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_the_paired_comparison_rejects_at_most_5_percent_of_null_differences(scenario):
    rng = np.random.default_rng([1, list(SCENARIOS).index(scenario)])
    trials = 400
    rejected = sum(
        paired_image_difference(_null_differences(rng, scenario), np.zeros((SEEDS, IMAGES))).p
        < 0.05 for _ in range(trials))
    assert _plausible_at_most(rejected, trials, 0.05), f"{rejected} of {trials} rejected"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_the_paired_interval_covers_a_known_difference_95_percent_of_the_time(scenario):
    rng = np.random.default_rng([2, list(SCENARIOS).index(scenario)])
    trials, shift = 400, 0.7
    covered = 0
    for _ in range(trials):
        estimate = crossed_mean(_null_differences(rng, scenario, shift=shift))
        covered += estimate.low <= shift <= estimate.high
    # Not far below 95 % (misses plausible at a 5 % rate), and not uselessly wide either.
    assert _plausible_at_most(trials - covered, trials, 0.05), f"{covered} of {trials} covered"
    assert covered <= 0.995 * trials


def test_with_two_seeds_the_paired_comparison_still_holds_its_false_positive_rate():
    rng = np.random.default_rng(3)
    trials = 400
    rejected = sum(crossed_mean(_null_differences(rng, "seeds", seeds=2)).p < 0.05
                   for _ in range(trials))
    assert _plausible_at_most(rejected, trials, 0.05), f"{rejected} of {trials} rejected"


def test_welch_rejects_at_most_5_percent_of_null_differences_with_unequal_spreads():
    rng = np.random.default_rng(4)
    trials = 2000
    rejected = sum(welch_difference(rng.normal(0, 1, 3), rng.normal(0, 3, 3)).p < 0.05
                   for _ in range(trials))
    assert _plausible_at_most(rejected, trials, 0.05), f"{rejected} of {trials} rejected"


def test_a_hierarchical_bootstrap_over_three_seeds_would_not_be_calibrated():
    """Why the paired comparison uses a t reference: resampling 3 seeds, then images within each,
    gives a percentile interval that never leaves the 3 seed means' range, so on null data whose
    seeds differ it rejects far more than 5 % (about a quarter), where crossed_mean holds 5 %."""
    rng = np.random.default_rng(5)
    trials, resamples, images = 200, 400, 200
    bootstrap_rejected = crossed_rejected = 0
    for _ in range(trials):
        differences = _null_differences(rng, "seeds", images=images)
        seeds = rng.integers(0, SEEDS, (resamples, SEEDS))
        pixels = rng.integers(0, images, (resamples, SEEDS, images))
        means = differences[seeds[..., None], pixels].mean(axis=(1, 2))
        low, high = np.quantile(means, [0.025, 0.975])
        bootstrap_rejected += low > 0 or high < 0
        crossed_rejected += crossed_mean(differences).p < 0.05
    assert bootstrap_rejected > 0.15 * trials
    assert _plausible_at_most(crossed_rejected, trials, 0.05)


# --------------------------------------------------------------------------- Holm, wording


def test_holm_against_a_hand_worked_example():
    # sorted: 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 → max so far 0.06.
    adjusted = holm([0.01, 0.04, 0.03, 0.005, np.nan])
    np.testing.assert_allclose(adjusted[:4], [0.03, 0.06, 0.06, 0.02])
    assert np.isnan(adjusted[4])  # untested: neither adjusted nor counted in m
    np.testing.assert_array_equal(holm([0.5, 0.9]), [1.0, 1.0])  # capped at 1
    assert holm([]).shape == (0,)
    np.testing.assert_array_equal(holm([0.02, 0.02]), [0.04, 0.04])  # ties step down together


DIFFERENCE = Estimate(-0.61, -0.74, -0.48, 0.001, 4.0)  # A - B on a lower-is-better metric


def test_a_detected_difference_is_worded_as_the_better_model_beating_the_other():
    assert verdict("a", "b", DIFFERENCE, 0.01, "min", "{:.2f}".format, "nats") == (
        "`a` beats `b` by 0.61 nats [0.48, 0.74]")
    # the same numbers where higher is better: b is ahead
    assert verdict("a", "b", DIFFERENCE, 0.01, "max", "{:.2f}".format, "nats") == (
        "`b` beats `a` by 0.61 nats [0.48, 0.74]")
    # no unit, default number format
    higher = Estimate(0.25, 0.125, 0.375, 0.001, 4.0)
    assert verdict("x", "y", higher, 0.049, "max") == "`x` beats `y` by 0.25 [0.125, 0.375]"


def test_an_undetected_difference_is_no_detectable_difference_with_its_interval():
    wide = Estimate(-0.2, -0.9, 0.5, 0.4, 4.0)
    assert verdict("a", "b", wide, 1.0, "min", "{:.1f}".format, "nats") == (
        "no detectable difference between `a` and `b` (`a` − `b`: -0.2 nats [-0.9, 0.5])")
    # the interval excludes 0 but the Holm-corrected p-value does not reach 0.05
    assert verdict("a", "b", DIFFERENCE, 0.05, "min").startswith("no detectable difference")
    assert verdict("a", "b", DIFFERENCE, math.nan, "min").startswith("no detectable difference")
    for text in (verdict("a", "b", wide, 1.0, "min"), verdict("a", "b", DIFFERENCE, 0.01, "min")):
        assert "equal" not in text and "clear" not in text


def test_an_untested_difference_says_why():
    assert verdict("a", "b", Estimate(1.0, math.nan, math.nan, math.nan, math.nan), math.nan,
                   "min") == "`a` and `b` not compared: fewer than two seeds"
