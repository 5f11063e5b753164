"""Likelihoods p(x|z) and priors p(z).

A likelihood reads the decoder's output as the parameters of a distribution over pixels and
returns log p(x|z) summed over the pixels of each image. A prior gives log p(z) summed over latent
dimensions and draws samples. Both use `torch.distributions`, with argument validation off (it is
a per-step cost in the training loop and the shapes are ours).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.distributions import Independent, Normal


def diagonal_gaussian(mean: Tensor, log_var: Tensor) -> Independent:
    """N(mean, diag(exp(log_var))) with the last dimension as the event."""
    return Independent(Normal(mean, torch.exp(0.5 * log_var), validate_args=False), 1,
                       validate_args=False)


class StandardNormalPrior(nn.Module):
    """p(z) = N(0, I)."""

    def distribution(self, latent_dim: int, like: Tensor) -> Independent:
        zeros = like.new_zeros(latent_dim)
        return Independent(Normal(zeros, zeros + 1.0, validate_args=False), 1,
                           validate_args=False)

    def log_prob(self, z: Tensor) -> Tensor:
        # log N(z; 0, I) summed over the last dimension, written out: it is cheaper than building
        # a distribution object in the inner loop of importance sampling.
        return -0.5 * (z.pow(2).sum(-1) + z.shape[-1] * math.log(2 * math.pi))

    def sample(self, count: int, latent_dim: int, like: Tensor,
               generator: torch.Generator | None = None) -> Tensor:
        return torch.randn(count, latent_dim, generator=generator, device=like.device,
                           dtype=like.dtype)


def softplus_sum(values: Tensor) -> Tensor:
    """Σ softplus(v) over the last dimension, as Σ max(v, 0) - Σ log sigmoid(|v|).

    The identity softplus(v) = max(v, 0) + log(1 + e^-|v|) is exact, and sigmoid(|v|) lies in
    [0.5, 1], so its log loses nothing: the float32 error matches `F.softplus` (both ≤ 6e-7 on
    |v| ≤ 150). It is used because this PyTorch build's `softplus`/`log1p` are not vectorised
    (about 4 ns per element, against 1.4 ns for this form).
    """
    return values.clamp(min=0).sum(-1) - torch.log(torch.sigmoid(values.abs())).sum(-1)


class BernoulliLikelihood(nn.Module):
    """Pixels are independent Bernoulli variables; the decoder outputs their logits."""

    def log_prob(self, logits: Tensor, x: Tensor) -> Tensor:
        """log p(x|z) per image: (..., C, H, W) logits and (B, C, H, W) images → (...).

        log Bernoulli(x; sigmoid(l)) = x·l - softplus(l), summed over pixels. Written out rather
        than through `binary_cross_entropy_with_logits`, because importance sampling calls this on
        (K, B, C, H, W) logits and it dominates the cost there: it avoids expanding x to the
        logits' shape, and `softplus_sum` is 2.5x faster than `F.softplus` on this machine's
        PyTorch build (see its docstring). Measured: importance-sampled NLL 150 → ~210 images/s.
        """
        return (logits * x).flatten(-3).sum(-1) - softplus_sum(logits.flatten(-3))

    def mean(self, logits: Tensor) -> Tensor:
        return torch.sigmoid(logits)


class GaussianLikelihood(nn.Module):
    """Pixels are independent Gaussians around the decoder output, with one scale shared by all
    pixels: fixed, or learned (as a log-scale parameter) when `scale` is "learned"."""

    def __init__(self, scale: float | str = "learned"):
        super().__init__()
        if scale == "learned":
            self.log_scale = nn.Parameter(torch.zeros(()))
        else:
            self.register_buffer("log_scale", torch.tensor(math.log(float(scale))))

    def log_prob(self, mean: Tensor, x: Tensor) -> Tensor:
        """log p(x|z) per image: (..., C, H, W) means and (B, C, H, W) images → (...)."""
        per_pixel = Normal(mean, self.log_scale.exp(), validate_args=False).log_prob(x)
        return per_pixel.flatten(-3).sum(-1)

    def mean(self, mean: Tensor) -> Tensor:
        return mean


LIKELIHOODS = {"bernoulli": BernoulliLikelihood, "gaussian": GaussianLikelihood}
PRIORS = {"standard-normal": StandardNormalPrior}
