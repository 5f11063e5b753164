"""Running a suite: plan its cells, skip the finished ones, run the rest, record every outcome.

A cell is run by `run_cell`, a plain function of a picklable `CellTask`, so the same code runs it
in this process, in a worker process, or in a SLURM job. With `[train] stack_seeds`, the seeds of
a group to train are one unit (`stack_units`), run by `run_unit`: trained as one stack, then
each evaluated and recorded as `run_cell` does.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from vae_zoo import zoo
from vae_zoo.data import ImageData
from vae_zoo.errors import StorageError, UserError, storage_error
from vae_zoo.evaluate import SampleReference, evaluate, sample_reference
from vae_zoo.harness import provenance
from vae_zoo.harness.checkpoints import checkpoint_files, load_model
from vae_zoo.harness.executors import (
    UNSAVED,
    SlurmOptions,
    make_submitit_executor,
    split_round_robin,
    stop_jobs,
    submit_groups,
    wait_for_jobs,
    worker_threads,
)
from vae_zoo.harness.features import feature_net_for
from vae_zoo.harness.identity import device_class
from vae_zoo.harness.planner import (
    DONE,
    EVALUATE,
    TRAIN,
    Plan,
    PlannedCell,
    cell_action,
    dataset_for,
    plan_suite,
)
from vae_zoo.harness.store import (
    CHECKPOINT_FILES,
    CORRUPT_DIR,
    FAILED,
    FINISHED,
    TRAINING_FILE,
    SuiteStore,
    history_csv,
    read_arrays,
    to_json,
)
from vae_zoo.harness.suite import Cell, Suite
from vae_zoo.harness.tracking import Tracker
from vae_zoo.stacked import build_seeds, stackable, train_stacked
from vae_zoo.train import train

FLAGGED = "flagged"  # the reason of a finished run whose numbers need a second look


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
    """Everything a process needs to run one planned cell and record it."""

    planned: PlannedCell
    suite_root: Path
    device: str
    project: str
    wandb_mode: str | None
    force: bool = False
    # With `vae-zoo evaluate --metrics`: recompute only these groups of a current evaluation.
    metric_groups: tuple[str, ...] = ()
    may_train: bool = True  # False for `vae-zoo evaluate`: a cell it cannot evaluate fails

    @property
    def cell(self) -> Cell:
        return self.planned.cell

    @property
    def run_id(self) -> str:
        return self.planned.run_id


def run_suite(suite: Suite, options: RunOptions, *, evaluate_only: bool = False,
              metric_groups: tuple[str, ...] = ()) -> int:
    """Run every cell of `suite` that needs it: 0 when all succeeded, 1 when some failed.

    A cell whose training is finished but whose evaluation is missing, failed or stale is only
    evaluated. With `evaluate_only` (`vae-zoo evaluate`), cells that would need training are
    left alone; with `metric_groups`, finished cells recompute those groups of their metrics.
    The summary is rewritten after every cell; an interrupt (SIGINT, SIGTERM) stops the workers,
    keeps the finished cells, writes the summary and raises KeyboardInterrupt.
    """
    store = SuiteStore(Path(options.results_dir) / suite.name)
    ensure_writable(store.runs)
    store.remove_abandoned_staging()
    quarantine(store)
    plan = plan_suite(suite, store, options.device, force=options.force)
    print(plan.headline() + f"; results in {store.root}")
    # Recomputing metric groups of a finished cell needs its weights.
    recomputable = {planned.run_id for planned in plan.cells if planned.action == DONE
                    and metric_groups and store.checkpoint(planned.run_id) is not None}
    selected = [planned for planned in plan.cells
                if planned.action == EVALUATE
                or (planned.action == TRAIN and not evaluate_only)
                or planned.run_id in recomputable]
    if evaluate_only:
        for planned in plan.cells:
            if planned.action == TRAIN:
                print(f"  not evaluated {planned.run_id}: {planned.reason} "
                      f"(`vae-zoo run {suite.name}` trains it)")
            elif planned.action == DONE and metric_groups and planned.run_id not in recomputable:
                print(f"  not re-evaluated {planned.run_id}: its checkpoint was not kept")
    tasks = [CellTask(planned, store.root, options.device, suite.project, options.wandb_mode,
                      options.force, metric_groups if planned.action == DONE else (),
                      may_train=not evaluate_only)
             for planned in selected]
    where = (f"{options.executor} x{options.jobs}" if options.executor == "local"
             else options.executor)
    print(f"running {len(tasks)} cells on {options.device} ({where})")

    def summarise() -> None:
        write_summary(suite, store, options.device)

    try:
        if options.executor == "local" and options.jobs == 1:
            outcomes = []
            with tqdm(total=len(tasks), desc=suite.name, unit="cell", position=0,
                      disable=None) as bar:
                for unit in stack_units(tasks):
                    outcomes.extend(run_unit(unit, progress_position=1))
                    summarise()
                    bar.update(len(unit))
        else:
            outcomes = run_submitted(suite, tasks, store, options, summarise)
            if outcomes is None:
                return 0
    except (KeyboardInterrupt, StorageError):
        with contextlib.suppress(OSError, UserError):
            summarise()  # of the cells finished so far (a full disk may refuse it too)
        raise
    unsaved = [outcome["reason"] for outcome in outcomes if outcome["status"] == UNSAVED]
    if unsaved:
        raise StorageError("\n".join(unsaved))
    return finish_suite(suite, store, outcomes, options.wandb_mode, options.device)


def ensure_writable(folder: Path) -> None:
    """Create `folder` and write a file in it, or raise `StorageError` saying why not."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise storage_error(folder, error) from None


