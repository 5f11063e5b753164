"""Likelihood estimators: the ELBO and its terms, and importance-sampled log p(x).

All work over batches of images and samples of z at once; nothing loops over single images.
"""

from __future__ import annotations

import math

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


def importance_sampled_log_likelihood(
    model: VAE, images: Tensor, samples: int, batch_size: int = 100, chunk: int = 100
) -> Tensor:
    """Estimate log p(x) per image, (N,), by importance sampling with q(z|x) as the proposal:

        log p(x) ≈ log (1/K) Σ_k p(x, z_k) / q(z_k|x),   z_k ~ q(z|x).

    The estimate is a lower bound in expectation (it is the IWAE bound with K samples) and
    converges to log p(x) as K grows. Each batch is encoded once and its K samples are decoded
    in chunks, combined with a running logsumexp, so memory stays bounded for any K.
    """
    with torch.inference_mode():
        estimates = []
        for batch in images.split(batch_size):
            posterior = model.posterior(batch)
            total = torch.full((len(batch),), -math.inf, device=batch.device)
            for start in range(0, samples, chunk):
                count = min(chunk, samples - start)
                log_weights = model.sample_pass(batch, posterior, count).log_importance_weights()
                total = torch.logaddexp(total, torch.logsumexp(log_weights, dim=0))
            estimates.append(total - math.log(samples))
        return torch.cat(estimates)


def mean_and_standard_error(values: Tensor) -> tuple[float, float]:
    """The mean of per-image values and its standard error across images."""
    values = values.double()
    return values.mean().item(), (values.std() / math.sqrt(len(values))).item()
