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
from report_fixtures import DATASETS, FAILED, FAILED_REASON, MODELS, make_results

from vae_zoo.report import ResultsNotFoundError, build_report
from vae_zoo.report.figures import sweep_figures
from vae_zoo.report.tables import Results, describe_metric, metric_sort_key

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
    expected = {"README.md", ".report-files", "tables/runs.csv"}
    for dataset in DATASETS:
        for stem in (dataset, f"{dataset}-cost"):
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
        metrics = [c for c in expected_mean.columns if expected_mean[c].notna().any()]
        for metric in metrics:
            source = table if f"{metric}_mean" in table else cost
            for model in MODELS:
                np.testing.assert_allclose(
                    source.loc[model, f"{metric}_mean"],
                    expected_mean.loc[model, metric],
                    rtol=1e-12,
                )
                np.testing.assert_allclose(
                    source.loc[model, f"{metric}_std"], expected_std.loc[model, metric], rtol=1e-12
                )

    # The formatted tables show the same numbers, the best in bold; KL has no best.
    markdown = (out_dir / "tables" / "digits.md").read_text()
    digits = finished[finished["dataset"] == "digits"].groupby("model")
    best_nll = digits["test_nll"].mean().idxmin()
    cell = f"{digits['test_nll'].mean()[best_nll]:.2f} ± {digits['test_nll'].std()[best_nll]:.2f}"
    assert f"**{cell}**" in markdown
    kl_column = markdown.splitlines()[0].split("|").index("   test KL (nats) ")
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
