"""Sharing results: `vae-zoo export` writes a suite's finished runs, their weights and a model card
into a folder that can be uploaded as a model repository; `vae-zoo import` checks such a folder
against its manifest and adds its runs to a results directory.

An export, `<out>/<suite>/`:

    README.md                 the model card: the suite, a table of its runs, how to use them
    <suite>.toml              the suite file
    manifest.json             format version, suite, vae-zoo version, and per run its ids,
                              config, metrics, whether it has weights, and every file's SHA-256
    runs/<run_id>/            the run directory's files, byte for byte (weights as safetensors)

Both directions are all or nothing: an export is written into a hidden staging folder and renamed
into place; an import verifies every file before writing any run, and writes each run through a
staging folder in `runs/` and one rename, as the store does.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from vae_zoo import __version__
from vae_zoo.errors import UserError
from vae_zoo.harness.identity import device_class, digest
from vae_zoo.harness.planner import DONE, PlannedCell, plan_suite
from vae_zoo.harness.store import (
    CHECKPOINT_FILE,
    SuiteStore,
    current_umask,
    read_json,
    to_json,
)
from vae_zoo.harness.suite import Suite

FORMAT = "vae-zoo-export"
FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
CARD_FILE = "README.md"
CARD_METRICS = {"test_nll": "test NLL ↓", "test_elbo": "test ELBO ↑", "fid": "FID ↓"}
CHUNK_BYTES = 1 << 20
SHOWN_PROBLEMS = 5  # files named in one error message


@dataclass(frozen=True)
class Exported:
    """What `export_suite` wrote."""

    folder: Path  # <out>/<suite>
    runs: int  # finished runs exported
    without_weights: int  # of those, runs exported without checkpoint files
    not_finished: int  # cells of the plan left out: not finished with the current settings


@dataclass(frozen=True)
class Imported:
    """What `import_suite` did."""

    suite: str
    suite_file: Path  # the exported suite file, for `vae-zoo report`
    device: str  # the device class the runs were planned on ("cpu" or "cuda")
    imported: list[str]  # run ids written
    present: list[str]  # run ids already in the results directory with identical files


def export_suite(suite: Suite, store: SuiteStore, out_dir: Path, device: str) -> Exported:
    """Copy the finished cells of the suite's current plan into `<out_dir>/<suite>/` with a
    manifest and a model card (see the module's docstring).

    Runs whose weights were not kept are exported without them (`"weights": false` in the
    manifest). Raises `UserError` when no cell is finished, or when `<out_dir>/<suite>` exists and
    is not empty: an export never overwrites anything.
    """
    plan = plan_suite(suite, store, device)
    finished = [planned for planned in plan.cells if planned.action == DONE]
    if not finished:
        raise UserError(f"suite '{suite.name}' has no finished cell in {store.root} (planned on "
                        f"{device_class(device)}); run `vae-zoo run {suite.path}` first")
    target = Path(out_dir) / suite.name
    _refuse_existing(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{suite.name}.export-"))
    except OSError as error:
        raise UserError(f"cannot export into {target.parent}: {error.strerror or error}; give "
                        "--out a folder you can write to") from None
    try:
        os.chmod(staging, 0o777 & ~current_umask())  # mkdtemp's folder is private
        runs = [_export_run(store, planned, staging / "runs" / planned.run_id)
                for planned in finished]
        suite_file = f"{suite.name}.toml"
        files = {suite_file: copy_hashed(suite.path, staging / suite_file)}
        (staging / CARD_FILE).write_text(model_card(suite, runs, device_class(device)))
        files[CARD_FILE] = file_entry(staging / CARD_FILE)
        manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "suite": suite.name,
                    "suite_file": suite_file, "created_by": {"vae_zoo": __version__},
                    "device": device_class(device), "files": files, "runs": runs}
        (staging / MANIFEST_FILE).write_text(to_json(manifest))
        try:  # rename(2) replaces an empty folder and fails on a non-empty one
            os.rename(staging, target)
        except OSError:
            raise UserError(f"{target} appeared while exporting; not overwriting it") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Exported(target, len(runs), sum(not run["weights"] for run in runs),
                    len(plan.cells) - len(finished))


def _refuse_existing(target: Path) -> None:
    if target.is_dir() and not any(target.iterdir()):
        return
    if target.exists() or target.is_symlink():
        raise UserError(f"{target} already exists and is not empty; export into another --out "
                        f"(an export never overwrites)")


def _export_run(store: SuiteStore, planned: PlannedCell, folder: Path) -> dict:
    """Copy one run directory's files (all but hidden ones) and describe it for the manifest."""
    source = store.run_dir(planned.run_id)
    folder.mkdir(parents=True)
    files = {path.name: copy_hashed(path, folder / path.name) for path in sorted(source.iterdir())
             if path.is_file() and not path.name.startswith(".")}
    config = read_json(source / "config.json") or {}
    record = read_json(source / "metrics.json") or {}
    cell = planned.cell
    return {"run_id": planned.run_id, "train_id": planned.run_id.rsplit("-", 1)[1],
            "eval_id": planned.eval_id, "dataset": cell.dataset, "model": cell.model.name,
            "seed": cell.seed, "weights": CHECKPOINT_FILE in files, "config": config,
            "metrics": record.get("metrics") or {}, "files": files}


def copy_hashed(source: Path, target: Path, *, fsync: bool = False) -> dict:
    """Copy a file, reading it once; returns `{"sha256": hex digest, "size": bytes}` of what was
    copied."""
    digest, size = hashlib.sha256(), 0
    with open(source, "rb") as reader, open(target, "wb") as writer:
        while chunk := reader.read(CHUNK_BYTES):
            digest.update(chunk)
            size += len(chunk)
            writer.write(chunk)
        if fsync:
            writer.flush()
            os.fsync(writer.fileno())
    return {"sha256": digest.hexdigest(), "size": size}


def file_entry(path: Path) -> dict:
    """`{"sha256": hex digest, "size": bytes}` of a file."""
    with open(path, "rb") as stream:
        digest = hashlib.file_digest(stream, "sha256")
    return {"sha256": digest.hexdigest(), "size": path.stat().st_size}


def model_card(suite: Suite, runs: list[dict], device: str) -> str:
    """README.md of an export: what the suite is, its runs and main metrics, how to use them."""
    metrics = [name for name in CARD_METRICS if any(name in run["metrics"] for run in runs)]
    header = ["run", "dataset", "model", "seed", *(CARD_METRICS[name] for name in metrics),
              "weights"]
    rows = [[f"[{run['run_id']}](runs/{run['run_id']})", run["dataset"], run["model"],
             str(run["seed"]), *(_number(run["metrics"].get(name)) for name in metrics),
             "yes" if run["weights"] else "no"] for run in runs]
    table = "\n".join("| " + " | ".join(cells) + " |"
                      for cells in [header, ["---"] * len(header), *rows])
    datasets = sorted({run["dataset"] for run in runs})
    models = list(dict.fromkeys(run["model"] for run in runs))
    seeds = sorted({run["seed"] for run in runs})
    without_weights = sum(not run["weights"] for run in runs)
    example = next((run for run in runs if run["weights"]), runs[0])["run_id"]
    report_device = " --device cuda" if device == "cuda" else ""
    lines = [
        "---",
        "tags:",
        "- vae-zoo",
        "- variational-autoencoder",
        "- benchmark",
        "---",
        "",
        f"# {suite.name}: vae-zoo results",
        "",
        suite.description or f"Results of the vae-zoo benchmark suite `{suite.name}`.",
        "",
        f"{len(runs)} finished runs: datasets {', '.join(datasets)}; models "
        f"{', '.join(models)}; seeds {', '.join(map(str, seeds))}; trained and evaluated on "
        f"{device} with vae-zoo {__version__}. Each run is a folder `runs/<run_id>/`: its "
        "resolved configuration (`config.json`), its metrics (`metrics.json`), its training "
        "record (`training.json`, `history.csv`), arrays for the report (`arrays.npz`) and its "
        "weights as safetensors (`checkpoint.safetensors`, the weights every metric is measured "
        "on; `checkpoint-final.safetensors`, the last epoch's, when they differ). "
        f"`{suite.name}.toml` is the suite file; `manifest.json` lists every file with its "
        "SHA-256.",
        "",
    ]
    if without_weights:
        lines += [f"**{without_weights} of {len(runs)} runs have no weights** (they were not "
                  "kept): their metrics and report arrays are here, but they cannot be loaded "
                  "as models.", ""]
    lines += [
        "## Runs",
        "",
        "NLL (importance-sampled) and ELBO in nats per image; the run id ends with the digest "
        "of the training's identity.",
        "",
        table,
        "",
        "## Load a model",
        "",
        "```python",
        "import vae_zoo",
        "",
        f'run = vae_zoo.load("runs/{example}")  # or results/{suite.name}/runs/... '
        "after an import",
        "run.model                     # the trained VAE, in evaluation mode",
        'run.metrics["test_elbo"]      # the metrics of metrics.json, in nats per image',
        "data = run.dataset()          # its data, checked against the recorded fingerprint",
        "```",
        "",
        "## Import the runs and build the report",
        "",
        "```",
        "vae-zoo import <this folder> --results-dir results",
        f"vae-zoo report <this folder>/{suite.name}.toml --results-dir results{report_device}",
        "```",
        "",
        "`vae-zoo import` checks every file against `manifest.json` before writing anything. "
        "The report plans the suite again, which needs its datasets.",
        "",
    ]
    return "\n".join(lines)


def _number(value) -> str:
    return "" if value is None else f"{value:.2f}"


def import_suite(source: Path, results_dir: Path) -> Imported:
    """Add the runs of an export (`<dir>/<suite>`, or a `<dir>` holding one exported suite) to
    `<results_dir>/<suite>/runs/`.

    Every file is checked against the manifest (SHA-256 and size; no file missing, none extra)
    before anything is written. Runs already present with identical files are skipped; an
    existing run with other files is never overwritten. Raises `UserError` naming the files on
    any mismatch, in which case nothing is written.
    """
    folder = find_export(Path(source))
    manifest = read_manifest(folder)
    verify_files(folder, expected_files(manifest))
    for run in manifest["runs"]:
        verify_identities(folder / "runs" / run["run_id"], run["run_id"])
    store = SuiteStore(Path(results_dir) / manifest["suite"])
    to_write, present = [], []
    for run in manifest["runs"]:
        run_dir = store.run_dir(run["run_id"])
        if not (run_dir.exists() or run_dir.is_symlink()):
            to_write.append(run)
        elif same_files(run_dir, run["files"]):
            present.append(run["run_id"])
        else:
            raise UserError(f"{run_dir} exists with other files than the export's run; not "
                            f"overwriting it (move it away, or import into another "
                            f"--results-dir); nothing imported")
    for run in to_write:
        write_run_files(store, run["run_id"], folder / "runs" / run["run_id"], run["files"])
    return Imported(manifest["suite"], folder / manifest["suite_file"],
                    manifest.get("device", "cpu"), [run["run_id"] for run in to_write], present)


def find_export(source: Path) -> Path:
    """The exported suite folder: `source` itself, or its only subfolder with a manifest."""
    if (source / MANIFEST_FILE).is_file():
        return source
    if not source.is_dir():
        raise UserError(f"{source} is not a folder; give the folder `vae-zoo export` wrote")
    exports = sorted(child for child in source.iterdir()
                     if child.is_dir() and (child / MANIFEST_FILE).is_file())
    if not exports:
        raise UserError(f"no {MANIFEST_FILE} in {source} or its subfolders: not a vae-zoo "
                        f"export")
    if len(exports) > 1:
        raise UserError(f"{source} holds several exported suites "
                        f"({', '.join(path.name for path in exports)}); import one at a time, "
                        f"e.g. `vae-zoo import {exports[0]}`")
    return exports[0]


def read_manifest(folder: Path) -> dict:
    """The export's manifest, checked for format and for names that stay inside their folder."""
    path = folder / MANIFEST_FILE
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise UserError(f"{path}: not readable JSON ({error})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise UserError(f"{path}: not a vae-zoo export manifest")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise UserError(f"{path}: export format version {version!r}; this vae-zoo "
                        f"({__version__}) reads version {FORMAT_VERSION}")
    try:
        names = [manifest["suite"], manifest["suite_file"], *_file_names(manifest["files"])]
        run_ids = [run["run_id"] for run in manifest["runs"]]
        for run in manifest["runs"]:
            names += [run["run_id"], *_file_names(run["files"])]
        if manifest["suite_file"] not in manifest["files"]:
            raise KeyError(manifest["suite_file"])
    except (KeyError, TypeError, ValueError) as error:
        raise UserError(f"{path}: malformed manifest ({type(error).__name__}: {error})") from None
    for name in names:
        if not _plain_name(name):
            raise UserError(f"{path}: {name!r} is not a plain file or folder name")
    if len(set(run_ids)) != len(run_ids):
        raise UserError(f"{path}: a run is listed twice")
    return manifest


def _file_names(files: dict) -> list[str]:
    """The names of a manifest's `files` table, checked to map to `{"sha256", "size"}`."""
    if not isinstance(files, dict):
        raise TypeError("'files' is not a table")
    for name, entry in files.items():
        if not (isinstance(entry, dict) and isinstance(entry.get("sha256"), str)
                and isinstance(entry.get("size"), int)):
            raise ValueError(f"files[{name!r}] is not {{sha256, size}}")
    return list(files)


def _plain_name(name) -> bool:
    """A name that stays in its folder: no separator, not hidden, not `..`."""
    return (isinstance(name, str) and bool(name) and not name.startswith(".")
            and "/" not in name and "\\" not in name and "\0" not in name)


def expected_files(manifest: dict) -> dict[str, dict]:
    """Every file the manifest lists, by path relative to the export (POSIX separators)."""
    expected = dict(manifest["files"])
    for run in manifest["runs"]:
        for name, entry in run["files"].items():
            expected[f"runs/{run['run_id']}/{name}"] = entry
    return expected


def verify_identities(run_dir: Path, run_id: str) -> None:
    """The run's recorded identities hash to its ids: its folder name ends with its training
    identity's digest, and metrics.json names its evaluation identity's digest."""
    config = read_json(run_dir / "config.json") or {}
    record = read_json(run_dir / "metrics.json") or {}
    recorded = config.get("identity") or {}
    try:
        train_id = digest(recorded["training"])
        eval_id = digest(recorded["evaluation"])
    except (KeyError, TypeError):
        raise UserError(f"{run_dir / 'config.json'} records no identities; it was not "
                        "exported by this version of vae-zoo") from None
    if run_id.rsplit("-", 1)[-1] != train_id or record.get("eval_id") != eval_id:
        raise UserError(f"{run_dir}: its recorded identities do not hash to its ids (run "
                        f"{run_id}, eval {record.get('eval_id')}); the export was altered")


def verify_files(folder: Path, expected: dict[str, dict]) -> None:
    """Raise `UserError` naming the files that are missing, not listed, or differ in size or
    SHA-256 from `expected`. Hidden entries (`.git`, `.gitattributes`, a download's `.cache`)
    are not part of an export and are ignored."""
    present = {path.relative_to(folder).as_posix() for path in folder.rglob("*")
               if path.is_file() and not any(part.startswith(".")
                                             for part in path.relative_to(folder).parts)}
    present.discard(MANIFEST_FILE)
    problems = [f"{folder / name}: missing" for name in sorted(set(expected) - present)]
    problems += [f"{folder / name}: not listed in {MANIFEST_FILE}"
                 for name in sorted(present - set(expected))]
    for name in sorted(set(expected) & present):
        path, entry = folder / name, expected[name]
        if path.stat().st_size != entry.get("size"):
            problems.append(f"{path}: size differs from {MANIFEST_FILE}")
        elif file_entry(path)["sha256"] != entry.get("sha256"):
            problems.append(f"{path}: SHA-256 differs from {MANIFEST_FILE}")
    if problems:
        more = len(problems) - SHOWN_PROBLEMS
        shown = "; ".join(problems[:SHOWN_PROBLEMS]) + (f"; and {more} more" if more > 0 else "")
        raise UserError(f"the export does not match its manifest: {shown}; nothing imported")


def same_files(run_dir: Path, files: dict[str, dict]) -> bool:
    """Whether a run directory holds exactly these files (hidden ones aside), byte for byte."""
    present = {path.name: path for path in run_dir.iterdir()
               if path.is_file() and not path.name.startswith(".")} if run_dir.is_dir() else {}
    if set(present) != set(files):
        return False
    return all(present[name].stat().st_size == entry["size"]
               and file_entry(present[name])["sha256"] == entry["sha256"]
               for name, entry in files.items())


def write_run_files(store: SuiteStore, run_id: str, source: Path, files: dict[str, dict]) -> None:
    """Copy a verified run into `runs/<run_id>` as the store writes a run: into a staging folder
    in `runs/` (named so that `remove_abandoned_staging` clears it if this process dies), then
    one rename, holding the run's lock so no `vae-zoo run` writes it meanwhile."""
    with store.claim(run_id) as claimed:
        if not claimed:
            raise UserError(f"run {run_id} is being written by another process; import again "
                            f"when it is done")
        if store.run_dir(run_id).exists():
            raise UserError(f"{store.run_dir(run_id)} appeared while importing; not "
                            f"overwriting it")
        with store.staged_run(run_id) as staging:
            for name, entry in files.items():
                if copy_hashed(source / name, staging / name, fsync=True) != entry:
                    raise UserError(f"{source / name} changed while being imported; run "
                                    f"{run_id} not written")
