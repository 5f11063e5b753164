"""Priors p(z) over the top stochastic layer: modules, possibly with learned parameters.

A prior gives `log_prob(z)` (summed over the latent dimensions), `marginal_log_prob(z)` (the log
density of each coordinate under the prior's one-dimensional marginal, used for KL per
dimension), and `sample`. `closed_form_kl(q)` is KL(q || p) per coordinate for a diagonal
Gaussian q where it has a closed form (`has_closed_form = True`); otherwise (mixtures) the KL is
estimated from samples.
A prior that needs the model (VampPrior encodes its pseudo-inputs) gets it through `attach`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from vae_zoo.gaussian import LOG_2PI, DiagonalGaussian, gaussian_log_density
from vae_zoo.settings import NoSettings, setting


class Prior(nn.Module):
    """What every prior shares: whether a closed-form KL against it exists (`has_closed_form`,
    a class attribute, so the zoo can decide the KL without building one) and `attach`, which
    only a prior that needs the model overrides."""

    has_closed_form = False

    def attach(self, top_posterior: Callable) -> None:
        pass

    def closed_form_kl(self, posterior: DiagonalGaussian) -> Tensor:
        """KL(posterior || p) per coordinate, (B, d); only where `has_closed_form`."""
        raise NotImplementedError(f"{type(self).__name__} has no closed-form KL")


class StandardNormalPrior(Prior):
    """p(z) = N(0, I)."""

    Settings = NoSettings
    has_closed_form = True

    def __init__(self, latent_dim: int, image_shape=None, settings: NoSettings | None = None):
        super().__init__()
        self.latent_dim = latent_dim

    def closed_form_kl(self, posterior: DiagonalGaussian) -> Tensor:
        return posterior.kl_standard_normal()

    def log_prob(self, z: Tensor) -> Tensor:
        # Written out: cheaper than building a distribution in the inner loop of importance
        # sampling.
        return -0.5 * (z.pow(2).sum(-1) + z.shape[-1] * LOG_2PI)

    def marginal_log_prob(self, z: Tensor) -> Tensor:
        return -0.5 * (z.pow(2) + LOG_2PI)

    def sample(self, count: int, like: Tensor,
               generator: torch.Generator | None = None) -> Tensor:
        return torch.randn(count, self.latent_dim, generator=generator, device=like.device,
                           dtype=like.dtype)


class GaussianMixturePrior(Prior):
    """A mixture of diagonal Gaussians with learned weights, means and variances:
    p(z) = Σ_c π_c N(z; μ_c, diag σ_c²), equally weighted at the start, with unit variances and
    means drawn from N(0, I) (from the seeded global stream, as every other initial weight)."""

    def __init__(self, latent_dim: int, image_shape, settings):
        super().__init__()
        self.latent_dim = latent_dim
        count = settings.components
        self.means = nn.Parameter(torch.randn(count, latent_dim))
        self.log_vars = nn.Parameter(torch.zeros(count, latent_dim))
        self.logits = nn.Parameter(torch.zeros(count))

    def components(self) -> tuple[Tensor, Tensor, Tensor]:
        """Means and log-variances (C, d), and log mixture weights (C,)."""
        return self.means, self.log_vars, torch.log_softmax(self.logits, 0)

    def log_prob(self, z: Tensor) -> Tensor:
        means, log_vars, log_weights = self.components()
        per_component = gaussian_log_density(z.unsqueeze(-2), means, log_vars).sum(-1)  # (..., C)
        return torch.logsumexp(per_component + log_weights, dim=-1)

    def marginal_log_prob(self, z: Tensor) -> Tensor:
        means, log_vars, log_weights = self.components()
        per_component = gaussian_log_density(z.unsqueeze(-2), means, log_vars)  # (..., C, d)
        return torch.logsumexp(per_component + log_weights[:, None], dim=-2)

    def sample(self, count: int, like: Tensor,
               generator: torch.Generator | None = None) -> Tensor:
        means, log_vars, log_weights = (t.to(like.device) for t in self.components())
        chosen = torch.multinomial(log_weights.exp(), count, replacement=True,
                                   generator=generator)
        noise = torch.randn(count, self.latent_dim, generator=generator, device=like.device,
                            dtype=like.dtype)
        return means[chosen] + torch.exp(0.5 * log_vars[chosen]) * noise


@dataclass(frozen=True)
class MixtureSettings:
    components: int = setting(10, positive=True, maximum=10_000, doc="mixture components")


class MixtureOfGaussiansPrior(GaussianMixturePrior):
    Settings = MixtureSettings


@dataclass(frozen=True)
class VampSettings:
    pseudo_inputs: int = setting(100, positive=True, maximum=10_000,
                                 doc="learned pseudo-inputs (the paper uses 500 on MNIST)")


class VampPrior(GaussianMixturePrior):
    """VampPrior (Tomczak & Welling 2018): p(z) = (1/K) Σ_k q(z|u_k), the model's own posterior
    at K learned pseudo-inputs u_k. The pseudo-inputs are images (sigmoid of a learned
    parameter, so they stay in [0, 1]), initialised near grey; the encoder is the model's (given
    by `attach`), not a copy, so its weights are saved once."""

    Settings = VampSettings

    def __init__(self, latent_dim: int, image_shape, settings: VampSettings):
        Prior.__init__(self)
        self.latent_dim = latent_dim
        self.pseudo_logits = nn.Parameter(0.01 * torch.randn(settings.pseudo_inputs, *image_shape))
        self.top_posterior: Callable | None = None

    def attach(self, top_posterior: Callable) -> None:
        # A plain attribute, not a submodule: the encoder belongs to the model.
        self.__dict__["top_posterior"] = top_posterior

    def pseudo_inputs(self) -> Tensor:
        return torch.sigmoid(self.pseudo_logits)

    def components(self) -> tuple[Tensor, Tensor, Tensor]:
        means, log_vars = self.top_posterior(self.pseudo_inputs())
        count = len(means)
        return means, log_vars, means.new_full((count,), -math.log(count))
