"""The report turns a results directory into tables, figures and a page: same bytes every time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from report_fixtures import (
    DATASETS,
    FAILED,
    FAILED_REASON,
    LATENT_DIM,
    MODELS,
    NLL_IMAGES,
    NLL_NOT_CONVERGED,
    UNCONVERGED,
    make_results,
)
from scipy import stats

from vae_zoo.report import ResultsNotFoundError, build_report
from vae_zoo.report.figures import _active_units, sweep_figures
from vae_zoo.report.page import MAX_LISTED, _metric_findings, render_page
from vae_zoo.report.statistics import aggregate, holm, paired_image_difference
from vae_zoo.report.tables import (
    COMPARISON_COLUMNS,
    PAIRED,
    WELCH,
    Results,
    compare_models,
    describe_metric,
    load_results,
    make_table,
    metric_sort_key,
)

REPOSITORY = Path(__file__).resolve().parents[1]
REFERENCES = {"digits": {"iwae-k5": {"test_nll": 59.0}, "mlp-vae": {"test_nll": 61.0}}}
LINE_PLOTS = ("learning-curves", "metric-comparison", "rate-distortion", "kl-per-dimension")


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory) -> Path:
    return make_results(tmp_path_factory.mktemp("synthetic"))


@pytest.fixture(scope="module")
def report(results_dir, tmp_path_factory) -> tuple[Path, list[Path]]:
    out_dir = tmp_path_factory.mktemp("reports") / "synthetic"
    return out_dir, build_report(results_dir, out_dir, references=REFERENCES)


def _files(directory: Path) -> dict[str, bytes]:
    return {
        p.relative_to(directory).as_posix(): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def _column(markdown: str, header: str) -> int:
    """The position of a column in a Markdown table's rows split at `|`."""
    return [cell.strip() for cell in markdown.splitlines()[0].split("|")].index(header)


def _runs_from_json(results_dir: Path) -> pd.DataFrame:
    """Every run's metrics read straight from config.json + metrics.json."""
    rows = []
    for run_dir in sorted((results_dir / "runs").iterdir()):
        config = json.loads((run_dir / "config.json").read_text())
        record = json.loads((run_dir / "metrics.json").read_text())
        rows.append(
            {
                "dataset": config["dataset"]["name"],
                "model": config["model"]["name"],
                "status": record["status"],
                **record["metrics"],
            }
        )
    return pd.DataFrame(rows)


def test_report_produces_every_table_and_figure(report):
    out_dir, written = report
    expected = {"README.md", ".report-files", "tables/runs.csv", "tables/comparisons.csv"}
    for dataset in DATASETS:
        for stem in (dataset, f"{dataset}-diagnostics", f"{dataset}-cost"):
            expected |= {f"tables/{stem}.{ext}" for ext in ("csv", "md", "tex")}
        expected |= {f"figures/samples-{dataset}-{model}.png" for model in MODELS}
    expected |= {f"figures/{name}.{ext}" for name in LINE_PLOTS for ext in ("png", "pdf")}
    expected |= {f"figures/traversals-circles-{model}.png" for model in MODELS}
    expected |= {"figures/latent-digits.png"}
    assert {p.relative_to(out_dir).as_posix() for p in written} == expected
    assert set(_files(out_dir)) == expected

    page = (out_dir / "README.md").read_text()
    for path in expected - {"README.md", ".report-files"}:
        if path.endswith((".png", ".md", ".csv")) and not path.endswith("-cost.md"):
            assert f"({path})" in page, path
    assert "`synthetic`" in page and "0123456789abcdef" in page and "synthetic-host" in page
    assert "`torch 2.14.1`" in page
    assert "## Findings" in page
    for figure in (out_dir / "figures").glob("*.png"):
        assert figure.read_bytes().startswith(b"\x89PNG")


