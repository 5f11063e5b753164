"""A small synthetic results directory in the format of docs/results-format.md, for report tests.

Two datasets (`circles`, with true factors, traversals and AIS; `digits`, labelled, with FID and
KID) × three models × three seeds, where the last seed of `digits`/`iwae-k5` failed (diverged).
Each finished run keeps per-image values over NLL_IMAGES images (`image_log_px`, ...): image
difficulty shared by every model and seed, a per-model image effect, a small seed effect and
per-(seed, image) noise, with the run's metrics their means. One run had not converged
(UNCONVERGED) and one NLL estimate still moved with K (NLL_NOT_CONVERGED). `new_format=False`
writes results as they were before per-image values and training diagnostics existed. Every
number and array comes from a seeded generator, so the directory is the same every time.
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
NLL_IMAGES = 200
UNCONVERGED = ("circles", "mlp-vae", 1)
NLL_NOT_CONVERGED = ("digits", "beta-vae-b4", 0)

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


def _per_image(d_index: int, m_index: int, rng: np.random.Generator, dataset: str,
               model: str) -> dict[str, np.ndarray]:
    """Per-image values of one run: difficulty shared by all runs of the dataset, an image effect
    of the model shared by its seeds, a seed effect, and noise."""
    base = 90.0 if dataset == "circles" else 60.0
    difficulty = np.random.default_rng([d_index, 99]).normal(0, 10, NLL_IMAGES)
    model_effect = np.random.default_rng([d_index, m_index, 98]).normal(0, 1, NLL_IMAGES)
    nll = (base + _NLL[model] + rng.normal(0, 0.05) + difficulty + model_effect
           + rng.normal(0, 2, NLL_IMAGES))
    kl = _KL[model] + rng.normal(0, 0.5) + rng.normal(0, 1, NLL_IMAGES)
    elbo = -(nll + rng.uniform(2, 4) + rng.normal(0, 0.5, NLL_IMAGES))
    values = {"image_log_px": -nll, "image_elbo": elbo, "image_kl": kl, "image_recon": -elbo - kl,
              "image_iwae_k1": elbo, "image_iwae_k5": elbo + rng.uniform(0.5, 1.5)}
    if dataset == "circles":
        values["image_log_px_ais"] = -nll + rng.normal(0, 0.3, NLL_IMAGES)
    return {name: array.astype(np.float32) for name, array in values.items()}


def _metrics(rng: np.random.Generator, dataset: str, model: str, seed: int,
             per_image: dict[str, np.ndarray], new_format: bool) -> dict[str, float]:
    def mean(name: str) -> float:
        return float(per_image[name].astype(np.float64).mean())

    metrics = {
        "test_elbo": mean("image_elbo"),
        "test_recon": mean("image_recon"),
        "test_kl": mean("image_kl"),
        "test_nll": -mean("image_log_px"),
        "test_nll_se": rng.uniform(0.05, 0.1),
        "iwae_k1": mean("image_iwae_k1"),
        "iwae_k5": mean("image_iwae_k5"),
        "active_units": float(2 if model == "beta-vae-b4" else 4),
        "params": 123_456.0,
        "train_seconds": rng.uniform(10, 20),
        "peak_memory_mb": 512.0,
        "best_epoch": float(EPOCHS),
        "a_new_metric": rng.normal(),  # unknown to the report: shown generically
    }
    if dataset == "circles":
        metrics["mig"] = rng.uniform(0.1, 0.6)
        metrics["probe_r2_radius"] = rng.uniform(0.5, 0.99)
    else:
        metrics["fid"] = rng.uniform(5, 30)
    if not new_format:
        return metrics
    gap = 0.25 if (dataset, model, seed) == NLL_NOT_CONVERGED else rng.uniform(0.0, 0.05)
    metrics.update({
        "converged": 0.0 if (dataset, model, seed) == UNCONVERGED else 1.0,
        "stopped_early": 0.0,
        "epochs_trained": float(EPOCHS),
        "latent_dim": float(LATENT_DIM),
        "test_nll_k_tenth": metrics["test_nll"] + gap,
        "nll_k_gap": gap,
        "ess_mean": rng.uniform(20, 40),
        "ess_p5": rng.uniform(1, 5),
    })
    if dataset == "circles":
        metrics.update({"test_nll_ais": -mean("image_log_px_ais"),
                        "ais_acceptance": rng.uniform(0.6, 0.8),
                        "bdmc_lower": -30.0 - rng.uniform(0, 0.1),
                        "bdmc_upper": -30.0 + rng.uniform(0, 0.1)})
        metrics["bdmc_gap"] = metrics["bdmc_upper"] - metrics["bdmc_lower"]
    else:
        metrics.update({"kid": rng.uniform(0.01, 0.03), "kid_std": rng.uniform(0.001, 0.002),
                        "fid_ref": 2.5, "fid_ref_sd": 0.3, "kid_ref": 0.001})
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
    new_format: bool = True,
) -> Path:
    """Write `root/results/synthetic/` and return it (a smaller one for fewer names or seeds;
    without per-image values and training diagnostics for `new_format=False`)."""
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
                    "eval": {"nll_samples": 100, "nll_images": NLL_IMAGES},
                }
                if new_format:
                    config["train"].update(select="objective", patience=0)
                per_image = _per_image(d_index, m_index, rng, dataset, model)
                metrics = {} if failed else _metrics(rng, dataset, model, seed, per_image,
                                                     new_format)
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
                    arrays = _arrays(rng, dataset, model)
                    if new_format:
                        arrays.update(per_image)
                    np.savez(run_dir / "arrays.npz", **arrays)
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