def run_submitted(suite: Suite, tasks: list[CellTask], store: SuiteStore,
                  options: RunOptions, on_progress: Callable[[], None]) -> list[dict] | None:
    """Run cells as submitit jobs: N local worker processes, or one SLURM array task per cell.

    `on_progress` runs whenever cells have been recorded. Returns None when not waiting for the
    jobs. On an interrupt, local workers are stopped (see `stop_jobs`) before it propagates.
    """
    if not tasks:
        return []
    local = options.executor == "local"
    # Whole units to each worker (the seeds of a stack together); one SLURM task per unit.
    units = stack_units(tasks)
    groups = ([[task for unit in group for task in unit]
               for group in split_round_robin(units, options.jobs)] if local else units)
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

    try:
        with tqdm(total=len(tasks), desc=suite.name, unit="cell", disable=None) as bar:
            def poll() -> None:
                recorded = sum(recorded_since_start(task) is not None for task in tasks)
                if recorded > bar.n:
                    on_progress()
                    bar.update(recorded - bar.n)

            results = wait_for_jobs(jobs, poll)
    except KeyboardInterrupt:
        if local:
            stop_jobs(jobs)
        else:
            print(f"interrupted: the {len(jobs)} SLURM job(s) go on running (`scancel` stops "
                  f"them); `vae-zoo summary {suite.name}` rebuilds the summary when they are "
                  "done", file=sys.stderr)
        raise
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
    record = {"run_id": task.run_id, "eval_id": task.planned.eval_id, "status": FAILED,
              "reason": reason, "metrics": {}, "provenance": provenance.machine(task.device)}
    training = {"run_id": task.run_id, "status": FAILED, "reason": reason, "metrics": {}}
    with store.claim(task.run_id) as claimed:
        # A finished training is kept as it is: the next run evaluates it again.
        if claimed and not store.training_finished(task.run_id):
            store.write_run(task.run_id, config=task.planned.config(task.device), record=record,
                            files={TRAINING_FILE: to_json(training)}, error=error)
    return record


def write_summary(suite: Suite, store: SuiteStore, device: str) -> tuple[Path, Plan]:
    """Quarantine corrupt runs, plan the suite again and rewrite summary.csv (its current cells)
    and stale.csv."""
    quarantine(store)
    plan = plan_suite(suite, store, device)
    store.write_stale(plan.stale)
    return store.write_summary(plan.summary_rows()), plan


def quarantine(store: SuiteStore) -> None:
    """Move corrupt run directories to corrupt/, saying so."""
    try:
        moved = store.quarantine_corrupt()
    except OSError as error:
        raise storage_error(store.root / CORRUPT_DIR, error) from None
    for run_id, why in moved:
        print(f"moved the corrupt run {run_id} to {store.root / CORRUPT_DIR}/ ({why}); its cell "
              "runs again the next time the suite runs", file=sys.stderr)