def test_table_numbers_equal_mean_and_std_of_the_runs(results_dir, report):
    out_dir, _ = report
    runs = _runs_from_json(results_dir)
    finished = runs[runs["status"] == "finished"]
    for dataset in DATASETS:
        table = pd.read_csv(out_dir / "tables" / f"{dataset}.csv").set_index("model")
        cost = pd.read_csv(out_dir / "tables" / f"{dataset}-cost.csv").set_index("model")
        ours = finished[finished["dataset"] == dataset]
        expected_mean = ours.groupby("model").mean(numeric_only=True)
        expected_std = ours.groupby("model").std(ddof=1, numeric_only=True)
        diagnostics = pd.read_csv(out_dir / "tables" / f"{dataset}-diagnostics.csv")
        diagnostics = diagnostics.set_index("model")
        metrics = [c for c in expected_mean.columns if expected_mean[c].notna().any()
                   and describe_metric(c).group != "context"]
        for metric in metrics:
            source = next(t for t in (table, diagnostics, cost) if f"{metric}_mean" in t)
            for model in MODELS:
                np.testing.assert_allclose(
                    source.loc[model, f"{metric}_mean"],
                    expected_mean.loc[model, metric],
                    rtol=1e-12,
                )
                np.testing.assert_allclose(
                    source.loc[model, f"{metric}_std"], expected_std.loc[model, metric], rtol=1e-12
                )

    # The formatted tables show the same numbers with their t interval, the best in bold; KL
    # has no best.
    markdown = (out_dir / "tables" / "digits.md").read_text()
    digits = finished[finished["dataset"] == "digits"].groupby("model")
    best_nll = digits["test_nll"].mean().idxmin()
    values = digits.get_group(best_nll)["test_nll"]
    half = stats.t.ppf(0.975, len(values) - 1) * values.std() / np.sqrt(len(values))
    mean = values.mean()
    cell = f"{mean:.2f} [{mean - half:.2f}, {mean + half:.2f}]"
    assert f"**{cell}**" in markdown
    kl_column = _column(markdown, "test KL (nats)")
    assert not any("**" in line.split("|")[kl_column] for line in markdown.splitlines()[2:])
    assert "test NLL, paper (nats)" in markdown and "59.00" in markdown
    assert "\\toprule" in (out_dir / "tables" / "digits.tex").read_text()


def test_regenerating_gives_byte_identical_files(results_dir, report, tmp_path):
    out_dir, _ = report
    again = tmp_path / "again"
    build_report(results_dir, again, references=REFERENCES)
    assert _files(again) == _files(out_dir)

    # In a fresh process with another hash seed too; the report layer never imports torch.
    fresh = tmp_path / "fresh"
    script = (
        "import sys; from pathlib import Path; from vae_zoo.report import build_report; "
        f"build_report(Path({str(results_dir)!r}), Path({str(fresh)!r}), "
        f"references={REFERENCES!r}); "
        "print(sorted(m for m in ('torch', 'wandb') if m in sys.modules))"
    )
    environment = {**os.environ, "PYTHONHASHSEED": "12345", "SOURCE_DATE_EPOCH": "0"}
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPOSITORY,
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "[]"
    assert _files(fresh) == _files(out_dir)


def test_a_failed_run_is_reported_as_failed_not_dropped(results_dir, report):
    out_dir, _ = report
    dataset, model, seed = FAILED
    table = pd.read_csv(out_dir / "tables" / f"{dataset}.csv").set_index("model")
    assert (table.loc[model, "seeds"], table.loc[model, "failed"]) == (2, 1)
    assert table.drop(index=model)["failed"].eq(0).all()

    runs = pd.read_csv(out_dir / "tables" / "runs.csv")
    failed = runs[runs["status"] == "failed"]
    assert len(runs) == len(DATASETS) * len(MODELS) * 3
    assert list(zip(failed["dataset"], failed["model"], failed["seed"], strict=True)) == [FAILED]
    assert failed["reason"].item() == FAILED_REASON

    page = (out_dir / "README.md").read_text()
    failed_section = page.split("## Failed runs", 1)[1]
    assert failed["run_id"].item() in failed_section and FAILED_REASON in failed_section


