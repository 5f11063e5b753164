"""Results that can be trusted or are quarantined, storage errors that are user errors, runs
that did not learn, and interrupts that stop every worker: what a hostile but fair user meets
after the suite file is accepted."""

from __future__ import annotations

import csv
import errno
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import pytest
import torch
from terminal import interrupt_after_first_run

from vae_zoo import zoo
from vae_zoo.cli import main
from vae_zoo.data import load_dataset
from vae_zoo.errors import StorageError
from vae_zoo.harness import executors, runner
from vae_zoo.harness import store as store_module
from vae_zoo.harness.store import SuiteStore
from vae_zoo.train import LEARNED_MARGIN, TrainConfig, TrainResult, train

SUITE = "tiny"
VAE_ZOO = Path(sys.executable).with_name("vae-zoo")


def cli(*args: str) -> int:
    return main([*args, "--device", "cpu"])


def run_dirs(results: Path) -> list[Path]:
    runs = results / SUITE / "runs"
    return sorted(p for p in runs.iterdir() if p.is_dir() and not p.name.startswith(".")) \
        if runs.is_dir() else []


def summary_run_ids(results: Path) -> list[str]:
    with open(results / SUITE / "summary.csv", newline="") as stream:
        return [row["run_id"] for row in csv.DictReader(stream)]


# --- corrupt result files -------------------------------------------------------------------------


def test_every_file_of_a_run_is_checksummed_in_its_metrics_json(results_copy):
    _, results = results_copy
    for run_dir in run_dirs(results):
        checksums = json.loads((run_dir / "metrics.json").read_text())["checksums"]
        assert set(checksums) == {p.name for p in run_dir.iterdir()} - {"metrics.json"}
        assert SuiteStore(results / SUITE).corruption(run_dir.name) is None


@pytest.mark.parametrize("damage, why", [
    (lambda run: (run / "metrics.json").write_text('{"status": "fini'),
     "metrics.json is not valid JSON"),
    (lambda run: (run / "metrics.json").write_bytes(b"\xff\xfe{}"),
     "metrics.json is not valid JSON"),
    (lambda run: (run / "config.json").write_text((run / "config.json").read_text()[:50]),
     "config.json differs from the checksum in metrics.json"),
    (lambda run: (run / "history.csv").unlink(), "history.csv is missing"),
    (lambda run: (run / "arrays.npz").write_bytes(b""),
     "arrays.npz differs from the checksum in metrics.json"),
])
def test_summary_quarantines_a_corrupt_run_and_never_reports_it(results_copy, capsys, damage,
                                                                  why):
    """A truncated metrics.json or config.json, a missing history.csv, an emptied arrays.npz:
    `vae-zoo summary` moves the run to corrupt/ with a note of why, lists only the runs it could
    read, `plan` shows the quarantined run and plans its cell again."""
    suite, results = results_copy
    damaged, intact = run_dirs(results)
    damage(damaged)
    assert cli("summary", str(suite), "--results-dir", str(results), "--wandb",
               "disabled") == 0
    captured = capsys.readouterr()
    assert f"moved the corrupt run {damaged.name} to {results / SUITE / 'corrupt'}/ ({why}" \
        in captured.err
    assert "Traceback" not in captured.err
    assert summary_run_ids(results) == [intact.name]
    assert not damaged.exists()
    (quarantined,) = (results / SUITE / "corrupt").iterdir()
    assert json.loads((quarantined / "quarantined.json").read_text())["why"].startswith(why)

    assert cli("plan", str(suite), "--results-dir", str(results)) == 0
    output = capsys.readouterr().out
    assert f"to train     {damaged.name}" in output and "new cell" in output
    assert f"quarantined  {damaged.name}  in {quarantined}  ({why}" in output


def test_plan_names_a_corrupt_run_without_moving_it(results_copy, capsys):
    suite, results = results_copy
    damaged = run_dirs(results)[0]
    (damaged / "training.json").write_text("{}")
    assert cli("plan", str(suite), "--results-dir", str(results)) == 0
    assert (f"to train     {damaged.name}  eval " in (output := capsys.readouterr().out)
            and "its run is corrupt: training.json differs from the checksum" in output)
    assert damaged.is_dir()  # planning writes nothing


