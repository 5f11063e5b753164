"""The results store: atomic run directories, no silent overwrite, summary from run files."""

import csv
import json
import socket

import numpy as np
import pytest

from vae_zoo.harness.store import SuiteStore, process_alive, read_arrays, write_atomic


def record(run_id, status="finished", **metrics):
    return {"run_id": run_id, "eval_id": "e", "status": status,
            "reason": None if status == "finished" else "x", "metrics": metrics, "provenance": {}}


def config(run_id, model="mlp-vae", seed=0):
    return {"run_id": run_id, "suite": "s", "dataset": {"name": "circles"},
            "model": {"name": model}, "seed": seed}


def training(status="finished"):
    return {"training.json": json.dumps({"status": status}), "history.csv": "epoch\n1\n"}


def test_write_atomic_replaces_whole_files_and_leaves_no_temporaries(tmp_path):
    path = tmp_path / "a" / "file.json"
    write_atomic(path, "one")
    write_atomic(path, "two")
    assert path.read_text() == "two"
    assert [p.name for p in path.parent.iterdir()] == ["file.json"]


def test_a_run_is_written_whole(tmp_path):
    store = SuiteStore(tmp_path)
    run = store.write_run("r1", config=config("r1"), record=record("r1", test_elbo=-1.0),
                          files=training(), arrays={"samples": np.zeros((2, 1, 4, 4))})
    assert {p.name for p in run.iterdir()} == {"config.json", "metrics.json", "history.csv",
                                              "training.json", "arrays.npz"}
    assert store.is_finished("r1")
    assert np.load(run / "arrays.npz")["samples"].shape == (2, 1, 4, 4)
    assert [p.name for p in store.runs.iterdir() if p.name.startswith(".staging")] == []


def test_a_finished_run_is_never_overwritten_silently(tmp_path):
    store = SuiteStore(tmp_path)
    store.write_run("r1", config=config("r1"), record=record("r1", test_elbo=-1.0),
                    files=training())
    with pytest.raises(FileExistsError):
        store.write_run("r1", config=config("r1"), record=record("r1", test_elbo=-2.0),
                        files=training())
    assert store.read_metrics("r1")["metrics"]["test_elbo"] == -1.0
    store.write_run("r1", config=config("r1"), record=record("r1", test_elbo=-2.0),
                    files=training(),
                    replace_finished=True)
    assert store.read_metrics("r1")["metrics"]["test_elbo"] == -2.0
    archived = list((tmp_path / "replaced").iterdir())
    assert len(archived) == 1
    assert json.loads((archived[0] / "metrics.json").read_text())["metrics"]["test_elbo"] == -1.0


def test_a_failed_run_is_replaced_by_its_retry(tmp_path):
    store = SuiteStore(tmp_path)
    store.write_run("r1", config=config("r1"), record=record("r1", "failed"),
                    files=training("failed"), error="Traceback ...")
    assert (store.run_dir("r1") / "error.txt").is_file() and not store.is_finished("r1")
    store.write_run("r1", config=config("r1"), record=record("r1", test_elbo=-1.0),
                    files=training())
    assert store.is_finished("r1") and not (store.run_dir("r1") / "error.txt").exists()


def test_summary_holds_the_planned_cells_that_record_their_evaluation(tmp_path):
    store = SuiteStore(tmp_path)
    store.write_run("b", config=config("b", seed=1), record=record("b", test_nll=2.0,
                                                                   test_elbo=-3.0),
                    files=training())
    store.write_run("a", config=config("a"), record=record("a", "failed"), files=training())
    store.write_run("old", config=config("old"), record=record("old", test_nll=9.0),
                    files=training())
    store.write_run("other-eval", config=config("other-eval"),
                    record={**record("other-eval", test_nll=5.0), "eval_id": "f"},
                    files=training())
    (store.runs / ".staging-c-123").mkdir()  # an interrupted write is not a run
    cells = [{"run_id": run_id, "eval_id": "e", "suite": "s", "dataset": "circles",
              "model": "mlp-vae", "variant_of": "mlp-vae", "seed": seed, "device": "cpu",
              "hp_beta": 2.0}
             for run_id, seed in (("a", 0), ("b", 1), ("other-eval", 2), ("not-run", 3))]
    with open(store.write_summary(cells)) as stream:
        rows = list(csv.DictReader(stream))
    # "old" is not a cell of the plan, "other-eval" records another evaluation, "not-run" none.
    assert [row["run_id"] for row in rows] == ["a", "b"]
    assert rows[0]["status"] == "failed" and rows[0]["reason"] == "x"
    assert rows[0]["test_nll"] == "" and float(rows[1]["test_nll"]) == 2.0
    assert list(rows[0])[:13] == ["run_id", "eval_id", "suite", "dataset", "model",
                                  "variant_of", "seed", "device", "status", "reason", "hp_beta",
                                  "test_elbo", "test_nll"]
    assert store.summary_device_class() == "cpu"


