"""Command-line paths a user reaches besides `vae-zoo run`: rebuilding the summary, the report,
W&B sync, a worker process that dies, staging folders left by killed processes, a Gaussian
model's images, a dataset that cannot be downloaded, `--force`, `--jobs`, Ctrl-C and
`nll_images`.

Each test goes through `vae_zoo.cli.main` (or the `vae-zoo` script where a real process is
needed) and checks what a user sees: the exit status, the message, the files on disk and the
metric values in them. Tests that only read results work on a copy of the session's
`tiny_results`.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_SUITE
from terminal import interrupt_after_first_run

import vae_zoo
from vae_zoo.cli import main
from vae_zoo.harness import runner, tracking
from vae_zoo.harness import store as store_module
from vae_zoo.harness.store import IDENTITY_COLUMNS, read_arrays

pytestmark = pytest.mark.usefixtures("one_thread")

SUITE = "tiny"  # the name of the suite in conftest's TINY_SUITE file (tiny.toml)
VAE_ZOO = Path(sys.executable).with_name("vae-zoo")  # the installed console script


# --- helpers -------------------------------------------------------------------------------------


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as stream:
        return list(csv.DictReader(stream))


def header(path: Path) -> list[str]:
    with open(path, newline="") as stream:
        return next(csv.reader(stream))


def run_dirs(results: Path, suite: str = SUITE) -> list[Path]:
    """The visible run directories of a suite (hidden entries are the store's own)."""
    runs = results / suite / "runs"
    return sorted(p for p in runs.iterdir() if p.is_dir() and not p.name.startswith(".")) \
        if runs.is_dir() else []


def hidden_staging(results: Path, suite: str = SUITE) -> list[str]:
    runs = results / suite / "runs"
    return sorted(p.name for p in runs.iterdir() if p.name.startswith(".staging@")) \
        if runs.is_dir() else []


def record_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def cached_feature_nets(tiny_results, results: Path) -> None:
    """Give a fresh results directory the tiny suite's cached feature network, so that a test
    that runs the tiny suite again does not train it again (it is keyed by the data)."""
    shutil.copytree(tiny_results[1] / "_cache", results / "_cache")


def dead_pid() -> int:
    """The id of a process that has exited (and been reaped)."""
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


# --- vae-zoo summary -----------------------------------------------------------------------------


def test_summary_rebuilds_summary_csv_with_one_row_per_run_holding_its_metrics_json(
        results_copy, capsys):
    """`vae-zoo summary SUITE` rewrites summary.csv and stale.csv from the run directories alone:
    one row per run, the identity columns first, then one column per metric, each value the one
    in that run's metrics.json; the file is the one `vae-zoo run` wrote."""
    suite, results = results_copy
    written_by_run = (results / SUITE / "summary.csv").read_bytes()
    (results / SUITE / "summary.csv").unlink()
    (results / SUITE / "stale.csv").unlink()

    assert main(["summary", str(suite), "--results-dir", str(results), "--device", "cpu",
                 "--wandb", "disabled"]) == 0
    assert "summary of 2 finished cells" in capsys.readouterr().out

    summary = results / SUITE / "summary.csv"
    rows = read_rows(summary)
    records = {run_dir.name: record_of(run_dir) for run_dir in run_dirs(results)}
    assert sorted(row["run_id"] for row in rows) == sorted(records) and len(rows) == 2
    metric_names = {name for record in records.values() for name in record["metrics"]}
    columns = header(summary)
    assert columns[:len(IDENTITY_COLUMNS)] == IDENTITY_COLUMNS
    assert set(columns[len(IDENTITY_COLUMNS):]) == metric_names  # nothing else, nothing missing
    for row in rows:
        record = records[row["run_id"]]
        assert (row["status"], row["eval_id"], row["suite"]) == ("finished", record["eval_id"],
                                                                 SUITE)
        for name, value in record["metrics"].items():
            assert float(row[name]) == value, (row["run_id"], name)  # exact: floats round-trip
    assert summary.read_bytes() == written_by_run
    assert read_rows(results / SUITE / "stale.csv") == []


def test_summary_of_a_suite_that_has_no_results_exits_2_saying_so(tiny_suite, tmp_path, capsys):
    assert main(["summary", str(tiny_suite), "--results-dir", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no runs of suite 'tiny' in ") and "Traceback" not in err
    assert not (tmp_path / "none").exists()


def test_summary_without_summary_csv_keeps_runs_made_on_another_device_class(
        results_copy, monkeypatch, capsys):
    """README: with `--no-wait`, `vae-zoo summary SUITE` rebuilds the summary when the jobs are
    done. The machine it is typed on (a login node) may have another device class than the jobs:
    here CPU runs are summarised on a machine where CUDA is the default."""
    suite, results = results_copy
    (results / SUITE / "summary.csv").unlink()  # as after `run --no-wait`
    monkeypatch.setattr(runner, "default_device", lambda: "cuda")
    assert main(["summary", str(suite), "--results-dir", str(results), "--wandb",
                 "disabled"]) == 0
    assert len(read_rows(results / SUITE / "summary.csv")) == 2


# --- vae-zoo report ------------------------------------------------------------------------------


def test_report_writes_its_tables_figures_and_page_and_says_how_many_files(
        results_copy, tmp_path, capsys):
    """`vae-zoo report` exits 0 and writes reports/<suite>/: README.md, a table per dataset in
    CSV, Markdown and LaTeX, PNG figures; the count it prints is the number of files written,
    and the table's per-model mean over the one seed is that run's metric."""
    suite, results = results_copy
    out = tmp_path / "reports"
    assert main(["report", str(suite), "--results-dir", str(results), "--out", str(out),
                 "--wandb", "disabled"]) == 0
    report = out / SUITE
    files = sorted(p.relative_to(report).as_posix() for p in report.rglob("*") if p.is_file())
    assert f"report of tiny: {len(files)} files in {report}" in capsys.readouterr().out
    assert {"README.md", "tables/circles.csv", "tables/circles.md", "tables/circles.tex"} \
        <= set(files)
    figures = [name for name in files if name.startswith("figures/") and name.endswith(".png")]
    assert "figures/learning-curves.png" in figures
    for name in figures:
        assert (report / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    table = {row["model"]: row for row in read_rows(report / "tables" / "circles.csv")}
    for run_dir in run_dirs(results):
        record, config = record_of(run_dir), json.loads((run_dir / "config.json").read_text())
        row = table[config["model"]["name"]]
        assert float(row["test_nll_mean"]) == pytest.approx(record["metrics"]["test_nll"],
                                                            rel=1e-12)
    assert "circles" in (report / "README.md").read_text()


@pytest.mark.parametrize("layout", ["no suite folder", "empty runs folder"])
def test_report_of_a_results_folder_without_runs_exits_2_with_one_message(
        tiny_suite, tmp_path, capsys, layout):
    """No results at all, or a runs/ folder with no run in it (a suite interrupted during its
    first cell): exit 2, one `error:` message that says to run the suite first, no report."""
    results = tmp_path / "results"
    if layout == "empty runs folder":
        (results / SUITE / "runs").mkdir(parents=True)
    out = tmp_path / "reports"
    assert main(["report", str(tiny_suite), "--results-dir", str(results), "--out", str(out),
                 "--wandb", "disabled"]) == 2
    captured = capsys.readouterr()
    (line,) = captured.err.splitlines()
    assert line.startswith("error: no r") and "vae-zoo run" in line
    assert "Traceback" not in captured.err + captured.out
    assert not (out / SUITE / "README.md").exists()


# --- vae-zoo sync --------------------------------------------------------------------------------


@pytest.fixture
def logged_out(monkeypatch, tmp_path):
    """No W&B credentials or mode from the machine, and W&B's process state as in a new process."""
    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setattr(tracking, "_process", tracking._ProcessState())
    yield
    import wandb

    wandb.teardown()  # stop the W&B service an offline run started


@pytest.fixture
def offline_results(results_copy, logged_out) -> tuple[Path, Path]:
    """The tiny results with one offline W&B run, the suite's summary run, logged by the CLI."""
    suite, results = results_copy
    assert main(["summary", str(suite), "--results-dir", str(results), "--device", "cpu",
                 "--wandb", "offline"]) == 0
    assert len(tracking.offline_run_dirs(results / SUITE / "wandb")) == 1
    return suite, results


def test_sync_runs_wandb_sync_on_every_offline_run_of_the_suite(offline_results, monkeypatch,
                                                                  capsys):
    """`vae-zoo sync SUITE` hands the suite's offline run folders to `wandb sync`. The machine is
    offline, so the real `wandb sync` runs with `--dry-run` added: it checks the folders and
    uploads nothing."""
    suite, results = offline_results
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    commands = []
    real_popen = subprocess.Popen

    def dry_run(command, **options):
        commands.append(list(command))
        at = command.index("sync") + 1
        return real_popen([*command[:at], "--dry-run", *command[at:]], **options)

    monkeypatch.setattr(tracking.subprocess, "Popen", dry_run)
    monkeypatch.setattr(tracking, "server_problem", lambda: None)  # offline: wandb's dry run
    assert main(["sync", str(suite), "--results-dir", str(results)]) == 0
    (command,) = commands
    offline_runs = sorted(str(p) for p in (results / SUITE / "wandb").glob("offline-run-*"))
    assert command[1:5] == ["-m", "wandb", "sync", "--yes"] and command[5:] == offline_runs
    assert f"W&B: synced 1 offline run folder(s) from {results / SUITE / 'wandb'}" \
        in capsys.readouterr().out


class ExitedProcess:
    """What `subprocess.Popen` returns, for a process that printed `output` and exited."""

    def __init__(self, status: int, output: bytes, stdout):
        stdout.write(output)
        stdout.flush()
        self.pid, self.returncode = os.getpid(), status

    def wait(self, timeout=None) -> int:
        return self.returncode


def test_sync_that_cannot_reach_the_server_exits_with_wandbs_status_and_its_error_line(
        offline_results, monkeypatch, capsys):
    suite, results = offline_results
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    output = (b"wandb: Syncing: offline-run-x ...\n"
              b"wandb: ERROR Unable to connect to https://api.wandb.ai: Name or service not known\n"
              b"wandb: done.\n")
    monkeypatch.setattr(tracking.subprocess, "Popen",
                        lambda command, stdout, **_: ExitedProcess(1, output, stdout))
    monkeypatch.setattr(tracking, "server_problem", lambda: None)
    assert main(["sync", str(suite), "--results-dir", str(results)]) == 1
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [
        "error: W&B sync failed (exit 1): wandb: ERROR Unable to connect to "
        "https://api.wandb.ai: Name or service not known"]
    assert "synced" not in captured.out


def test_sync_without_an_api_key_exits_1_saying_how_to_log_in_and_runs_nothing(
        offline_results, monkeypatch, capsys):
    suite, results = offline_results

    def no_process(*args, **kwargs):
        raise AssertionError("wandb sync was started without an API key")

    monkeypatch.setattr(tracking.subprocess, "Popen", no_process)
    assert main(["sync", str(suite), "--results-dir", str(results)]) == 1
    assert capsys.readouterr().err == ("error: W&B sync needs an API key: run `wandb login` or "
                                       "set WANDB_API_KEY\n")


def test_sync_of_a_suite_without_offline_runs_succeeds_and_says_so(results_copy, logged_out,
                                                                   capsys):
    suite, results = results_copy  # the tiny results were made with --wandb disabled
    assert main(["sync", str(suite), "--results-dir", str(results)]) == 0
    assert capsys.readouterr().out == f"W&B: no offline runs under {results / SUITE / 'wandb'}\n"


# --- failures: a cell whose training raises, a worker process that dies -------------------------


def test_a_cell_whose_training_raises_is_failed_with_its_reason_and_the_others_finish(
        tiny_results, tiny_suite, tmp_path, monkeypatch, capsys):
    """Any exception in a cell's training is that cell's result: the suite goes on, lists the
    failure with its one-line reason and where its traceback is, and exits 1."""
    results = tmp_path / "results"
    cached_feature_nets(tiny_results, results)
    real_train = runner.train

    def out_of_memory_for_iwae(model, objective, data, settings, **options):
        if objective.name == "iwae":
            raise RuntimeError("out of memory (simulated)\nsecond line of the message")
        return real_train(model, objective, data, settings, **options)

    monkeypatch.setattr(runner, "train", out_of_memory_for_iwae)
    assert main(["run", str(tiny_suite), "--results-dir", str(results), "--device", "cpu",
                 "--wandb", "disabled"]) == 1
    out = capsys.readouterr().out
    runs = {json.loads((d / "config.json").read_text())["model"]["name"]: d
            for d in run_dirs(results)}
    failed = runs["iwae"]
    assert f"  FAILED {failed.name}: RuntimeError: out of memory (simulated) (traceback in " \
           f"{failed / 'error.txt'})" in out
    assert record_of(failed)["status"] == "failed"
    assert record_of(failed)["reason"] == "RuntimeError: out of memory (simulated)"
    error = (failed / "error.txt").read_text()
    assert error.startswith("Traceback") and "second line of the message" in error
    assert record_of(runs["mlp-vae"])["status"] == "finished"
    assert "test_nll" in record_of(runs["mlp-vae"])["metrics"]
    summary = {row["model"]: row for row in read_rows(results / SUITE / "summary.csv")}
    assert summary["iwae"]["status"] == "failed" and summary["mlp-vae"]["status"] == "finished"
    assert summary["iwae"]["test_nll"] == "" and float(summary["mlp-vae"]["test_nll"]) > 0


def test_a_worker_that_dies_fails_the_cells_it_did_not_record_and_keeps_the_others(
        tiny_results, tiny_suite, tmp_path, monkeypatch, capsys):
    """`--jobs 2` deals cells 0, 2 to one worker process and cell 1 to the other. The first
    worker is killed (SIGKILL, as the OOM killer does) after recording cell 0, before cell 2:
    cell 2 is recorded as failed by the parent (`record_failure`) with the reason, cells 0 and 1
    stay finished, the exit status is 1 and the next plan retries only cell 2."""
    tiny_suite.write_text(tiny_suite.read_text().split("[model.iwae]")[0]
                          .replace('models = ["mlp-vae", "iwae"]', 'models = ["mlp-vae"]')
                          .replace("seeds = [0]", "seeds = [0, 1, 2]"))
    results = tmp_path / "results"
    cached_feature_nets(tiny_results, results)

    def submit_dying_workers(executor, groups, threads):
        def run_then_die_before_seed_2(tasks, threads):  # runs in the worker process
            import os
            import signal

            from vae_zoo.harness.executors import run_cell_group

            outcomes = []
            for task in tasks:
                if task.cell.seed == 2:
                    os.kill(os.getpid(), signal.SIGKILL)
                outcomes += run_cell_group([task], threads)
            return outcomes

        jobs = executor.map_array(run_then_die_before_seed_2, groups, [threads] * len(groups))
        for job in jobs:  # submitit waits 15 s for a dead job's result file (slow filesystems)
            job._results_timeout_s = 0
        return jobs

    monkeypatch.setattr(runner, "submit_groups", submit_dying_workers)
    assert main(["run", str(tiny_suite), "--results-dir", str(results), "--device", "cpu",
                 "--wandb", "disabled", "--jobs", "2"]) == 1
    out = capsys.readouterr().out
    by_seed = {json.loads((d / "config.json").read_text())["seed"]: d for d in run_dirs(results)}
    assert sorted(by_seed) == [0, 1, 2]
    died = by_seed[2]
    assert f"  FAILED {died.name}: worker job died: " in out
    record = record_of(died)
    assert record["status"] == "failed" and record["reason"].startswith("worker job died: ")
    assert record["metrics"] == {} and (died / "error.txt").read_text().strip()
    assert json.loads((died / "training.json").read_text())["status"] == "failed"
    for seed in (0, 1):
        assert record_of(by_seed[seed])["status"] == "finished"
        assert record_of(by_seed[seed])["metrics"]["test_nll"] > 0
    summary = {row["seed"]: row["status"] for row in read_rows(results / SUITE / "summary.csv")}
    assert summary == {"0": "finished", "1": "finished", "2": "failed"}
    assert main(["plan", str(tiny_suite), "--results-dir", str(results), "--device",
                 "cpu"]) == 0
    plan = capsys.readouterr().out
    assert "2 finished, 1 to run (1 to train, 0 to evaluate; 1 of them failed last time)" in plan


# --- staging folders of killed processes ---------------------------------------------------------


def test_the_next_run_recovers_or_clears_staging_folders_of_dead_processes_only(
        results_copy, tmp_path, capsys):
    """Staging folders are named `.staging@<host>@<pid>@<run_id>-<random>`. On the next
    `vae-zoo run`: a complete one of a dead process (killed between moving the old run aside and
    moving the new one in) becomes the run, which is not retrained; an incomplete one of a dead
    process is deleted; one of a live process is left alone."""
    suite, results = results_copy
    runs = results / SUITE / "runs"
    mlp, iwae = (next(runs.glob(f"circles-{model}-s0-*")) for model in ("mlp-vae", "iwae"))
    mlp_metrics = (mlp / "metrics.json").read_bytes()
    host, dead = socket.gethostname(), dead_pid()
    complete = runs / f".staging@{host}@{dead}@{mlp.name}-abcd1234"
    os.rename(mlp, complete)
    (complete / ".staged").touch()
    partial = runs / f".staging@{host}@{dead}@{iwae.name}-ef567890"
    partial.mkdir()
    (partial / "metrics.json").write_text('{"status": "fini')
    live = subprocess.Popen(["sleep", "120"])
    try:
        busy = runs / f".staging@{host}@{live.pid}@{iwae.name}-12345678"
        busy.mkdir()
        (busy / "config.json").write_text("{}")
        assert main(["run", str(suite), "--results-dir", str(results), "--device", "cpu",
                     "--wandb", "disabled"]) == 0
        assert "2 finished, 0 to run" in capsys.readouterr().out
        assert (mlp / "metrics.json").read_bytes() == mlp_metrics
        assert not (mlp / ".staged").exists()
        assert hidden_staging(results) == [busy.name]
        assert (busy / "config.json").read_text() == "{}"
    finally:
        live.kill()
        live.wait()


# --- a Gaussian model's samples and reconstructions ----------------------------------------------

# conftest's tiny suite with mlp-vae alone, on grey levels, with a Gaussian likelihood.
GAUSSIAN_SUITE = (TINY_SUITE.split("[model.iwae]")[0]
                  .replace('models = ["mlp-vae", "iwae"]', 'models = ["mlp-vae"]')
                  .replace("test_size = 100\n", 'test_size = 100\nbinarize = "none"\n')
                  + 'likelihood = "gaussian"\n')


def test_a_gaussian_models_images_are_its_decoder_means_clipped_to_the_unit_interval(tmp_path):
    """For the Gaussian likelihood the decoder outputs the mean itself (`GaussianLikelihood.mean`
    is the identity): the stored sample grid is decoder(z) for z ~ N(0, I) drawn with the cell's
    seed, the reconstructions decoder(E_q[z|x]) of the first test images, both clipped to [0, 1]
    (as arrays.npz stores images), and test_mse is the squared error of the unclipped mean."""
    suite = tmp_path / "gaussian.toml"
    suite.write_text(GAUSSIAN_SUITE)
    results = tmp_path / "results"
    assert main(["run", str(suite), "--results-dir", str(results), "--device", "cpu",
                 "--wandb", "disabled"]) == 0
    (run_dir,) = run_dirs(results, "gaussian")
    run = vae_zoo.load(run_dir, device="cpu")
    assert type(run.model.likelihood).__name__ == "GaussianLikelihood"
    stored = read_arrays(run_dir)
    test_images = run.dataset().test.images
    originals = test_images[:8]
    with torch.no_grad():
        posterior_mean, _ = run.model.encoder(originals)
        reconstructions = run.model.decoder(posterior_mean).clamp(0, 1)
        z = torch.randn(8, 3, generator=torch.Generator().manual_seed(0))
        samples = run.model.decoder(z).clamp(0, 1)
        all_means = run.model.decoder(run.model.encoder(test_images)[0])
    # arrays.npz holds float16: 11 significant bits, an error below 2.5e-4 in [0, 1].
    assert torch.allclose(torch.from_numpy(stored["originals"]), originals, atol=5e-4)
    assert torch.allclose(torch.from_numpy(stored["reconstructions"]), reconstructions,
                          atol=5e-4)
    assert torch.allclose(torch.from_numpy(stored["samples"]), samples, atol=5e-4)
    assert stored["samples"].min() >= 0 and stored["samples"].max() <= 1
    squared_error = (all_means.double() - test_images.double()).pow(2).mean().item()
    assert run.metrics["test_mse"] == pytest.approx(squared_error, rel=1e-6)


# --- a dataset that is not on disk and cannot be downloaded --------------------------------------

MNIST_SUITE = 'datasets = ["mnist"]\nmodels = ["mlp-vae"]\nseeds = [0]\n'


@pytest.fixture
def offline_downloads(tmp_path, monkeypatch) -> list[str]:
    """No MNIST files anywhere and no network: every URL torchvision opens fails as it does on
    this machine. Returns the URLs it tried."""
    monkeypatch.setenv("VAE_ZOO_DATA", str(tmp_path / "data"))
    tried = []

    def no_network(request, *args, **kwargs):
        tried.append(getattr(request, "full_url", request))
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    return tried


def test_a_dataset_that_cannot_be_downloaded_exits_2_with_a_message_and_no_traceback(
        tmp_path, offline_downloads, capsys):
    suite = tmp_path / "mnist.toml"
    suite.write_text(MNIST_SUITE)
    results = tmp_path / "results"
    assert main(["run", str(suite), "--results-dir", str(results), "--device", "cpu",
                 "--wandb", "disabled"]) == 2
    captured = capsys.readouterr()
    assert any(url.endswith("train-images-idx3-ubyte.gz") for url in offline_downloads)
    assert "Traceback" not in captured.out + captured.err
    err = captured.err
    assert err.startswith("error: dataset 'mnist' not found: no IDX files")
    assert err.count("error:") == 1
    assert str(tmp_path / "data" / "mnist") in err and "the download failed" in err
    assert "run once with internet access" in err and "$VAE_ZOO_DATA/mnist/" in err
    assert run_dirs(results, "mnist") == []


def test_a_failed_download_is_one_message_on_stderr_that_says_why(tmp_path, offline_downloads,
                                                                  capsys):
    """README: bad input exits 2 'with one message saying what is wrong and how to fix it'."""
    suite = tmp_path / "mnist.toml"
    suite.write_text(MNIST_SUITE)
    assert main(["run", str(suite), "--results-dir", str(tmp_path / "results"), "--device",
                 "cpu", "--wandb", "disabled"]) == 2
    captured = capsys.readouterr()
    assert "Name or service not known" in captured.err
    assert "download" not in captured.out.lower()


# --- --force, --jobs, Ctrl-C ---------------------------------------------------------------------


def test_force_retrains_finished_cells_and_moves_their_old_runs_to_replaced(results_copy,
                                                                             capsys):
    """Without --force a finished run is left byte for byte as it is; with --force every cell is
    trained again and each old run directory moves, whole, to results/<suite>/replaced/."""
    suite, results = results_copy
    old = {d.name: (d / "metrics.json").read_bytes() for d in run_dirs(results)}
    command = ["run", str(suite), "--results-dir", str(results), "--device", "cpu", "--wandb",
               "disabled"]
    assert main(command) == 0
    assert "2 finished, 0 to run" in capsys.readouterr().out
    assert {d.name: (d / "metrics.json").read_bytes() for d in run_dirs(results)} == old

    assert main([*command, "--force"]) == 0
    assert "0 finished, 2 to run (2 to train, 0 to evaluate)" in capsys.readouterr().out
    replaced = sorted((results / SUITE / "replaced").iterdir())
    assert len(replaced) == 2
    for archived in replaced:
        run_id = next(name for name in old if archived.name.startswith(f"{name}-"))
        assert (archived / "metrics.json").read_bytes() == old[run_id]
        assert (archived / "checkpoint.safetensors").is_file()
        new = results / SUITE / "runs" / run_id
        assert record_of(new)["status"] == "finished"
        assert (new / "metrics.json").read_bytes() != old[run_id]  # a new run, new provenance
    assert sorted(row["run_id"] for row in read_rows(results / SUITE / "summary.csv")) \
        == sorted(old)


@pytest.mark.parametrize("jobs", ["0", "-2"])
def test_jobs_below_1_is_bad_input_and_runs_nothing(tiny_suite, tmp_path, capsys, jobs):
    """`--jobs N` runs N cells at once (README); N < 1 is refused, not read as 'all cores'."""
    results = tmp_path / "results"
    assert main(["run", str(tiny_suite), "--results-dir", str(results), "--device", "cpu",
                 "--wandb", "disabled", "--jobs", jobs]) == 2
    assert capsys.readouterr().err == (f"error: --jobs {jobs}: expected a positive number of "
                                       "cells at once\n")
    assert not results.exists()


def test_ctrl_c_exits_130_keeps_finished_runs_and_the_next_run_resumes(
        tiny_results, tiny_suite, tmp_path, monkeypatch, capsys):
    """Ctrl-C while the second cell's files are being written: exit 130 with one line saying
    what is kept; the first cell's run is complete, the second left no run and no staging
    folder, and the next invocation runs only the second."""
    results = tmp_path / "results"
    cached_feature_nets(tiny_results, results)
    real_compact, writes = store_module.compact, []

    def ctrl_c_on_the_second_write(arrays):
        writes.append(1)
        if len(writes) == 2:
            raise KeyboardInterrupt
        return real_compact(arrays)

    monkeypatch.setattr(store_module, "compact", ctrl_c_on_the_second_write)
    command = ["run", str(tiny_suite), "--results-dir", str(results), "--device", "cpu",
               "--wandb", "disabled"]
    assert main(command) == 130
    assert capsys.readouterr().err.splitlines()[-1] == (
        "interrupted: finished runs are kept; unfinished cells rerun next time.")
    (kept,) = run_dirs(results)
    assert record_of(kept)["status"] == "finished"
    assert hidden_staging(results) == []

    monkeypatch.setattr(store_module, "compact", real_compact)
    kept_metrics = (kept / "metrics.json").read_bytes()
    assert main(command) == 0
    assert "1 finished, 1 to run (1 to train, 0 to evaluate)" in capsys.readouterr().out
    assert len(run_dirs(results)) == 2
    assert all(record_of(d)["status"] == "finished" for d in run_dirs(results))
    assert (kept / "metrics.json").read_bytes() == kept_metrics


def test_ctrl_c_on_a_running_vae_zoo_process_exits_130_leaving_only_complete_runs(
        tiny_suite, tmp_path):
    """SIGINT, as the terminal sends on Ctrl-C, to a real `vae-zoo run` once its first cell is
    recorded: exit status 130, the one-line message, no traceback, and every run directory left
    is complete and finished."""
    # Ten cells: after the first is recorded, the others take seconds, and SIGINT comes within
    # 50 ms.
    tiny_suite.write_text(tiny_suite.read_text().replace("seeds = [0]", "seeds = [0, 1, 2, 3, 4]")
                          .replace("epochs = 2", "epochs = 4"))
    results = tmp_path / "results"
    process = interrupt_after_first_run(
        [str(VAE_ZOO), "run", str(tiny_suite), "--results-dir", str(results), "--device", "cpu",
         "--wandb", "disabled"], results / SUITE / "runs",
        lambda pid: os.killpg(pid, signal.SIGINT), timeout=120)
    output = process.stdout
    assert process.returncode == 130, output
    assert "interrupted: finished runs are kept; unfinished cells rerun next time." in output
    assert "Traceback" not in output
    for run_dir in run_dirs(results):
        assert record_of(run_dir)["status"] == "finished"
        assert {"config.json", "training.json", "history.csv", "checkpoint.safetensors",
                "arrays.npz"} <= {p.name for p in run_dir.iterdir()}
    assert hidden_staging(results) == []


# --- nll_images ----------------------------------------------------------------------------------


def importance_sampled_log_px(model, images: torch.Tensor, k: int, chunk: int) -> torch.Tensor:
    """log p(x) per image by importance sampling with K = k draws from q(z|x), written out:
    z = μ + σ·ε with ε drawn from the global stream as (k_i, N, d) in the estimator's pieces
    (chunks of `chunk`, cut at ⌈k/10⌉), N(0, I) prior, Bernoulli pixels;
    log mean_k p(x, z_k) / q(z_k|x)."""
    bounds = sorted({*range(0, k, chunk), -(-k // 10), k})
    with torch.no_grad():
        mean, log_var = model.encoder(images)
        std = torch.exp(0.5 * log_var)
        noise = torch.cat([torch.randn(stop - start, *mean.shape)
                           for start, stop in zip(bounds[:-1], bounds[1:])])
        z = mean + noise * std
        log_q = (-0.5 * noise.pow(2) - torch.log(std) - 0.5 * math.log(2 * math.pi)).sum(-1)
        log_prior = (-0.5 * z.pow(2) - 0.5 * math.log(2 * math.pi)).sum(-1)
        logits = model.decoder(z)
        log_px_given_z = (images * logits - F.softplus(logits)).flatten(-3).sum(-1)
        log_w = (log_px_given_z + log_prior - log_q).double()
        return torch.logsumexp(log_w, 0) - math.log(k)


def test_nll_images_evaluates_test_nll_and_iwae_bounds_on_the_first_n_test_images_only(
        results_copy, tmp_path, capsys):
    """`[eval] nll_images = 5` changes only the evaluation: `vae-zoo evaluate` re-evaluates the
    trained cells without training. test_nll (K = 20), its standard error and iwae_k1, iwae_k5
    are then the importance-sampled estimates on the first 5 test images, computed here by hand
    from the same seeded draws; test_elbo moves to the same 5 images."""
    suite, results = results_copy
    changed = tmp_path / "changed" / "tiny.toml"
    changed.parent.mkdir()
    changed.write_text(suite.read_text().replace("nll_samples = 20",
                                                 "nll_samples = 20\nnll_images = 5"))
    before = {d.name: record_of(d) for d in run_dirs(results)}
    checkpoints = {d.name: (d / "checkpoint.safetensors").read_bytes() for d in run_dirs(results)}
    assert main(["evaluate", str(changed), "--results-dir", str(results), "--device", "cpu",
                 "--wandb", "disabled"]) == 0
    assert "0 finished, 2 to run (0 to train, 2 to evaluate)" in capsys.readouterr().out
    for run_dir in run_dirs(results):
        assert (run_dir / "checkpoint.safetensors").read_bytes() == checkpoints[run_dir.name]
        run = vae_zoo.load(run_dir, device="cpu")
        metrics, seed = run.metrics, run.config["seed"]
        images = run.dataset().test.images
        chunk = run.config["eval"]["nll_chunk"]
        torch.manual_seed(seed)  # the "nll" group's stream
        first = importance_sampled_log_px(run.model, images[:5], 20, chunk)
        assert metrics["test_nll"] == pytest.approx(-first.mean().item(), abs=1e-4)
        assert metrics["test_nll_se"] == pytest.approx(first.std().item() / math.sqrt(5),
                                                       rel=1e-3)
        torch.manual_seed(seed)  # the "iwae" group's stream: k = 1, then k = 5
        iwae_k1 = importance_sampled_log_px(run.model, images[:5], 1, chunk).mean().item()
        iwae_k5 = importance_sampled_log_px(run.model, images[:5], 5, chunk).mean().item()
        assert metrics["iwae_k1"] == pytest.approx(iwae_k1, abs=1e-4)
        assert metrics["iwae_k5"] == pytest.approx(iwae_k5, abs=1e-4)
        # The same estimate on every test image is another number: the check above can fail.
        torch.manual_seed(seed)
        every = -importance_sampled_log_px(run.model, images, 20, chunk).mean().item()
        assert abs(every - metrics["test_nll"]) > 100 * 1e-4
        # The ELBO moved to the same five images, kept per image like the NLL.
        arrays = np.load(run_dir / "arrays.npz")
        assert arrays["image_elbo"].shape == arrays["image_log_px"].shape == (5,)
        assert metrics["test_elbo"] == pytest.approx(
            arrays["image_elbo"].astype(np.float64).mean(), abs=1e-4)
        assert metrics["test_elbo"] != before[run_dir.name]["metrics"]["test_elbo"]
