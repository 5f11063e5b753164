"""Training objectives. Each reads a `Pass` and returns named terms per image (B,), always with
`loss` (what is minimised), `recon` (E_q[-log p(x|z)]) and `kl` (KL(q(z|x) || p(z)));
the mean over the batch is taken once, by the training loop."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import Tensor

from vae_zoo.model import VAE, Pass, log_mean_exp


def elbo(out: Pass, beta: float = 1.0) -> dict[str, Tensor]:
    """The (β-weighted) evidence lower bound: loss = recon + β·KL, the KL in closed form and the
    reconstruction term averaged over the k samples of z."""
    recon = -out.log_px_given_z.mean(0)
    kl = out.kl()
    return {"loss": recon + beta * kl, "recon": recon, "kl": kl}


def iwae(out: Pass) -> dict[str, Tensor]:
    """The importance-weighted bound of Burda et al. (2015):
    log (1/k) Σ_i p(x, z_i) / q(z_i|x), z_i ~ q(z|x); loss is its negative.
    recon and kl are reported as for the ELBO, for comparison."""
    bound = log_mean_exp(out.log_importance_weights(), dim=0)
    return {"loss": -bound, "recon": -out.log_px_given_z.mean(0), "kl": out.kl()}


OBJECTIVES: dict[str, Callable[..., dict[str, Tensor]]] = {"elbo": elbo, "iwae": iwae}


@dataclass(frozen=True)
class Objective:
    """An objective by name, with `k` samples of z per image and its own settings (β for the
    ELBO)."""

    name: str
    k: int = 1
    settings: dict = field(default_factory=dict)

    def __call__(self, model: VAE, x: Tensor) -> dict[str, Tensor]:
        return OBJECTIVES[self.name](model(x, self.k), **self.settings)
