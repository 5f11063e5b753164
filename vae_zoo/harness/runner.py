"""Running a suite: plan its cells, skip the finished ones, run the rest, record every outcome.

A cell is run by `run_cell`, a plain function of a picklable `CellTask`, so the same code runs it
in this process, in a worker process, or in a SLURM job.
"""

from __future__ import annotations

import os
import time
import traceback
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from vae_zoo import zoo
from vae_zoo.data import ImageData, load_dataset
from vae_zoo.evaluate import SampleReference, evaluate, sample_reference
from vae_zoo.harness import provenance
from vae_zoo.harness.executors import (
    SlurmOptions,
    make_submitit_executor,
    split_round_robin,
    submit_groups,
    wait_for_jobs,
    worker_threads,
)
from vae_zoo.harness.features import feature_net_for
from vae_zoo.harness.store import FAILED, FINISHED, SuiteStore
from vae_zoo.harness.suite import Cell, Suite
from vae_zoo.harness.tracking import Tracker
from vae_zoo.train import train


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass(frozen=True)
class RunOptions:
    results_dir: Path = Path("results")
    device: str = field(default_factory=default_device)
    wandb_mode: str | None = None
    force: bool = False
    jobs: int = 1  # cells at once on this machine
    executor: str = "local"  # or "slurm"
    slurm: SlurmOptions = field(default_factory=SlurmOptions)
    wait: bool = True  # wait for submitted jobs, then rebuild the summary


@dataclass(frozen=True)
class CellTask:
    """Everything a process needs to run one cell and record it."""

    cell: Cell
    run_id: str
    data_fingerprint: str
    suite_root: Path
    device: str
    project: str
    wandb_mode: str | None
    force: bool


@cache
def cached_dataset(name: str, options_items: tuple) -> ImageData:
    """Each dataset is loaded once per process, whatever the number of cells using it."""
    return load_dataset(name, dict(options_items))


def dataset_for(cell: Cell) -> ImageData:
    return cached_dataset(cell.dataset, tuple(sorted(cell.dataset_options.items())))


def plan(suite: Suite) -> list[tuple[Cell, str, str]]:
    """Every cell of the suite with its run id and data fingerprint (loads each dataset)."""
    fingerprints = {}
    planned = []
    for cell in suite.cells():
        if cell.dataset not in fingerprints:
            fingerprints[cell.dataset] = dataset_for(cell).fingerprint()
        fingerprint = fingerprints[cell.dataset]
        planned.append((cell, cell.run_id(fingerprint), fingerprint))
    return planned


def run_suite(suite: Suite, options: RunOptions) -> int:
    """Run every unfinished cell of `suite`; returns 0 when all succeeded, 1 when some failed."""
    store = SuiteStore(Path(options.results_dir) / suite.name)
    store.remove_abandoned_staging()
    planned = plan(suite)
    tasks = [CellTask(cell, run_id, fingerprint, store.root, options.device, suite.project,
                      options.wandb_mode, options.force)
             for cell, run_id, fingerprint in planned
             if options.force or not store.is_finished(run_id)]
    skipped = len(planned) - len(tasks)
    where = (f"{options.executor} x{options.jobs}" if options.executor == "local"
             else options.executor)
    print(f"suite {suite.name}: {len(planned)} cells; {skipped} already finished (skipped), "
          f"{len(tasks)} to run on {options.device} ({where}); results in {store.root}")
    if options.executor == "local" and options.jobs == 1:
        outcomes = []
        with tqdm(total=len(tasks), desc=suite.name, unit="cell", position=0,
                  disable=None) as bar:
            for task in tasks:
                outcomes.append(run_cell(task, progress_position=1))
                bar.update()
    else:
        outcomes = run_submitted(suite, tasks, store, options)
        if outcomes is None:
            return 0
    return finish_suite(suite, store, outcomes, options.wandb_mode)


