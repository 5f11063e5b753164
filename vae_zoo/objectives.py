"""Training objectives. Each is a function of a `Pass`, the `TrainingContext` and its own declared
settings, and returns named terms per image (B,): always `loss` (what is reported and, unless a
`surrogate` is given, minimised), `recon` (E_q[-log p(x|z)]) and `kl` (KL(q(z|x) || p(z))).
The mean over the batch is taken once, by the training loop.

- `surrogate`: what is differentiated when it differs from `loss` (gradient estimators such as
  DReG change the gradient, not the value);
- `encoder_surrogate`: what the encoder's parameters are differentiated by when it differs from
  what the rest of the model is (PIWAE).
An objective that needs a second network (FactorVAE's discriminator) declares an `auxiliary`
module with its own optimiser, updated by the training loop after each step of the model.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vae_zoo.estimators import Reparameterisation, log_mean_exp
from vae_zoo.model import VAE, Pass
from vae_zoo.nets import mlp
from vae_zoo.settings import setting


@dataclass(frozen=True)
class TrainingContext:
    """Where training is, for objectives with schedules."""

    step: int = 0  # optimiser steps taken before this one
    steps_per_epoch: int = 1
    dataset_size: int = 1  # training images (β-TCVAE's minibatch stratified sampling)
    auxiliary: nn.Module | None = None  # the objective's second network (set by `Objective`)

    @property
    def epochs_done(self) -> float:
        """Training progress in epochs, fractional: 0 at the first step."""
        return self.step / self.steps_per_epoch


def reconstruction(out: Pass) -> Tensor:
    """E_q[-log p(x|z)] per image, averaged over the k samples: (B,)."""
    return -out.log_px_given_z.mean(0)


# ---- the ELBO family ------------------------------------------------------------------------

@dataclass(frozen=True)
class ElboSettings:
    k: int = setting(1, positive=True, maximum=10_000, doc="samples of z per image")
    beta: float = setting(1.0, minimum=0.0, maximum=1e6, doc="weight of the KL term")


def elbo(out: Pass, context: TrainingContext, s: ElboSettings) -> dict[str, Tensor]:
    """The (β-weighted) evidence lower bound: loss = recon + β·KL (Higgins et al. 2017 for
    β ≠ 1), the reconstruction term averaged over the k samples of z."""
    recon, kl = reconstruction(out), out.kl()
    return {"loss": recon + s.beta * kl, "recon": recon, "kl": kl}


@dataclass(frozen=True)
class WarmupSettings:
    k: int = setting(1, positive=True, maximum=10_000, doc="samples of z per image")
    warmup_epochs: float = setting(2.0, positive=True, maximum=100_000,
                                   doc="epochs over which β rises linearly from 0 to 1")


def elbo_warmup(out: Pass, context: TrainingContext, s: WarmupSettings) -> dict[str, Tensor]:
    """KL warm-up (Sønderby et al. 2016): loss = recon + β(t)·KL, β(t) = min(1, t / T) with t
    the epochs done."""
    beta = min(1.0, context.epochs_done / s.warmup_epochs)
    recon, kl = reconstruction(out), out.kl()
    return {"loss": recon + beta * kl, "recon": recon, "kl": kl}


@dataclass(frozen=True)
class FreeBitsSettings:
    k: int = setting(1, positive=True, maximum=10_000, doc="samples of z per image")
    free_bits: float = setting(0.1, minimum=0.0, maximum=1e3,
                               doc="λ, nats of KL per dimension left free")


def elbo_free_bits(out: Pass, context: TrainingContext,
                   s: FreeBitsSettings) -> dict[str, Tensor]:
    """Free bits (Kingma et al. 2016): loss = recon + Σ_d max(λ, KL_d), with KL_d the batch
    mean of dimension d's KL; a dimension below λ nats costs the constant λ, so its KL gets no
    gradient and the optimiser has no reason to collapse it."""
    recon, kl = reconstruction(out), out.kl()
    kl_per_dim = out.kl_per_dim()  # (B, d)
    below = kl_per_dim.mean(0) < s.free_bits  # (d,)
    penalty = torch.where(below, torch.full_like(kl_per_dim, s.free_bits), kl_per_dim).sum(-1)
    return {"loss": recon + penalty, "recon": recon, "kl": kl}


@dataclass(frozen=True)
class CapacitySettings:
    k: int = setting(1, positive=True, maximum=10_000, doc="samples of z per image")
    gamma: float = setting(1000.0, minimum=0.0, maximum=1e6, doc="weight of |KL - C|")
    capacity_max: float = setting(25.0, minimum=0.0, maximum=1e6,
                                  doc="C at the end of the schedule, nats")
    capacity_epochs: float = setting(4.0, positive=True, maximum=100_000,
                                     doc="epochs over which C rises from 0")


def beta_vae_capacity(out: Pass, context: TrainingContext,
                      s: CapacitySettings) -> dict[str, Tensor]:
    """Controlled capacity (Burgess et al. 2018): loss = recon + γ·|KL - C(t)|, the target C
    rising linearly from 0 to C_max, so information enters the latents gradually."""
    capacity = s.capacity_max * min(1.0, context.epochs_done / s.capacity_epochs)
    recon, kl = reconstruction(out), out.kl()
    return {"loss": recon + s.gamma * (kl - capacity).abs(), "recon": recon, "kl": kl}


# ---- importance-weighted bounds -------------------------------------------------------------

@dataclass(frozen=True)
class IwaeSettings:
    k: int = setting(5, positive=True, maximum=10_000, doc="importance samples per image")


def iwae(out: Pass, context: TrainingContext, s: IwaeSettings) -> dict[str, Tensor]:
    """The importance-weighted bound of Burda et al. (2015):
    log (1/k) Σ_i p(x, z_i) / q(z_i|x), z_i ~ q(z|x); loss is its negative.
    recon and kl are reported as for the ELBO, for comparison."""
    log_w = out.log_importance_weights()  # (k, B)
    return {"loss": -log_mean_exp(log_w, 0), "surrogate": -out.bound_surrogate(log_w),
            "recon": reconstruction(out), "kl": out.kl()}


@dataclass(frozen=True)
class GroupedSettings:
    k: int = setting(5, positive=True, maximum=10_000, doc="importance samples per bound")
    m: int = setting(5, positive=True, maximum=10_000,
                     doc="bounds averaged (k·m samples per image)")

    @property
    def samples(self) -> int:
        return self.k * self.m


def grouped_bounds(out: Pass, s: GroupedSettings) -> Tensor:
    """The m IWAE bounds of k samples each: (m, B)."""
    log_w = out.log_importance_weights().unflatten(0, (s.m, s.k))  # (m, k, B)
    return log_mean_exp(log_w, 1)


def miwae(out: Pass, context: TrainingContext, s: GroupedSettings) -> dict[str, Tensor]:
    """MIWAE(m, k) (Rainforth et al. 2018): the mean of m independent IWAE bounds of k samples,
    a tighter bound than the ELBO whose encoder gradient keeps its signal as k grows."""
    bounds = grouped_bounds(out, s)
    return {"loss": -bounds.mean(0), "recon": reconstruction(out), "kl": out.kl()}


def piwae(out: Pass, context: TrainingContext, s: GroupedSettings) -> dict[str, Tensor]:
    """PIWAE(m, k) (Rainforth et al. 2018): the generative network trained with the IWAE bound of
    all k·m samples, the encoder with MIWAE(m, k) on the same samples."""
    log_w = out.log_importance_weights()  # (m·k, B)
    bound = log_mean_exp(log_w, 0)
    grouped = grouped_bounds(out, s)
    return {"loss": -bound, "encoder_surrogate": -grouped.mean(0),
            "recon": reconstruction(out), "kl": out.kl()}


@dataclass(frozen=True)
class CombinationSettings:
    k: int = setting(5, positive=True, maximum=10_000, doc="importance samples per image")
    beta: float = setting(0.5, minimum=0.0, maximum=1.0,
                          doc="weight of the ELBO (1 - β on the IWAE bound)")


def ciwae(out: Pass, context: TrainingContext, s: CombinationSettings) -> dict[str, Tensor]:
    """CIWAE(β) (Rainforth et al. 2018): β·ELBO + (1 - β)·IWAE on the same k samples."""
    log_w = out.log_importance_weights()  # (k, B)
    combined = s.beta * log_w.mean(0) + (1 - s.beta) * log_mean_exp(log_w, 0)
    return {"loss": -combined, "recon": reconstruction(out), "kl": out.kl()}


# ---- disentangling regularisers -------------------------------------------------------------

def log_density_matrix(z: Tensor, mean: Tensor, log_var: Tensor) -> Tensor:
    """log q(z_i,d | x_j) for every pair in the batch: (B, B, d), z (B, d), mean/log_var (B, d)."""
    return -0.5 * (math.log(2 * math.pi) + log_var.unsqueeze(0)
                   + (z.unsqueeze(1) - mean.unsqueeze(0)).pow(2) * torch.exp(-log_var.unsqueeze(0)))


def minibatch_stratified_log_densities(z: Tensor, mean: Tensor, log_var: Tensor,
                                       dataset_size: int) -> tuple[Tensor, Tensor]:
    """Minibatch stratified sampling estimates (Chen et al. 2018, appendix C.2) of log q(z_i)
    and of Σ_d log q(z_i,d), the aggregate posterior and the product of its marginals, from a
    batch of B posteriors out of a dataset of N: q(z_i) ≈ Σ_j w_ij q(z_i|x_j), with weight 1/N
    on the image z_i was drawn for and (N - 1) / (N (B - 1)) on each other one. Unbiased for
    every N ≥ B (uniform 1/B when the batch is the data). The paper's simpler minibatch-weighted
    form, log Σ_j q(z_i|x_j) - log(N·B), is low by log N, which shifts the reported total
    correlation by (d - 1)·log N."""
    matrix = log_density_matrix(z, mean, log_var)  # (B, B, d)
    batch = len(z)
    if batch == 1 or dataset_size == 1:
        log_weights = torch.zeros(batch, batch, dtype=z.dtype, device=z.device)
    else:
        log_weights = torch.full((batch, batch),
                                 math.log((dataset_size - 1) / (dataset_size * (batch - 1))),
                                 dtype=z.dtype, device=z.device)
        log_weights.fill_diagonal_(-math.log(dataset_size))
    log_qz = torch.logsumexp(matrix.sum(-1) + log_weights, dim=1)
    log_marginals = torch.logsumexp(matrix + log_weights.unsqueeze(-1), dim=1).sum(-1)
    return log_qz, log_marginals


@dataclass(frozen=True)
class TcSettings:
    k: int = setting(1, positive=True, maximum=10_000, doc="samples of z per image")
    alpha: float = setting(1.0, minimum=0.0, maximum=1e6,
                           doc="weight of the index-code mutual information")
    beta: float = setting(6.0, minimum=0.0, maximum=1e6, doc="weight of the total correlation")
    gamma: float = setting(1.0, minimum=0.0, maximum=1e6, doc="weight of the dimension-wise KL")


def beta_tcvae(out: Pass, context: TrainingContext, s: TcSettings) -> dict[str, Tensor]:
    """β-TCVAE (Chen et al. 2018): the KL split into index-code mutual information, total
    correlation and dimension-wise KL, each weighted:
    loss = recon + α·MI + β·TC + γ·DWKL, with log q(z) by minibatch stratified sampling."""
    z = out.z[0]  # (B, d), the first sample
    posterior = out.posterior
    log_qz_given_x = posterior.log_prob(z)
    log_qz, log_marginals = minibatch_stratified_log_densities(
        z, posterior.loc, posterior.log_var, context.dataset_size)
    log_pz = out.model.prior.log_prob(z)
    mutual_information = log_qz_given_x - log_qz
    total_correlation = log_qz - log_marginals
    dimension_wise_kl = log_marginals - log_pz
    recon, kl = reconstruction(out), out.kl()
    loss = recon + s.alpha * mutual_information + s.beta * total_correlation \
        + s.gamma * dimension_wise_kl
    return {"loss": loss, "recon": recon, "kl": kl, "total_correlation": total_correlation}


class Discriminator(nn.Module):
    """FactorVAE's discriminator: a logit that z comes from q(z) rather than from the product of
    its marginals, with its own Adam optimiser (the paper's settings: β = (0.5, 0.9))."""

    def __init__(self, latent_dim: int, hidden: list[int], learning_rate: float):
        super().__init__()
        self.net = mlp([latent_dim, *hidden, 1], "relu")
        self.learning_rate = learning_rate
        self.optimizer: torch.optim.Optimizer | None = None
        self.last_z: Tensor | None = None

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z).squeeze(-1)

    def update(self) -> None:
        """One step on the last batch's codes (detached) against a copy with every dimension
        permuted across the batch, a sample of the product of the marginals."""
        if self.last_z is None:
            return
        if self.optimizer is None:
            self.optimizer = torch.optim.Adam(self.parameters(), lr=self.learning_rate,
                                              betas=(0.5, 0.9))
        z = self.last_z
        logits = torch.cat([self(z), self(permute_dims(z))])
        targets = torch.cat([torch.ones(len(z)), torch.zeros(len(z))]).to(logits)
        loss = F.binary_cross_entropy_with_logits(logits, targets)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.last_z = None