def finish_suite(suite: Suite, store: SuiteStore, outcomes: list[dict],
                 wandb_mode: str | None, device: str) -> int:
    """Rebuild the summary, log it, and report failures: the suite's exit status."""
    summary, plan = write_summary(suite, store, device)
    Tracker(wandb_mode, suite.project, suite.name, store.root / "wandb").log_suite(summary, [])
    failed = [outcome for outcome in outcomes if outcome["status"] == FAILED]
    flagged = [outcome for outcome in outcomes if outcome["status"] == FINISHED
               and (outcome["reason"] or "").startswith(FLAGGED)]
    busy = [outcome for outcome in outcomes if outcome["status"] == "busy"]
    finished = len(outcomes) - len(failed) - len(busy)
    print(f"suite {suite.name}: ran {len(outcomes)} cells, {finished} finished, {len(failed)} "
          f"failed; summary of {plan.count(DONE)} finished cells in {summary}")
    if plan.stale:
        print(f"  {len(plan.stale)} stale run(s) left out of the summary: see "
              f"{store.root / 'stale.csv'}")
    for outcome in busy:
        print(f"  skipped {outcome['run_id']}: another process is running it")
    for outcome in failed:
        traceback_file = store.run_dir(outcome["run_id"]) / "error.txt"
        where = f" (traceback in {traceback_file})" if traceback_file.is_file() else ""
        print(f"  FAILED {outcome['run_id']}: {outcome['reason']}{where}")
    for outcome in flagged:
        print(f"  FLAGGED {outcome['run_id']}: {outcome['reason']}")
    if failed:
        print("failed cells are retried the next time the suite runs.")
    return 1 if failed or flagged else 0


def run_cell(task: CellTask, progress_position: int | None = 1) -> dict:
    """Train (if needed) and evaluate one cell and record it; never raises for a failing model.

    Returns `{"run_id", "status", "reason"}`; status "busy" when another process holds the cell.
    """
    return run_unit([task], progress_position)[0]


def stack_units(tasks: list[CellTask]) -> list[list[CellTask]]:
    """The tasks as units of work, in the order of their first task: in a suite with `[train]
    stack_seeds = true`, the seeds of one (dataset, model) group that need training form one
    unit (trained as one stack by `run_unit`); every other task is a unit of its own."""
    units: dict[str, list[CellTask]] = {}
    for task in tasks:
        key = task.run_id
        if task.cell.train.stack_seeds and task.planned.action == TRAIN and task.may_train:
            # Their training identity but for the seed, and where they run.
            key = json.dumps({**task.planned.training, "seed": None, "device": task.device,
                              "model": task.cell.model.name, "force": task.force},
                             sort_keys=True)
        units.setdefault(key, []).append(task)
    return list(units.values())


def run_unit(tasks: list[CellTask], progress_position: int | None = 1) -> list[dict]:
    """Run a unit of `stack_units` as `run_cell` runs a cell, and return each cell's outcome:
    one cell, or the seeds of one group, whose trainings run as one stack.

    Every cell is claimed first and its action decided again, locked. Those that still need
    training, two or more, are trained together by `train_stack`; then each cell is evaluated
    and recorded on its own. A seed that diverges fails alone. Where the entry cannot be stacked
    (or stacking fails), the seeds are trained one by one, saying why.
    """
    store = SuiteStore(tasks[0].suite_root)
    outcomes: dict[str, dict] = {}
    actions: dict[str, str] = {}  # of the claimed cells that run
    with contextlib.ExitStack() as claims:
        for task in tasks:
            if not claims.enter_context(store.claim(task.run_id)):
                outcomes[task.run_id] = {"run_id": task.run_id, "status": "busy", "reason": None}
                continue
            # Another process may have run the cell since it was planned: decide again, locked.
            action, _ = cell_action(store, task.planned, task.force)
            if action == DONE and not task.metric_groups:
                outcomes[task.run_id] = {"run_id": task.run_id, "status": FINISHED,
                                         "reason": None}
            else:
                actions[task.run_id] = action
        with denormals_flushed():
            to_train = [task for task in tasks if actions.get(task.run_id) == TRAIN]
            trained = train_stack(to_train, progress_position) if len(to_train) > 1 else {}
            for task in tasks:
                if task.run_id in actions:
                    outcomes[task.run_id] = _run_claimed_cell(
                        task, store, actions[task.run_id], progress_position,
                        trained.get(task.run_id))
    return [outcomes[task.run_id] for task in tasks]


