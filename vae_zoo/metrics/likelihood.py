"""Likelihood estimators: the ELBO and its terms, and importance-sampled log p(x).

All work over batches of images and samples of z at once; nothing loops over single images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from vae_zoo.model import VAE

# Functions run `with torch.inference_mode():` rather than under the decorator: mutmut (`make
# mutants`) does not mutate decorated functions.


def elbo_terms(model: VAE, images: Tensor, batch_size: int = 1000) -> dict[str, Tensor]:
    """Per-image ELBO terms with β = 1 and one sample of z: `recon` (E_q[-log p(x|z)]), `kl`
    (closed form) and `elbo` = -(recon + kl), each (N,), in nats."""
    with torch.inference_mode():
        recon, kl = [], []
        for batch in images.split(batch_size):
            out = model(batch, 1)
            recon.append(-out.log_px_given_z[0])
            kl.append(out.kl())
        recon_all, kl_all = torch.cat(recon), torch.cat(kl)
        return {"elbo": -(recon_all + kl_all), "recon": recon_all, "kl": kl_all}


@dataclass(frozen=True)
class ImportanceSampling:
    """Per-image results of importance sampling with K samples, each (N,), in float64."""

    log_px: Tensor  # log (1/K) Σ_k w_k, the estimate of log p(x)
    log_px_tenth: Tensor  # the same from the first ⌈K/10⌉ samples (a convergence check)
    ess: Tensor  # effective sample size (Σ w)² / Σ w², between 1 and K (Kong 1992)


def importance_sampling(model: VAE, images: Tensor, samples: int, batch_size: int = 100,
                        chunk: int = 100) -> ImportanceSampling:
    """Estimate log p(x) per image by importance sampling with q(z|x) as the proposal:

        log p(x) ≈ log (1/K) Σ_k w_k,   w_k = p(x, z_k) / q(z_k|x),   z_k ~ q(z|x),

    with two diagnostics of the estimate's own accuracy: the estimate from the first ⌈K/10⌉ of
    the same samples (a gap to the K-sample estimate says it is still moving with K) and the
    effective sample size of the weights (near 1: one sample dominates, q is a poor proposal).

    The estimate is a lower bound in expectation (it is the IWAE bound with K samples) and
    converges to log p(x) as K grows. Each batch is encoded once and its K samples are decoded
    in chunks, combined with running logsumexps of w and w², so memory stays bounded for any K.
    """
    tenth = -(-samples // 10)
    # Chunk boundaries, split at ⌈K/10⌉ so the running sum passes through it exactly.
    bounds = sorted({*range(0, samples, chunk), tenth, samples})
    with torch.inference_mode():
        log_px, log_px_tenth, ess = [], [], []
        for batch in images.split(batch_size):
            posterior = model.posterior(batch)
            log_sum = torch.full((len(batch),), -math.inf, device=batch.device)
            log_sum_squares = log_sum.clone()
            for start, stop in zip(bounds[:-1], bounds[1:]):
                log_weights = model.sample_pass(batch, posterior, stop - start
                                                ).log_importance_weights().double()  # (k, B)
                log_sum = torch.logaddexp(log_sum, torch.logsumexp(log_weights, dim=0))
                log_sum_squares = torch.logaddexp(log_sum_squares,
                                                  torch.logsumexp(2 * log_weights, dim=0))
                if stop == tenth:
                    log_px_tenth.append(log_sum - math.log(tenth))
            log_px.append(log_sum - math.log(samples))
            ess.append(torch.exp(2 * log_sum - log_sum_squares))
        return ImportanceSampling(torch.cat(log_px), torch.cat(log_px_tenth), torch.cat(ess))


def importance_sampled_log_likelihood(
    model: VAE, images: Tensor, samples: int, batch_size: int = 100, chunk: int = 100
) -> Tensor:
    """The importance-sampling estimate of log p(x) per image, (N,), as `importance_sampling`
    computes it (its diagnostics dropped)."""
    return importance_sampling(model, images, samples, batch_size, chunk).log_px


def mean_and_standard_error(values: Tensor) -> tuple[float, float]:
    """The mean of per-image values and its standard error across images."""
    values = values.double()
    return values.mean().item(), (values.std() / math.sqrt(len(values))).item()
