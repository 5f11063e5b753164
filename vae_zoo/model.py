"""The VAE: an encoder, a decoder, a likelihood and a prior, put together.

`model(x, k)` runs one pass with `k` posterior samples per image and returns a `Pass`, from which
objectives and metrics read every term they need.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.distributions import Independent, kl_divergence

from vae_zoo.distributions import diagonal_gaussian


@dataclass
class Pass:
    """One encoder-decoder pass over a batch with k samples of z per image."""

    posterior: Independent  # q(z|x), batch shape (B,), event (latent,)
    prior: Independent  # p(z), event (latent,)
    z: Tensor  # (k, B, latent)
    decoded: Tensor  # (k, B, C, H, W) likelihood parameters
    log_px_given_z: Tensor  # (k, B)
    log_pz: Tensor  # (k, B)

    def kl(self) -> Tensor:
        """KL(q(z|x) || p(z)) in closed form, per image: (B,)."""
        return kl_divergence(self.posterior, self.prior)

    def log_importance_weights(self) -> Tensor:
        """log p(x, z) - log q(z|x) for every sample: (k, B)."""
        return self.log_px_given_z + self.log_pz - self.posterior.log_prob(self.z)


class VAE(nn.Module):
    def __init__(self, encoder: nn.Module, decoder: nn.Module, likelihood: nn.Module,
                 prior: nn.Module, latent_dim: int):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.likelihood = likelihood
        self.prior = prior
        self.latent_dim = latent_dim

    def posterior(self, x: Tensor) -> Independent:
        """q(z|x) for a batch of images (B, C, H, W)."""
        mean, log_var = self.encoder(x)
        return diagonal_gaussian(mean, log_var)

    def forward(self, x: Tensor, k: int = 1) -> Pass:
        return self.sample_pass(x, self.posterior(x), k)

    def sample_pass(self, x: Tensor, posterior: Independent, k: int) -> Pass:
        """Draw k samples from an already computed q(z|x) and decode them (lets importance
        sampling encode a batch once and decode it in chunks of samples)."""
        z = posterior.rsample((k,))  # (k, B, latent)
        decoded = self.decoder(z)  # (k, B, C, H, W)
        return Pass(
            posterior=posterior,
            prior=self.prior.distribution(self.latent_dim, z),
            z=z,
            decoded=decoded,
            log_px_given_z=self.likelihood.log_prob(decoded, x),
            log_pz=self.prior.log_prob(z),
        )

    def decode_mean(self, z: Tensor) -> Tensor:
        """The mean image of p(x|z) for latents (..., latent)."""
        return self.likelihood.mean(self.decoder(z))

    @torch.no_grad()
    def sample(self, count: int, generator: torch.Generator | None = None,
               like: Tensor | None = None) -> Tensor:
        """Decoder means of `count` draws from the prior: (count, C, H, W)."""
        like = like if like is not None else next(self.parameters())
        z = self.prior.sample(count, self.latent_dim, like, generator)
        return self.decode_mean(z)


def log_mean_exp(values: Tensor, dim: int = 0) -> Tensor:
    """log(mean(exp(values))) along `dim`, computed stably."""
    return torch.logsumexp(values, dim) - math.log(values.shape[dim])