def run_submitted(suite: Suite, tasks: list[CellTask], store: SuiteStore,
                  options: RunOptions) -> list[dict] | None:
    """Run cells as submitit jobs: N local worker processes, or one SLURM array task per cell.

    Returns None when not waiting for them.
    """
    if not tasks:
        return []
    local = options.executor == "local"
    groups = split_round_robin(tasks, options.jobs) if local else [[task] for task in tasks]
    threads = worker_threads(len(groups)) if local else options.slurm.cpus_per_task
    folder = store.root / "_jobs"
    executor = make_submitit_executor(options.executor, folder, jobs=len(groups),
                                      slurm=options.slurm)
    started = time.time()
    jobs = submit_groups(executor, groups, threads)
    print(f"submitted {len(jobs)} {options.executor} job(s) of {len(tasks)} cells, "
          f"{threads} thread(s) each; job logs in {folder}")
    if not options.wait:
        print(f"not waiting: when the jobs are done, `vae-zoo summary {suite.name}` rebuilds the "
              f"summary (or run the suite again: finished cells are skipped)")
        return None

    def recorded_since_start(task: CellTask) -> dict | None:
        path = store.run_dir(task.run_id) / "metrics.json"
        if path.is_file() and path.stat().st_mtime >= started - 1:
            return store.read_metrics(task.run_id)
        return None

    with tqdm(total=len(tasks), desc=suite.name, unit="cell", disable=None) as bar:
        def poll() -> None:
            bar.update(sum(recorded_since_start(task) is not None for task in tasks) - bar.n)

        results = wait_for_jobs(jobs, poll)
    outcomes = []
    for group, result in zip(groups, results):
        if not isinstance(result, Exception):
            outcomes.extend(result)
            continue
        # The worker died (killed, out of memory): cells it did not record are failed.
        for task in group:
            record = recorded_since_start(task)
            if record is None:
                record = record_failure(task, f"worker job died: {one_line(result)}", str(result))
            outcomes.append({"run_id": task.run_id, "status": record["status"],
                             "reason": record.get("reason")})
    return outcomes


def record_failure(task: CellTask, reason: str, error: str) -> dict:
    """Write a failed run for a cell whose process could not record it itself."""
    store = SuiteStore(task.suite_root)
    record = {"run_id": task.run_id, "status": FAILED, "reason": reason, "metrics": {},
              "provenance": provenance.machine(task.device)}
    config = {"run_id": task.run_id, **task.cell.config(task.data_fingerprint)}
    with store.claim(task.run_id) as claimed:
        if claimed and not store.is_finished(task.run_id):
            store.write_run(task.run_id, config=config, record=record, history=[], error=error)
    return record


def finish_suite(suite: Suite, store: SuiteStore, outcomes: list[dict],
                 wandb_mode: str | None) -> int:
    """Rebuild the summary, log it, and report failures: the suite's exit status."""
    summary = store.rebuild_summary()
    Tracker(wandb_mode, suite.project, suite.name, store.root / "wandb").log_suite(summary, [])
    failed = [outcome for outcome in outcomes if outcome["status"] == FAILED]
    busy = [outcome for outcome in outcomes if outcome["status"] == "busy"]
    finished = len(outcomes) - len(failed) - len(busy)
    print(f"suite {suite.name}: ran {len(outcomes)} cells, {finished} finished, {len(failed)} "
          f"failed; summary of {len(store.records())} runs in {summary}")
    for outcome in busy:
        print(f"  skipped {outcome['run_id']}: another process is running it")
    for outcome in failed:
        print(f"  FAILED {outcome['run_id']}: {outcome['reason']} "
              f"(traceback in {store.run_dir(outcome['run_id']) / 'error.txt'})")
    if failed:
        print("failed cells are retried the next time the suite runs.")
    return 1 if failed else 0


def run_cell(task: CellTask, progress_position: int | None = 1) -> dict:
    """Train and evaluate one cell and record it; never raises for a failing model.

    Returns `{"run_id", "status", "reason"}`; status "busy" when another process holds the cell.
    """
    store = SuiteStore(task.suite_root)
    with store.claim(task.run_id) as claimed:
        if not claimed:
            return {"run_id": task.run_id, "status": "busy", "reason": None}
        if store.is_finished(task.run_id) and not task.force:
            return {"run_id": task.run_id, "status": FINISHED, "reason": None}
        return _run_claimed_cell(task, store, progress_position)