def train_stack(tasks: list[CellTask], progress_position: int | None) -> dict[str, Trained]:
    """The trainings of `tasks` (seeds of one group) as one stack (`vae_zoo.stacked`), by run
    id; empty when they cannot be stacked (the reason is printed; they then train alone)."""
    cell, device = tasks[0].cell, tasks[0].device
    group = f"{cell.dataset}/{cell.model.name}"
    seeds = [task.cell.seed for task in tasks]
    logs = {task.run_id: RunLog(task.run_id) for task in tasks}
    histories: list[list[dict]] = [[] for _ in tasks]
    if device_class(device) != "cpu":
        tqdm.write(f"[{group}] seeds {seeds} trained one by one: stacked training runs on "
                   f"the CPU only (not on {device})")
        return {}
    try:
        data = dataset_for(cell).to(device)
        configure_determinism(device)
        models, objectives, states = build_seeds(cell.model.entry, data.image_shape,
                                                 cell.model.hyperparameters, seeds)
        reason = stackable(models[0], objectives[0])
        if reason is not None:
            tqdm.write(f"[{group}] seeds {seeds} trained one by one: {reason}")
            return {}
        with tqdm(total=cell.train.epochs * len(tasks), unit="epoch",
                  desc=f"{group}/s{','.join(map(str, seeds))}", position=progress_position,
                  leave=False, disable=None if progress_position is not None else True) as bar:
            def on_epoch(index: int, row: dict) -> None:
                histories[index].append(row)
                bar.update()

            results = train_stacked(models, objectives, data, cell.train, seeds, states,
                                    on_epoch)
    except Exception as exception:  # the seeds can still train alone
        tqdm.write(f"[{group}] seeds {seeds} trained one by one: stacked training failed "
                   f"({one_line(exception)})")
        return {}
    how = f"as one stack of seeds {seeds} (this seed's time is its share)"
    trained = {}
    for task, model, result, history in zip(tasks, models, results, histories, strict=True):
        log = logs[task.run_id]
        if isinstance(result, Exception):
            reason = one_line(result)
            log(f"training failed {how}: {reason}")
            trained[task.run_id] = Trained(
                None, {}, log=log.lines, history=history,
                files=training_files(task, log, history, FAILED, {}, reason), reason=reason,
                error="".join(traceback.format_exception(result)))
        else:
            trained[task.run_id] = trained_model(task, model, result, log, history, how)
            trained[task.run_id].log = log.lines  # the cell's record starts with them
    return trained


@contextlib.contextmanager
def denormals_flushed() -> Iterator[None]:
    """Denormal floats flushed to zero while a cell trains and is evaluated: the IWAE bound's
    tiny normalised weights otherwise reach the backward matrix products as denormals, which
    this CPU handles at a fraction of the speed (a training step of `iwae` 1.6x, of IWAE with
    k = 50 3x slower). Flushing is deterministic. The setting is the process's, so it is
    restored to PyTorch's default (off; there is no getter) after the cell: an in-process run
    must not leave it to its caller (hypothesis, for one, refuses to run with it)."""
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


