"""Shared fixtures: small generated stand-ins for the IDX datasets, so every dataset name loads
offline in the tests."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> None:
    """Write a uint8 array as an IDX file (magic 0x0000 08 <rank>, big-endian sizes, data)."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(
        int(size).to_bytes(4, "big") for size in array.shape)
    content = header + array.astype(np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(content))
    else:
        path.write_bytes(content)


def make_idx_dataset(folder: Path, train: int = 300, test: int = 100, seed: int = 0,
                     compress: bool = True) -> dict[str, np.ndarray]:
    """Four IDX files of random 28x28 images with labels, as MNIST ships them."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, (train,), dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, (test,), dtype=np.uint8),
    }
    for name, array in arrays.items():
        write_idx(folder / name, array, compress)
    return arrays


@pytest.fixture
def idx_data_root(tmp_path, monkeypatch) -> Path:
    """$VAE_ZOO_DATA pointing at small generated MNIST and Fashion-MNIST IDX files."""
    root = tmp_path / "data"
    make_idx_dataset(root / "mnist", seed=1)
    make_idx_dataset(root / "fashion-mnist", seed=2, compress=False)
    monkeypatch.setenv("VAE_ZOO_DATA", str(root))
    return root


TINY_SUITE = """
datasets = ["circles"]
models = ["mlp-vae", "iwae"]
seeds = [0]
[train]
epochs = 2
batch_size = 50
[eval]
nll_samples = 20
grid_images = 8
[dataset.circles]
side = 8
train_size = 300
val_size = 100
test_size = 100
[model.mlp-vae]
latent_dim = 3
hidden = [32]
[model.iwae]
latent_dim = 3
hidden = [32]
"""


@pytest.fixture
def tiny_suite(tmp_path) -> Path:
    """A suite file of two cells that each train in about a second."""
    path = tmp_path / "tiny.toml"
    path.write_text(TINY_SUITE)
    return path


@pytest.fixture(scope="session")
def smoke_results(tmp_path_factory) -> tuple[int, Path]:
    """The shipped `smoke` suite run once through the CLI, W&B offline: (exit status, folder)."""
    from vae_zoo.cli import main

    results = tmp_path_factory.mktemp("smoke-results")
    patch = pytest.MonkeyPatch()
    patch.delenv("WANDB_API_KEY", raising=False)
    patch.setenv("WANDB_MODE", "offline")
    try:
        status = main(["run", "smoke", "--results-dir", str(results)])
    finally:
        patch.undo()
    return status, results / "smoke"
