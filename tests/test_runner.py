"""Running suites: every cell recorded, finished cells skipped, failures contained."""

import csv
import json

import pytest
import torch

from vae_zoo.cli import main
from vae_zoo.harness.runner import RunOptions, run_suite
from vae_zoo.harness.suite import load_suite

pytestmark = pytest.mark.usefixtures("one_thread")

# Measurements of cost, not results: they vary from run to run.
TIMING = {"train_seconds", "train_images_per_s", "eval_seconds", "peak_memory_mb"}


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
    assert "2 finished, 0 to run" in capsys.readouterr().out
    assert metrics_of(tmp_path) == before
    assert run(tiny_suite, tmp_path, force=True) == 0
    assert "0 finished, 2 to run (2 to train, 0 to evaluate)" in capsys.readouterr().out
    assert len(list((tmp_path / "tiny" / "replaced").iterdir())) == 2


@pytest.fixture
def iwae_diverges(monkeypatch):
    """The iwae cell's loss overflows to inf at its first step: its weights are scaled beyond
    float32's range before training (the suite validation refuses settings that would do it,
    such as a KL weight of 1e39, so the divergence is planted behind its back)."""
    from vae_zoo.harness import runner

    real_train = runner.train

    def train(model, objective, *args, **kwargs):
        if objective.name == "iwae":
            with torch.no_grad():
                for parameter in model.parameters():
                    parameter.mul_(1e30)
        return real_train(model, objective, *args, **kwargs)

    monkeypatch.setattr(runner, "train", train)


def test_a_diverging_model_is_recorded_as_failed_and_the_rest_completes(
        tiny_suite, tmp_path, capsys, iwae_diverges):
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