def permute_dims(z: Tensor) -> Tensor:
    """Each column of (B, d) shuffled independently: samples of Π_d q(z_d)."""
    order = torch.argsort(torch.rand(z.shape, device=z.device), dim=0)
    return torch.gather(z, 0, order)


@dataclass(frozen=True)
class FactorSettings:
    k: int = setting(1, positive=True, maximum=10_000, doc="samples of z per image")
    gamma: float = setting(10.0, minimum=0.0, maximum=1e6, doc="weight of the total correlation")
    discriminator_hidden: list[int] = setting([256, 256], maximum=100_000,
                                               doc="the discriminator's widths")
    discriminator_lr: float = setting(1e-4, positive=True, maximum=1.0,
                                      doc="the discriminator's Adam rate")


def factor_vae(out: Pass, context: TrainingContext, s: FactorSettings) -> dict[str, Tensor]:
    """FactorVAE (Kim & Mnih 2018): loss = recon + KL + γ·TC, the total correlation
    KL(q(z) || Π_d q(z_d)) estimated by the density-ratio trick, as the discriminator's logit
    log D(z) / (1 - D(z))."""
    discriminator = context.auxiliary
    z = out.z[0]  # (B, d)
    total_correlation = discriminator(z)
    discriminator.last_z = z.detach()
    recon, kl = reconstruction(out), out.kl()
    return {"loss": recon + kl + s.gamma * total_correlation, "recon": recon, "kl": kl,
            "total_correlation": total_correlation}