def _per_image(results_dir: Path, dataset: str, model: str, key: str) -> dict[int, np.ndarray]:
    """{seed: values} of a model's finished runs, read straight from arrays.npz."""
    values = {}
    for run_dir in sorted((results_dir / "runs").glob(f"{dataset}-{model}-s*")):
        config = json.loads((run_dir / "config.json").read_text())
        if (run_dir / "arrays.npz").is_file():
            with np.load(run_dir / "arrays.npz") as arrays:
                values[config["seed"]] = arrays[key].astype(np.float64)
    return values


def test_comparisons_csv_holds_every_pair_paired_on_images_where_the_runs_keep_them(
        results_dir, report):
    out_dir, _ = report
    comparisons = pd.read_csv(out_dir / "tables" / "comparisons.csv")
    assert list(comparisons.columns) == COMPARISON_COLUMNS
    # every pair of models on every compared metric, in suite order
    pairs = [("mlp-vae", "beta-vae-b4"), ("mlp-vae", "iwae-k5"), ("beta-vae-b4", "iwae-k5")]
    nll = comparisons[(comparisons["dataset"] == "digits") & (comparisons["metric"] == "test_nll")]
    assert list(zip(nll["A"], nll["B"])) == pairs
    assert set(comparisons["metric"]) == {
        "test_nll", "test_nll_ais", "test_elbo", "iwae_k1", "iwae_k5", "test_recon", "mig",
        "probe_r2_radius", "fid", "kid"}  # not test_bpd, KL, active units or unknown metrics
    # Holm over the whole report, not per dataset or metric
    np.testing.assert_allclose(comparisons["p_holm"], holm(comparisons["p"]))
    assert (comparisons["detected"] == (comparisons["p_holm"] < 0.05)).all()

    # per-image metrics: paired on the common seeds and the NLL images, sign-corrected
    assert (nll["method"] == PAIRED).all() and (nll["n_images"] == NLL_IMAGES).all()
    # on common seeds only: iwae-k5 lost seed 2
    assert list(nll["n_seeds_a"]) == [3, 2, 2] and list(nll["n_seeds_b"]) == [3, 2, 2]
    a = _per_image(results_dir, "digits", "mlp-vae", "image_log_px")
    b = _per_image(results_dir, "digits", "iwae-k5", "image_log_px")  # seed 2 failed
    expected = paired_image_difference(-np.stack([a[0], a[1]]), -np.stack([b[0], b[1]]))
    row = nll[nll["B"] == "iwae-k5"].iloc[0]
    assert row["A"] == "mlp-vae"
    np.testing.assert_allclose([row["difference"], row["low"], row["high"], row["p"], row["df"]],
                               [expected.value, expected.low, expected.high, expected.p,
                                expected.df], rtol=1e-12)
    # one value per run: Welch over seeds, no image count
    fid = comparisons[comparisons["metric"] == "fid"]
    assert (fid["method"] == WELCH).all() and fid["n_images"].isna().all()


