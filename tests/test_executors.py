"""Executors: local worker processes and SLURM job arrays through one submitit interface."""

import csv
import os
import stat

from vae_zoo.cli import main
from vae_zoo.harness.executors import SlurmOptions, split_round_robin, worker_threads


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