def _run_claimed_cell(task: CellTask, store: SuiteStore, progress_position: int | None) -> dict:
    cell, run_id = task.cell, task.run_id
    data = dataset_for(cell)
    config = {"run_id": run_id, **cell.config(task.data_fingerprint)}
    tracker = Tracker(task.wandb_mode, task.project, cell.suite, task.suite_root / "wandb")
    tracked = tracker.start_run(run_id, cell.dataset, cell.model.name, cell.seed, config)
    log_lines: list[str] = []

    def log(line: str) -> None:
        log_lines.append(line)
        tqdm.write(f"[{run_id}] {line}")

    started_at, started = time.time(), time.perf_counter()
    configure_determinism(task.device)
    machine = provenance.machine(task.device)
    history: list[dict] = []
    metrics: dict[str, float] = {}
    arrays: dict[str, np.ndarray] = {}
    error = reason = None
    bar = tqdm(total=cell.train.epochs, desc=f"{cell.dataset}/{cell.model.name}/s{cell.seed}",
               unit="epoch", position=progress_position, leave=False,
               disable=None if progress_position is not None else True)
    if task.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(task.device)
    try:
        torch.manual_seed(cell.seed)
        model, objective = zoo.build(cell.model.entry, data.image_shape,
                                     cell.model.hyperparameters)
        model.to(task.device)
        device_data = data.to(task.device)

        def on_epoch(row: dict) -> None:
            history.append(row)
            tracked.log_epoch(row["epoch"], row)
            bar.set_postfix(loss=f"{row['train_loss']:.2f}", val_elbo=f"{row['val_elbo']:.2f}")
            bar.update()

        def on_running_loss(loss: float) -> None:
            bar.set_postfix(loss=f"{loss:.2f}", refresh=False)

        result = train(model, objective, device_data, cell.train, seed=cell.seed,
                       on_epoch=on_epoch, on_running_loss=on_running_loss)
        log(f"trained {cell.train.epochs} epochs in {result.train_seconds:.1f} s "
            f"({result.images_per_second:.0f} images/s); best validation ELBO "
            f"{result.best_val_elbo:.2f} at epoch {result.best_epoch}")
        reference, feature_info = sample_reference_for(task, device_data)
        log(f"feature network for sample metrics: test accuracy "
            f"{feature_info['test_accuracy']:.3f} ({feature_info['key']})")
        metrics, arrays = evaluate(model, device_data, cell.eval, seed=cell.seed,
                                   samples=reference, log=log)
        metrics.update({
            "params": float(zoo.count_parameters(model)),
            "train_seconds": result.train_seconds,
            "train_images_per_s": result.images_per_second,
            "best_epoch": float(result.best_epoch),
            "peak_memory_mb": peak_memory_mb(task.device),
            "feature_net_accuracy": feature_info["test_accuracy"],
        })
        status = FINISHED
    except Exception as exception:  # a failing model is a result, not a crash of the suite
        status = FAILED
        reason = one_line(exception)
        error = traceback.format_exc()
        metrics, arrays = {}, {}
    finally:
        bar.close()
    record = {
        "run_id": run_id,
        "status": status,
        "reason": reason,
        "metrics": metrics,
        "provenance": {**machine, "started_at": iso(started_at), "finished_at": iso(time.time()),
                       "wall_seconds": time.perf_counter() - started, "pid": os.getpid()},
        "log": log_lines,
    }
    store.write_run(run_id, config=config, record=record, history=history, arrays=arrays,
                    error=error, replace_finished=task.force)
    tracked.finish(status, metrics, arrays, reason=reason)
    return {"run_id": run_id, "status": status, "reason": reason}


_sample_references: dict[tuple, tuple[SampleReference, dict]] = {}


def sample_reference_for(task: CellTask, data: ImageData) -> tuple[SampleReference, dict]:
    """The dataset's feature network and sample reference, made once per process: they are the
    same for every model and seed of the dataset."""
    key = (task.cell.dataset, task.data_fingerprint, task.device, task.cell.eval.fid_samples,
           task.cell.eval.pr_neighbours, str(task.suite_root.parent))
    if key not in _sample_references:
        feature_net, info = feature_net_for(dataset_for(task.cell), task.data_fingerprint,
                                            task.suite_root.parent / "_cache", task.device)
        _sample_references[key] = (sample_reference(feature_net, data, task.cell.eval), info)
    return _sample_references[key]


def peak_memory_mb(device: str) -> float:
    """Peak memory of this run: allocated GPU memory on CUDA (reset at the start of each cell),
    else the peak resident size of the process (which spans the cells a worker ran before)."""
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def configure_determinism(device: str) -> None:
    """Bit-identical reruns on the CPU; on CUDA, deterministic kernels where PyTorch has them."""
    if device.startswith("cuda"):
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True, warn_only=True)


def one_line(exception: BaseException) -> str:
    text = str(exception).strip().splitlines()
    return f"{type(exception).__name__}: {text[0] if text else ''}"[:300]


def iso(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(timestamp))