def test_the_findings_state_each_comparison_with_its_interval_and_the_training(report):
    out_dir, _ = report
    page = (out_dir / "README.md").read_text()
    findings = page.split("## Findings", 1)[1].split("## Tables", 1)[0]
    comparisons = pd.read_csv(out_dir / "tables" / "comparisons.csv")
    assert f"Holm-corrected over all {comparisons['p'].notna().sum()} tested" in findings
    assert "clear" not in findings and "equal" not in findings
    # a detected difference: the better model first, improvement and interval, both p-values
    row = comparisons[(comparisons["dataset"] == "circles") & (comparisons["metric"] == "test_nll")
                      & (comparisons["B"] == "beta-vae-b4")].iloc[0]
    assert row["detected"] and row["A"] == "mlp-vae" and row["difference"] < 0
    assert row["p"] < row["p_holm"] < 0.001
    assert (f"  - `mlp-vae` beats `beta-vae-b4` by {-row['difference']:.2f} nats "
            f"[{-row['high']:.2f}, {-row['low']:.2f}]; p < 0.001, "
            "Holm-corrected p < 0.001.") in findings
    # an undetected one: A − B and its interval
    row = comparisons[(comparisons["dataset"] == "digits") & (comparisons["metric"] == "fid")
                      ].iloc[0]
    assert not row["detected"]
    assert (f"no detectable difference between `{row['A']}` and `{row['B']}` (`{row['A']}` − "
            f"`{row['B']}`: {row['difference']:.2f} [{row['low']:.2f}, {row['high']:.2f}])"
            ) in findings
    assert ("- **test NLL** (nats, lower is better; paired over 3 seeds × 200 images): "
            "3 of 3 differences detected.") in findings
    assert "- **FID** (lower is better; Welch over 2–3 seeds):" in findings
    # the budget, early stopping, the checkpoint and convergence
    assert ("- Training: a budget of 5 epochs; no early stopping; checkpoint: the epoch with the "
            "best validation objective; 5 epochs trained; 1 of 9 runs had not converged († in "
            "the tables).") in findings
    assert "all 8 runs had converged." in findings
    assert ("The NLL estimate had not converged (‡) in 1 of 8 runs (`beta-vae-b4` 1 of 3)"
            in findings)
    assert "FID between held-out and test images: 2.50 ± 0.30 (sd over draws)" in findings


def test_the_tables_mark_unconverged_runs_and_estimates_and_do_not_rank_active_units(report):
    out_dir, _ = report
    dataset, model, _ = UNCONVERGED
    metrics = (out_dir / "tables" / f"{dataset}.md").read_text()
    assert f"| {model} †" in metrics
    assert "† Runs that had not converged: `mlp-vae` 1 of 3" in metrics
    assert "convergence_tolerance" in metrics
    raw = pd.read_csv(out_dir / "tables" / f"{dataset}.csv").set_index("model")
    assert raw.loc[model, "unconverged"] == 1 and raw["unconverged"].sum() == 1
    # active units out of the latent units, never bold
    units = _column(metrics, "active units")
    cells = [line.split("|")[units] for line in metrics.splitlines()[2:5]]
    assert all(f"of {LATENT_DIM}" in cell and "**" not in cell for cell in cells)

    dataset, model, _ = NLL_NOT_CONVERGED
    diagnostics = (out_dir / "tables" / f"{dataset}-diagnostics.md").read_text()
    flagged = [line for line in diagnostics.splitlines() if "‡" in line and line.startswith("|")]
    assert len(flagged) == 1 and flagged[0].startswith(f"| {model} ")
    assert "‡ NLL estimate not converged" in diagnostics
    assert "FID held-out vs test (± sd over draws)" in diagnostics and "2.50 ± 0.30" in diagnostics
    assert "ESS mean (samples)" in diagnostics and "KID held-out vs test" in diagnostics
    assert "$^\\ddagger$" in (out_dir / "tables" / f"{dataset}-diagnostics.tex").read_text()
    # KID beside FID; AIS and BDMC where they were measured
    header = (out_dir / "tables" / "digits.md").read_text().splitlines()[0]
    assert "FID ↓ |" in header and header.index("KID ↓") > header.index("FID ↓")
    assert "test NLL, AIS (nats) ↓" in (out_dir / "tables" / "circles.md").read_text()
    assert "BDMC gap" in (out_dir / "tables" / "circles-diagnostics.md").read_text()