def test_a_metrics_json_listing_a_path_outside_its_folder_is_corrupt(results_copy):
    _, results = results_copy
    run_dir = run_dirs(results)[0]
    record = json.loads((run_dir / "metrics.json").read_text())
    record["checksums"]["../../secret"] = "0" * 64
    (run_dir / "metrics.json").write_text(json.dumps(record))
    assert "cannot be in a run folder" in SuiteStore(results / SUITE).corruption(run_dir.name)


def test_a_deleted_checkpoint_is_not_corruption(results_copy):
    _, results = results_copy
    run_dir = run_dirs(results)[0]
    (run_dir / "checkpoint.safetensors").unlink()
    assert SuiteStore(results / SUITE).corruption(run_dir.name) is None


def test_staging_folders_not_named_by_the_store_are_left_alone(results_copy, capsys):
    suite, results = results_copy
    runs = results / SUITE / "runs"
    odd = [runs / ".staging@odd", runs / ".staging@host@not-a-pid@x", runs / ".staging@@@"]
    for folder in odd:
        folder.mkdir()
    assert SuiteStore(results / SUITE).remove_abandoned_staging() == 0
    assert cli("run", str(suite), "--results-dir", str(results), "--wandb", "disabled") == 0
    assert all(folder.is_dir() for folder in odd)


# --- storage errors -------------------------------------------------------------------------------


def test_a_results_dir_that_is_a_file_exits_2_naming_it(tiny_suite, tmp_path, capsys):
    results = tmp_path / "results"
    results.write_text("not a folder")
    assert cli("run", str(tiny_suite), "--results-dir", str(results), "--wandb",
               "disabled") == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot write to {results}/{SUITE}/runs")
    assert "a file stands where a folder is needed" in err and "Traceback" not in err
    assert results.read_text() == "not a folder"


def test_a_read_only_results_dir_exits_2_before_anything_runs(tiny_suite, tmp_path, monkeypatch,
                                                              capsys):
    """Read-only storage (simulated: the tests may run as root, whom permissions do not stop)."""
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path / "results"))

    monkeypatch.setattr(runner.tempfile, "TemporaryFile", read_only)
    assert cli("run", str(tiny_suite), "--results-dir", str(tmp_path / "results"), "--wandb",
               "disabled") == 2
    err = capsys.readouterr().err
    assert err == (f"error: cannot write to {tmp_path / 'results'}: Read-only file system (the "
                   "file system is read-only: choose another --results-dir)\n")


def test_a_full_disk_stops_the_suite_with_the_unsaved_result_and_keeps_the_saved_ones(
        tiny_results, tiny_suite, tmp_path, monkeypatch, capsys):
    """No space left while the second cell's files are written: exit 2, one message with the
    path, the problem and the numbers it computed; the first run is intact, the summary lists
    it, no staging folder is left, and the next run (with space again) runs only the second."""
    results = tmp_path / "results"
    shutil.copytree(tiny_results[1] / "_cache", results / "_cache")
    real_compact, writes = store_module.compact, []

    def disk_full_on_the_second_write(arrays):
        writes.append(1)
        if len(writes) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_compact(arrays)

    monkeypatch.setattr(store_module, "compact", disk_full_on_the_second_write)
    command = ["run", str(tiny_suite), "--results-dir", str(results), "--wandb", "disabled"]
    assert cli(*command) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot save the run in {results / SUITE / 'runs'}/circles-iwae")
    assert "No space left on device (free some space there" in err
    assert "its finished result was computed but not saved: " in err and "test_elbo=" in err
    assert "Traceback" not in err
    (kept,) = run_dirs(results)
    assert SuiteStore(results / SUITE).corruption(kept.name) is None
    assert summary_run_ids(results) == [kept.name]
    assert not [p for p in (results / SUITE / "runs").iterdir() if p.name.startswith(".staging")]

    monkeypatch.setattr(store_module, "compact", real_compact)
    assert cli(*command) == 0
    assert "1 finished, 1 to run" in capsys.readouterr().out


