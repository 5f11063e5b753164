"""The disentanglement figures: metrics against β, boxes per model, the metrics' rank
correlation and traversals labelled with factors, each the same bytes every time and absent,
not an error, when the results lack what it draws."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from vae_zoo.report.disentanglement import (
    DISENTANGLEMENT_METRICS,
    labelled_traversals,
    metric_boxes,
    metric_rank_correlation,
    metrics_against_beta,
    rank_correlation,
    recorded_factor_names,
    traversal_labels,
)
from vae_zoo.report.figures import draw_figures
from vae_zoo.report.tables import METRICS, load_results

FACTORS = ["shape", "scale", "pos_x"]
BETAS = (1.0, 4.0, 16.0)
UNSWEPT = ("beta-tcvae", "factor-vae")
SEEDS = (0, 1, 2)
LATENT, STEPS, SIDE = 4, 5, 8
# Code 2 carries pos_x, code 0 scale, code 3 a little shape, code 1 nothing.
FACTOR_MI = np.array([[0.01, 0.60, 0.02],
                      [0.01, 0.02, 0.03],
                      [0.05, 0.01, 0.80],
                      [0.20, 0.04, 0.10]], dtype=np.float32)


def _write_suite(root: Path, *, metrics: tuple[str, ...] = DISENTANGLEMENT_METRICS,
                 factor_mi: bool = True, factor_names: bool = True) -> Path:
    """results/<suite> of a β sweep of beta-vae beside two unswept models on `sprites`, as the
    store writes it: run directories and a summary.csv with `variant_of` and `hp_beta`."""
    results_dir = root / "results" / "disentangle"
    models = [(f"beta-vae[beta={b:g}]", "beta-vae", b) for b in BETAS]
    models += [(name, name, None) for name in UNSWEPT]
    summary = []
    for m_index, (model, variant_of, beta) in enumerate(models):
        for seed in SEEDS:
            rng = np.random.default_rng([m_index, seed])
            run_id = f"sprites-{m_index}-s{seed}"
            run_dir = results_dir / "runs" / run_id
            run_dir.mkdir(parents=True)
            dataset = {"name": "sprites", "options": {"side": SIDE}}
            if factor_names:
                dataset["factor_names"] = FACTORS
            config = {"run_id": run_id, "suite": "disentangle", "dataset": dataset,
                      "model": {"name": model, "entry": variant_of}, "seed": seed}
            strength = np.log2(beta) / 4 if beta else 0.5  # more disentangled with β
            values = {name: float(np.clip(0.2 + 0.6 * strength + rng.normal(0, 0.05), 0, 1))
                      for name in metrics}
            values["test_elbo"] = -100.0 - 10 * strength + rng.normal()
            record = {"run_id": run_id, "status": "finished", "reason": None,
                      "metrics": values}
            (run_dir / "config.json").write_text(json.dumps(config))
            (run_dir / "metrics.json").write_text(json.dumps(record))
            arrays = {"traversals": rng.random((LATENT, STEPS, 1, SIDE, SIDE)).astype(np.float32),
                      "kl_per_dim": rng.uniform(0, 3, LATENT).astype(np.float32)}
            if factor_mi:
                # Two codes of a lower layer first: the traversed top layer is the last rows.
                arrays["factor_mi"] = np.concatenate([np.full((2, len(FACTORS)), 0.9),
                                                      FACTOR_MI]).astype(np.float32)
            np.savez(run_dir / "arrays.npz", **arrays)
            summary.append({"run_id": run_id, "suite": "disentangle", "dataset": "sprites",
                            "model": model, "variant_of": variant_of, "seed": seed,
                            "status": "finished", "reason": "", "hp_beta": beta, **values})
    pd.DataFrame(summary).to_csv(results_dir / "summary.csv", index=False)
    return results_dir


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return load_results(_write_suite(tmp_path_factory.mktemp("suite")))


def test_the_disentanglement_metrics_are_the_reports_registered_ones():
    assert set(DISENTANGLEMENT_METRICS) <= set(METRICS)


@pytest.mark.parametrize("draw, stem", [(metrics_against_beta, "disentanglement-beta"),
                                        (metric_boxes, "disentanglement-boxes"),
                                        (metric_rank_correlation, "disentanglement-correlation")])
def test_each_figure_is_written_and_the_same_bytes_when_drawn_again(results, tmp_path, draw,
                                                                    stem):
    figure = draw(results, tmp_path / "first")
    assert figure.files == [tmp_path / "first" / f"{stem}.{ext}" for ext in ("png", "pdf")]
    assert figure.png.read_bytes().startswith(b"\x89PNG") and figure.png.stat().st_size > 1000
    again = draw(results, tmp_path / "again")
    assert [p.read_bytes() for p in again.files] == [p.read_bytes() for p in figure.files]


def test_captions_say_what_is_drawn_how_many_seeds_and_which_interval(results, tmp_path):
    beta = metrics_against_beta(results, tmp_path)
    assert "log2 axis" in beta.caption  # β from 1 to 16: over a factor 10
    assert "3 seeds per β" in beta.caption and "95 % Student-t interval" in beta.caption
    assert "dashed" in beta.caption  # the unswept models' means
    boxes = metric_boxes(results, tmp_path)
    assert "3 seeds per model" in boxes.caption and "No interval" in boxes.caption
    correlation = metric_rank_correlation(results, tmp_path)
    runs = len(SEEDS) * (len(BETAS) + len(UNSWEPT))
    assert f"sprites: {runs} runs of 5 models, 3 seeds each" in correlation.caption
    assert "no interval" in correlation.caption


def test_a_narrow_beta_range_is_drawn_on_a_linear_axis(results, tmp_path):
    narrow = results.runs[results.runs["hp_beta"].isin([1.0, 4.0]) | results.runs["hp_beta"].isna()]
    results = type(results)(**{**vars(results), "runs": narrow.reset_index(drop=True)})
    assert "linear axis" in metrics_against_beta(results, tmp_path).caption


def test_without_disentanglement_metrics_there_are_no_such_figures(tmp_path):
    results = load_results(_write_suite(tmp_path, metrics=(), factor_mi=False))
    for draw in (metrics_against_beta, metric_boxes, metric_rank_correlation):
        assert draw(results, tmp_path / "figures") is None
    assert not (tmp_path / "figures").exists()
    names = {p.name for f in draw_figures(results, tmp_path / "all") for p in f.files}
    assert not any(name.startswith("disentanglement") for name in names)


def test_a_lone_metric_is_drawn_against_beta_but_not_boxed_or_correlated(tmp_path):
    results = load_results(_write_suite(tmp_path, metrics=("mig",), factor_mi=False))
    assert metrics_against_beta(results, tmp_path) is not None
    assert metric_boxes(results, tmp_path) is None
    assert metric_rank_correlation(results, tmp_path) is None


def test_a_metric_some_models_lack_is_drawn_for_the_others(results, tmp_path):
    runs = results.runs.copy()
    runs.loc[runs["model"].isin(["beta-vae[beta=1]", "beta-tcvae"]), "sap"] = np.nan
    runs.loc[runs["seed"] == 0, "mig"] = np.nan
    partial = type(results)(**{**vars(results), "runs": runs})
    for draw in (metrics_against_beta, metric_boxes, metric_rank_correlation):
        assert draw(partial, tmp_path).png.stat().st_size > 1000
    assert "2–3 seeds per model" in metric_boxes(partial, tmp_path).caption


def test_no_beta_figure_without_a_beta_sweep(results, tmp_path):
    unswept = type(results)(**{**vars(results), "runs": results.runs.drop(columns="hp_beta")})
    assert metrics_against_beta(unswept, tmp_path) is None
    assert metric_boxes(unswept, tmp_path) is not None


def test_rank_correlation_is_one_for_a_monotone_transform_and_minus_one_reversed():
    rng = np.random.default_rng(0)
    mig = rng.random(12)
    runs = pd.DataFrame({"mig": mig, "sap": np.exp(3 * mig) - 7, "modularity": 1 / (1 + mig),
                         "beta_vae": np.full(12, 0.5)})  # no variation: left out
    matrix = rank_correlation(runs)
    assert list(matrix.columns) == ["mig", "sap", "modularity"]  # in the registry's order
    assert matrix.loc["mig", "sap"] == 1.0 and matrix.loc["sap", "mig"] == 1.0
    assert matrix.loc["mig", "modularity"] == -1.0 and matrix.loc["sap", "modularity"] == -1.0
    assert (np.diag(matrix) == 1.0).all()


def test_rank_correlation_needs_three_runs_and_two_varying_metrics():
    assert rank_correlation(pd.DataFrame({"mig": [0.1, 0.2], "sap": [0.3, 0.1]})) is None
    assert rank_correlation(pd.DataFrame({"mig": [0.1, 0.2, 0.3], "sap": [0.2] * 3})) is None
    assert rank_correlation(pd.DataFrame({"mig": [0.1, 0.2, 0.3]})) is None
    # A pair measured together on fewer than three runs has no correlation (NaN), not ±1.
    sparse = pd.DataFrame({"mig": [0.1, 0.2, 0.3, 0.4], "sap": [0.3, 0.1, None, None],
                           "modularity": [0.4, 0.3, 0.2, 0.1]})
    matrix = rank_correlation(sparse)
    assert np.isnan(matrix.loc["mig", "sap"]) and matrix.loc["mig", "modularity"] == -1.0


def test_traversal_labels_name_each_codes_most_informative_factor_most_informative_first():
    order, labels = traversal_labels(FACTOR_MI, FACTORS, threshold=0.05)
    assert list(order) == [2, 0, 3, 1]
    assert labels == ["z2 → pos_x (0.80)", "z0 → scale (0.60)", "z3 → shape (0.20)",
                      "z1 → no factor"]
    order, labels = traversal_labels(FACTOR_MI, FACTORS, threshold=0.5)
    assert labels[2:] == ["z3 → no factor", "z1 → no factor"]
    with pytest.raises(ValueError, match="factor names"):
        traversal_labels(FACTOR_MI, FACTORS[:2])


def test_traversal_labels_put_inactive_codes_last_whatever_their_binned_information():
    """A code whose KL is below INACTIVE_KL carries nothing about the image, even when its
    binned values share information with a factor: it is labelled inactive and comes last."""
    kl = np.array([1.0, 0.5, 0.001, 2.0])  # z2 is the most informative by factor_mi
    order, labels = traversal_labels(FACTOR_MI, FACTORS, threshold=0.05, kl=kl)
    assert list(order) == [0, 3, 1, 2]
    assert labels == ["z0 → scale (0.60)", "z3 → shape (0.20)", "z1 → no factor",
                      "z2 inactive"]


def test_factor_names_come_from_the_runs_config_when_it_records_them():
    config = {"dataset": {"name": "sprites", "factor_names": FACTORS}}
    assert recorded_factor_names(config, 3) == FACTORS
    assert recorded_factor_names(config, 4) is None  # not the factors of this factor_mi
    assert recorded_factor_names({"dataset": {"name": "sprites"}}, 3) is None
    assert recorded_factor_names(None, 3) is None


def test_labelled_traversals_replace_the_plain_ones_where_runs_keep_factor_mi(results, tmp_path):
    figure = labelled_traversals(results, tmp_path, "sprites", "beta-tcvae")
    assert figure.files == [tmp_path / "traversals-sprites-beta-tcvae.png"]
    assert "named after the factor" in figure.caption and "numbered" not in figure.caption
    again = labelled_traversals(results, tmp_path / "again", "sprites", "beta-tcvae")
    assert again.png.read_bytes() == figure.png.read_bytes()

    drawn = {f.png.name: f for f in draw_figures(results, tmp_path / "report")}
    assert "named after the factor" in drawn["traversals-sprites-beta-tcvae.png"].caption
    assert {"disentanglement-beta.png", "disentanglement-boxes.png",
            "disentanglement-correlation.png"} <= set(drawn)


def test_traversals_without_factor_mi_or_factor_names_fall_back(tmp_path):
    plain = load_results(_write_suite(tmp_path / "plain", factor_mi=False))
    assert labelled_traversals(plain, tmp_path, "sprites", "beta-tcvae") is None
    drawn = {f.png.name: f for f in draw_figures(plain, tmp_path / "report")}
    assert "sorted by KL" in drawn["traversals-sprites-beta-tcvae.png"].caption

    unnamed = load_results(_write_suite(tmp_path / "unnamed", factor_names=False))
    figure = labelled_traversals(unnamed, tmp_path, "sprites", "beta-tcvae")
    assert "factors are numbered" in figure.caption
    named = labelled_traversals(unnamed, tmp_path / "named", "sprites", "beta-tcvae",
                                factor_names=FACTORS)
    assert "numbered" not in named.caption