def _run_claimed_cell(task: CellTask, store: SuiteStore, action: str,
                      progress_position: int | None, stacked: Trained | None = None) -> dict:
    """Run a claimed cell; `stacked` is its training when it was trained in a stack."""
    planned, cell, run_id = task.planned, task.cell, task.run_id
    if action == TRAIN and not task.may_train:  # its checkpoint went since it was planned
        return {"run_id": run_id, "status": FAILED,
                "reason": f"its checkpoint is gone: `vae-zoo run {cell.suite}` trains it again"}
    data = dataset_for(cell)
    config = planned.config(task.device, data.image_shape, data.factor_names)
    log = RunLog(run_id)
    warn_if_short_of_space(task, log)
    tracker = Tracker(task.wandb_mode, task.project, cell.suite, task.suite_root / "wandb")
    tracked = tracker.start_run(run_id, cell.dataset, cell.model.name, cell.seed, config)
    started_at, started = time.time(), time.perf_counter()
    configure_determinism(task.device)
    if task.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(task.device)
    device_data = data.to(task.device)

    keep: tuple[str, ...] = ()
    if action != TRAIN:
        try:
            trained = load_training(task, store, log)
            keep = trained.files_to_keep
            # The training's own settings, including those outside its identity.
            recorded = store.read_config(run_id) or {}
            config.update({key: recorded[key] for key in ("train", "dataset") if key in recorded})
        except Exception as exception:  # e.g. a truncated checkpoint file
            reason = f"its checkpoint cannot be read: {one_line(exception)}"
            if not task.may_train:  # the run stays as it is
                tracked.finish(FAILED, {}, {}, reason=reason)
                return {"run_id": run_id, "status": FAILED, "reason": reason}
            log(f"{reason}; training again")
            action = TRAIN
    if action == TRAIN and stacked is not None:
        trained = stacked
        for row in trained.history:
            tracked.log_epoch(row["epoch"], row)
    elif action == TRAIN:
        trained = train_cell(task, device_data, log, tracked, progress_position)
    metrics, arrays, error, reason = dict(trained.metrics), {}, trained.error, trained.reason
    previous = store.read_metrics(run_id) if task.metric_groups else None
    if trained.model is not None:
        evaluated = evaluate_cell(task, trained.model, device_data, log)
        metrics.update(evaluated.metrics)
        arrays, error, reason = evaluated.arrays, evaluated.error, evaluated.reason
    if previous is not None and error is not None:
        # A failed recomputation of some metrics leaves the finished evaluation as it was.
        tracked.finish(FAILED, {}, {}, reason=reason)
        return {"run_id": run_id, "status": FAILED, "reason": reason}
    status = FINISHED if error is None else FAILED
    if status == FINISHED and trained.metrics.get("learned") == 0.0:
        reason = (f"{FLAGGED}: the selected weights do not beat the untrained model "
                  f"(criterion {trained.metrics['initial_criterion']:.4g}) on the same draws; "
                  "check the learning rate and the optimiser's settings")
        log(reason)
    record = {
        "run_id": run_id,
        "eval_id": planned.eval_id,
        "status": status,
        "reason": reason,
        "metrics": metrics if status == FINISHED else trained.metrics,
        "provenance": {**provenance.machine(task.device), "started_at": iso(started_at),
                       "finished_at": iso(time.time()),
                       "wall_seconds": time.perf_counter() - started, "pid": os.getpid()},
        "log": trained.log + log.lines,
    }
    if previous is not None:
        record, arrays = merged_evaluation(previous, record, log.lines, arrays, task)
    try:
        store.write_run(run_id, config=config, record=record, files=trained.files, keep=keep,
                        arrays=arrays if status == FINISHED else None, error=error,
                        replace_finished=True)
    except OSError as exception:
        tracked.finish(FAILED, {}, {}, reason=f"its results could not be saved: {exception}")
        raise unsaved_result(store.run_dir(run_id), exception, record) from None
    tracked.finish(status, record["metrics"], arrays, reason=reason)
    return {"run_id": run_id, "status": status, "reason": reason}


def unsaved_result(run_dir: Path, error: OSError, record: dict) -> StorageError:
    """The storage error of a run that could not be written, carrying what it computed: the
    message is the last place its numbers exist."""
    problem = storage_error(run_dir, error, doing="save the run in")
    metrics = record.get("metrics") or {}
    numbers = ", ".join(f"{name}={value:.6g}" if isinstance(value, float) else f"{name}={value}"
                        for name, value in sorted(metrics.items()))
    return StorageError(f"{problem}\n  its {record['status']} result was computed but not "
                        f"saved: {numbers or '(no metrics)'}\n  every run saved before is "
                        "intact; once fixed, run the suite again and this cell runs again")


def warn_if_short_of_space(task: CellTask, log: RunLog) -> None:
    """Warn when the results' disk has less free space than the cell is expected to write."""
    try:
        needed, free = bytes_to_write(task), shutil.disk_usage(task.suite_root).free
    except Exception:  # only a warning: a cell whose size cannot be estimated runs all the same
        return
    if free < needed:
        log(f"warning: {free / 2**20:.1f} MB free in {task.suite_root}, and this cell writes "
            f"about {needed / 2**20:.1f} MB: it may fail to save its results")


