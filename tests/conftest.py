"""Shared fixtures: small generated stand-ins for the IDX datasets, so every dataset name loads
offline in the tests."""

from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path

import pytest
from idx_fixtures import make_idx_dataset


def pytest_configure(config):
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # One intra-op thread per xdist worker: the workers already fill the cores, and OpenMP
        # threads spinning against each other make tiny models train many times slower.
        import torch

        torch.set_num_threads(1)


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
disentanglement = ["mig"]
factor_points = 500
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


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module of tiny models: on a few shared cores, OpenMP threads
    spinning against each other make them train many times slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_results(tmp_path_factory) -> tuple[Path, Path]:
    """The tiny suite run once per session, for tests that only read its results:
    (suite file, results directory).

    The results directory is `<base>/a/results`: a report names its results directory by its
    last two parts, so a copy in `<tmp>/b/results` gives the same report bytes."""
    import torch

    from vae_zoo.cli import main

    base = tmp_path_factory.mktemp("tiny-results")
    suite = base / "tiny.toml"
    suite.write_text(TINY_SUITE)
    results = base / "a" / "results"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        status = main(["run", str(suite), "--results-dir", str(results), "--device", "cpu",
                       "--wandb", "disabled"])
    finally:
        torch.set_num_threads(threads)
    assert status == 0
    return suite, results


@pytest.fixture
def results_copy(tiny_results, tmp_path) -> tuple[Path, Path]:
    """A private copy of the session's tiny results: (suite file, results directory)."""
    suite, results = tiny_results
    copy = tmp_path / "results"
    shutil.copytree(results, copy)
    return suite, copy


@pytest.fixture(scope="session")
def smoke_results(tmp_path_factory, worker_id) -> tuple[int, Path]:
    """The shipped `smoke` suite run once through the CLI, W&B offline: (exit status, folder).

    Once per test session, not once per xdist worker: the first worker to ask runs it in the
    folder the workers share, under a lock, and the others read its results."""
    from vae_zoo.cli import main

    base = tmp_path_factory.getbasetemp()
    shared = base if worker_id == "master" else base.parent  # this session's, for every worker
    with open(shared / "smoke.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        results, status_file = shared / "smoke-results", shared / "smoke-status"
        if not status_file.exists():
            patch = pytest.MonkeyPatch()
            patch.delenv("WANDB_API_KEY", raising=False)
            patch.setenv("WANDB_MODE", "offline")
            try:
                status = main(["run", "smoke", "--results-dir", str(results)])
            finally:
                patch.undo()
            status_file.write_text(str(status))
    return int(status_file.read_text()), results / "smoke"
