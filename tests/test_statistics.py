"""The report's statistics against numbers worked out by hand."""

import math

import numpy as np
import pandas as pd
import pytest

from vae_zoo.report.statistics import aggregate, best_models, lead, ranked


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


def test_aggregate_gives_mean_sample_std_and_count_over_finished_seeds_of_one_dataset():
    table = aggregate(RUNS, ["a", "b", "c"], "d", ["test_nll", "fid"])
    assert (table["dataset"] == "d").all()
    table = table.set_index("model")
    assert table.loc["a", "test_nll_mean"] == 12.0
    assert table.loc["a", "test_nll_std"] == pytest.approx(2.0)  # sqrt((4+0+4)/2)
    assert table.loc["a", "test_nll_n"] == 3
    # a missing value leaves the run out of that metric only
    assert table.loc["a", "fid_mean"] == 2.0
    assert table.loc["a", "fid_std"] == pytest.approx(math.sqrt(2.0))
    assert table.loc["a", "fid_n"] == 2
    assert (table.loc["a", "seeds"], table.loc["a", "failed"]) == (3, 0)
    # the failed run counts as failed and adds nothing to the statistics
    assert table.loc["b", "test_nll_mean"] == 20.5
    assert table.loc["b", "test_nll_std"] == pytest.approx(math.sqrt(0.5))
    assert (table.loc["b", "seeds"], table.loc["b", "failed"]) == (2, 1)
    assert table.loc["c", "test_nll_mean"] == 30.0
    assert np.isnan(table.loc["c", "test_nll_std"])  # one value: no spread
    assert table.loc["c", "test_nll_n"] == 1


def test_aggregate_keeps_the_given_model_order_and_reports_a_metric_nobody_has_as_missing():
    table = aggregate(RUNS, ["c", "a"], "d", ["mig"])
    assert list(table["model"]) == ["c", "a"]
    assert table["mig_n"].tolist() == [0, 0]
    assert table["mig_mean"].isna().all() and table["mig_std"].isna().all()


def test_ranked_puts_the_best_first_in_either_direction_and_drops_models_without_the_metric():
    table = aggregate(RUNS, ["a", "b", "c"], "d", ["test_nll", "mig"])
    assert list(ranked(table, "test_nll", "min")["model"]) == ["a", "b", "c"]
    assert list(ranked(table, "test_nll", "max")["model"]) == ["c", "b", "a"]
    assert ranked(table, "mig", "max").empty
    assert ranked(table, "absent", "max").empty


def test_best_models_marks_the_best_mean_and_every_model_tied_with_it():
    table = pd.DataFrame({"model": ["a", "b", "c"], "x_mean": [3.0, 1.0, 1.0]})
    assert best_models(table, "x", "min") == ["b", "c"]
    assert best_models(table, "x", "max") == ["a"]


def test_best_models_marks_the_better_of_two_models():
    table = pd.DataFrame({"model": ["a", "b"], "x_mean": [3.0, 1.0]})
    assert best_models(table, "x", "min") == ["b"]
    assert best_models(table, "x", "max") == ["a"]


def test_ranked_keeps_the_table_order_among_equal_means():
    # 40 models in two tied groups: an unstable sort (numpy's quicksort) reorders them.
    models = [f"m{i:02d}" for i in range(40)]
    table = pd.DataFrame({"model": models, "x_mean": [1.0, 0.0] * 20})
    assert list(ranked(table, "x", "min")["model"]) == models[1::2] + models[0::2]
    assert list(ranked(table, "x", "max")["model"]) == models[0::2] + models[1::2]


def test_best_models_marks_nothing_without_a_direction_or_with_fewer_than_two_models():
    table = pd.DataFrame({"model": ["a", "b"], "x_mean": [3.0, np.nan]})
    assert best_models(table, "x", None) == []
    assert best_models(table, "x", "min") == []  # only one model has the metric
    assert best_models(table, "y", "min") == []


def test_lead_is_the_gap_to_the_runner_up_and_clear_only_beyond_the_summed_spreads():
    table = aggregate(RUNS, ["a", "b", "c"], "d", ["test_nll"])
    ahead = lead(table, "test_nll", "min")
    assert ahead.best == ["a"] and ahead.runner_up == "b"
    assert ahead.gap == pytest.approx(8.5)  # 20.5 - 12
    assert ahead.spread == pytest.approx(2.0 + math.sqrt(0.5))
    assert ahead.clear is True
    close = pd.DataFrame({"model": ["a", "b"], "x_mean": [1.0, 2.0], "x_std": [0.5, 0.5]})
    assert lead(close, "x", "min").clear is False  # gap 1 is not more than 0.5 + 0.5
    apart = close.assign(x_std=[0.5, 0.49])
    assert lead(apart, "x", "min").clear is True


def test_lead_of_higher_is_better_metrics_counts_from_the_highest_mean():
    table = pd.DataFrame({"model": ["a", "b", "c"], "x_mean": [1.0, 5.0, 4.0],
                          "x_std": [0.1, 0.2, 0.3]})
    ahead = lead(table, "x", "max")
    assert (ahead.best, ahead.runner_up) == (["b"], "c")
    assert ahead.gap == pytest.approx(1.0)
    assert ahead.spread == pytest.approx(0.5)


def test_lead_with_one_seed_or_one_model_or_only_ties_is_not_called_clear():
    one_seed = pd.DataFrame({"model": ["a", "b"], "x_mean": [1.0, 9.0], "x_std": [np.nan, 0.1]})
    assert lead(one_seed, "x", "min").clear is None
    alone = pd.DataFrame({"model": ["a"], "x_mean": [1.0], "x_std": [0.1]})
    ahead = lead(alone, "x", "min")
    assert ahead.runner_up is None and ahead.clear is None
    assert math.isnan(ahead.gap) and math.isnan(ahead.spread)
    tied = pd.DataFrame({"model": ["a", "b"], "x_mean": [1.0, 1.0], "x_std": [0.1, 0.1]})
    ahead = lead(tied, "x", "min")
    assert ahead.best == ["a", "b"] and ahead.runner_up is None and ahead.clear is None
    assert lead(pd.DataFrame({"model": ["a"], "x_mean": [np.nan]}), "x", "min") is None
