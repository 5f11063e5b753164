"""The results store: one directory per run, written atomically, and a summary rebuilt from them.

A run's files are written into a private temporary directory and moved into `runs/<run_id>` with
one rename, so a run killed at any moment leaves either no result or a complete one. `metrics.json`
is the single source of truth; `summary.csv` holds nothing that no run file holds. A finished run
is never replaced silently: `--force` moves the old one to `replaced/` first.

`metrics.json` carries the SHA-256 of every other file of its run. A run directory whose files
are unreadable, missing (checkpoints excepted: they may be deleted to save space) or altered is
*corrupt*: it is moved to `corrupt/` with a note of why (`quarantine_corrupt`), never read into a
summary, and its cell is planned again.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import fcntl
import hashlib
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
TRAINING_FILE = "training.json"
STAGED_MARK = ".staged"  # in a staging folder whose files are all written and synced
CHECKPOINT_FILE = "checkpoint.safetensors"  # the selected weights
FINAL_CHECKPOINT_FILE = "checkpoint-final.safetensors"  # the last epoch's, when not selected
CHECKPOINT_FILES = (CHECKPOINT_FILE, FINAL_CHECKPOINT_FILE)
IDENTITY_COLUMNS = ["run_id", "eval_id", "suite", "dataset", "model", "variant_of", "seed",
                    "device", "status", "reason"]
STALE_COLUMNS = ["run_id", "eval_id", "dataset", "model", "seed", "status", "stale", "reason"]
# Metrics in the order a reader expects them; any other metric follows, alphabetically.
METRIC_ORDER = ["test_elbo", "test_recon", "test_kl", "test_nll", "test_nll_se", "test_bpd",
                "test_nll_k_tenth", "nll_k_gap", "ess_mean", "ess_p5", "test_nll_ais",
                "ais_acceptance", "bdmc_lower", "bdmc_upper", "bdmc_gap",
                "test_mse", "iwae_k1", "iwae_k5", "iwae_k50", "active_units", "latent_dim",
                "fid", "fid_ref", "fid_ref_sd", "kid", "kid_std", "kid_ref",
                "precision", "recall", "precision_ref", "recall_ref", "beta_vae", "factor_vae",
                "mig",
                "dci_disentanglement", "dci_completeness", "dci_informativeness", "sap",
                "modularity", "explicitness", "params",
                "train_seconds", "train_images_per_s", "eval_seconds", "peak_memory_mb",
                "best_epoch", "epochs_trained", "converged", "stopped_early", "learned",
                "initial_criterion"]
CHECKSUMS = "checksums"  # in metrics.json: file name -> SHA-256 of the run's other files
CORRUPT_DIR = "corrupt"  # results/<suite>/corrupt/: quarantined run directories
QUARANTINE_NOTE = "quarantined.json"  # in a quarantined folder: why, when, by whom
HISTORY_COLUMNS = ["epoch", "train_loss", "train_recon", "train_kl", "val_elbo", "val_recon",
                   "val_kl", "val_objective", "seconds"]


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


PER_IMAGE_PREFIX = "image_"  # per-image test values, compared between models by the report


def compact(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Float arrays as float16 on disk: they are images in [0, 1], latent means and KLs drawn in
    the report, where 3 significant digits are plenty, and it halves the shipped results. The
    per-image values (`image_*`) stay float32: paired differences between models are a fraction
    of a nat on values of hundreds of nats, below float16's resolution."""
    return {name: values.astype(np.float16)
            if values.dtype.kind == "f" and not name.startswith(PER_IMAGE_PREFIX)
            else values.astype(np.float32) if values.dtype.kind == "f" else values
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
        """The run's metrics.json; None when missing or unreadable."""
        return read_json(self.run_dir(run_id) / "metrics.json")

    def read_training(self, run_id: str) -> dict | None:
        """The run's training.json; None when missing or unreadable."""
        return read_json(self.run_dir(run_id) / TRAINING_FILE)

    def read_config(self, run_id: str) -> dict | None:
        return read_json(self.run_dir(run_id) / "config.json")

    def is_finished(self, run_id: str) -> bool:
        """Trained and evaluated (with whatever evaluation settings it records)."""
        record = self.read_metrics(run_id)
        return record is not None and record.get("status") == FINISHED

    def training_finished(self, run_id: str) -> bool:
        training = self.read_training(run_id)
        return training is not None and training.get("status") == FINISHED

    def checkpoint(self, run_id: str) -> Path | None:
        """The selected weights of a finished training, when they were kept."""
        path = self.run_dir(run_id) / CHECKPOINT_FILE
        return path if path.is_file() and self.training_finished(run_id) else None

    def run_ids(self) -> list[str]:
        """Every run directory's name, in order (hidden staging folders and locks excluded)."""
        if not self.runs.is_dir():
            return []
        return sorted(path.name for path in self.runs.iterdir()
                      if path.is_dir() and not path.name.startswith((".", "_")))

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

    def write_run(self, run_id: str, *, config: dict, record: dict,
                  files: dict[str, bytes | str], keep: tuple[str, ...] = (),
                  arrays: dict[str, np.ndarray] | None = None, error: str | None = None,
                  replace_finished: bool = False) -> Path:
        """Write a run's files into a temporary folder and move it into place in one rename.

        `files` are the training's files by name (training.json, history.csv, checkpoints);
        `keep` names files of the run directory being replaced to carry over unchanged
        (hard-linked, else copied): a re-evaluation keeps its training without rewriting it.
        """
        with self.staged_run(run_id, replace_finished=replace_finished) as staging:
            (staging / "config.json").write_text(to_json(config))
            for name in keep:
                link_or_copy(self.run_dir(run_id) / name, staging / name)
            for name, content in files.items():
                data = content.encode() if isinstance(content, str) else content
                (staging / name).write_bytes(data)
            if arrays:
                with open(staging / "arrays.npz", "wb") as stream:
                    np.savez_compressed(stream, **compact(arrays))
            if error:
                (staging / "error.txt").write_text(error)
            record = {**record, CHECKSUMS: file_checksums(staging)}
            (staging / "metrics.json").write_text(to_json(record))
        return self.run_dir(run_id)

    @contextlib.contextmanager
    def staged_run(self, run_id: str, *, replace_finished: bool = False) -> Iterator[Path]:
        """A private staging folder for a run's files: when the block ends, its files are
        synced and it becomes `runs/<run_id>` in one rename; on an error it is removed.

        Named `.staging@<host>@<pid>@...` so that `remove_abandoned_staging` clears it if this
        process dies. A finished run is replaced only with `replace_finished` (see
        `_move_into_place`); otherwise FileExistsError.
        """
        self.runs.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=self.runs, prefix=f"{staging_prefix()}{run_id}-"))
        os.chmod(staging, 0o777 & ~current_umask())  # mkdtemp's folder is private
        try:
            yield staging
            for path in staging.iterdir():
                with open(path, "rb") as stream:
                    os.fsync(stream.fileno())
            (staging / STAGED_MARK).touch()  # complete: safe to put in place after a crash
            self._move_into_place(staging, run_id, replace_finished)
            (self.run_dir(run_id) / STAGED_MARK).unlink()
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    def _move_into_place(self, staging: Path, run_id: str, replace_finished: bool) -> None:
        target = self.run_dir(run_id)
        if target.exists():
            if self.is_finished(run_id) and not replace_finished:
                raise FileExistsError(f"run {run_id} already finished; refusing to overwrite it")
            # Keep what is replaced: a finished run (or a finished training whose evaluation is
            # redone) moves to replaced/; a failed one is dropped (its cell is being retried).
            if self.is_finished(run_id) or self.training_finished(run_id):
                stamp = time.strftime("%Y%m%dT%H%M%S")
                archive = self.root / "replaced" / f"{run_id}-{stamp}-{os.getpid()}"
                archive.parent.mkdir(parents=True, exist_ok=True)
                os.rename(target, archive)
            else:
                trash = Path(tempfile.mkdtemp(dir=self.runs, prefix=f"{staging_prefix()}trash-"))
                trash.rmdir()
                os.rename(target, trash)
                shutil.rmtree(trash, ignore_errors=True)
        os.rename(staging, target)

    def remove_abandoned_staging(self) -> int:
        """Clear staging folders left by processes of this host that died (e.g. `kill -9`).

        A folder its process had completed (`STAGED_MARK` inside) but not yet renamed — killed
        between moving the old run aside and moving the new one in — is put in place; any other
        is deleted. Returns how many were cleared.
        """
        cleared = 0
        host = socket.gethostname()
        for path in self.runs.glob(".staging@*") if self.runs.is_dir() else []:
            parts = path.name.split("@", 3)
            if len(parts) != 4 or not parts[2].isdigit():
                continue  # not named by `staging_prefix`: not ours to remove
            _, owner_host, owner_pid, rest = parts
            if owner_host != host or process_alive(int(owner_pid)):
                continue
            run_id = rest.rsplit("-", 1)[0]
            if (path / STAGED_MARK).is_file() and not self.run_dir(run_id).exists():
                os.rename(path, self.run_dir(run_id))
                (self.run_dir(run_id) / STAGED_MARK).unlink()
            else:
                shutil.rmtree(path, ignore_errors=True)
            cleared += 1
        return cleared

    def corruption(self, run_id: str) -> str | None:
        """Why the run directory cannot be trusted, or None when its metrics.json reads and every
        file it lists has the recorded checksum (results are checked once per process unless
        their files change)."""
        run_dir = self.run_dir(run_id)
        try:
            state = tuple(sorted((path.name, path.stat().st_size, path.stat().st_mtime_ns)
                                 for path in run_dir.iterdir()))
        except OSError as error:
            return f"its folder cannot be read ({error.strerror})"
        key = (str(run_dir.resolve()), state)
        if key not in _verified:
            _verified[key] = _corruption(run_dir)
        return _verified[key]

    def quarantine(self, run_id: str, why: str) -> Path | None:
        """Move a corrupt run directory to `corrupt/` with a note of why; None when another
        process holds the run (it is left alone)."""
        with self.claim(run_id) as claimed:
            if not claimed or not self.run_dir(run_id).is_dir():
                return None
            stamp = time.strftime("%Y%m%dT%H%M%S")
            target = self.root / CORRUPT_DIR / f"{run_id}-{stamp}-{os.getpid()}"
            target.parent.mkdir(parents=True, exist_ok=True)
            os.rename(self.run_dir(run_id), target)
            note = {"run_id": run_id, "why": why, "quarantined_at": stamp,
                    "host": socket.gethostname(), "pid": os.getpid()}
            write_atomic(target / QUARANTINE_NOTE, to_json(note))
            return target

    def quarantine_corrupt(self) -> list[tuple[str, str]]:
        """Quarantine every corrupt run directory: (run_id, why) of each moved."""
        moved = []
        for run_id in self.run_ids():
            why = self.corruption(run_id)
            if why is not None and self.quarantine(run_id, why) is not None:
                moved.append((run_id, why))
        return moved

    def quarantined(self) -> list[dict]:
        """The notes of the run directories in `corrupt/`, oldest first (folder name added)."""
        folder = self.root / CORRUPT_DIR
        notes = []
        for path in sorted(folder.iterdir()) if folder.is_dir() else []:
            note = read_json(path / QUARANTINE_NOTE) or {"run_id": path.name,
                                                         "why": "(no note)"}
            notes.append({**note, "folder": str(path)})
        return notes

    def write_summary(self, cells: list[dict]) -> Path:
        """Rewrite summary.csv: one row per cell of the suite's current plan whose run records
        that cell's evaluation (`eval_id`), finished or failed.

        `cells` hold the identity columns of every planned cell (`IDENTITY_COLUMNS` and any
        `hp_<key>` sweep values); status, reason and metrics come from its metrics.json, read
        under a lock, so that of two processes finishing together the later one, which sees
        every run written before it, is the one left on disk.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".summary.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            table = []
            for cell in cells:
                record = self.read_metrics(cell["run_id"])
                if record is None or record.get("eval_id") != cell.get("eval_id"):
                    continue  # not run yet, or its evaluation is another (stale) one
                if self.corruption(cell["run_id"]) is not None:
                    continue  # never report a run whose files cannot be trusted
                table.append({**cell, "status": record.get("status") or FAILED,
                              "reason": record.get("reason") or "",
                              **(record.get("metrics") or {})})
            return self._write_table(self.root / "summary.csv", table, IDENTITY_COLUMNS)

    def summary_device_class(self) -> str | None:
        """The device class this suite's cells were planned on: the one summary.csv names, or,
        without a readable summary.csv (after `run --no-wait`, which leaves it to `vae-zoo
        summary`), the one every run's config.json names. None when there is not exactly one."""
        try:
            with open(self.root / "summary.csv", newline="") as stream:
                classes = {row.get("device") for row in csv.DictReader(stream)}
        except (OSError, csv.Error, UnicodeDecodeError):
            classes = {(self.read_config(run_id) or {}).get("device")
                       for run_id in self.run_ids()}
        return classes.pop() if len(classes) == 1 and None not in classes else None

    def write_stale(self, rows: list[dict]) -> Path:
        """Rewrite stale.csv: runs in runs/ that the current plan does not use, and why."""
        return self._write_table(self.root / "stale.csv", rows, STALE_COLUMNS)

    def _write_table(self, path: Path, rows: list[dict], first: list[str]) -> Path:
        columns = list(first)
        for row in rows:  # sweep values, then metrics, in the documented order
            columns += [name for name in row if name not in columns and name.startswith("hp_")]
        metric_names = {name for row in rows for name in row if name not in columns}
        columns += sorted(metric_names, key=lambda name: (
            METRIC_ORDER.index(name) if name in METRIC_ORDER else len(METRIC_ORDER), name))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        write_atomic(path, buffer.getvalue())
        return path