@dataclass(frozen=True)
class DipSettings:
    k: int = setting(1, positive=True, maximum=10_000, doc="samples of z per image")
    lambda_od: float = setting(10.0, minimum=0.0, maximum=1e6,
                               doc="weight of the off-diagonal terms")
    lambda_d: float = setting(100.0, minimum=0.0, maximum=1e6, doc="weight of the diagonal terms")


def dip_penalty(covariance: Tensor, s: DipSettings) -> Tensor:
    """λ_od Σ_{i≠j} C_ij² + λ_d Σ_i (C_ii - 1)²: how far C is from the identity."""
    diagonal = torch.diagonal(covariance)
    off_diagonal = covariance - torch.diag(diagonal)
    return s.lambda_od * off_diagonal.pow(2).sum() + s.lambda_d * (diagonal - 1).pow(2).sum()


def dip_vae(out: Pass, s: DipSettings, include_posterior_variance: bool) -> dict[str, Tensor]:
    mean = out.posterior.loc  # (B, d)
    centred = mean - mean.mean(0)
    covariance = centred.T @ centred / len(mean)  # Cov_x[E_q(z|x)[z]]
    if include_posterior_variance:
        covariance = covariance + torch.diag(out.posterior.variance.mean(0))  # + E_x[Cov_q(z|x)]
    recon, kl = reconstruction(out), out.kl()
    return {"loss": recon + kl + dip_penalty(covariance, s), "recon": recon, "kl": kl}


