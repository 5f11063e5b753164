"""Test-set evaluation of a trained model: every metric of a run, and the small arrays the report
draws. Shared by every zoo entry: nothing here knows which entry it measures."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from vae_zoo.data import ImageData
from vae_zoo.metrics.likelihood import (
    elbo_terms,
    importance_sampled_log_likelihood,
    mean_and_standard_error,
)
from vae_zoo.model import VAE


@dataclass(frozen=True)
class EvalConfig:
    nll_samples: int = 1000  # K, importance samples per test image for test_nll
    nll_batch_size: int = 100  # test images per importance-sampling batch
    nll_chunk: int = 100  # samples decoded at once (bounds memory)
    batch_size: int = 1000  # test images per batch for the ELBO terms
    grid_images: int = 64  # samples and reconstructions kept for the report


def evaluate(model: VAE, data: ImageData, config: EvalConfig, *, seed: int,
             log=print) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Metrics of `model` on `data.test` (nats per image) and arrays for the report.

    `log` receives one line per metric with the time it took.
    """
    model.eval()
    torch.manual_seed(seed)
    images = data.test.images
    metrics: dict[str, float] = {}
    timings: dict[str, float] = {}

    started = time.perf_counter()
    terms = elbo_terms(model, images, config.batch_size)
    for name in ("elbo", "recon", "kl"):
        metrics[f"test_{name}"] = terms[name].double().mean().item()
    timings["elbo"] = time.perf_counter() - started

    started = time.perf_counter()
    log_px = importance_sampled_log_likelihood(
        model, images, config.nll_samples, config.nll_batch_size, config.nll_chunk
    )
    mean_log_px, standard_error = mean_and_standard_error(log_px)
    metrics["test_nll"] = -mean_log_px
    metrics["test_nll_se"] = standard_error
    timings["nll"] = time.perf_counter() - started

    arrays = report_arrays(model, data, config, seed)
    for name, seconds in timings.items():
        log(f"  {name}: {seconds:.1f} s")
    metrics["eval_seconds"] = sum(timings.values())
    return metrics, arrays


@torch.no_grad()
def report_arrays(model: VAE, data: ImageData, config: EvalConfig,
                  seed: int) -> dict[str, np.ndarray]:
    """Samples from the prior, and test images with their reconstructions."""
    generator = torch.Generator(device=data.device).manual_seed(seed)
    count = min(config.grid_images, len(data.test))
    originals = data.test.images[:count]
    reconstructions = model.decode_mean(model.posterior(originals).mean)
    samples = model.sample(config.grid_images, generator=generator, like=originals)

    def as_array(images: torch.Tensor) -> np.ndarray:
        return images.clamp(0, 1).float().cpu().numpy()

    return {"samples": as_array(samples), "originals": as_array(originals),
            "reconstructions": as_array(reconstructions)}