def file_checksums(folder: Path) -> dict[str, str]:
    """SHA-256 of every file in a run folder but metrics.json (which records them)."""
    return {path.name: sha256_file(path) for path in sorted(folder.iterdir())
            if path.is_file() and path.name not in ("metrics.json", STAGED_MARK)}


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_verified: dict[tuple, str | None] = {}  # (folder, its files' names, sizes, times) -> corruption


def _corruption(run_dir: Path) -> str | None:
    metrics = run_dir / "metrics.json"
    if not metrics.is_file():
        return "it has no metrics.json"
    try:
        record = json.loads(metrics.read_text())
    except OSError as error:
        return f"metrics.json cannot be read ({error.strerror})"
    except ValueError as error:  # also UnicodeDecodeError
        return f"metrics.json is not valid JSON ({error})"
    if not isinstance(record, dict) or record.get("status") not in (FINISHED, FAILED):
        return "metrics.json has no status"
    checksums = record.get(CHECKSUMS)
    if not isinstance(checksums, dict) or "config.json" not in checksums:
        return "metrics.json records no checksums of the run's files"
    for name, expected in sorted(checksums.items()):
        if not isinstance(name, str) or "/" in name or name.startswith("."):
            return f"metrics.json lists a file {name!r} that cannot be in a run folder"
        path = run_dir / name
        try:
            found = sha256_file(path)
        except OSError as error:
            if error.errno == errno.ENOENT and name in CHECKPOINT_FILES:
                continue  # weights may be deleted to save space: the plan retrains if needed
            return f"{name} is {'missing' if error.errno == errno.ENOENT else 'unreadable'}"
        if found != expected:
            return f"{name} differs from the checksum in metrics.json (altered or truncated)"
    return None


def read_json(path: Path) -> dict | None:
    """A JSON object from `path`; None when the file is missing or is not one."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def read_arrays(run_dir: Path, keys: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    """A run's arrays.npz, or those of `keys` it has; {} when absent. Floats come back as
    float32: they may be stored as float16 (see `compact`), so compute in float32."""
    path = Path(run_dir) / "arrays.npz"
    if not path.is_file():
        return {}
    with np.load(path, allow_pickle=False) as stored:
        names = stored.files if keys is None else [key for key in keys if key in stored.files]
        return {name: stored[name].astype(np.float32) if stored[name].dtype.kind == "f"
                else stored[name] for name in names}


def link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