def bytes_to_write(task: CellTask) -> int:
    """About what a cell writes: its checkpoints (float32 weights, the selected and the final),
    plus an allowance for its arrays, logs and W&B files."""
    cell = task.cell
    weights = 0
    if cell.train.keep_checkpoints:
        parameters, _ = zoo.meta_run(cell.model.entry, tuple(dataset_for(cell).image_shape),
                                     json.dumps(cell.model.hyperparameters, sort_keys=True))
        weights = 2 * 4 * parameters
    return weights + 16 * 2**20


def merged_evaluation(previous: dict, record: dict, new_lines: list[str],
                      arrays: dict[str, np.ndarray],
                      task: CellTask) -> tuple[dict, dict[str, np.ndarray]]:
    """A finished evaluation with some metric groups recomputed (`evaluate --metrics`): the new
    values over the old ones, the evaluation time of both, the old log followed by the new, and
    which groups were recomputed when (`recomputed`)."""
    metrics = {**(previous.get("metrics") or {}), **record["metrics"]}
    metrics["eval_seconds"] = ((previous.get("metrics") or {}).get("eval_seconds", 0.0)
                               + record["metrics"].get("eval_seconds", 0.0))
    recomputed = [*previous.get("recomputed", []),
                  {"groups": list(task.metric_groups),
                   "at": record["provenance"]["finished_at"],
                   "code_version": record["provenance"].get("code_version")}]
    merged = {**record, "metrics": metrics, "recomputed": recomputed,
              "provenance": previous.get("provenance", record["provenance"]),
              "log": [*previous.get("log", []), *new_lines]}
    old_arrays = read_arrays(SuiteStore(task.suite_root).run_dir(task.run_id))
    return merged, {**old_arrays, **arrays}


class RunLog:
    """A run's log lines: kept for metrics.json and printed above the progress bars."""

    def __init__(self, run_id: str):
        self.run_id, self.lines = run_id, []

    def __call__(self, line: str) -> None:
        self.lines.append(line)
        tqdm.write(f"[{self.run_id}] {line}")


@dataclass
class Trained:
    """A cell's training, fresh or read back: its model (None if training failed), the training
    metrics, and the files that record it."""

    model: torch.nn.Module | None
    metrics: dict[str, float]
    log: list[str] = field(default_factory=list)  # earlier lines, for a training read back
    files: dict[str, bytes | str] = field(default_factory=dict)  # new files to write
    files_to_keep: tuple[str, ...] = ()  # files of the existing run directory to carry over
    history: list[dict] = field(default_factory=list)  # its epochs (logged again if stacked)
    error: str | None = None
    reason: str | None = None


def train_cell(task: CellTask, data: ImageData, log: RunLog, tracked,
               progress_position: int | None) -> Trained:
    """Build and train the cell's model; a failure is returned, not raised."""
    cell = task.cell
    history: list[dict] = []
    bar = tqdm(total=cell.train.epochs, desc=f"{cell.dataset}/{cell.model.name}/s{cell.seed}",
               unit="epoch", position=progress_position, leave=False,
               disable=None if progress_position is not None else True)

    def on_epoch(row: dict) -> None:
        history.append(row)
        tracked.log_epoch(row["epoch"], row)
        bar.set_postfix(loss=f"{row['train_loss']:.2f}", val_elbo=f"{row['val_elbo']:.2f}")
        bar.update()

    def on_running_loss(loss: float) -> None:
        bar.set_postfix(loss=f"{loss:.2f}", refresh=False)

    try:
        torch.manual_seed(cell.seed)
        model, objective = zoo.build(cell.model.entry, data.image_shape,
                                     cell.model.hyperparameters)
        model.to(task.device)
        result = train(model, objective, data, cell.train, seed=cell.seed,
                       on_epoch=on_epoch, on_running_loss=on_running_loss)
    except Exception as exception:  # a failing model is a result, not a crash of the suite
        reason = one_line(exception)
        return Trained(None, {}, files=training_files(task, log, history, FAILED, {}, reason),
                       error=traceback.format_exc(), reason=reason)
    finally:
        bar.close()
    return trained_model(task, model, result, log, history)


