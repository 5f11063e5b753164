"""A small synthetic results directory in the format of docs/results-format.md, for report tests.

Two datasets (`circles`, with true factors and traversals; `digits`, labelled) × three models ×
three seeds, where the last seed of `digits`/`iwae-k5` failed (diverged). Every number and array
comes from a seeded generator, so the directory is the same every time it is built.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

SUITE = "synthetic"
SEEDS = (0, 1, 2)
MODELS = ("mlp-vae", "beta-vae-b4", "iwae-k5")
DATASETS = {"circles": 16, "digits": 8}  # name -> image side
LATENT_DIM = 6
EPOCHS = 5
FAILED = ("digits", "iwae-k5", 2)
FAILED_REASON = "diverged: loss is nan at epoch 3"

# Per-model offsets that make some differences clear and others within the seed spread.
_NLL = {"mlp-vae": 0.0, "beta-vae-b4": 6.0, "iwae-k5": -1.5}
_KL = {"mlp-vae": 20.0, "beta-vae-b4": 8.0, "iwae-k5": 23.0}


def _circle_images(factors: np.ndarray, side: int) -> np.ndarray:
    """(n, 1, side, side) soft discs at (x, radius) given by factors in [0, 1]."""
    grid = np.arange(side) + 0.5
    x = 3 + factors[:, 0] * (side - 6)
    radius = 1.5 + factors[:, 1] * side / 5
    distance = np.hypot(grid[None, None, :] - x[:, None, None], grid[None, :, None] - side / 2)
    return (1 / (1 + np.exp(2 * (distance - radius[:, None, None]))))[:, None].astype(np.float32)


def _blob_images(rng: np.random.Generator, n: int, side: int) -> np.ndarray:
    """(n, 1, side, side) smooth random blobs in [0, 1]."""
    noise = rng.random((n, side, side))
    smooth = noise + np.roll(noise, 1, 1) + np.roll(noise, 1, 2) + np.roll(noise, (1, 1), (1, 2))
    return ((smooth / 4) ** 2)[:, None].astype(np.float32)


def _arrays(rng: np.random.Generator, dataset: str, model: str) -> dict[str, np.ndarray]:
    side = DATASETS[dataset]
    m = 300
    if dataset == "circles":
        factors = rng.random((64, 2))
        originals = _circle_images(factors, side)
        samples = _circle_images(rng.random((64, 2)), side)
    else:
        originals = _blob_images(rng, 64, side)
        samples = _blob_images(rng, 64, side)
    noise = rng.normal(0, 0.05, originals.shape).astype(np.float32)
    reconstructions = np.clip(originals + noise, 0, 1)
    # A few active units, the rest collapsed (KL below 0.01 nats); beta-VAE collapses more.
    active = 2 if model == "beta-vae-b4" else 4
    kl_per_dim = np.concatenate(
        [rng.uniform(1, 6, active), rng.uniform(1e-4, 5e-3, LATENT_DIM - active)]
    )
    arrays = {
        "samples": samples,
        "originals": originals,
        "reconstructions": reconstructions,
        "kl_per_dim": rng.permutation(kl_per_dim).astype(np.float32),
    }
    if dataset == "circles":
        latent_factors = rng.random((m, 2)).astype(np.float32)
        arrays["factors"] = latent_factors
        arrays["latent_means"] = np.concatenate(
            [latent_factors * 2 - 1, rng.normal(0, 0.1, (m, LATENT_DIM - 2))], axis=1
        ).astype(np.float32)
        steps = np.linspace(0, 1, 7)
        traversals = [
            _circle_images(
                np.stack([steps, np.full(7, 0.5)], 1)
                if dim == 0
                else np.stack([np.full(7, 0.5), steps], 1)
                if dim == 1
                else np.full((7, 2), 0.5),
                side,
            )
            for dim in range(LATENT_DIM)
        ]
        arrays["traversals"] = np.stack(traversals).astype(np.float32)  # (latent, steps, 1, H, W)
    else:
        labels = rng.integers(0, 10, m)
        centres = rng.normal(0, 3, (10, LATENT_DIM))
        arrays["labels"] = labels.astype(np.int64)
        arrays["latent_means"] = (centres[labels] + rng.normal(0, 1, (m, LATENT_DIM))).astype(
            np.float32
        )
    return arrays


def _metrics(rng: np.random.Generator, dataset: str, model: str) -> dict[str, float]:
    base = 90.0 if dataset == "circles" else 60.0
    kl = _KL[model] + rng.normal(0, 0.5)
    nll = base + _NLL[model] + rng.normal(0, 1.0)
    elbo = -(nll + rng.uniform(2, 4))
    metrics = {
        "test_elbo": elbo,
        "test_recon": -elbo - kl,
        "test_kl": kl,
        "test_nll": nll,
        "test_nll_se": rng.uniform(0.05, 0.1),
        "iwae_k1": elbo,
        "iwae_k5": elbo + rng.uniform(0.5, 1.5),
        "active_units": float(2 if model == "beta-vae-b4" else 4),
        "params": 123_456.0,
        "train_seconds": rng.uniform(10, 20),
        "peak_memory_mb": 512.0,
        "a_new_metric": rng.normal(),  # unknown to the report: shown generically
    }
    if dataset == "circles":
        metrics["mig"] = rng.uniform(0.1, 0.6)
        metrics["probe_r2_radius"] = rng.uniform(0.5, 0.99)
    else:
        metrics["fid"] = rng.uniform(5, 30)
    return metrics


def _history(rng: np.random.Generator, epochs: int) -> pd.DataFrame:
    epoch = np.arange(1, epochs + 1)
    val_elbo = -150 + 50 * (1 - np.exp(-epoch / 2)) + rng.normal(0, 1, epochs)
    return pd.DataFrame(
        {
            "epoch": epoch,
            "train_loss": -val_elbo - 1,
            "train_recon": -val_elbo - 21,
            "train_kl": np.full(epochs, 20.0),
            "val_elbo": val_elbo,
            "val_recon": -val_elbo - 20,
            "val_kl": np.full(epochs, 20.0),
            "seconds": rng.uniform(1, 2, epochs),
        }
    )


def make_results(
    root: Path,
    *,
    datasets: tuple[str, ...] = tuple(DATASETS),
    models: tuple[str, ...] = MODELS,
    seeds: tuple[int, ...] = SEEDS,
    with_failed: bool = True,
) -> Path:
    """Write `root/results/synthetic/` and return it (a smaller one for fewer names or seeds)."""
    results_dir = Path(root) / "results" / SUITE
    summary = []
    for d_index, dataset in enumerate(datasets):
        for m_index, model in enumerate(models):
            for seed in seeds:
                rng = np.random.default_rng([d_index, m_index, seed])
                rid = f"{dataset}-{model}-s{seed}-{d_index}{m_index}{seed}abcde"
                run_dir = results_dir / "runs" / rid
                run_dir.mkdir(parents=True)
                failed = with_failed and (dataset, model, seed) == FAILED
                config = {
                    "run_id": rid,
                    "suite": SUITE,
                    "dataset": {
                        "name": dataset,
                        "options": {"side": DATASETS[dataset]},
                        "fingerprint": "0123abcd",
                    },
                    "model": {
                        "name": model,
                        "entry": model.split("-b")[0],
                        "hyperparameters": {"latent_dim": LATENT_DIM},
                    },
                    "seed": seed,
                    "train": {"epochs": EPOCHS, "batch_size": 100, "learning_rate": 0.001},
                    "eval": {"nll_samples": 100},
                }
                metrics = {} if failed else _metrics(rng, dataset, model)
                record = {
                    "run_id": rid,
                    "status": "failed" if failed else "finished",
                    "reason": FAILED_REASON if failed else None,
                    "metrics": metrics,
                    "provenance": {
                        "code_version": "0.1.0",
                        "git_commit": "0123456789abcdef",
                        "git_dirty": False,
                        "host": "synthetic-host",
                        "cpu": "Synthetic CPU @ 2 cores",
                        "device": "cpu",
                        "python": "3.11.0",
                        "libraries": {"torch": "2.14.1", "numpy": "2.4.6"},
                        "started_at": f"2025-01-01T00:{d_index}{m_index}:{seed:02d}Z",
                    },
                }
                (run_dir / "config.json").write_text(json.dumps(config, indent=2))
                (run_dir / "metrics.json").write_text(json.dumps(record, indent=2))
                _history(rng, 2 if failed else EPOCHS).to_csv(run_dir / "history.csv", index=False)
                if failed:
                    (run_dir / "error.txt").write_text(
                        "Traceback (most recent call last):\n  ...\n"
                        f"FloatingPointError: {FAILED_REASON}\n"
                    )
                else:
                    np.savez(run_dir / "arrays.npz", **_arrays(rng, dataset, model))
                summary.append(
                    {
                        "run_id": rid,
                        "suite": SUITE,
                        "dataset": dataset,
                        "model": model,
                        "seed": seed,
                        "status": record["status"],
                        "reason": record["reason"],
                        **metrics,
                    }
                )
    pd.DataFrame(summary).to_csv(results_dir / "summary.csv", index=False)
    return results_dir
