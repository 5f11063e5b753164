"""Weights & Biases tracking: one W&B run per cell, one summary run per suite.

W&B is a mirror of the local results, never a dependency of them. Every call into `wandb` goes
through `Tracker._attempt`, which turns any exception into one `warning: W&B ...` line on stderr
(once per kind of failure) and switches tracking off for that run; the benchmark carries on and its
files under `results/` are complete either way.

Layout in W&B: project = the suite (overridable), group = suite, job_type = model name,
name = `<dataset>/<model>/s<seed>`, tags `dataset:...`, `model:...`, `seed:...`, and the fully
resolved `config.json` as the run config, so group-by and filters work on every hyper-parameter.
Per epoch the history row is logged with `epoch` as its step metric; at the end the test metrics go
into the run summary under their `metrics.json` names, with image grids and the KL per dimension.

Offline runs are written to `results/<suite>/wandb/offline-run-*` and uploaded later by
`sync_offline_runs` (`make wandb-sync`). The W&B run id is derived from our run id, so syncing or
re-running a cell updates the same W&B run instead of creating a duplicate.

Not thread-safe: the W&B directories are handed to `wandb` through environment variables set only
for the duration of each call (the W&B service and the artifact staging code read them from the
environment, not from `wandb.Settings`).
"""

from __future__ import annotations

import contextlib
import hashlib
import netrc
import numbers
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from vae_zoo.errors import UserError

MODES = ("online", "offline", "disabled")
_MODE_ALIASES = {"dryrun": "offline", "run": "online"}  # older spellings wandb still accepts
DEFAULT_BASE_URL = "https://api.wandb.ai"
SYNC_HINT = "upload later with `make wandb-sync`"

_VALID_RUN_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_MAX_RUN_ID = 64
_MAX_TAG = 64  # W&B rejects longer tags


def wandb_run_id(run_id: str) -> str:
    """The W&B run id for one of our run ids: the same id when W&B accepts it, else a hashed form.

    W&B ids may hold letters, digits, `-` and `_` (at most 64). Other ids keep a readable prefix
    and gain a hash of the whole id, so distinct run ids stay distinct and the map is stable.
    """
    if _VALID_RUN_ID.fullmatch(run_id):
        return run_id
    digest = hashlib.sha256(run_id.encode()).hexdigest()[:10]
    readable = re.sub(r"[^A-Za-z0-9_-]+", "-", run_id).strip("-")[: _MAX_RUN_ID - 11]
    return f"{readable}-{digest}" if readable else digest


def api_key_configured() -> bool:
    """Whether W&B credentials are configured, without asking the server.

    Looks where `wandb` 0.31 looks: `WANDB_API_KEY`, `WANDB_IDENTITY_TOKEN_FILE`, then a netrc
    entry (`$NETRC` or `~/.netrc`) for the host of `WANDB_BASE_URL` (default api.wandb.ai), the
    entry `wandb login` writes.
    """
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urlsplit(os.environ.get("WANDB_BASE_URL") or DEFAULT_BASE_URL).netloc
    path = Path(os.environ.get("NETRC") or "~/.netrc").expanduser()
    try:
        entry = netrc.netrc(path).authenticators(host)
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(entry and entry[2])


def server_problem(timeout_s: float = 10.0) -> str | None:
    """Why the W&B server (`WANDB_BASE_URL`, default api.wandb.ai) cannot be reached with a TCP
    connection within `timeout_s`, or None when it can: `wandb sync` itself retries for minutes
    before giving up on a machine that is offline."""
    url = urlsplit(os.environ.get("WANDB_BASE_URL") or DEFAULT_BASE_URL)
    host, port = url.hostname or "", url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as error:
        return f"the W&B server {host}:{port} cannot be reached ({error.strerror or error})"
    return None


def resolve_mode(requested: str | None) -> str:
    """The tracking mode: `requested`, else `$WANDB_MODE`, else online if logged in, else offline.

    Raises `UserError` for a mode W&B does not know, naming where it came from.
    """
    for value, source in ((requested, "--wandb"), (os.environ.get("WANDB_MODE"), "WANDB_MODE")):
        if not value:
            continue
        mode = _MODE_ALIASES.get(value.strip().lower(), value.strip().lower())
        if mode not in MODES:
            raise UserError(f"{source}={value!r} is not a W&B mode; use one of {', '.join(MODES)}")
        return mode
    return "online" if api_key_configured() else "offline"