def test_results_from_before_per_image_values_are_compared_over_seeds(tmp_path):
    results = load_results(make_results(tmp_path, models=MODELS[:2], new_format=False))
    comparisons = compare_models(results)
    assert len(comparisons) and (comparisons["method"] == WELCH).all()
    page = render_page(results, [], [], tmp_path, comparisons=None)
    assert "convergence not recorded" in page and "Training: a budget of 5 epochs;" in page
    assert "early stopping" not in page and "checkpoint:" not in page
    assert "Welch over 3 seeds" in page and "paired over" not in page
    table = make_table(results, "circles", "metrics")
    assert "†" not in table.markdown and "unconverged" not in table.raw
    assert "4.0 of 6" in table.markdown  # the latent units from the model's settings


def test_a_baseline_is_compared_with_every_other_model_and_nothing_else(results_dir, tmp_path):
    results = load_results(results_dir)
    comparisons = compare_models(results, baseline="iwae-k5")
    assert (comparisons["B"] == "iwae-k5").all() and set(comparisons["A"]) == set(MODELS[:2])
    page = render_page(results, [], [], tmp_path, comparisons=comparisons, baseline="iwae-k5")
    assert "each model with the baseline `iwae-k5`" in page
    assert compare_models(results, baseline="absent").empty
    page = render_page(results, [], [], tmp_path, baseline="absent")
    assert page.count("The baseline `absent` has no finished run here: no comparison.") == 2
    assert "over all 0 tested comparisons" in page


def test_with_many_models_the_findings_list_the_comparisons_of_the_best_and_count_the_rest():
    models = [f"m{i}" for i in range(6)]  # 15 pairs
    pairs = [(a, b) for i, a in enumerate(models) for b in models[i + 1:]]
    assert len(pairs) > MAX_LISTED
    rows = pd.DataFrame([
        {"dataset": "d", "metric": "fid", "A": a, "B": b, "difference": 1.0, "low": 0.5,
         "high": 1.5, "p": 0.001, "p_holm": 0.01 if a == "m0" else 0.5, "n_seeds_a": 3,
         "n_seeds_b": 3, "n_images": pd.NA, "method": WELCH, "df": 4.0,
         "detected": a == "m0"} for a, b in pairs])
    runs = pd.DataFrame({"dataset": "d", "model": models, "status": "finished",
                         "fid": [5.0, 1.0, 3.0, 4.0, 6.0, 7.0]})
    table = aggregate(runs, models, "d", ["fid"])
    lines = _metric_findings("fid", rows, table, None)
    assert lines[0] == ("- **FID** (lower is better; Welch over 3 seeds): 5 of 15 differences "
                        "detected.")
    listed = lines[1:-1]
    assert len(listed) == 5 and all("`m1`" in line for line in listed)  # m1 has the best mean
    # m0 is A, m0 − m1 = +1 on a lower-is-better metric: m1 is the better one
    assert listed[0].startswith("  - `m1` beats `m0` by 1.00 [0.50, 1.50]")
    assert lines[-1] == ("  - The other 10 comparisons (4 detected) are in "
                         "[tables/comparisons.csv](tables/comparisons.csv).")
    untested = rows.assign(p=np.nan, p_holm=np.nan, low=np.nan, high=np.nan, detected=False)
    mixed = pd.concat([untested.head(1), rows.iloc[[5]]])
    assert _metric_findings("fid", mixed, table, None) == [
        "- **FID** (lower is better; Welch over 3 seeds): 0 of 1 differences detected, 1 pairs "
        "not compared (fewer than two seeds).",
        "  - `m0` and `m1` not compared: fewer than two seeds.",
        "  - no detectable difference between `m1` and `m2` (`m1` − `m2`: 1.00 [0.50, 1.50]); "
        "p = 0.001, Holm-corrected p = 0.5."]
    assert _metric_findings("fid", untested, table, None) == [
        "- **FID** (lower is better): not compared, every model has fewer than two seeds."]
    assert _metric_findings("fid", rows.head(0), table, None) == []


