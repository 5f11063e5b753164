"""Gradient estimators: how a pass's samples carry gradients to the encoder.

An estimator decides two things, and nothing else about the objective:
- `log_q(q, z)`: log q(z|·) as the objective sees it. The reparameterisation estimator keeps the
  gradient through q's parameters (the score term); sticking-the-landing and DReG stop it and
  keep only the path through z, whose expectation is the same (the score has mean zero) and
  whose variance vanishes as q approaches the true posterior (Roeder et al. 2017).
- `bound_surrogate(log_w, out)`: what is differentiated for an importance-weighted bound
  log (1/k) Σ w_i. Its value is not the bound (objectives report the bound itself); its
  gradient is the estimator's.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from vae_zoo.gaussian import DiagonalGaussian
from vae_zoo.settings import NoSettings


def log_mean_exp(values: Tensor, dim: int = 0) -> Tensor:
    """log(mean(exp(values))) along `dim`, computed stably."""
    return torch.logsumexp(values, dim) - math.log(values.shape[dim])


class Reparameterisation:
    """The standard estimator (Kingma & Welling 2014): z = μ + σ·ε, every term differentiated."""

    Settings = NoSettings
    path_derivative = False  # True: log q sees q's parameters detached
    layers_supported: int | None = None  # None: any number of stochastic layers

    def log_q(self, q: DiagonalGaussian, z: Tensor) -> Tensor:
        return q.log_prob(z)

    def bound_surrogate(self, log_w: Tensor, zs: list[Tensor]) -> Tensor:
        """(k, B) log-weights → (B,)."""
        return log_mean_exp(log_w, 0)


class StickingTheLanding(Reparameterisation):
    """Sticking the landing (Roeder et al. 2017): the path derivative only. With a closed-form
    KL there is no log q term to stop, so an entry with this estimator uses the Monte Carlo KL."""

    path_derivative = True

    def log_q(self, q: DiagonalGaussian, z: Tensor) -> Tensor:
        return q.detach().log_prob(z)


class DoublyReparameterised(StickingTheLanding):
    """DReG (Tucker et al. 2018) for importance-weighted bounds. The bound's gradient is
    Σ_i w̃_i ∇ log w_i with w̃ the normalised weights; for the encoder, DReG replaces it by
    Σ_i w̃_i² ∂log w_i/∂z_i · ∂z_i/∂φ (log q's parameters stopped), an unbiased estimate of the
    same gradient whose variance does not grow with k. The decoder's gradient is unchanged.

    Written as the surrogate Σ_i w̃_i log w_i (w̃ constant) whose gradient reaching z_i is
    scaled by w̃_i once more: one backward pass gives w̃ for the decoder and w̃² for the encoder.
    That scaling is exact when z is the only path to the encoder, hence one stochastic layer.
    """

    layers_supported = 1

    def bound_surrogate(self, log_w: Tensor, zs: list[Tensor]) -> Tensor:
        weights = torch.softmax(log_w.detach(), dim=0)  # (k, B) normalised importance weights
        z = zs[0]
        if z.requires_grad:
            z.register_hook(lambda grad: grad * weights.unsqueeze(-1))
        return (weights * log_w).sum(0)