class _ProcessState:
    """What this process learnt about W&B, shared by its trackers (a runner may make one a cell).

    Like the W&B service itself, this is per process: once online W&B has failed, later trackers
    go offline at once instead of each waiting `init_timeout_s`, and a warning already printed is
    not printed again.
    """

    def __init__(self) -> None:
        self.online_failed = False
        self.warned: set[tuple[str, str]] = set()


_process = _ProcessState()


def _plain(value: Any) -> Any:
    """Numbers (numpy's included) as floats, as in `metrics.json`; anything else as it is."""
    return float(value) if isinstance(value, numbers.Real) else value


def _root_dir(wandb_dir: Path) -> Path:
    """W&B's `root_dir`: run folders go to `<root_dir>/wandb`."""
    return wandb_dir.parent if wandb_dir.name == "wandb" else wandb_dir


def _one_line(error: BaseException, limit: int = 300) -> str:
    text = " ".join(str(error).split()) or "(no message)"
    reason = f"{type(error).__name__}: {text}"
    return reason if len(reason) <= limit else reason[: limit - 3] + "..."


class Tracker:
    """W&B tracking for one suite invocation; every method returns normally whatever W&B does.

    `mode` is resolved by `resolve_mode`. In online mode, if W&B cannot be reached (or rejects the
    key, or an upload times out at the end of a run), the tracker prints one warning and switches
    to offline, it and every later tracker of the process, so every run's data stays on disk for
    `sync_offline_runs`; `mode` then reads "offline".

    `wandb_dir` is the folder that receives the run folders, conventionally
    `results/<suite>/wandb`; W&B's cache, logs and artifact staging go inside it too.
    """

    def __init__(self, mode: str | None, project: str, suite: str, wandb_dir: Path, *,
                 init_timeout_s: float = 20.0, finish_timeout_s: float = 60.0):
        self.mode = resolve_mode(mode)
        if self.mode == "online" and _process.online_failed:
            self.mode = "offline"  # this process already warned that W&B is unreachable
        self.project = project
        self.suite = suite
        self.wandb_dir = Path(wandb_dir).absolute()
        self.init_timeout_s = init_timeout_s
        self.finish_timeout_s = finish_timeout_s

    # --- the guard -------------------------------------------------------------------------------

    def _attempt(self, action: str, label: str, consequence: str,
                 call: Callable[..., Any], *args, **kwargs) -> tuple[bool, Any]:
        """Run `call`; on any failure print one warning per (action, error type) and go on."""
        try:
            with _wandb_environment(self.wandb_dir):
                return True, call(*args, **kwargs)
        except (Exception, SystemExit) as error:  # W&B must never stop a benchmark
            kind = (action, type(error).__name__)
            if kind not in _process.warned:
                _process.warned.add(kind)
                reason = _one_line(error)
                print(f"warning: W&B {action} failed for {label}: {reason}; {consequence}",
                      file=sys.stderr, flush=True)
            return False, None

    def _fall_back_to_offline(self, *, release_ids: bool) -> None:
        """Stop talking to the server: later runs are written offline, to be synced later."""
        if self.mode != "online":
            return
        self.mode = "offline"
        _process.online_failed = True
        if release_ids:
            # A run whose online start failed keeps its id reserved in the W&B service; tearing the
            # service down frees it (the next `wandb.init` starts a new one in about 0.5 s).
            self._attempt("teardown", self.suite, "continuing", lambda: _wandb().teardown())

    # --- runs ------------------------------------------------------------------------------------

    def _init(self, label: str, **init_args) -> Any:
        """Start a W&B run, falling back from online to offline; None if tracking is off."""
        if self.mode == "disabled":
            return None
        if self.mode == "online":
            consequence = f"continuing offline under {self.wandb_dir} ({SYNC_HINT})"
            started, run = self._attempt("init", label, consequence, self._wandb_init, "online",
                                         **init_args)
            if started:
                return run
            self._fall_back_to_offline(release_ids=True)
        consequence = "this run is not tracked; local results are unaffected"
        started, run = self._attempt("init", label, consequence, self._wandb_init, self.mode,
                                     **init_args)
        return run if started else None

    def _wandb_init(self, mode: str, **init_args) -> Any:
        wandb = _wandb()
        self.wandb_dir.mkdir(parents=True, exist_ok=True)
        settings = wandb.Settings(
            mode=mode,
            root_dir=str(_root_dir(self.wandb_dir)),
            use_dot_wandb=False,
            reinit="create_new",  # one run per cell, one after another in one process
            init_timeout=self.init_timeout_s,
            finish_timeout=self.finish_timeout_s,
            finish_timeout_raises=True,  # a stalled upload becomes a warning, not a hang
            silent=True,
            quiet=True,
            console="off",  # the runner's own output stays ours
            x_disable_stats=True,  # no sampling process competing with timed training
        )
        return wandb.init(project=self.project, group=self.suite, resume="allow",
                          settings=settings, **init_args)

    def start_run(self, run_id: str, dataset: str, model: str, seed: int,
                  config: dict) -> RunTracker:
        """Start the W&B run of one cell; the returned tracker is a no-op if W&B is off or failed.

        Usable as a context manager: leaving the block finishes the run (failed on an exception).
        """
        label = f"{dataset}/{model}/s{seed}"
        tags = [f"dataset:{dataset}", f"model:{model}", f"seed:{seed}"]
        # Run ids do not include the suite; two suites logging to one project must not share runs.
        wandb_id = wandb_run_id(f"{self.suite}-{run_id}")
        run = self._init(label, id=wandb_id, name=label, job_type=model, config=config,
                         tags=[tag[:_MAX_TAG] for tag in tags])
        return RunTracker(self, run, wandb_id, label)

    def log_suite(self, summary_csv: Path, figures: list[Path]) -> None:
        """Log the suite's summary run: `summary.csv` as a table and the report's figures."""
        label, wandb_id = f"{self.suite}/summary", wandb_run_id(f"suite:{self.suite}")
        run = self._init(label, id=wandb_id, name=label, job_type="summary",
                         tags=["suite-summary"], config={"suite": self.suite})
        if run is None:
            return
        tracked = RunTracker(self, run, wandb_id, label)
        if tracked._call("log", _log_suite_files, run, Path(summary_csv), list(figures)):
            tracked.finish("finished", {}, {})