def trained_model(task: CellTask, model: torch.nn.Module, result, log: RunLog,
                  history: list[dict], how: str = "") -> Trained:
    """A finished training as the run records it: its log line, metrics and files."""
    stop = "stopped early" if result.stopped_early else "the whole budget"
    log(f"trained {result.epochs_trained} epochs ({stop}) in {result.train_seconds:.1f} s "
        f"({result.images_per_second:.0f} images/s){' ' + how if how else ''}; selected epoch "
        f"{result.best_epoch} by {task.cell.train.select} ({result.best_value:.2f}); "
        f"{'converged' if result.converged else 'not converged'}")
    metrics = {
        "params": float(zoo.count_parameters(model)),
        "train_seconds": result.train_seconds,
        "train_images_per_s": result.images_per_second,
        "best_epoch": float(result.best_epoch),
        "epochs_trained": float(result.epochs_trained),
        "converged": float(result.converged),
        "stopped_early": float(result.stopped_early),
        "initial_criterion": result.initial_value,
        "learned": float(result.learned),
        "peak_memory_mb": peak_memory_mb(task.device),
    }
    checkpoints = (checkpoint_files(model.state_dict(), result.final_state)
                   if task.cell.train.keep_checkpoints else None)
    return Trained(model, metrics, history=history,
                   files=training_files(task, log, history, FINISHED, metrics, None, checkpoints))


def training_files(task: CellTask, log: RunLog, history: list[dict], status: str,
                   metrics: dict, reason: str | None,
                   checkpoints: dict[str, bytes] | None = None) -> dict[str, bytes | str]:
    """training.json, history.csv and the checkpoints of a training, by file name."""
    training = {"run_id": task.run_id, "status": status, "reason": reason, "metrics": metrics,
                "checkpoints": sorted(checkpoints or {}), "log": list(log.lines),
                "provenance": provenance.machine(task.device)}
    return {TRAINING_FILE: to_json(training), "history.csv": history_csv(history),
            **(checkpoints or {})}


def load_training(task: CellTask, store: SuiteStore, log: RunLog) -> Trained:
    """A finished training read back from its run directory, for a new evaluation."""
    run_dir = store.run_dir(task.run_id)
    training = store.read_training(task.run_id) or {}
    model, _ = load_model(run_dir, task.device)
    kept = tuple(name for name in (TRAINING_FILE, "history.csv", *CHECKPOINT_FILES)
                 if (run_dir / name).is_file())
    log(f"evaluating the training recorded in {run_dir} ({task.planned.reason})")
    return Trained(model, dict(training.get("metrics") or {}), log=list(training.get("log", [])),
                   files_to_keep=kept)


@dataclass
class Evaluated:
    metrics: dict[str, float] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    error: str | None = None
    reason: str | None = None


def evaluate_cell(task: CellTask, model: torch.nn.Module, data: ImageData,
                  log: RunLog) -> Evaluated:
    """Every metric of the trained model (or only `task.metric_groups`); a failure is returned,
    not raised."""
    groups = task.metric_groups or None
    try:
        reference, extra = None, {}
        if groups is None or "samples" in groups:
            reference, feature_info = sample_reference_for(task, data)
            log(f"feature network for sample metrics: test accuracy "
                f"{feature_info['test_accuracy']:.3f} ({feature_info['key']})")
            extra["feature_net_accuracy"] = feature_info["test_accuracy"]
        metrics, arrays = evaluate(model, data, task.cell.eval, seed=task.cell.seed,
                                   samples=reference, log=log, groups=groups)
    except Exception as exception:
        return Evaluated(error=traceback.format_exc(),
                         reason=f"evaluation failed: {one_line(exception)}")
    return Evaluated({**metrics, **extra}, arrays)


_sample_references: dict[tuple, tuple[SampleReference, dict]] = {}


def sample_reference_for(task: CellTask, data: ImageData) -> tuple[SampleReference, dict]:
    """The dataset's feature network and sample reference, made once per process: they are the
    same for every model and seed of the dataset."""
    key = (task.cell.dataset, task.planned.fingerprint, task.device, task.cell.eval.fid_samples,
           task.cell.eval.pr_neighbours, str(task.suite_root.parent))
    if key not in _sample_references:
        feature_net, info = feature_net_for(dataset_for(task.cell), task.planned.fingerprint,
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


