"""The command line, end to end: the smoke suite, listings, and bad input."""

import csv

from vae_zoo.cli import main
from vae_zoo.zoo import ZOO

SUMMARY_COLUMNS = ["run_id", "suite", "dataset", "model", "seed", "status", "test_elbo",
                   "test_recon", "test_kl", "test_nll", "train_seconds"]


def test_the_smoke_suite_runs_every_cell_and_writes_the_summary(smoke_results):
    status, results = smoke_results
    assert status == 0
    with open(results / "summary.csv") as stream:
        rows = list(csv.DictReader(stream))
    assert set(SUMMARY_COLUMNS) <= set(rows[0])
    cells = {(row["dataset"], row["model"], row["seed"]) for row in rows}
    assert cells == {(d, m, "0") for d in ("circles", "digits") for m in ZOO}
    for row in rows:
        assert row["status"] == "finished"
        assert float(row["test_kl"]) >= 0 and float(row["train_seconds"]) > 0
        run_dir = results / "runs" / row["run_id"]
        assert {"config.json", "metrics.json", "history.csv"} <= {p.name for p in run_dir.iterdir()}


def test_every_smoke_run_reports_consistent_likelihood_bounds(smoke_results):
    """Whatever an entry trains on, its reported numbers are the β = 1 ELBO and bounds of one
    log-likelihood, ordered as the maths orders them: ELBO ≈ IWAE(k=1) ≤ IWAE(k=50) ≤ log p(x),
    and the importance-sampled estimate with K = 100 ≥ 50 samples is at least as tight as
    IWAE(k=50), so test_nll ≤ -iwae_k50. The tolerances are Monte Carlo noise: the two sides use
    independent draws on the same images."""
    _, results = smoke_results
    with open(results / "summary.csv") as stream:
        rows = list(csv.DictReader(stream))
    for row in rows:
        value = {name: float(row[name]) for name in (
            "test_elbo", "test_recon", "test_kl", "test_nll", "iwae_k1", "iwae_k50")}
        where = f"{row['model']} on {row['dataset']}"
        assert abs(value["test_elbo"] + value["test_recon"] + value["test_kl"]) < 1e-3, where
        # β = 1: a β-weighted ELBO would differ from IWAE(k=1) by (β - 1)·KL, several nats here.
        assert abs(value["test_elbo"] - value["iwae_k1"]) <= 0.1 * abs(value["test_elbo"]), where
        assert value["test_elbo"] <= value["iwae_k50"] + 0.05, where
        assert 0 < value["test_nll"] <= -value["iwae_k50"] + 0.05, where


def test_list_shows_models_datasets_and_suites(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in [*ZOO, "circles", "digits", "mnist", "fashion-mnist", "smoke", "default"]:
        assert name in out


def test_bad_suite_exits_2_before_running_anything(tmp_path, capsys):
    suite = tmp_path / "bad.toml"
    suite.write_text('datasets = ["circles"]\nmodels = ["vae"]\nseeds = [0]\n')
    assert main(["run", str(suite), "--results-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "unknown model 'vae'" in err and "mlp-vae" in err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_a_missing_dataset_exits_2_with_where_it_looked(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("VAE_ZOO_DATA", str(tmp_path / "nothing"))
    suite = tmp_path / "mnist.toml"
    suite.write_text('datasets = ["mnist"]\nmodels = ["mlp-vae"]\nseeds = [0]\n'
                     '[dataset.mnist]\ndownload = false\n')
    assert main(["run", str(suite), "--results-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "dataset 'mnist' not found" in err and str(tmp_path / "nothing") in err


def test_unavailable_device_is_bad_input(capsys):
    assert main(["run", "smoke", "--device", "tpu"]) == 2
    assert "expected cpu, cuda or cuda:N" in capsys.readouterr().err


def test_the_smoke_report_says_which_latents_hierarchical_models_read(smoke_results, tmp_path):
    _, results = smoke_results
    assert main(["report", "smoke", "--results-dir", str(results.parent), "--out",
                 str(tmp_path), "--wandb", "disabled"]) == 0
    page = (tmp_path / "smoke" / "README.md").read_text()
    assert "Models with several stochastic layers (`vae-2layer`, `iwae-2layer`)" in page
    assert "active units z1" in (tmp_path / "smoke" / "tables" / "circles.md").read_text()