def _edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def test_comparisons_leave_out_what_cannot_be_paired_or_is_missing(tmp_path):
    results_dir = make_results(tmp_path, datasets=("digits",), models=MODELS[:2],
                               with_failed=False)
    runs = {run.name.split("-s")[0] + run.name.split("-s")[1][0]: run
            for run in (results_dir / "runs").iterdir()}
    # mlp-vae seed 0 keeps a non-finite image value: its NLL is not paired on that seed
    with np.load(runs["digits-mlp-vae0"] / "arrays.npz") as stored:
        arrays = dict(stored)
    arrays["image_log_px"][3] = np.nan
    arrays["image_elbo"] = arrays["image_elbo"][:, None]  # not one value per image
    np.savez(runs["digits-mlp-vae0"] / "arrays.npz", **arrays)
    # beta-vae-b4 seed 0 did not record its seed: it cannot be paired
    _edit_json(runs["digits-beta-vae-b40"] / "config.json", lambda c: c.update(seed=None))
    # beta-vae-b4 has no KID: nothing to compare; no run has the spread of the held-out FID
    for seed in (0, 1, 2):
        _edit_json(runs[f"digits-beta-vae-b4{seed}"] / "metrics.json",
                   lambda r: r["metrics"].pop("kid"))
        for model in MODELS[:2]:
            _edit_json(runs[f"digits-{model}{seed}"] / "metrics.json",
                       lambda r: r["metrics"].pop("fid_ref_sd"))
    results = load_results(results_dir)
    assert "FID between held-out and test images: 2.50, what" in render_page(results, [], [],
                                                                              tmp_path)
    diagnostics = make_table(results, "digits", "diagnostics").markdown
    assert "FID held-out vs test |" in diagnostics and "±" not in diagnostics
    comparisons = compare_models(results).set_index("metric")
    assert comparisons.loc["test_nll", "method"] == PAIRED
    # seeds 1 and 2 only: mlp-vae's seed 0 value is NaN, beta-vae-b4's seed 0 is unknown
    assert comparisons.loc["test_nll", ["n_seeds_a", "n_seeds_b"]].tolist() == [2, 2]
    assert comparisons.loc["test_elbo", "n_seeds_a"] == 2  # seed 0's ELBO array is unusable
    # one value per run needs no seed to pair with: every finished run counts
    assert comparisons.loc["fid", "method"] == WELCH
    assert comparisons.loc["fid", ["n_seeds_a", "n_seeds_b"]].tolist() == [3, 3]
    assert "kid" not in comparisons.index


def test_the_training_finding_says_what_the_runs_record():
    from vae_zoo.report.page import _training_findings

    runs = pd.DataFrame({"train_epochs": [10.0, 20.0], "train_patience": [5, 0],
                         "train_select": ["elbo", "last"], "converged": [1.0, 0.0]})
    assert _training_findings(runs) == [
        "- Training: a budget of 10–20 epochs; early stopping after 5 epochs without "
        "improvement in some runs; checkpoint: the epoch with the best validation ELBO or the "
        "last epoch; 1 of 2 runs had not converged († in the tables)."]
    unknown = pd.DataFrame({"train_epochs": [None], "train_patience": [None],
                            "train_select": [None]})
    assert _training_findings(unknown) == ["- Training: convergence not recorded."]
    assert _training_findings(unknown.iloc[:0]) == []


def test_references_show_ours_with_its_interval_or_say_it_was_not_measured():
    from vae_zoo.report.page import _reference_findings

    runs = pd.DataFrame({"dataset": "d", "model": ["a", "a", "b"], "status": "finished",
                         "test_nll": [10.0, 12.0, 30.0]})
    table = aggregate(runs, ["a", "b"], "d", ["test_nll"])
    lines = _reference_findings(table, {"a": {"test_nll": 11.5, "fid": 3.0},
                                        "b": {"test_nll": 29.0}, "c": {"test_nll": 1.0}})
    half = stats.t.ppf(0.975, 1) * np.sqrt(2) / np.sqrt(2)
    assert lines == [
        f"- `a`, test NLL: ours 11.00 [{11 - half:.2f}, {11 + half:.2f}] against 11.50 "
        "published (difference -0.50).",
        "- `a`, FID: published 3.00, not measured here.",
        "- `b`, test NLL: ours 30.00 against 29.00 published (difference +1.00).",
        "- `c`, test NLL: published 1.00, not measured here."]


