"""Running suites: every cell recorded, finished cells skipped, failures contained."""

import csv
import json

from vae_zoo.harness.runner import RunOptions, run_suite
from vae_zoo.harness.suite import load_suite

TIMING = {"train_seconds", "train_images_per_s", "eval_seconds"}


def run(suite_path, results, **options):
    return run_suite(load_suite(str(suite_path)),
                     RunOptions(results_dir=results, device="cpu", wandb_mode="disabled",
                                **options))


def metrics_of(results):
    found = {}
    for path in sorted((results / "tiny" / "runs").glob("*/metrics.json")):
        record = json.loads(path.read_text())
        found[record["run_id"]] = {k: v for k, v in record["metrics"].items() if k not in TIMING}
    return found


def test_a_rerun_of_a_cell_gives_bit_identical_metrics(tiny_suite, tmp_path):
    assert run(tiny_suite, tmp_path / "a") == 0
    assert run(tiny_suite, tmp_path / "b") == 0
    first, second = metrics_of(tmp_path / "a"), metrics_of(tmp_path / "b")
    assert len(first) == 2 and first == second  # exact float equality


def test_finished_cells_are_skipped_and_force_reruns_them(tiny_suite, tmp_path, capsys):
    assert run(tiny_suite, tmp_path) == 0
    before = metrics_of(tmp_path)
    assert run(tiny_suite, tmp_path) == 0
    assert "2 already finished (skipped), 0 to run" in capsys.readouterr().out
    assert metrics_of(tmp_path) == before
    assert run(tiny_suite, tmp_path, force=True) == 0
    assert "0 already finished (skipped), 2 to run" in capsys.readouterr().out
    assert len(list((tmp_path / "tiny" / "replaced").iterdir())) == 2


def test_a_diverging_model_is_recorded_as_failed_and_the_rest_completes(tiny_suite, tmp_path,
                                                                        capsys):
    text = tiny_suite.read_text().replace(
        "[model.iwae]", '[model.iwae]\nlikelihood = "gaussian"\ngaussian_scale = 1e-30')
    tiny_suite.write_text(text)  # a pixel scale of 1e-30 makes the loss overflow at once
    assert run(tiny_suite, tmp_path) == 1
    assert "FAILED circles-iwae-s0" in capsys.readouterr().out
    with open(tmp_path / "tiny" / "summary.csv") as stream:
        rows = {row["model"]: row for row in csv.DictReader(stream)}
    assert rows["iwae"]["status"] == "failed" and "diverged" in rows["iwae"]["reason"]
    assert rows["mlp-vae"]["status"] == "finished"
    failed_dir = next((tmp_path / "tiny" / "runs").glob("circles-iwae-*"))
    assert "DivergenceError" in (failed_dir / "error.txt").read_text()


def test_run_files_follow_the_documented_format(tiny_suite, tmp_path):
    run(tiny_suite, tmp_path)
    run_dir = next((tmp_path / "tiny" / "runs").glob("circles-mlp-vae-*"))
    config = json.loads((run_dir / "config.json").read_text())
    assert config["run_id"] == run_dir.name
    assert config["model"]["hyperparameters"]["latent_dim"] == 3
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "finished"
    for name in ("test_elbo", "test_recon", "test_kl", "test_nll", "train_seconds"):
        assert name in record["metrics"]
    metrics = record["metrics"]
    assert abs(metrics["test_elbo"] + metrics["test_recon"] + metrics["test_kl"]) < 1e-6
    # Importance sampling tightens the single-sample bound: test_nll <= -test_elbo (up to noise).
    assert metrics["test_nll"] <= -metrics["test_elbo"] + 3 * metrics["test_nll_se"]
    provenance = record["provenance"]
    for key in ("code_version", "python", "libraries", "host", "cpu", "device", "started_at",
                "finished_at", "wall_seconds", "torch_threads"):
        assert key in provenance
    with open(run_dir / "history.csv") as stream:
        history = list(csv.DictReader(stream))
    assert [row["epoch"] for row in history] == ["1", "2"]
