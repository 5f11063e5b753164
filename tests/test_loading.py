"""Loading results in a notebook: a run as a trained model that reproduces its metrics, and a
suite's summary as a DataFrame."""

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import vae_zoo
from vae_zoo.errors import UserError
from vae_zoo.harness.suite import load_suite
from vae_zoo.metrics.likelihood import elbo_terms

pytestmark = pytest.mark.usefixtures("one_thread")


def run_dirs(results: Path) -> list[Path]:
    return sorted(path for path in (results / "tiny" / "runs").iterdir()
                  if not path.name.startswith("."))


def test_a_loaded_run_reproduces_its_stored_test_elbo(tiny_results):
    _, results = tiny_results
    for run_dir in run_dirs(results):
        run = vae_zoo.load(run_dir)
        assert not run.model.training
        assert run.config["run_id"] == run_dir.name and run.run_dir == run_dir
        assert run.data.fingerprint == run.config["dataset"]["fingerprint"]
        images = run.dataset().test.images
        # The evaluation's random stream: seeded with the cell's seed before the ELBO.
        torch.manual_seed(run.config["seed"])
        with torch.no_grad():
            terms = elbo_terms(run.model, images, run.config["eval"]["batch_size"])
        test_elbo = terms["elbo"].double().mean().item()
        assert test_elbo == pytest.approx(run.metrics["test_elbo"], rel=1e-6)


def test_a_run_whose_data_changed_refuses_to_load_it(tiny_results):
    _, results = tiny_results
    run = vae_zoo.load(run_dirs(results)[0])
    moved = dataclasses.replace(run, data=dataclasses.replace(run.data, fingerprint="0" * 16))
    with pytest.raises(UserError, match="the data changed"):
        moved.dataset()


def test_a_run_without_a_checkpoint_is_a_clear_error(tiny_results, tmp_path):
    _, results = tiny_results
    run_dir = tmp_path / "run"
    shutil.copytree(run_dirs(results)[0], run_dir)
    (run_dir / "checkpoint.safetensors").unlink()
    with pytest.raises(UserError, match="no checkpoint.*keep_checkpoints = false"):
        vae_zoo.load(run_dir)


def test_load_results_gives_one_row_per_cell_with_its_identities_and_metrics(tiny_results):
    suite, results = tiny_results
    table = vae_zoo.load_results(results, "tiny")
    assert list(table.columns[:3]) == ["run_id", "train_id", "eval_id"]
    assert sorted(table["run_id"]) == [path.name for path in run_dirs(results)]
    assert table["seed"].dtype.kind == "i"
    for row in table.itertuples():
        config = json.loads((results / "tiny" / "runs" / row.run_id / "config.json").read_text())
        metrics = json.loads((results / "tiny" / "runs" / row.run_id / "metrics.json").read_text())
        assert (row.train_id, row.eval_id) == (config["train_id"], config["eval_id"])
        assert row.test_elbo == pytest.approx(metrics["metrics"]["test_elbo"], rel=1e-12)
        assert row.status == "finished"
    # A suite may be named, given as its file, or as a Suite.
    assert vae_zoo.load_results(results, suite).equals(table)
    assert vae_zoo.load_results(results, load_suite(str(suite))).equals(table)


def test_load_results_without_a_summary_says_how_to_make_one(tmp_path):
    with pytest.raises(UserError, match="vae-zoo summary SUITE.*vae-zoo run SUITE"):
        vae_zoo.load_results(tmp_path, "tiny")


def test_importing_vae_zoo_does_not_import_torch():
    code = ("import sys, vae_zoo; vae_zoo.load, vae_zoo.load_results, vae_zoo.__version__; "
            "assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
