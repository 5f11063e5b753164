"""Where cells run: in this process, in N local worker processes, or as a SLURM job array.

Local workers and SLURM jobs go through the same submitit interface (`map_array` of
`run_cell_group`), so the code that ships work to a cluster is the code the tests run locally.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vae_zoo.errors import StorageError, UserError

EXECUTORS = ("local", "slurm")
UNSAVED = "unsaved"  # an outcome whose results could not be written (its reason says why)
STOP_SECONDS = 60.0  # how long stopped local workers get to leave before they are killed


class WorkerStopped(BaseException):
    """SIGTERM (or SIGINT) reached a worker: it stops after the cells it finished."""


@dataclass(frozen=True)
class SlurmOptions:
    """Resources of each array task; the suite's [slurm] table, overridden on the command line.
    Bounds in the fields' metadata, as for `TrainConfig`."""

    partition: str | None = None
    time_min: int = field(default=240, metadata={"maximum": 525_600})
    gpus_per_node: int = field(default=0, metadata={"maximum": 64})
    cpus_per_task: int = field(default=2, metadata={"maximum": 1024})
    mem_gb: int = field(default=16, metadata={"maximum": 65_536})
    array_parallelism: int = field(default=64, metadata={"maximum": 100_000})
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    setup: tuple[str, ...] = field(default_factory=tuple)  # shell lines run before each task

    def submitit_parameters(self) -> dict:
        parameters = {
            "timeout_min": self.time_min,
            "gpus_per_node": self.gpus_per_node,
            "cpus_per_task": self.cpus_per_task,
            "mem_gb": self.mem_gb,
            "slurm_array_parallelism": self.array_parallelism,
            "name": "vae-zoo",
        }
        optional = {"slurm_partition": self.partition, "slurm_account": self.account,
                    "slurm_qos": self.qos, "slurm_constraint": self.constraint,
                    "slurm_setup": list(self.setup) or None}
        parameters.update({key: value for key, value in optional.items() if value is not None})
        return parameters


def worker_threads(jobs: int) -> int:
    """CPU threads per worker when `jobs` cells share this machine."""
    return max(1, (os.cpu_count() or 1) // jobs)


def run_cell_group(tasks: Sequence, threads: int | None) -> list[dict]:
    """Run cells one after another in this (worker) process (the seeds of a stack together,
    see `runner.stack_units`); the body of every submitted job.

    SIGTERM or SIGINT stops it quietly: the cell in progress leaves nothing behind (its staging
    folder is removed) and the outcomes of the finished ones are returned. A cell whose results
    cannot be written stops it too, with an `UNSAVED` outcome saying why.
    """
    import torch

    from vae_zoo.harness.runner import run_unit, stack_units

    if threads:
        torch.set_num_threads(threads)

    def stop(signum, frame) -> None:
        for number in (signal.SIGTERM, signal.SIGINT):
            signal.signal(number, signal.SIG_IGN)  # one stop is enough
        raise WorkerStopped(signal.Signals(signum).name)

    previous = {number: signal.signal(number, stop) for number in (signal.SIGTERM, signal.SIGINT)}
    outcomes = []
    try:
        for unit in stack_units(list(tasks)):
            outcomes.extend(run_unit(unit, progress_position=None))
    except WorkerStopped:
        pass
    except StorageError as error:
        outcomes.append({"run_id": unit[0].run_id, "status": UNSAVED, "reason": str(error)})
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    return outcomes


def make_submitit_executor(kind: str, folder: Path, *, jobs: int = 1,
                           slurm: SlurmOptions | None = None):
    """A submitit executor: `LocalExecutor` for local workers, `SlurmExecutor` for a cluster."""
    import submitit

    folder.mkdir(parents=True, exist_ok=True)
    if kind == "local":
        executor = submitit.LocalExecutor(folder=str(folder))
        # submitit's local default is a 2-minute time limit: a cell may take hours.
        executor.update_parameters(timeout_min=7 * 24 * 60)
        return executor
    if kind == "slurm":
        try:
            executor = submitit.AutoExecutor(folder=str(folder), cluster="slurm")
        except RuntimeError as error:  # submitit: 'Could not detect "srun"'
            raise UserError(f"--executor slurm: SLURM is not available here ({error}); run "
                            "`vae-zoo run` on a machine that can submit jobs (a login node), "
                            "or use the local executor with --jobs N") from None
        executor.update_parameters(**(slurm or SlurmOptions()).submitit_parameters())
        return executor
    raise UserError(f"unknown executor '{kind}'; valid executors: {', '.join(EXECUTORS)}")


def submit_groups(executor, groups: list[list], threads: int | None) -> list:
    """One job per group of cells (a SLURM job array, or local worker processes).

    Local workers start with SIGINT ignored (a disposition that processes inherit), so that a
    Ctrl-C to the terminal's process group reaches this process only, which stops them
    (`stop_jobs`) instead of each printing its own KeyboardInterrupt traceback.
    """
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return executor.map_array(run_cell_group, groups, [threads] * len(groups))
    finally:
        signal.signal(signal.SIGINT, previous)


def stop_jobs(jobs: list, patience: float = STOP_SECONDS) -> None:
    """Stop local jobs: SIGTERM to each job's controller, which passes it to its worker; a
    worker that has not left after `patience` seconds is killed with its controller."""
    for job in jobs:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(job.job_id), signal.SIGTERM)  # a local job's id is its controller's pid
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline and not all(job.done() for job in jobs):
        time.sleep(0.2)
    for job in jobs:
        if not job.done():
            controller = int(job.job_id)
            for pid in [*child_pids(controller), controller]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def child_pids(parent: int) -> list[int]:
    """The processes whose parent is `parent` (from /proc; none where there is no /proc)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            # "pid (command) state ppid ...": the command may hold spaces and parentheses.
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == parent:
                children.append(int(stat.parent.name))
    return children


def wait_for_jobs(jobs: list, on_poll: Callable[[], None], poll_seconds: float = 1.0) -> list:
    """Wait for every job, calling `on_poll` about once a second; returns (outcomes | error)."""
    while not all(job.done() for job in jobs):
        on_poll()
        time.sleep(poll_seconds)
    on_poll()
    results = []
    for job in jobs:
        try:
            results.append(job.result())
        except Exception as error:  # a worker that died: its unfinished cells are failed
            results.append(error)
    return results


def split_round_robin(items: list, groups: int) -> list[list]:
    """`items` dealt into at most `groups` non-empty lists (cells 0, N, 2N... to the first)."""
    return [group for group in (items[start::groups] for start in range(groups)) if group]