class RunTracker:
    """The W&B run of one cell. All methods are no-ops once tracking is off for the run."""

    def __init__(self, tracker: Tracker, run: Any, wandb_id: str, label: str):
        self._tracker = tracker
        self._run = run
        self.wandb_id = wandb_id
        self.label = label
        self._step_metrics: set[str] = set()

    @property
    def active(self) -> bool:
        """Whether this run is being tracked (False when disabled, failed or finished)."""
        return self._run is not None

    def _call(self, action: str, call: Callable[..., Any], *args) -> bool:
        """Run one W&B call for this run; a failure stops tracking of this run."""
        consequence = "tracking of this run stops; local results are unaffected"
        if self._tracker.mode == "online":
            folder = getattr(getattr(self._run, "settings", None), "sync_dir", "its run folder")
            consequence += f"; what W&B did not upload stays in {folder} (`wandb sync` it)"
        ok, _ = self._tracker._attempt(action, self.label, consequence, call, *args)
        if not ok:
            self._abandon(action)
        return ok

    def _abandon(self, action: str) -> None:
        run, self._run = self._run, None
        if action == "finish":
            # Most likely an upload that timed out: keep the rest of the suite off the network.
            self._tracker._fall_back_to_offline(release_ids=False)
        elif run is not None:
            # Close the run quietly so that the W&B service does not keep it open.
            with contextlib.suppress(Exception), _wandb_environment(self._tracker.wandb_dir):
                run.finish(exit_code=1)

    def log_epoch(self, epoch: int, values: dict[str, float]) -> None:
        """Log one history row (the `history.csv` columns) with `epoch` as its step."""
        if self._run is not None:
            self._call("log", self._log_epoch, epoch, values)

    def _log_epoch(self, epoch: int, values: dict[str, float]) -> None:
        row = {name: _plain(value) for name, value in values.items() if value is not None}
        row["epoch"] = int(epoch)
        for name in row.keys() - self._step_metrics - {"epoch"}:
            self._run.define_metric(name, step_metric="epoch")
            self._step_metrics.add(name)
        self._run.log(row)

    def finish(self, status: str, metrics: dict[str, float], arrays: dict[str, np.ndarray], *,
               reason: str | None = None) -> None:
        """End the run: test metrics and status into the summary, image grids, KL per dimension.

        `status` is "finished" or "failed" (exit code 1). Safe to call more than once.
        """
        if self._run is None:
            return
        run = self._run
        summary = {"status": status} | ({"reason": reason} if reason else {})
        if not self._call("summary", _update_summary, run, metrics, summary):
            return
        # A malformed array costs the pictures, not the run.
        self._tracker._attempt("media", self.label, "the run is finished without its images",
                               _log_media, run, arrays)
        if self._call("finish", lambda: run.finish(exit_code=0 if status == "finished" else 1)):
            self._run = None

    def __enter__(self) -> RunTracker:
        return self

    def __exit__(self, error_type, error, traceback) -> bool:
        if error is None:
            self.finish("finished", {}, {})
        else:
            self.finish("failed", {}, {}, reason=_one_line(error))
        return False