def test_a_worker_whose_results_cannot_be_saved_reports_it_and_stops(monkeypatch):
    calls = []

    def run_unit(unit, progress_position=None):
        calls.append(unit)
        raise StorageError("cannot save the run in X: No space left on device")

    monkeypatch.setattr(runner, "run_unit", run_unit)
    monkeypatch.setattr(runner, "stack_units", lambda tasks: [[task] for task in tasks])
    tasks = [type("Task", (), {"run_id": f"cell-{i}"})() for i in range(3)]
    assert executors.run_cell_group(tasks, None) == [
        {"run_id": "cell-0", "status": executors.UNSAVED,
         "reason": "cannot save the run in X: No space left on device"}]
    assert len(calls) == 1


def test_a_worker_stops_quietly_on_sigterm_keeping_the_outcomes_of_finished_cells(monkeypatch):
    def run_unit(unit, progress_position=None):
        (task,) = unit
        if task == "second":
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the signal handler raises before this ends
        return [{"run_id": task, "status": "finished", "reason": None}]

    monkeypatch.setattr(runner, "run_unit", run_unit)
    monkeypatch.setattr(runner, "stack_units", lambda tasks: [[task] for task in tasks])
    before = signal.getsignal(signal.SIGTERM)
    assert executors.run_cell_group(["first", "second", "third"], None) == [
        {"run_id": "first", "status": "finished", "reason": None}]
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_cell_warns_when_the_disk_has_less_space_than_it_writes(results_copy, monkeypatch,
                                                                   capsys):
    suite, results = results_copy
    run_dirs(results)[0].joinpath("training.json").write_text("{}")  # corrupt: trains again
    monkeypatch.setattr(runner.shutil, "disk_usage",
                        lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    assert cli("run", str(suite), "--results-dir", str(results), "--wandb", "disabled") == 0
    assert "warning: 0.0 MB free in" in capsys.readouterr().out


# --- runs that did not learn ----------------------------------------------------------------------


def tiny_data():
    return load_dataset("circles", {"side": 8, "train_size": 200, "val_size": 100,
                                    "test_size": 10})


def test_measuring_the_untrained_model_leaves_the_training_unchanged(monkeypatch):
    """The untrained model's criterion is measured on its own copy of the random streams: the
    weights and history are those of a training that does not measure it."""
    data = tiny_data()

    def trained(measure: bool):
        if not measure:
            monkeypatch.setattr("vae_zoo.train.criterion_on_draws", lambda *args: 0.0)
        torch.manual_seed(0)
        model, objective = zoo.build("mlp-vae", data.image_shape,
                                     zoo.resolve_hyperparameters("mlp-vae", {"latent_dim": 2,
                                                                             "hidden": [16]}))
        result = train(model, objective, data, TrainConfig(epochs=2, batch_size=50), seed=0)
        return model.state_dict(), result

    (weights, with_measure), (weights_without, _) = trained(True), trained(False)
    assert with_measure.initial_value < with_measure.best_value
    assert with_measure.learned
    for name, tensor in weights.items():
        assert torch.equal(tensor, weights_without[name]), name


def test_learned_compares_the_selected_weights_with_the_untrained_model_on_the_same_draws():
    result = TrainResult(initial_value=-100.0, selected_value_same_draws=-100.0 + 0.005)
    assert LEARNED_MARGIN * 100 == 0.01 and not result.learned
    result.selected_value_same_draws = -99.98
    assert result.learned


def test_a_short_training_that_gains_little_still_counts_as_learned():
    """One epoch on 200 images gains a fraction of a percent: on common random numbers that is
    far beyond the noise, and the run is not flagged."""
    data = tiny_data()
    torch.manual_seed(0)
    model, objective = zoo.build("mlp-vae", data.image_shape, zoo.resolve_hyperparameters(
        "mlp-vae", {"latent_dim": 2, "hidden": [16]}))
    result = train(model, objective, data, TrainConfig(epochs=1, batch_size=50), seed=0)
    gain = result.selected_value_same_draws - result.initial_value
    assert 0 < gain < 0.05 * abs(result.initial_value) and result.learned


def test_a_run_that_never_beat_its_untrained_model_is_flagged_and_exits_1(tiny_suite, tmp_path,
                                                                          capsys):
    """A learning rate far too small (the weights barely move): the run finishes, its metrics
    say `learned` = 0, its reason and the summary flag it, and the suite exits with 1."""
    tiny_suite.write_text(tiny_suite.read_text().replace(
        'models = ["mlp-vae", "iwae"]', 'models = ["mlp-vae"]').replace(
        "batch_size = 50", "batch_size = 50\nlearning_rate = 1e-12").replace(
        "[model.iwae]\nlatent_dim = 3\nhidden = [32]\n", ""))
    results = tmp_path / "results"
    assert cli("run", str(tiny_suite), "--results-dir", str(results), "--wandb",
               "disabled") == 1
    (run_dir,) = run_dirs(results)
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "finished" and record["metrics"]["learned"] == 0.0
    assert record["reason"].startswith("flagged: the selected weights do not beat the "
                                       "untrained model")
    assert f"FLAGGED {run_dir.name}: flagged: " in capsys.readouterr().out
    with open(results / SUITE / "summary.csv", newline="") as stream:
        (row,) = csv.DictReader(stream)
    assert row["reason"].startswith("flagged") and row["learned"] == "0.0"


# --- summary after every cell, interrupts with workers -------------------------------------------


def test_the_summary_is_rewritten_after_every_cell(tiny_results, tiny_suite, tmp_path,
                                                   monkeypatch):
    results = tmp_path / "results"
    shutil.copytree(tiny_results[1] / "_cache", results / "_cache")
    seen = []
    real_run_unit = runner.run_unit

    def run_unit(unit, progress_position=1):
        summary = results / SUITE / "summary.csv"
        seen.append(summary_run_ids(results) if summary.is_file() else None)
        return real_run_unit(unit, progress_position)

    monkeypatch.setattr(runner, "run_unit", run_unit)
    assert cli("run", str(tiny_suite), "--results-dir", str(results), "--wandb",
               "disabled") == 0
    assert seen[0] is None  # before the first cell
    assert len(seen) == 2 and seen[1] in [[d.name] for d in run_dirs(results)]


def processes_using(folder: Path) -> list[str]:
    """Command lines of the live processes that name `folder` (submitit's job controllers)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(folder) in text:
            found.append(text)
    return found


@pytest.mark.parametrize("how", ["SIGINT to the parent", "SIGTERM to the parent",
                                 "Ctrl-C to the process group"])
def test_an_interrupt_with_workers_stops_them_all_exits_130_and_writes_the_summary(
        tiny_results, tiny_suite, tmp_path, how):
    """`--jobs 2`: once the first cell is recorded, interrupt: every worker stops, no traceback,
    exit 130, the finished runs are complete and listed in summary.csv, and nothing is written
    afterwards."""
    tiny_suite.write_text(tiny_suite.read_text().replace("seeds = [0]", "seeds = [0, 1, 2, 3]")
                          .replace("epochs = 2", "epochs = 6"))
    results = tmp_path / "results"
    shutil.copytree(tiny_results[1] / "_cache", results / "_cache")
    signals = {"SIGINT to the parent": lambda pid: os.kill(pid, signal.SIGINT),
               "SIGTERM to the parent": lambda pid: os.kill(pid, signal.SIGTERM),
               "Ctrl-C to the process group": lambda pid: os.killpg(pid, signal.SIGINT)}
    process = interrupt_after_first_run(
        [str(VAE_ZOO), "run", str(tiny_suite), "--results-dir", str(results), "--device", "cpu",
         "--wandb", "disabled", "--jobs", "2"], results / SUITE / "runs", signals[how])
    output = process.stdout
    assert process.returncode == 130, output
    assert "Traceback" not in output and "KeyboardInterrupt" not in output, output
    assert output.rstrip().endswith(
        "interrupted: finished runs are kept; unfinished cells rerun next time.")
    assert processes_using(results) == []
    finished = run_dirs(results)
    assert finished and summary_run_ids(results) == [d.name for d in finished]
    store = SuiteStore(results / SUITE)
    assert all(store.corruption(d.name) is None for d in finished)
    time.sleep(1)
    assert run_dirs(results) == finished  # no worker wrote after the parent exited
