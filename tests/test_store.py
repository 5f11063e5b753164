"""The results store: atomic run directories, no silent overwrite, summary from run files."""

import csv
import json

import numpy as np
import pytest

from vae_zoo.harness.store import SuiteStore, write_atomic


def record(run_id, status="finished", **metrics):
    return {"run_id": run_id, "status": status, "reason": None if status == "finished" else "x",
            "metrics": metrics, "provenance": {}}


def config(run_id, model="mlp-vae", seed=0):
    return {"run_id": run_id, "suite": "s", "dataset": {"name": "circles"},
            "model": {"name": model}, "seed": seed}


def test_write_atomic_replaces_whole_files_and_leaves_no_temporaries(tmp_path):
    path = tmp_path / "a" / "file.json"
    write_atomic(path, "one")
    write_atomic(path, "two")
    assert path.read_text() == "two"
    assert [p.name for p in path.parent.iterdir()] == ["file.json"]


def test_a_run_is_written_whole(tmp_path):
    store = SuiteStore(tmp_path)
    history = [{"epoch": 1, "train_loss": 2.0, "val_elbo": -1.0}]
    run = store.write_run("r1", config=config("r1"), record=record("r1", test_elbo=-1.0),
                          history=history, arrays={"samples": np.zeros((2, 1, 4, 4))})
    assert {p.name for p in run.iterdir()} == {"config.json", "metrics.json", "history.csv",
                                              "arrays.npz"}
    assert store.is_finished("r1")
    assert np.load(run / "arrays.npz")["samples"].shape == (2, 1, 4, 4)
    assert [p.name for p in store.runs.iterdir() if p.name.startswith(".staging")] == []


def test_a_finished_run_is_never_overwritten_silently(tmp_path):
    store = SuiteStore(tmp_path)
    store.write_run("r1", config=config("r1"), record=record("r1", test_elbo=-1.0), history=[])
    with pytest.raises(FileExistsError):
        store.write_run("r1", config=config("r1"), record=record("r1", test_elbo=-2.0),
                        history=[])
    assert store.read_metrics("r1")["metrics"]["test_elbo"] == -1.0
    store.write_run("r1", config=config("r1"), record=record("r1", test_elbo=-2.0), history=[],
                    replace_finished=True)
    assert store.read_metrics("r1")["metrics"]["test_elbo"] == -2.0
    archived = list((tmp_path / "replaced").iterdir())
    assert len(archived) == 1
    assert json.loads((archived[0] / "metrics.json").read_text())["metrics"]["test_elbo"] == -1.0


def test_a_failed_run_is_replaced_by_its_retry(tmp_path):
    store = SuiteStore(tmp_path)
    store.write_run("r1", config=config("r1"), record=record("r1", "failed"), history=[],
                    error="Traceback ...")
    assert (store.run_dir("r1") / "error.txt").is_file() and not store.is_finished("r1")
    store.write_run("r1", config=config("r1"), record=record("r1", test_elbo=-1.0), history=[])
    assert store.is_finished("r1") and not (store.run_dir("r1") / "error.txt").exists()


def test_summary_is_rebuilt_from_run_files_only(tmp_path):
    store = SuiteStore(tmp_path)
    store.write_run("b", config=config("b", seed=1), record=record("b", test_nll=2.0,
                                                                   test_elbo=-3.0), history=[])
    store.write_run("a", config=config("a"), record=record("a", "failed"), history=[])
    (store.runs / ".staging-c-123").mkdir()  # an interrupted write is not a run
    with open(store.rebuild_summary()) as stream:
        rows = list(csv.DictReader(stream))
    assert [row["run_id"] for row in rows] == ["a", "b"]
    assert rows[0]["status"] == "failed" and rows[0]["test_nll"] == ""
    assert float(rows[1]["test_nll"]) == 2.0
    assert list(rows[0])[:9] == ["run_id", "suite", "dataset", "model", "seed", "status",
                                 "reason", "test_elbo", "test_nll"]


def test_a_claimed_run_cannot_be_claimed_twice(tmp_path):
    store = SuiteStore(tmp_path)
    with store.claim("r1") as first:
        assert first
        with SuiteStore(tmp_path).claim("r1") as second:
            assert not second
    with store.claim("r1") as again:
        assert again


def test_results_are_readable_by_others_as_the_umask_allows(tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        store = SuiteStore(tmp_path)
        run = store.write_run("r1", config=config("r1"), record=record("r1"), history=[])
        summary = store.rebuild_summary()
    finally:
        os.umask(old)
    assert stat.S_IMODE(run.stat().st_mode) == 0o755
    assert stat.S_IMODE(summary.stat().st_mode) == 0o644