def test_the_kl_figure_counts_active_units_with_the_runs_metric(results_dir):
    results = load_results(results_dir)
    assert _active_units(results, "circles", "beta-vae-b4") == "2 active of 6"
    results.runs = results.runs.drop(columns=["latent_dim"])
    assert _active_units(results, "circles", "beta-vae-b4") == "2 active"
    results.runs["active_units"] = np.nan
    assert _active_units(results, "circles", "mlp-vae") == "active units not measured"
    results.runs = results.runs.drop(columns=["active_units"])
    assert _active_units(results, "circles", "mlp-vae") == "active units not measured"


@pytest.fixture
def small_results_dir(tmp_path) -> Path:
    """One dataset, one model, two seeds: quick to report on."""
    return make_results(tmp_path, datasets=("digits",), models=("mlp-vae",), seeds=(0, 1))


def test_a_run_without_metrics_json_counts_as_failed(small_results_dir, tmp_path):
    crashed = next((small_results_dir / "runs").glob("digits-mlp-vae-s1-*"))
    (crashed / "metrics.json").unlink()
    out_dir = tmp_path / "report"
    build_report(small_results_dir, out_dir)
    table = pd.read_csv(out_dir / "tables" / "digits.csv").set_index("model")
    assert (table.loc["mlp-vae", "seeds"], table.loc["mlp-vae", "failed"]) == (1, 1)
    assert f"`{crashed.name}`" in (out_dir / "README.md").read_text()
    assert "no metrics.json" in (out_dir / "README.md").read_text()


def test_a_new_report_removes_only_its_own_stale_files(small_results_dir, tmp_path):
    results_dir, out_dir = small_results_dir, tmp_path / "report"
    build_report(results_dir, out_dir)
    stale = out_dir / "figures" / "samples-old-model.png"
    stale.write_bytes(b"old")
    manifest = out_dir / ".report-files"
    manifest.write_text(manifest.read_text() + "figures/samples-old-model.png\n")
    mine = out_dir / "figures" / "notes.txt"
    mine.write_text("kept")
    build_report(results_dir, out_dir)
    assert not stale.exists() and mine.read_text() == "kept"


def test_an_empty_results_directory_is_a_clear_error(tmp_path):
    (tmp_path / "runs").mkdir()
    with pytest.raises(FileNotFoundError, match="no runs to report on"):
        build_report(tmp_path, tmp_path / "report")
    with pytest.raises(ResultsNotFoundError):
        build_report(tmp_path / "missing", tmp_path / "report")
    assert not (tmp_path / "report").exists()


def _swept_results(root: Path, betas=(0.5, 1, 4, 16)) -> Results:
    """Finished runs of a β sweep of beta-vae beside an unswept iwae, as the report loads them."""
    rng = np.random.default_rng(0)
    rows = []
    for dataset in ("circles", "digits"):
        for model, beta in [(f"beta-vae[beta={b:g}]", float(b)) for b in betas] + [("iwae", None)]:
            for seed in (0, 1, 2):
                kl = 20 / (1 + (beta or 1)) + rng.normal(0, 0.3)
                recon = 60 + 5 * np.log2(1 + (beta or 1)) + rng.normal(0, 0.5)
                rows.append({
                    "run_id": f"{dataset}-{model}-s{seed}", "dataset": dataset, "model": model,
                    "seed": seed, "status": "finished", "reason": None,
                    "test_elbo": -(recon + kl), "test_recon": recon, "test_kl": kl,
                    "variant_of": model.split("[")[0], "hp_beta": beta,
                })
    runs = pd.DataFrame(rows)
    runs["hp_beta"] = runs["hp_beta"].astype(float)
    models = list(dict.fromkeys(runs["model"]))
    return Results("swept", root, runs, ["test_elbo", "test_recon", "test_kl"],
                   ["circles", "digits"], models)