def cli_process(suite_path, results):
    """`vae-zoo run` in its own process group (so it can be killed with its children), with one
    OpenMP thread (as `one_thread` gives the tests in this process)."""
    import os
    import subprocess
    import sys

    return subprocess.Popen(
        [sys.executable, "-m", "vae_zoo.cli", "run", str(suite_path), "--results-dir",
         str(results), "--wandb", "disabled"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"})


def complete_runs(results):
    runs = results / "tiny" / "runs"
    # Hidden entries are the store's own: a staging folder is a run still being written.
    return sorted(p.name for p in runs.iterdir()
                  if not p.name.startswith(".") and (p / "metrics.json").is_file()) \
        if runs.is_dir() else []


def test_a_killed_suite_leaves_complete_runs_and_resumes_the_rest(tiny_suite, tmp_path):
    import os
    import signal
    import time

    tiny_suite.write_text(tiny_suite.read_text().replace("seeds = [0]", "seeds = [0, 1, 2]")
                          .replace("epochs = 2", "epochs = 4"))
    process = cli_process(tiny_suite, tmp_path)
    deadline = time.time() + 120
    while not complete_runs(tmp_path) and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # kill -9, possibly in the middle of a write
    process.wait()
    finished_before = complete_runs(tmp_path)
    assert 1 <= len(finished_before) < 6
    for name in os.listdir(tmp_path / "tiny" / "runs"):
        run_dir = tmp_path / "tiny" / "runs" / name
        if not name.startswith("."):  # anything visible is a whole run
            assert {"config.json", "training.json", "metrics.json", "history.csv",
                    "checkpoint.safetensors"} <= set(os.listdir(run_dir))
            json.loads((run_dir / "metrics.json").read_text())

    resumed = cli_process(tiny_suite, tmp_path)
    output, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, output
    assert f"{len(finished_before)} finished, {6 - len(finished_before)} to run" in output
    assert len(complete_runs(tmp_path)) == 6
    assert not [p for p in (tmp_path / "tiny" / "runs").iterdir() if p.name.startswith(".st")]
    with open(tmp_path / "tiny" / "summary.csv") as stream:
        assert len(list(csv.DictReader(stream))) == 6


def test_two_processes_on_one_results_directory_do_not_corrupt_it(tiny_suite, tmp_path):
    tiny_suite.write_text(tiny_suite.read_text().replace("seeds = [0]", "seeds = [0, 1]"))
    first, second = cli_process(tiny_suite, tmp_path), cli_process(tiny_suite, tmp_path)
    outputs = [process.communicate(timeout=300)[0] for process in (first, second)]
    assert [first.returncode, second.returncode] == [0, 0], outputs
    assert len(complete_runs(tmp_path)) == 4
    assert not (tmp_path / "tiny" / "replaced").exists()  # no cell was run twice over another
    with open(tmp_path / "tiny" / "summary.csv") as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == 4 and {row["status"] for row in rows} == {"finished"}


def test_changing_one_hyperparameter_creates_exactly_the_new_cells(tiny_suite, tmp_path, capsys):
    assert run(tiny_suite, tmp_path) == 0
    before = metrics_of(tmp_path)
    tiny_suite.write_text(tiny_suite.read_text().replace(
        "[model.iwae]\nlatent_dim = 3", "[model.iwae]\nlatent_dim = 4"))
    assert run(tiny_suite, tmp_path) == 0
    assert "1 finished, 1 to run (1 to train, 0 to evaluate)" in capsys.readouterr().out
    after = metrics_of(tmp_path)
    assert len(after) == 3 and all(after[run_id] == before[run_id] for run_id in before)
    with open(tmp_path / "tiny" / "summary.csv") as stream:
        summary = list(csv.DictReader(stream))
    # The old iwae run stays on disk, out of the summary, listed as stale with the reason.
    assert len(summary) == 2
    with open(tmp_path / "tiny" / "stale.csv") as stream:
        (stale,) = csv.DictReader(stream)
    assert stale["model"] == "iwae" and stale["run_id"] not in {row["run_id"] for row in summary}
    assert stale["reason"] == "model.hyperparameters.latent_dim: 3 -> 4"


def test_a_failed_cell_is_retried_on_the_next_invocation(tiny_suite, tmp_path, capsys,
                                                         iwae_diverges):
    assert run(tiny_suite, tmp_path) == 1
    capsys.readouterr()
    assert run(tiny_suite, tmp_path) == 1  # still diverges, but it was tried again
    assert "1 finished, 1 to run (1 to train, 0 to evaluate; 1 of them failed last time)" \
        in capsys.readouterr().out
    assert main(["plan", str(tiny_suite), "--results-dir", str(tmp_path), "--device", "cpu"]) \
        == 0
    (line,) = [line for line in capsys.readouterr().out.splitlines() if "circles-iwae" in line]
    assert line.startswith("failed ") and "the last attempt failed (DivergenceError" in line


# --- record_failure: cells of a worker process that died -----------------------------------------


def planned_tasks(suite_path, results):
    """The tiny suite's planned cells as the tasks a worker would get."""
    from vae_zoo.harness.planner import plan_suite
    from vae_zoo.harness.runner import CellTask
    from vae_zoo.harness.store import SuiteStore

    suite = load_suite(str(suite_path))
    store = SuiteStore(results / suite.name)
    plan = plan_suite(suite, store, "cpu")
    return store, [CellTask(planned, store.root, "cpu", suite.project, "disabled")
                   for planned in plan.cells]


def test_record_failure_writes_a_failed_run_with_its_reason_and_traceback(tiny_suite, tmp_path):
    from vae_zoo.harness.runner import record_failure

    store, (task, _) = planned_tasks(tiny_suite, tmp_path)
    record = record_failure(task, "worker job died: UncompletedJobError: killed", "Traceback: x")
    assert record["status"] == "failed"
    written = store.read_metrics(task.run_id)
    assert written["status"] == "failed" and written["eval_id"] == task.planned.eval_id
    assert written["reason"] == "worker job died: UncompletedJobError: killed"
    assert written["metrics"] == {}
    assert (store.run_dir(task.run_id) / "error.txt").read_text() == "Traceback: x"
    assert store.read_config(task.run_id)["run_id"] == task.run_id
    assert store.read_training(task.run_id)["status"] == "failed"
    assert not store.training_finished(task.run_id)


def test_record_failure_keeps_a_finished_training_for_the_next_evaluation(tiny_results,
                                                                          tmp_path):
    """A worker that died while re-evaluating a finished training leaves the run as it was:
    the next invocation evaluates the stored checkpoint again instead of training."""
    import shutil

    from vae_zoo.harness.planner import EVALUATE
    from vae_zoo.harness.runner import record_failure

    suite_path, results = tiny_results
    shutil.copytree(results, tmp_path / "results")
    changed = tmp_path / "tiny.toml"
    changed.write_text(suite_path.read_text().replace("nll_samples = 20", "nll_samples = 30"))
    store, (task, _) = planned_tasks(changed, tmp_path / "results")
    assert task.planned.action == EVALUATE
    before = {path.name: path.read_bytes() for path in store.run_dir(task.run_id).iterdir()}
    assert record_failure(task, "worker job died: killed", "Traceback")["status"] == "failed"
    after = {path.name: path.read_bytes() for path in store.run_dir(task.run_id).iterdir()}
    assert after == before
    _, (again, _) = planned_tasks(changed, tmp_path / "results")
    assert again.planned.action == EVALUATE and not again.planned.failed


def test_record_failure_leaves_a_cell_that_another_process_is_running_alone(tiny_suite,
                                                                          tmp_path):
    from vae_zoo.harness.runner import record_failure

    store, (task, _) = planned_tasks(tiny_suite, tmp_path)
    with store.claim(task.run_id) as claimed:  # e.g. a second `vae-zoo run` on these results
        assert claimed
        record_failure(task, "worker job died: killed", "Traceback")
    assert not store.run_dir(task.run_id).exists()
