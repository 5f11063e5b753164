"""Executors: local worker processes and SLURM job arrays through one submitit interface."""

import contextlib
import csv
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

from vae_zoo.cli import main
from vae_zoo.harness.executors import (
    SlurmOptions,
    child_pids,
    split_round_robin,
    stop_jobs,
    worker_threads,
)


def summary_rows(results):
    with open(results / "tiny" / "summary.csv") as stream:
        return list(csv.DictReader(stream))


def test_cells_are_dealt_round_robin_into_groups():
    assert split_round_robin(list(range(5)), 2) == [[0, 2, 4], [1, 3]]
    assert split_round_robin([1], 4) == [[1]]
    assert worker_threads(1) == (os.cpu_count() or 1)
    assert worker_threads(10 * (os.cpu_count() or 1)) == 1


def test_the_job_array_path_runs_a_suite_through_local_worker_processes(tiny_suite, tmp_path):
    tiny_suite.write_text(tiny_suite.read_text().replace("seeds = [0]", "seeds = [0, 1]"))
    status = main(["run", str(tiny_suite), "--results-dir", str(tmp_path), "--jobs", "2",
                   "--wandb", "disabled"])
    assert status == 0
    rows = summary_rows(tmp_path)
    assert len(rows) == 4 and all(row["status"] == "finished" for row in rows)
    job_logs = list((tmp_path / "tiny" / "_jobs").glob("*_log.out"))
    assert len(job_logs) == 2  # two worker processes shared the four cells


def test_slurm_parameters_come_from_the_suite_and_command_line():
    parameters = SlurmOptions(partition="gpu", time_min=60, gpus_per_node=1,
                              setup=("module load cuda",)).submitit_parameters()
    assert parameters["slurm_partition"] == "gpu" and parameters["timeout_min"] == 60
    assert parameters["gpus_per_node"] == 1 and parameters["slurm_setup"] == ["module load cuda"]
    assert "slurm_account" not in parameters


def fake_slurm(bin_dir, log):
    """`srun` and `sbatch` stand-ins: sbatch keeps the script it was given and answers as SLURM
    does."""
    bin_dir.mkdir()
    scripts = {
        "srun": "#!/bin/sh\nexit 0\n",
        "sbatch": f'#!/bin/sh\nfor last; do :; done\ncp "$last" {log}\n'
                  'echo "Submitted batch job 4242"\n',
    }
    for name, text in scripts.items():
        path = bin_dir / name
        path.write_text(text)
        path.chmod(path.stat().st_mode | stat.S_IEXEC)


def test_slurm_submits_one_array_task_per_cell(tiny_suite, tmp_path, monkeypatch, capsys):
    script = tmp_path / "submitted.sh"
    fake_slurm(tmp_path / "bin", script)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    status = main(["run", str(tiny_suite), "--results-dir", str(tmp_path / "out"),
                   "--executor", "slurm", "--slurm-partition", "gpu", "--slurm-gpus", "1",
                   "--slurm-time", "90", "--no-wait", "--wandb", "disabled"])
    assert status == 0
    text = script.read_text()
    assert "#SBATCH --array=0-1%2" in text  # the tiny suite has two cells
    assert "#SBATCH --partition=gpu" in text and "#SBATCH --time=90" in text
    assert "#SBATCH --gpus-per-node=1" in text
    assert "vae-zoo summary" in capsys.readouterr().out


def test_slurm_without_a_cluster_is_bad_input(tiny_suite, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # no srun
    status = main(["run", str(tiny_suite), "--results-dir", str(tmp_path / "out"),
                   "--executor", "slurm", "--wandb", "disabled"])
    assert status == 2
    assert "SLURM is not available here" in capsys.readouterr().err


class LocalJobStandIn:
    """What `stop_jobs` reads of a submitit local job: its id (the controller's pid), done()."""

    def __init__(self, process: subprocess.Popen):
        self.process, self.job_id = process, str(process.pid)

    def done(self) -> bool:
        return self.process.poll() is not None


def test_stop_jobs_kills_a_controller_and_its_worker_that_ignore_sigterm():
    """A job that has not left `patience` seconds after SIGTERM is killed, its worker (a child of
    the controller) with it."""
    ignoring = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    controller = subprocess.Popen([sys.executable, "-c", ignoring + (
        "import subprocess, sys; subprocess.Popen([sys.executable, '-c', "
        f"{ignoring + 'time.sleep(60)'!r}]); print('ready', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    assert controller.stdout.readline() == "ready\n"
    deadline = time.monotonic() + 10
    while not (workers := child_pids(controller.pid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    (worker,) = workers
    began = time.monotonic()
    stop_jobs([LocalJobStandIn(controller)], patience=0.5)
    assert controller.wait(timeout=10) == -signal.SIGKILL
    assert 0.5 <= time.monotonic() - began < 10
    deadline = time.monotonic() + 10
    while Path(f"/proc/{worker}").exists() and time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(worker, os.WNOHANG)  # reaped by init, not by us: this only hurries it
        time.sleep(0.05)
    status = Path(f"/proc/{worker}/stat")
    assert not status.exists() or status.read_text().rsplit(")", 1)[1].split()[0] == "Z"


def test_stop_jobs_sends_sigterm_and_waits_for_jobs_that_leave():
    controller = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    stop_jobs([LocalJobStandIn(controller)], patience=30)
    assert controller.wait(timeout=1) == -signal.SIGTERM
