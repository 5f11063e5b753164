"""The results store: one directory per run, written atomically, and a summary rebuilt from them.

A run's files are written into a private temporary directory and moved into `runs/<run_id>` with
one rename, so a run killed at any moment leaves either no result or a complete one. `metrics.json`
is the single source of truth; `summary.csv` holds nothing that no run file holds. A finished run
is never replaced silently: `--force` moves the old one to `replaced/` first.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import json
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

FINISHED, FAILED = "finished", "failed"
IDENTITY_COLUMNS = ["run_id", "suite", "dataset", "model", "seed", "status", "reason"]
# Metrics in the order a reader expects them; any other metric follows, alphabetically.
METRIC_ORDER = ["test_elbo", "test_recon", "test_kl", "test_nll", "test_nll_se", "test_bpd",
                "test_mse", "iwae_k1", "iwae_k5", "iwae_k50", "active_units", "fid", "fid_ref",
                "precision", "recall", "precision_ref", "recall_ref", "mig", "params",
                "train_seconds", "train_images_per_s", "eval_seconds", "peak_memory_mb",
                "best_epoch"]
HISTORY_COLUMNS = ["epoch", "train_loss", "train_recon", "train_kl", "val_elbo", "val_recon",
                   "val_kl", "seconds"]


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: Path, content: bytes | str) -> None:
    """Write `content` to `path` through a temporary file in the same folder and one rename."""
    data = content.encode() if isinstance(content, str) else content
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        # mkstemp makes the file private; results are shared (e.g. on a cluster's storage).
        os.chmod(temporary, 0o666 & ~current_umask())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def staging_prefix() -> str:
    """`.staging@<host>@<pid>@`: whose staging folder it is, to clean up after dead processes."""
    return f".staging@{socket.gethostname()}@{os.getpid()}@"


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def compact(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Float arrays as float16 on disk: they are images in [0, 1], latent means and KLs drawn in
    the report, where 3 significant digits are plenty, and it halves the shipped results."""
    return {name: values.astype(np.float16) if values.dtype.kind == "f" else values
            for name, values in arrays.items()}


def to_json(value) -> str:
    return json.dumps(value, indent=2, sort_keys=True, allow_nan=True) + "\n"


def history_csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=HISTORY_COLUMNS, extrasaction="ignore",
                            lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


class SuiteStore:
    """`<results_dir>/<suite>/`: its runs, their locks, and its summary."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.runs = self.root / "runs"

    def run_dir(self, run_id: str) -> Path:
        return self.runs / run_id

    def read_metrics(self, run_id: str) -> dict | None:
        path = self.run_dir(run_id) / "metrics.json"
        if not path.is_file():
            return None
        return json.loads(path.read_text())

    def is_finished(self, run_id: str) -> bool:
        record = self.read_metrics(run_id)
        return record is not None and record.get("status") == FINISHED

    @contextlib.contextmanager
    def claim(self, run_id: str) -> Iterator[bool]:
        """Hold the run's lock while it runs: yields False when another process holds it.

        The lock is an advisory `flock` on `runs/.<run_id>.lock`; the OS drops it when its
        process dies, so a killed run never leaves a stale lock behind.
        """
        self.runs.mkdir(parents=True, exist_ok=True)
        with open(self.runs / f".{run_id}.lock", "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def write_run(self, run_id: str, *, config: dict, record: dict, history: list[dict],
                  arrays: dict[str, np.ndarray] | None = None, error: str | None = None,
                  replace_finished: bool = False) -> Path:
        """Write a run's files into a temporary folder and move it into place in one rename."""
        self.runs.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=self.runs, prefix=f"{staging_prefix()}{run_id}-"))
        os.chmod(staging, 0o777 & ~current_umask())  # mkdtemp's folder is private
        try:
            (staging / "config.json").write_text(to_json(config))
            (staging / "history.csv").write_text(history_csv(history))
            if arrays:
                with open(staging / "arrays.npz", "wb") as stream:
                    np.savez_compressed(stream, **compact(arrays))
            if error:
                (staging / "error.txt").write_text(error)
            (staging / "metrics.json").write_text(to_json(record))
            for path in staging.iterdir():
                with open(path, "rb") as stream:
                    os.fsync(stream.fileno())
            self._move_into_place(staging, run_id, replace_finished)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return self.run_dir(run_id)

    def _move_into_place(self, staging: Path, run_id: str, replace_finished: bool) -> None:
        target = self.run_dir(run_id)
        if target.exists():
            if self.is_finished(run_id) and not replace_finished:
                raise FileExistsError(f"run {run_id} already finished; refusing to overwrite it")
            # Keep what is replaced: a finished run moves to replaced/, a failed one is dropped
            # (its cell is being retried).
            if self.is_finished(run_id):
                stamp = time.strftime("%Y%m%dT%H%M%S")
                archive = self.root / "replaced" / f"{run_id}-{stamp}"
                archive.parent.mkdir(parents=True, exist_ok=True)
                os.rename(target, archive)
            else:
                trash = Path(tempfile.mkdtemp(dir=self.runs, prefix=f"{staging_prefix()}trash-"))
                trash.rmdir()
                os.rename(target, trash)
                shutil.rmtree(trash, ignore_errors=True)
        os.rename(staging, target)

    def remove_abandoned_staging(self) -> int:
        """Delete staging folders left by processes of this host that died (e.g. `kill -9`)."""
        removed = 0
        host = socket.gethostname()
        for path in self.runs.glob(".staging@*") if self.runs.is_dir() else []:
            _, owner_host, owner_pid, _ = path.name.split("@", 3)
            if owner_host == host and not process_alive(int(owner_pid)):
                shutil.rmtree(path, ignore_errors=True)
                removed += 1
        return removed

    def records(self) -> list[tuple[dict, dict]]:
        """(config, metrics record) of every complete run directory, in run-id order."""
        found = []
        if not self.runs.is_dir():
            return found
        for run in sorted(self.runs.iterdir()):
            if run.name.startswith(".") or not (run / "metrics.json").is_file():
                continue
            config = json.loads((run / "config.json").read_text())
            found.append((config, json.loads((run / "metrics.json").read_text())))
        return found

    def rebuild_summary(self) -> Path:
        """Rewrite summary.csv from the run directories: one row per run.

        Rebuilds are serialised by a lock, so that of two processes finishing together the later
        rebuild, which sees every run written before it, is the one left on disk.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".summary.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            return self._rebuild_summary()

    def _rebuild_summary(self) -> Path:
        rows, metric_names = [], set()
        for config, record in self.records():
            metrics = record.get("metrics") or {}
            metric_names.update(metrics)
            rows.append({
                "run_id": record["run_id"], "suite": config["suite"],
                "dataset": config["dataset"]["name"], "model": config["model"]["name"],
                "seed": config["seed"], "status": record["status"],
                "reason": record.get("reason") or "", **metrics,
            })
        rows.sort(key=lambda row: (row["dataset"], row["model"], row["seed"], row["run_id"]))
        buffer = io.StringIO()
        ordered = sorted(metric_names, key=lambda name: (
            METRIC_ORDER.index(name) if name in METRIC_ORDER else len(METRIC_ORDER), name))
        writer = csv.DictWriter(buffer, fieldnames=IDENTITY_COLUMNS + ordered,
                                lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        path = self.root / "summary.csv"
        write_atomic(path, buffer.getvalue())
        return path
