"""Run identity: which settings make a result, hashed into ids that are the same on every machine.

A cell has two identities (documented in docs/results-format.md):
- its *training identity*: everything that determines the trained weights — the data (its
  fingerprint, from the uint8 bytes and the options), the zoo entry and its hyper-parameters, the
  training settings, the seed and the device class (`cpu` or `cuda`: their random streams
  differ). It names the run directory: `<dataset>-<model>-s<seed>-<train_id>`.
- its *evaluation identity*: the evaluation settings that change metric values (K, the number of
  likelihood images, the IWAE ks, the sample count of FID...) and the device class.

Settings that only change speed or memory (batch sizes, `nll_chunk`), storage
(`keep_checkpoints`) or presentation (grid sizes, points kept for plots), and how a suite is run
(jobs, executor, SLURM resources, W&B), are recorded in config.json but are not part of either
identity: they declare `role` in their dataclass field's metadata (see `TrainConfig`,
`EvalConfig`). The suite's own name is not part of it either, so suites share identical cells.

`TRAINING_VERSION` / `EVALUATION_VERSION` are bumped by a code change that alters what a
training or an evaluation computes for the same settings, so that old results become stale
instead of being mixed with new ones.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

from vae_zoo.data import DATASETS, result_options
from vae_zoo.harness.sweeps import slug

# 2: selection by the objective, validation objective every epoch; 3: the speed work of issue
# 16 (fused Adam, log σ((2x-1)·l), channels-last convolutions, hand-written Gaussians): the same
# quantities, other float rounding.
TRAINING_VERSION = 3
# 2: one image set for likelihood metrics, per-image values, IS diagnostics; 3: as training's 3.
EVALUATION_VERSION = 3


def device_class(device: str) -> str:
    """`cpu` or `cuda` (whatever the GPU index): what changes a run's random streams."""
    return "cuda" if str(device).startswith("cuda") else "cpu"


def result_settings(config) -> dict:
    """The fields of a settings dataclass that change results (role "result", the default)."""
    return {f.name: _plain(getattr(config, f.name)) for f in dataclasses.fields(config)
            if f.metadata.get("role", "result") == "result"}


def training_identity(cell, data_fingerprint: str, device: str) -> dict:
    """What determines a cell's trained weights."""
    return {
        "version": TRAINING_VERSION,
        "dataset": {"name": cell.dataset, "options": result_options(cell.dataset_options),
                    "fingerprint": data_fingerprint},
        "model": {"entry": cell.model.entry, "hyperparameters": cell.model.hyperparameters},
        "seed": cell.seed,
        "train": result_settings(cell.train),
        "device": device_class(device),
    }


def evaluation_identity(cell, device: str, *, test_size: int | None = None,
                        val_size: int | None = None) -> dict:
    """What determines a cell's metric values, given its trained weights.

    With the data's split sizes, settings are hashed as they take effect: `nll_images` at or
    above the test set's size means all of it (0), and `fid_samples` is capped, as the sample
    metrics cap it, at the test and validation sizes. Settings that apply only to datasets with
    factors (the disentanglement metrics') are left out for the others.
    """
    settings = result_settings(cell.eval)
    if not DATASETS[cell.dataset].has_factors:
        for setting in dataclasses.fields(cell.eval):
            if setting.metadata.get("applies") == "factors":
                settings.pop(setting.name, None)
    if test_size is not None and settings["nll_images"] >= test_size:
        settings["nll_images"] = 0
    if test_size is not None and val_size is not None:
        settings["fid_samples"] = min(settings["fid_samples"], test_size, val_size)
    return {"version": EVALUATION_VERSION, "eval": settings, "device": device_class(device)}


def digest(identity: dict) -> str:
    """Ten hex digits of the SHA-256 of the identity's canonical JSON."""
    canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:10]


def run_id(cell, train_id: str) -> str:
    """`<dataset>-<model>-s<seed>-<train_id>`, safe as a directory name."""
    return f"{cell.dataset}-{slug(cell.model.name)}-s{cell.seed}-{train_id}"


def differences(recorded: dict | None, planned: dict) -> list[str]:
    """What differs between two identities, as `path: old -> new` lines (leaves only)."""
    if recorded is None:
        return ["no identity recorded (a run from before identities were versioned)"]
    found: list[str] = []
    _compare(recorded, planned, "", found)
    return found


def _compare(old, new, path: str, found: list[str]) -> None:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            _compare(old.get(key, "(absent)"), new.get(key, "(absent)"),
                     f"{path}.{key}" if path else key, found)
    elif old != new:
        found.append(f"{path}: {_short(old)} -> {_short(new)}")


def _short(value) -> str:
    text = json.dumps(value, sort_keys=True) if not isinstance(value, str) else value
    return text if len(text) <= 40 else text[:37] + "..."


def _plain(value):
    """Tuples as lists, so that identities read back from JSON compare equal."""
    return list(value) if isinstance(value, tuple) else value
