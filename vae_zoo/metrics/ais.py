"""Annealed importance sampling (AIS) and bidirectional Monte Carlo (BDMC) estimates of log p(x).

AIS (Neal 2001) moves chains of z from a start distribution π₀ (the encoder's q(z|x), or the prior
p(z)) to the posterior p(z|x) through the geometric path

    f_t(z) = π₀(z)^(1-β_t) · p(x, z)^β_t,   0 = β_0 < β_1 < ... < β_T = 1,

with one HMC transition leaving each intermediate f_t invariant. A chain's weight

    log w = Σ_t (β_t - β_{t-1}) · [log p(x, z_{t-1}) - log π₀(z_{t-1})]

is an unbiased estimate of p(x) (the ratio of f_T's normaliser, p(x), to f_0's, 1), so the log of
the mean of the chains' weights is a stochastic *lower* bound of log p(x): below it in expectation
(Jensen's inequality), converging to it as T grows. With T = 1 and π₀ = q it is importance
sampling with one sample per chain.

BDMC (Grosse, Ghahramani & Adams 2015; Grosse et al. 2016) brackets log p(x) on data simulated
from the model, where an exact posterior sample is known: the z each image was drawn from.
Forward AIS gives the lower bound; reverse AIS, started at that z with β going from 1 down to 0,
gives an unbiased estimate of 1/p(x), so minus the log of its mean is a stochastic *upper* bound.
The gap between them bounds the error of forward AIS on such data (Wu et al. 2017 use it to pick
T for real data).

Choices, following Wu, Burda, Salakhutdinov & Grosse (2017), "On the quantitative analysis of
decoder-based generative models":
- the β schedule is sigmoidal: β̃_t = sigmoid(δ(2t/T - 1)), δ = 4, rescaled so that β_0 = 0 and
  β_T = 1 (`schedule = "linear"` spaces β evenly instead);
- each HMC transition draws fresh momentum p ~ N(0, I) (identity mass), takes `leapfrog` steps and
  accepts or rejects the end point by the Metropolis rule; the gradient at a chain's current point
  is kept from the transition that reached it, so a transition costs `leapfrog` gradients;
- the step size is one per image, shared by that image's chains, and adapted after every
  transition: multiplied by `step_size_factor` while a moving average (decay 0.9) of the image's
  acceptance rate over its chains is above `target_acceptance`, divided by it otherwise, within
  [`min_step_size`, `max_step_size`]. Adapting from the chains' own history makes the forward
  weights only nearly unbiased, as in Wu et al.; BDMC's reverse chains replay the forward chains'
  step sizes instead of adapting, so their weights are unbiased given the forward run.

Likelihoods that dequantise 8-bit pixels (see `vae_zoo.likelihoods`) draw fresh noise on every
call, which no Markov chain can target; here each chain draws one dequantised image y once, and
anneals to p(y, z): the estimate is of log p(y) - D log 256, whose expectation is below the
discrete log P(x), as for importance sampling.

Every image's chains run together as one batch of (chains, images); nothing loops over images.
Only models with one stochastic layer are supported.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from itertools import chain

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vae_zoo import zoo
from vae_zoo.data.batches import bernoulli
from vae_zoo.errors import UserError
from vae_zoo.gaussian import DiagonalGaussian
from vae_zoo.likelihoods import (
    LEVELS,
    BernoulliLikelihood,
    DequantisedDensity,
    GaussianLikelihood,
    pixel_sum,
)
from vae_zoo.model import VAE
from vae_zoo.settings import check_value, declared, setting, type_hints

__all__ = ["AISConfig", "AISResult", "BDMCResult", "ais_log_likelihood", "annealing_schedule",
           "bdmc", "refusal"]

STARTS = ("posterior", "prior")
SCHEDULES = ("sigmoid", "linear")
SIGMOID_SHARPNESS = 4.0  # δ of the sigmoidal schedule (Wu et al. 2017)
ACCEPTANCE_DECAY = 0.9  # of the moving average of acceptance that steers the step size
SIMULATED_LIKELIHOODS = (BernoulliLikelihood, GaussianLikelihood)  # those BDMC can draw x from


@dataclass(frozen=True)
class AISConfig:
    """Settings of AIS and BDMC (see the module docstring for what each controls)."""

    steps: int = setting(500, positive=True, doc="intermediate distributions T")
    chains: int = setting(4, positive=True, doc="independent chains per image")
    leapfrog: int = setting(10, positive=True, doc="leapfrog steps per HMC transition")
    start: str = setting("posterior", choices=STARTS,
                         doc="the β = 0 end: the encoder's q(z|x) or the prior p(z)")
    schedule: str = setting("sigmoid", choices=SCHEDULES, doc="spacing of β_0 .. β_T")
    step_size: float = setting(0.05, positive=True, doc="initial HMC step size")
    target_acceptance: float = setting(0.65, positive=True,
                                       doc="acceptance rate the step size is steered to")
    step_size_factor: float = setting(1.02, minimum=1.0,
                                      doc="step size change per transition (1: fixed)")
    min_step_size: float = setting(1e-4, positive=True)
    max_step_size: float = setting(0.5, positive=True)
    batch_size: int = setting(100, positive=True, doc="images per batch, with all their chains")

    def __post_init__(self):
        hints = type_hints(AISConfig)
        for name, declaration in declared(AISConfig).items():
            check_value("AIS", name, getattr(self, name), declaration, hints)
        if self.target_acceptance >= 1:
            raise UserError(f"AIS: setting 'target_acceptance' = {self.target_acceptance!r}; "
                            "expected a rate below 1")
        if not self.min_step_size <= self.step_size <= self.max_step_size:
            raise UserError(f"AIS: setting 'step_size' = {self.step_size!r}; expected it within "
                            f"[min_step_size, max_step_size] = "
                            f"[{self.min_step_size}, {self.max_step_size}]")


@dataclass(frozen=True)
class AISResult:
    """Per-image results of forward AIS on N images."""

    log_px: Tensor  # (N,) float64: log mean of the chains' weights, ≤ log p(x) in expectation
    log_weights: Tensor  # (chains, N) float64: each chain's log w, exp(log w) unbiased for p(x)
    acceptance: Tensor  # (N,) accepted fraction of the image's transitions (NaN when steps = 1)
    step_sizes: Tensor  # (N,) the adapted step size after the last transition


@dataclass(frozen=True)
class BDMCResult:
    """Bidirectional Monte Carlo on N images simulated from the model."""

    lower: Tensor  # (N,) float64: forward AIS, ≤ log p(x) in expectation
    upper: Tensor  # (N,) float64: reverse AIS, ≥ log p(x) in expectation
    images: Tensor  # (N, C, H, W): x ~ p(x|z)
    latents: Tensor  # (N, d): z ~ p(z), an exact sample of p(z|x) for its image
    acceptance: Tensor  # (N,) of the forward chains
    reverse_acceptance: Tensor  # (N,)
    step_sizes: Tensor  # (N,) the forward chains' last step size

    @property
    def gap(self) -> Tensor:
        """upper - lower per image: bounds the error of forward AIS on these images."""
        return self.upper - self.lower


@dataclass
class PathDensity:
    """log f_β(z) = log π₀(z) + β · [log p(x, z) - log π₀(z)] at the chains' points, and its
    gradient in z, for any β. Values (chains, B), gradients (chains, B, d)."""

    log_start: Tensor
    log_ratio: Tensor  # log p(x, z) - log π₀(z)
    grad_start: Tensor
    grad_ratio: Tensor

    def log_f(self, beta: float) -> Tensor:
        return self.log_start + beta * self.log_ratio

    def grad(self, beta: float) -> Tensor:
        return self.grad_start + beta * self.grad_ratio

    def select(self, accept: Tensor, proposed: PathDensity) -> PathDensity:
        """`proposed` where `accept` (chains, B), else self."""
        value, vector = accept, accept[..., None]
        return PathDensity(torch.where(value, proposed.log_start, self.log_start),
                           torch.where(value, proposed.log_ratio, self.log_ratio),
                           torch.where(vector, proposed.grad_start, self.grad_start),
                           torch.where(vector, proposed.grad_ratio, self.grad_ratio))


@dataclass
class Annealing:
    """What running chains along a β schedule gives, for a batch of B images."""

    log_weights: Tensor  # (chains, B) float64: Σ_t (β_t - β_{t-1}) log_ratio(z_{t-1})
    acceptance: Tensor  # (B,) mean accepted fraction per transition (NaN without transitions)
    step_sizes: Tensor  # (transitions, B): the step size each transition used
    final_step: Tensor  # (B,)


def annealing_schedule(steps: int, kind: str = "sigmoid") -> list[float]:
    """β_0 = 0 < β_1 < ... < β_T = 1 for T = `steps`: sigmoidal (denser near both ends, where
    log f_t changes fastest) or, with kind = "linear", evenly spaced."""
    position = torch.linspace(-1.0, 1.0, steps + 1, dtype=torch.float64)
    if kind == "linear":
        return ((position + 1) / 2).tolist()
    sigmoid = torch.sigmoid(SIGMOID_SHARPNESS * position)
    return ((sigmoid - sigmoid[0]) / (sigmoid[-1] - sigmoid[0])).tolist()


def refusal(model: VAE, *, simulating: bool = False) -> str | None:
    """Why AIS (with `simulating`, BDMC) cannot run on `model`, or None when it can."""
    if model.layers > 1:
        layered = sorted(name for name, entry in zoo.ZOO.items()
                         if zoo.ARCHITECTURES[entry.pieces["architecture"]].layers > 1)
        return (
            f"AIS supports one stochastic layer, and this model has {model.layers}: estimate the "
            f"log-likelihood of the multi-layer entries ({', '.join(layered)}) by importance "
            "sampling (\"is\"), or run AIS on an entry with one stochastic layer (any other "
            "entry, e.g. mlp-vae or iwae)")
    if simulating and not isinstance(model.likelihood, SIMULATED_LIKELIHOODS):
        return (f"BDMC simulates images from the model, and cannot draw them from its "
                f"{type(model.likelihood).__name__}: use a Bernoulli or Gaussian likelihood, or "
                "estimate log p(x) of real data by forward AIS alone (ais_log_likelihood)")
    return None


def check_supported(model: VAE, *, simulating: bool = False) -> None:
    """Raise ValueError with the `refusal` when there is one."""
    problem = refusal(model, simulating=simulating)
    if problem:
        raise ValueError(problem)


def conditional_log_likelihood(likelihood: nn.Module, x: Tensor, chains: int,
                               generator: torch.Generator, *, dequantise: bool
                               ) -> Callable[[Tensor], Tensor]:
    """log p(x|z) as a deterministic function of the decoder's output (chains, B, C, H, W) →
    (chains, B). A likelihood that dequantises gets one dequantised image per chain, drawn now
    (module docstring); with `dequantise=False` (BDMC's simulated, continuous images) its density
    is evaluated at x itself."""
    if isinstance(likelihood, BernoulliLikelihood):
        # The same value as `likelihood.log_prob`, whose sum of softplus terms is fast forward
        # but slow backward (clamp, abs and sigmoid each save and replay a mask); the fused
        # backward of `binary_cross_entropy_with_logits` makes a gradient evaluation of the
        # 784-pixel MLP decoder about 1.6x faster.
        return lambda logits: -F.binary_cross_entropy_with_logits(
            logits, x.expand_as(logits), reduction="none").flatten(-3).sum(-1)
    if not (isinstance(likelihood, DequantisedDensity) and likelihood.dequantize):
        return lambda decoded: likelihood.log_prob(decoded, x)
    if not dequantise:
        return lambda decoded: pixel_sum(likelihood.log_density(decoded, x))
    pixels = (x * (LEVELS - 1)).round()
    noise = torch.rand((chains, *x.shape), generator=generator, device=x.device, dtype=x.dtype)
    dequantised = (pixels + noise) / LEVELS  # (chains, B, C, H, W)
    log_bin_width = x[0].numel() * math.log(LEVELS)
    return lambda decoded: pixel_sum(likelihood.log_density(decoded, dequantised)) - log_bin_width


def start_sample(model: VAE, x: Tensor, config: AISConfig, generator: torch.Generator
                 ) -> tuple[DiagonalGaussian | None, Tensor]:
    """q(z|x) (None when starting from the prior) and z drawn from the start, (chains, B, d)."""
    shape = (config.chains, len(x), model.latent_dim)
    with torch.no_grad():
        if config.start == "prior":
            return None, model.prior.sample(config.chains * len(x), x, generator).reshape(shape)
        posterior = model.posterior(x)
        noise = torch.randn(shape, generator=generator, device=x.device, dtype=x.dtype)
        return posterior, posterior.mean + posterior.stddev * noise


def path_density(model: VAE, log_px_given_z: Callable[[Tensor], Tensor],
                 posterior: DiagonalGaussian | None) -> Callable[[Tensor], PathDensity]:
    """The function z (chains, B, d) → `PathDensity`: one decoder pass and one backward pass."""

    def evaluate(z: Tensor) -> PathDensity:
        with torch.enable_grad():
            # Two leaves, so that one backward pass gives the two gradients apart.
            z_decoder, z_prior = z.detach().requires_grad_(), z.detach().requires_grad_()
            log_px_z = log_px_given_z(model.decoder(z_decoder))  # (chains, B)
            log_pz = model.prior.log_prob(z_prior)
            # Gradients for z only: the parameters' .grad are left as they are.
            grad_px_z, grad_pz = torch.autograd.grad(log_px_z.sum() + log_pz.sum(),
                                                     (z_decoder, z_prior))
        log_px_z, log_pz = log_px_z.detach(), log_pz.detach()
        if posterior is None:  # π₀ = p(z): f_β = p(z) p(x|z)^β
            return PathDensity(log_pz, log_px_z, grad_pz, grad_px_z)
        log_qz = posterior.log_prob(z)
        grad_qz = (posterior.mean - z) / posterior.variance
        return PathDensity(log_qz, log_pz + log_px_z - log_qz, grad_qz,
                           grad_pz + grad_px_z - grad_qz)

    return evaluate


def hmc_transition(z: Tensor, density: PathDensity, evaluate: Callable[[Tensor], PathDensity],
                   beta: float, step: Tensor, leapfrog: int, generator: torch.Generator
                   ) -> tuple[Tensor, PathDensity, Tensor]:
    """One HMC transition leaving f_β invariant, for every chain at once: z (chains, B, d), a step
    size per image (B,). Returns the new points, their density and which chains accepted."""
    epsilon = step[:, None]  # (B, 1): broadcasts over chains and latent dimensions
    momentum = torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)
    energy = -density.log_f(beta) + 0.5 * momentum.pow(2).sum(-1)  # H(z, p), (chains, B)
    proposal, proposed = z, density
    momentum = momentum + 0.5 * epsilon * density.grad(beta)
    for _ in range(leapfrog):
        proposal = proposal + epsilon * momentum
        proposed = evaluate(proposal)
        momentum = momentum + epsilon * proposed.grad(beta)
    momentum = momentum - 0.5 * epsilon * proposed.grad(beta)  # the last one is a half step
    proposed_energy = -proposed.log_f(beta) + 0.5 * momentum.pow(2).sum(-1)
    log_uniform = torch.rand(energy.shape, generator=generator, device=z.device,
                             dtype=z.dtype).log()
    accept = log_uniform < energy - proposed_energy  # False where the proposal's energy is NaN
    return torch.where(accept[..., None], proposal, z), density.select(accept, proposed), accept


def anneal(z: Tensor, evaluate: Callable[[Tensor], PathDensity], betas: list[float],
           config: AISConfig, generator: torch.Generator, replay: Tensor | None = None
           ) -> Annealing:
    """Run chains starting at z (chains, B, d), drawn from f_{β_0}, along `betas`, with one HMC
    transition at each intermediate β. The step sizes adapt (module docstring), or are taken
    from `replay`, (len(betas) - 2, B). Decreasing `betas` run the chains in reverse."""
    density = evaluate(z)
    log_weights = torch.zeros(z.shape[:2], dtype=torch.float64, device=z.device)
    step = torch.full(z.shape[1:2], config.step_size, dtype=z.dtype, device=z.device)
    smoothed_acceptance = torch.full_like(step, config.target_acceptance)
    accepted = torch.zeros_like(step)
    used = step.new_empty((len(betas) - 2, len(step)))
    factor = config.step_size_factor
    for index, (previous, beta) in enumerate(zip(betas[:-2], betas[1:-1])):
        log_weights += (beta - previous) * density.log_ratio.double()
        step = replay[index] if replay is not None else step
        used[index] = step
        z, density, accept = hmc_transition(z, density, evaluate, beta, step, config.leapfrog,
                                            generator)
        rate = accept.to(step.dtype).mean(0)  # (B,): over the image's chains
        accepted += rate
        smoothed_acceptance = (ACCEPTANCE_DECAY * smoothed_acceptance
                               + (1 - ACCEPTANCE_DECAY) * rate)
        step = torch.where(smoothed_acceptance > config.target_acceptance, step * factor,
                           step / factor).clamp(config.min_step_size, config.max_step_size)
    log_weights += (betas[-1] - betas[-2]) * density.log_ratio.double()
    return Annealing(log_weights, accepted / len(used), used, step)


def log_mean_exp(log_weights: Tensor) -> Tensor:
    """log of the mean over chains (dim 0) of exp(log_weights)."""
    return torch.logsumexp(log_weights, 0) - math.log(len(log_weights))


def ais_log_likelihood(model: VAE, images: Tensor, config: AISConfig = AISConfig(), *,
                       generator: torch.Generator) -> AISResult:
    """Estimate log p(x) per image (N,) by forward AIS with `config.chains` chains per image: a
    stochastic lower bound that tightens as `config.steps` grows (module docstring). Every draw
    comes from `generator` (on the images' device), so a seed gives the same result. Works under
    `torch.inference_mode` and leaves the parameters' gradients untouched. The model should be
    in eval mode.

    Raises ValueError for a model with more than one stochastic layer."""
    check_supported(model)
    betas = annealing_schedule(config.steps, config.schedule)
    log_weights, acceptance, step_sizes = [], [], []
    with torch.inference_mode(False):
        for x in images.split(config.batch_size):
            # A clone made outside inference mode: an inference tensor (the caller's images, when
            # it runs under inference_mode) cannot be saved for the backward pass.
            x = x.clone()
            log_px_given_z = conditional_log_likelihood(model.likelihood, x, config.chains,
                                                        generator, dequantise=True)
            posterior, z = start_sample(model, x, config, generator)
            evaluate = path_density(model, log_px_given_z, posterior)
            run = anneal(z, evaluate, betas, config, generator)
            log_weights.append(run.log_weights)
            acceptance.append(run.acceptance)
            step_sizes.append(run.final_step)
    log_weights_all = torch.cat(log_weights, dim=1)
    return AISResult(log_mean_exp(log_weights_all), log_weights_all, torch.cat(acceptance),
                     torch.cat(step_sizes))


def simulate_images(likelihood: nn.Module, decoded: Tensor, generator: torch.Generator) -> Tensor:
    """x ~ p(x|z) from the decoder's output: binary pixels for a Bernoulli likelihood, the
    continuous density's draw (no quantisation) for a Gaussian one (`SIMULATED_LIKELIHOODS`)."""
    if isinstance(likelihood, BernoulliLikelihood):
        return bernoulli(torch.sigmoid(decoded), generator)
    noise = torch.randn(decoded.shape, generator=generator, device=decoded.device,
                        dtype=decoded.dtype)
    return decoded + likelihood.log_scale.exp() * noise


def bdmc(model: VAE, count: int, config: AISConfig = AISConfig(), *,
         generator: torch.Generator) -> BDMCResult:
    """Bidirectional Monte Carlo on `count` images simulated from the model (z ~ p(z),
    x ~ p(x|z)): forward AIS gives a stochastic lower bound of each log p(x), reverse AIS from
    the exact posterior sample z gives a stochastic upper bound (module docstring). Both run
    between the same start distribution (`config.start`) and p(z|x) along the same schedule; the
    reverse chains replay the forward chains' step sizes. For a Gaussian likelihood the
    simulated images are continuous and log p(x) is their density's, without dequantisation.

    Raises ValueError for a model with more than one stochastic layer, or whose likelihood
    cannot be sampled here."""
    check_supported(model, simulating=True)
    like = next(chain(model.parameters(), model.buffers()))
    betas = annealing_schedule(config.steps, config.schedule)
    lower, upper, acceptance, reverse_acceptance, step_sizes = [], [], [], [], []
    with torch.inference_mode(False):
        with torch.no_grad():
            latents = model.prior.sample(count, like, generator)  # (N, d)
            images = simulate_images(model.likelihood, model.decoder(latents), generator)
        for x, exact in zip(images.split(config.batch_size), latents.split(config.batch_size)):
            log_px_given_z = conditional_log_likelihood(model.likelihood, x, config.chains,
                                                        generator, dequantise=False)
            posterior, z = start_sample(model, x, config, generator)
            evaluate = path_density(model, log_px_given_z, posterior)
            forward = anneal(z, evaluate, betas, config, generator)
            reverse = anneal(exact.expand(config.chains, -1, -1), evaluate, betas[::-1], config,
                             generator, replay=forward.step_sizes.flip(0))
            lower.append(log_mean_exp(forward.log_weights))
            upper.append(-log_mean_exp(reverse.log_weights))  # reverse weights estimate 1/p(x)
            acceptance.append(forward.acceptance)
            reverse_acceptance.append(reverse.acceptance)
            step_sizes.append(forward.final_step)
    return BDMCResult(torch.cat(lower), torch.cat(upper), images, latents, torch.cat(acceptance),
                      torch.cat(reverse_acceptance), torch.cat(step_sizes))
