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
    assert cells == {(d, m, s) for d in ("circles", "digits") for m in ZOO for s in ("0", "1")}
    for row in rows:
        assert row["status"] == "finished"
        nll, elbo = float(row["test_nll"]), float(row["test_elbo"])
        assert 0 < nll <= -elbo + 3 * float(row["test_nll_se"])
        assert float(row["test_kl"]) >= 0 and float(row["train_seconds"]) > 0
        run_dir = results / "runs" / row["run_id"]
        assert {"config.json", "metrics.json", "history.csv"} <= {p.name for p in run_dir.iterdir()}


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