def dip_vae_i(out: Pass, context: TrainingContext, s: DipSettings) -> dict[str, Tensor]:
    """DIP-VAE-I (Kumar et al. 2018): the ELBO plus a penalty pushing the covariance of the
    posterior means, Cov_x[μ(x)], towards the identity."""
    return dip_vae(out, s, include_posterior_variance=False)


@dataclass(frozen=True)
class Dip2Settings(DipSettings):
    lambda_d: float = setting(10.0, minimum=0.0, maximum=1e6, doc="weight of the diagonal terms")


def dip_vae_ii(out: Pass, context: TrainingContext, s: Dip2Settings) -> dict[str, Tensor]:
    """DIP-VAE-II (Kumar et al. 2018): as DIP-VAE-I, with the covariance of q(z) itself,
    Cov_x[μ(x)] + E_x[Σ(x)]."""
    return dip_vae(out, s, include_posterior_variance=True)


# ---- the registry and what the training loop calls ------------------------------------------

@dataclass(frozen=True)
class ObjectiveSpec:
    function: Callable[..., dict[str, Tensor]]
    Settings: type
    paper: str
    importance_weighted: bool = False  # the IWAE bound, whose gradient DReG replaces
    layers_supported: int | None = None  # None: any number of stochastic layers
    auxiliary: Callable | None = None  # (latent_dim, settings) -> nn.Module