def test_a_sweep_figure_plots_rate_distortion_and_elbo_against_the_swept_value(tmp_path):
    results = _swept_results(tmp_path)
    (figure,) = sweep_figures(results, tmp_path / "figures")
    assert figure.files == [tmp_path / "figures" / f"sweep-beta.{ext}" for ext in ("png", "pdf")]
    assert figure.png.read_bytes().startswith(b"\x89PNG") and figure.title == "Sweep of beta"
    assert "log axis" in figure.caption  # 0.5 to 16: positive, over a factor 10
    (again,) = sweep_figures(results, tmp_path / "again")
    assert [p.read_bytes() for p in again.files] == [p.read_bytes() for p in figure.files]

    (narrow,) = sweep_figures(_swept_results(tmp_path, betas=(1, 2, 4)), tmp_path / "narrow")
    assert "linear axis" in narrow.caption


def test_no_sweep_figure_without_a_numeric_sweep_column(tmp_path):
    runs = _swept_results(tmp_path).runs
    for columns in (runs.drop(columns=["hp_beta"]),
                    runs.drop(columns=["variant_of", "hp_beta"]),
                    runs.assign(hp_beta=None, hp_activation="relu")):
        results = _swept_results(tmp_path)
        results.runs = columns
        assert sweep_figures(results, tmp_path / "figures") == []
    assert not (tmp_path / "figures").exists()


def test_figures_of_variants_whose_names_hold_a_dot_keep_their_own_files(tmp_path):
    from matplotlib.figure import Figure

    from vae_zoo.report.figures import _save

    written = [path.name for stem in ("samples-mlp-vae-beta-0.5", "samples-mlp-vae-beta-0.25")
               for path in _save(Figure(), tmp_path / stem, vector=True)]
    assert written == ["samples-mlp-vae-beta-0.5.png", "samples-mlp-vae-beta-0.5.pdf",
                       "samples-mlp-vae-beta-0.25.png", "samples-mlp-vae-beta-0.25.pdf"]


def test_metric_families_have_names_and_a_place_in_the_tables():
    assert describe_metric("iwae_k50").header() == "IWAE bound k=50 (nats) ↑"
    assert describe_metric("active_units_z2").header() == "active units z2"
    assert describe_metric("probe_r2_radius").header() == "probe R² radius ↑"
    names = ["fid", "active_units_z2", "active_units", "active_units_z1", "test_nll", "zeta"]
    assert sorted(names, key=metric_sort_key) == [
        "test_nll", "active_units", "active_units_z1", "active_units_z2", "fid", "zeta"]


def test_a_model_with_a_run_that_did_not_learn_is_marked_in_its_tables(tmp_path):
    """`learned` = 0 (a run that never beat its untrained model): § after the model's name and a
    note saying what it means, in the metrics and diagnostics tables, not in the cost one."""
    results_dir = make_results(tmp_path, datasets=("digits",), models=MODELS[:2],
                               with_failed=False)
    for run_dir in sorted((results_dir / "runs").iterdir()):
        learned = 0.0 if run_dir.name.startswith(f"digits-{MODELS[1]}-s0") else 1.0
        _edit_json(run_dir / "metrics.json",
                   lambda r, value=learned: r["metrics"].update(learned=value))
    results = load_results(results_dir)
    metrics = make_table(results, "digits", "metrics")
    rows = [line for line in metrics.markdown.splitlines() if line.startswith("|")][2:]
    assert [row.split("|")[1].strip() for row in rows] == [MODELS[0], f"{MODELS[1]} §"]
    assert any(note.startswith(f"§ Runs that did not learn: `{MODELS[1]}` 1 of 3")
               for note in metrics.notes)
    assert "\\S{}" in metrics.latex
    assert "§" not in make_table(results, "digits", "cost").markdown