def test_a_complete_staged_run_of_a_killed_process_is_put_in_place(tmp_path):
    import subprocess
    import sys

    store = SuiteStore(tmp_path)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    prefix = f".staging@{socket.gethostname()}@{dead}@"
    complete = store.runs / f"{prefix}r1-abcd1234"
    complete.mkdir(parents=True)
    (complete / "metrics.json").write_text(json.dumps(record("r1")))
    (complete / ".staged").touch()  # killed between moving the old run aside and this one in
    partial = store.runs / f"{prefix}r2-abcd1234"
    partial.mkdir()
    (partial / "metrics.json").write_text("{")
    assert store.remove_abandoned_staging() == 2
    assert store.is_finished("r1") and not (store.run_dir("r1") / ".staged").exists()
    assert not store.run_dir("r2").exists() and not partial.exists()


def test_a_complete_staged_run_of_a_killed_process_never_replaces_a_run_in_place(tmp_path):
    """A dead process's complete staging folder whose run directory exists again (the cell was
    rerun since) is deleted: the run in place is the newer one and stays as it is."""
    import subprocess
    import sys

    store = SuiteStore(tmp_path)
    store.write_run("r1", config=config("r1"), record=record("r1", test_elbo=-1.0),
                    files=training())
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    stale = store.runs / f".staging@{socket.gethostname()}@{dead}@r1-abcd1234"
    stale.mkdir()
    (stale / "metrics.json").write_text(json.dumps(record("r1", test_elbo=-9.0)))
    (stale / ".staged").touch()
    assert store.remove_abandoned_staging() == 1
    assert not stale.exists()
    assert store.read_metrics("r1")["metrics"]["test_elbo"] == -1.0


def test_staging_folders_of_live_processes_and_of_other_hosts_are_left_alone(tmp_path):
    """Only this host's dead processes are known to be gone: a folder of a running process, or
    of any process of another host (which cannot be asked), is not touched."""
    import subprocess

    store = SuiteStore(tmp_path)
    live = subprocess.Popen(["sleep", "60"])
    try:
        running = store.runs / f".staging@{socket.gethostname()}@{live.pid}@r1-abcd1234"
        elsewhere = store.runs / f".staging@another-host@{live.pid + 1}@r2-abcd1234"
        for folder in (running, elsewhere):
            folder.mkdir(parents=True)
            (folder / "metrics.json").write_text(json.dumps(record("r")))
            (folder / ".staged").touch()
        assert store.remove_abandoned_staging() == 0
        assert running.is_dir() and elsewhere.is_dir()
        assert not store.run_dir("r1").exists() and not store.run_dir("r2").exists()
    finally:
        live.kill()
        live.wait()
    assert store.remove_abandoned_staging() == 1  # its process is gone now
    assert store.is_finished("r1") and elsewhere.is_dir()


def test_process_alive_tells_a_running_process_from_one_that_exited():
    import os
    import subprocess

    live = subprocess.Popen(["sleep", "60"])
    try:
        assert process_alive(live.pid)
    finally:
        live.kill()
        live.wait()
    assert not process_alive(live.pid)
    assert process_alive(os.getpid())
    assert process_alive(1)  # init: alive even where signalling it is not permitted


def test_a_reevaluation_keeps_the_training_files_and_archives_the_old_evaluation(tmp_path):
    store = SuiteStore(tmp_path)
    files = {**training(), "checkpoint.safetensors": b"weights"}
    store.write_run("r1", config=config("r1"), record=record("r1", test_nll=1.0), files=files,
                    arrays={"samples": np.ones((1, 1, 2, 2))})
    store.write_run("r1", config=config("r1"), record=record("r1", test_nll=2.0), files={},
                    keep=("training.json", "history.csv", "checkpoint.safetensors"),
                    arrays={"samples": np.zeros((1, 1, 2, 2))}, replace_finished=True)
    run = store.run_dir("r1")
    assert (run / "checkpoint.safetensors").read_bytes() == b"weights"
    assert store.training_finished("r1") and store.read_metrics("r1")["metrics"]["test_nll"] == 2
    assert read_arrays(run)["samples"].sum() == 0
    (archived,) = (tmp_path / "replaced").iterdir()
    assert json.loads((archived / "metrics.json").read_text())["metrics"]["test_nll"] == 1.0
    assert read_arrays(archived)["samples"].sum() == 4


def test_unreadable_run_files_read_as_missing(tmp_path):
    store = SuiteStore(tmp_path)
    store.write_run("r1", config=config("r1"), record=record("r1"), files=training())
    (store.run_dir("r1") / "metrics.json").write_text('{"status": "fini')
    assert store.read_metrics("r1") is None and not store.is_finished("r1")


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
        run = store.write_run("r1", config=config("r1"), record=record("r1"), files=training())
        summary = store.write_summary([{"run_id": "r1"}])
    finally:
        os.umask(old)
    assert stat.S_IMODE(run.stat().st_mode) == 0o755
    assert stat.S_IMODE(summary.stat().st_mode) == 0o644