def discriminator_for(latent_dim: int, s: FactorSettings) -> Discriminator:
    return Discriminator(latent_dim, s.discriminator_hidden, s.discriminator_lr)


OBJECTIVES: dict[str, ObjectiveSpec] = {
    "elbo": ObjectiveSpec(elbo, ElboSettings, "Kingma & Welling 2014; Higgins et al. 2017"),
    "elbo-warmup": ObjectiveSpec(elbo_warmup, WarmupSettings, "Sønderby et al. 2016"),
    "elbo-free-bits": ObjectiveSpec(elbo_free_bits, FreeBitsSettings, "Kingma et al. 2016"),
    "beta-vae-capacity": ObjectiveSpec(beta_vae_capacity, CapacitySettings,
                                       "Burgess et al. 2018"),
    "iwae": ObjectiveSpec(iwae, IwaeSettings, "Burda et al. 2015", importance_weighted=True),
    "miwae": ObjectiveSpec(miwae, GroupedSettings, "Rainforth et al. 2018"),
    "ciwae": ObjectiveSpec(ciwae, CombinationSettings, "Rainforth et al. 2018"),
    "piwae": ObjectiveSpec(piwae, GroupedSettings, "Rainforth et al. 2018"),
    "beta-tcvae": ObjectiveSpec(beta_tcvae, TcSettings, "Chen et al. 2018", layers_supported=1),
    "factor-vae": ObjectiveSpec(factor_vae, FactorSettings, "Kim & Mnih 2018",
                                layers_supported=1, auxiliary=discriminator_for),
    "dip-vae-i": ObjectiveSpec(dip_vae_i, DipSettings, "Kumar et al. 2018", layers_supported=1),
    "dip-vae-ii": ObjectiveSpec(dip_vae_ii, Dip2Settings, "Kumar et al. 2018",
                                layers_supported=1),
}


class Objective(nn.Module):
    """An objective by name with its settings and gradient estimator, ready to call on a model
    and a batch. Holds the objective's auxiliary network, if it has one."""

    def __init__(self, name: str, settings, estimator: Reparameterisation | None = None,
                 latent_dim: int = 0):
        super().__init__()
        self.name = name
        self.spec = OBJECTIVES[name]
        self.settings = settings
        self.estimator = estimator or Reparameterisation()
        self.auxiliary = (self.spec.auxiliary(latent_dim, settings)
                          if self.spec.auxiliary is not None else None)

    @property
    def k(self) -> int:
        """Samples of z drawn per image."""
        return getattr(self.settings, "samples", self.settings.k)

    def forward(self, model: VAE, x: Tensor,
                context: TrainingContext | None = None) -> dict[str, Tensor]:
        context = replace(context or TrainingContext(), auxiliary=self.auxiliary)
        return self.spec.function(model(x, self.k, self.estimator), context, self.settings)

    def update_auxiliary(self) -> None:
        """The auxiliary network's own step, after the model's (nothing without one)."""
        if self.auxiliary is not None:
            self.auxiliary.update()
