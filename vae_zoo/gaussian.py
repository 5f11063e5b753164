"""The diagonal Gaussian every posterior q(z|·) and conditional p(z_l|z_{l+1}) is.

Written out rather than built from `torch.distributions` (`Independent(Normal(...))`): a model
pass builds one per stochastic layer, and the library's objects cost more to construct and
evaluate than the arithmetic they wrap at a training batch of 100 (their argument checks,
broadcasting and the KL registry lookup). `tests/test_gaussian.py` compares every method with
`torch.distributions`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

LOG_2PI = math.log(2 * math.pi)


def gaussian_log_density(z: Tensor, mean: Tensor, log_var: Tensor) -> Tensor:
    """log N(z; mean, exp(log_var)) per coordinate, broadcasting."""
    return -0.5 * (LOG_2PI + log_var + (z - mean).pow(2) * torch.exp(-log_var))


class DiagonalGaussian:
    """N(loc, diag(exp(log_var))) with the last dimension as the event: `log_prob` sums over
    it, `log_density` does not."""

    def __init__(self, loc: Tensor, log_var: Tensor):
        self.loc, self.log_var = loc, log_var
        self.scale = torch.exp(0.5 * log_var)

    @property
    def mean(self) -> Tensor:
        return self.loc

    @property
    def stddev(self) -> Tensor:
        return self.scale

    @property
    def variance(self) -> Tensor:
        return torch.exp(self.log_var)

    def rsample(self, sample_shape: tuple[int, ...] = ()) -> Tensor:
        """loc + scale·ε with ε ~ N(0, I) from the global stream: (*sample_shape, *loc.shape),
        differentiable in loc and log_var."""
        noise = torch.randn((*sample_shape, *self.loc.shape), dtype=self.loc.dtype,
                            device=self.loc.device)
        return self.loc + noise * self.scale

    def log_density(self, z: Tensor) -> Tensor:
        """log q per coordinate, broadcasting z against the batch: (..., d)."""
        return gaussian_log_density(z, self.loc, self.log_var)

    def log_prob(self, z: Tensor) -> Tensor:
        """log q(z), the coordinates summed: (...)."""
        return self.log_density(z).sum(-1)

    def detach(self) -> DiagonalGaussian:
        """The same Gaussian with its parameters cut from the graph (path-derivative
        estimators: log q sees z's gradient only)."""
        return DiagonalGaussian(self.loc.detach(), self.log_var.detach())

    def kl_standard_normal(self) -> Tensor:
        """KL(self || N(0, I)) per coordinate in closed form: ½(σ² + μ² - 1 - log σ²)."""
        return 0.5 * (torch.exp(self.log_var) + self.loc.pow(2) - 1 - self.log_var)