# --- what is logged ------------------------------------------------------------------------------

def _update_summary(run: Any, metrics: dict[str, float], extra: dict[str, Any]) -> None:
    run.summary.update({name: _plain(value) for name, value in metrics.items()} | extra)


def _log_media(run: Any, arrays: dict[str, np.ndarray]) -> None:
    """Image grids of samples, reconstructions and traversals, and the KL per latent dimension."""
    wandb = _wandb()
    media: dict[str, Any] = {}
    if "samples" in arrays:
        media["samples"] = _image_grid(arrays["samples"], columns=8, caption="prior samples")
    if "originals" in arrays and "reconstructions" in arrays:
        originals, reconstructions = arrays["originals"], arrays["reconstructions"]
        count = min(len(originals), len(reconstructions), 32)
        # (2 * count, C, H, W): each original followed by its reconstruction, 8 pairs a row
        pairs = np.stack([originals[:count], reconstructions[:count]], axis=1)
        media["reconstructions"] = _image_grid(pairs.reshape(-1, *pairs.shape[2:]), columns=16,
                                               caption="each test image, then its reconstruction")
    if "traversals" in arrays:
        traversals = arrays["traversals"]  # (latent_dim, steps, C, H, W): one row per dimension
        media["traversals"] = _image_grid(traversals.reshape(-1, *traversals.shape[2:]),
                                          columns=traversals.shape[1],
                                          caption="one row per latent dimension, swept -3 to 3")
    if "kl_per_dim" in arrays:
        kl_per_dim = np.asarray(arrays["kl_per_dim"], dtype=np.float64).reshape(-1)
        table = wandb.Table(columns=["dimension", "kl"],
                            data=[[index, float(kl)] for index, kl in enumerate(kl_per_dim)])
        media["kl_per_dim"] = wandb.plot.bar(table, "dimension", "kl",
                                             title="KL per latent dimension (nats)")
    if media:
        run.log(media)


