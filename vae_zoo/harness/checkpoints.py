"""Trained weights in a run directory: safetensors files plus the config that rebuilds the model.

`checkpoint.safetensors` holds the selected weights (the ones every metric is measured on);
`checkpoint-final.safetensors` the last epoch's, when they differ. safetensors (rather than
`torch.save`) because it is a plain, safe format that loads without executing code, the one
model repositories expect, and `vae-zoo export` ships the same files.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save

from vae_zoo import zoo
from vae_zoo.errors import UserError
from vae_zoo.harness.store import CHECKPOINT_FILE, FINAL_CHECKPOINT_FILE, read_json
from vae_zoo.model import VAE


def checkpoint_files(best: dict[str, torch.Tensor],
                     final: dict[str, torch.Tensor] | None) -> dict[str, bytes]:
    """The checkpoint files of a training, by name, as bytes."""
    files = {CHECKPOINT_FILE: state_bytes(best)}
    if final is not None:
        files[FINAL_CHECKPOINT_FILE] = state_bytes(final)
    return files


def state_bytes(state: dict[str, torch.Tensor]) -> bytes:
    return save({name: tensor.detach().cpu().contiguous() for name, tensor in state.items()})


def build_model(config: dict) -> VAE:
    """An untrained model as a run's config.json describes it."""
    model, _ = zoo.build(config["model"]["entry"], tuple(config["dataset"]["image_shape"]),
                         config["model"]["hyperparameters"])
    return model


def load_model(run_dir: Path, device: str = "cpu", *, final: bool = False) -> tuple[VAE, dict]:
    """The trained model of a run directory (its selected weights, or the last epoch's with
    `final`) in evaluation mode on `device`, and its config."""
    run_dir = Path(run_dir)
    config = read_json(run_dir / "config.json")
    if config is None or "image_shape" not in (config.get("dataset") or {}):
        raise UserError(f"{run_dir}: no readable config.json with the model's configuration")
    name = FINAL_CHECKPOINT_FILE if final else CHECKPOINT_FILE
    path = run_dir / name
    if final and not path.is_file():
        path = run_dir / CHECKPOINT_FILE  # the last epoch was the selected one
    if not path.is_file():
        raise UserError(f"{run_dir}: no checkpoint ({name}); it was not kept "
                        f"([train] keep_checkpoints = false) or the run did not finish training")
    model = build_model(config)
    model.load_state_dict(load_file(path, device=str(device)))
    return model.to(device).eval(), config