def _image_grid(images: np.ndarray, columns: int, caption: str) -> Any:
    """A `wandb.Image` of images `(n, C, H, W)` in [0, 1] laid out `columns` to a row."""
    import torch
    from torchvision.utils import make_grid

    batch = torch.from_numpy(np.asarray(images, dtype=np.float32))
    grid = make_grid(batch, nrow=columns, padding=2, pad_value=1.0)  # (3, H', W')
    pixels = (grid.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return _wandb().Image(pixels, caption=caption)


def _log_suite_files(run: Any, summary_csv: Path, figures: list[Path]) -> None:
    import pandas as pd

    wandb = _wandb()
    results = pd.read_csv(summary_csv)
    results = results.astype(object).where(results.notna(), None)  # empty cells as None, not NaN
    media: dict[str, Any] = {"results": wandb.Table(dataframe=results)}
    for figure in figures:
        media[f"figures/{Path(figure).stem}"] = wandb.Image(str(figure))
    run.log(media)


# --- offline runs --------------------------------------------------------------------------------

def offline_run_dirs(wandb_dir: Path) -> list[Path]:
    """The offline run folders under `wandb_dir` (or its `wandb/` subfolder), oldest first."""
    wandb_dir = Path(wandb_dir)
    found = [*wandb_dir.glob("offline-run-*"), *wandb_dir.glob("wandb/offline-run-*")]
    return sorted((path for path in found if path.is_dir()), key=lambda path: path.name)


def sync_offline_runs(wandb_dir: Path, *, timeout_s: float = 300) -> int:
    """Upload the offline runs under `wandb_dir` with `wandb sync`; returns its exit status.

    Runs already uploaded are skipped by `wandb sync` itself. Prints one line per problem; never
    waits longer than `timeout_s` (with an invalid key `wandb sync` retries forever).
    """
    runs = offline_run_dirs(wandb_dir)
    if not runs:
        print(f"W&B: no offline runs under {wandb_dir}")
        return 0
    if not api_key_configured():
        print("error: W&B sync needs an API key: run `wandb login` or set WANDB_API_KEY",
              file=sys.stderr)
        return 1
    problem = server_problem()
    if problem is not None:
        print(f"error: {problem}: the {len(runs)} offline run folder(s) stay in {wandb_dir}; "
              "run the sync again when this machine is online", file=sys.stderr)
        return 1
    command = [sys.executable, "-m", "wandb", "sync", "--yes", *map(str, runs)]
    # Its temporary files go to a folder of ours, removed even when `wandb sync` is killed; its
    # output to a file, not a pipe, which the W&B service it starts could hold open.
    scratch = Path(tempfile.mkdtemp(prefix=".sync-", dir=wandb_dir))
    try:
        environment = os.environ | _wandb_variables(Path(wandb_dir).absolute())
        environment |= {"TMPDIR": str(scratch), "WANDB_SILENT": "false"}  # we want its errors
        with open(scratch / "output.txt", "w+b") as output:
            process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True,
                                       env=environment)
            try:
                status = process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                _kill_group(process)
                print(f"error: W&B sync gave up after {timeout_s:g} s: is the server reachable and"
                      " the API key valid? (`wandb login --relogin`)", file=sys.stderr)
                return 124
            output.seek(0)
            lines = output.read().decode(errors="replace").splitlines()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if status != 0:
        problems = [line for line in lines if "error" in line.lower()] or lines or ["no output"]
        print(f"error: W&B sync failed (exit {status}): {problems[-1].strip()}", file=sys.stderr)
        return status
    print(f"W&B: synced {len(runs)} offline run folder(s) from {wandb_dir}"
          " (those uploaded before are skipped)")
    return 0


def _kill_group(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.kill()
    process.wait()


# --- plumbing ------------------------------------------------------------------------------------

def _wandb() -> Any:
    """`wandb`, imported on first use: 0.3 s that a disabled tracker never pays."""
    import wandb

    return wandb


def _wandb_variables(wandb_dir: Path) -> dict[str, str]:
    """The environment that keeps W&B's files inside `wandb_dir` and W&B itself quiet.

    `WANDB_CACHE_DIR` (the W&B service's log) and `WANDB_DATA_DIR` (artifact staging, which
    `wandb sync` reads logged tables back from) are read from the environment only, and the W&B
    service copies the environment when the first run of a process starts it.
    """
    return {"WANDB_DIR": str(_root_dir(wandb_dir)), "WANDB_CACHE_DIR": str(wandb_dir / ".cache"),
            "WANDB_DATA_DIR": str(wandb_dir / ".data"), "WANDB_SILENT": "true"}


@contextlib.contextmanager
def _wandb_environment(wandb_dir: Path) -> Iterator[None]:
    """`_wandb_variables` set for the duration of one call into `wandb`, then restored."""
    values = _wandb_variables(wandb_dir)
    previous = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
