"""The VAE: an architecture's networks, a likelihood, a prior and how the KL is computed.

Generative model, for L stochastic layers (L = 1 for most entries):
    p(x, z) = p(x|z₁) p(z₁|z₂) ··· p(z_{L-1}|z_L) p(z_L),  p(z_L) the prior;
inference model:
    q(z|x) = q(z₁|x) q(z₂|z₁) ··· q(z_L|z_{L-1}).
`model(x, k)` runs one pass with k posterior samples per image and returns a `Pass`, from which
objectives and metrics read every term they need.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from vae_zoo.estimators import Reparameterisation
from vae_zoo.gaussian import DiagonalGaussian
from vae_zoo.nets import Networks
from vae_zoo.priors import Prior

__all__ = ["VAE", "Pass"]
KL_CHOICES = ("closed-form", "monte-carlo")
STANDARD = Reparameterisation()


@dataclass
class Pass:
    """One encoder-decoder pass over a batch with k samples of z per image."""

    posteriors: list[DiagonalGaussian]  # q(z_l|z_{l-1}) for every layer; batch (B,), then (k, B)
    conditionals: list[DiagonalGaussian]  # p(z_l|z_{l+1}) for l < L; batch (k, B)
    zs: list[Tensor]  # z_l, (k, B, d_l), bottom (nearest the data) first
    decoded: Tensor  # (k, B, C, H, W) likelihood parameters
    log_px_given_z: Tensor  # (k, B)
    log_pz: Tensor  # (k, B): log p(z_L) + Σ_l log p(z_l|z_{l+1})
    log_qz: Tensor  # (k, B): Σ_l log q(z_l|z_{l-1}), with the estimator's gradient
    model: VAE
    estimator: Reparameterisation

    @property
    def posterior(self) -> DiagonalGaussian:
        """q(z₁|x), batch shape (B,), event (d₁,)."""
        return self.posteriors[0]

    @property
    def z(self) -> Tensor:
        """The samples of the first layer (the only one of a one-layer model): (k, B, d₁)."""
        return self.zs[0]

    def kl(self) -> Tensor:
        """KL(q(z|x) || p(z)) per image, (B,): in closed form when the model's `kl` is
        "closed-form" (one layer, a prior with a closed form, an estimator that does not stop
        log q's gradient), else the Monte Carlo estimate mean_k[log q(z|x) - log p(z)]."""
        if self.model.kl == "closed-form":
            return self.model.closed_form_kl_per_dim(self.posterior).sum(-1)
        return (self.log_qz - self.log_pz).mean(0)

    def kl_per_dim(self) -> Tensor:
        """KL per latent coordinate, every layer bottom first: (B, Σ d_l). Closed form when the
        model's KL is; otherwise the Monte Carlo estimate of KL(q_i || p_i) between the
        coordinate's posterior and the prior's (or conditional's) one-dimensional marginal."""
        if self.model.kl == "closed-form":
            return self.model.closed_form_kl_per_dim(self.posterior)
        parts = []
        for index, (q, z) in enumerate(zip(self.posteriors, self.zs, strict=True)):
            log_q = q.log_density(z)  # (k, B, d)
            if index < len(self.conditionals):
                log_p = self.conditionals[index].log_density(z)
            else:
                log_p = self.model.prior.marginal_log_prob(z)
            parts.append((log_q - log_p).mean(0))
        return torch.cat(parts, dim=-1)

    def log_importance_weights(self) -> Tensor:
        """log p(x, z) - log q(z|x) for every sample: (k, B)."""
        return self.log_px_given_z + self.log_pz - self.log_qz

    def bound_surrogate(self, log_w: Tensor) -> Tensor:
        """What to differentiate for the bound log mean_k exp(log_w), (B,): the estimator's."""
        return self.estimator.bound_surrogate(log_w, self.zs)


class VAE(nn.Module):
    def __init__(self, networks: Networks, likelihood: nn.Module, prior: Prior,
                 kl: str = "closed-form"):
        super().__init__()
        self.encoders = nn.ModuleList(networks.encoders)
        self.top_down = nn.ModuleList(networks.top_down)
        self.decoder = networks.decoder
        self.likelihood = likelihood
        self.prior = prior
        self.latent_dims = list(networks.latent_dims)
        if kl not in KL_CHOICES:
            raise ValueError(f"kl = {kl!r}; expected one of {KL_CHOICES}")
        if kl == "closed-form" and (len(self.latent_dims) > 1 or not prior.has_closed_form):
            raise ValueError("a closed-form KL needs one stochastic layer and a prior with a "
                             "closed form; use kl = \"monte-carlo\"")
        self.kl = kl
        prior.attach(self.top_posterior)

    @property
    def latent_dim(self) -> int:
        """Latent dimensions of the first layer (all of them for a one-layer model)."""
        return self.latent_dims[0]

    @property
    def layers(self) -> int:
        return len(self.latent_dims)

    @property
    def encoder(self) -> nn.Module:
        return self.encoders[0]

    def posterior(self, x: Tensor) -> DiagonalGaussian:
        """q(z₁|x) for a batch of images (B, C, H, W)."""
        return DiagonalGaussian(*self.encoders[0](x))

    def top_posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and log-variance of the top layer's q given images, going up through the means
        of the layers below (what VampPrior evaluates at its pseudo-inputs)."""
        mean, log_var = self.encoders[0](x)
        for encoder in self.encoders[1:]:
            mean, log_var = encoder(mean)
        return mean, log_var

    def posterior_means(self, x: Tensor,
                        posterior: DiagonalGaussian | None = None) -> list[Tensor]:
        """The mean of every layer's q, going up through the means: [(B, d_l)]. `posterior`,
        q(z₁|x) when already computed, saves encoding x again."""
        mean = (posterior if posterior is not None else self.posterior(x)).mean
        means = [mean]
        for encoder in self.encoders[1:]:
            mean, _ = encoder(mean)
            means.append(mean)
        return means

    def kl_per_dim(self, x: Tensor, posterior: DiagonalGaussian | None = None) -> Tensor:
        """KL per latent coordinate of every layer for images (B, C, H, W): (B, Σ d_l); from one
        sample of z when there is no closed form (see `Pass.kl_per_dim`). `posterior` as in
        `posterior_means`."""
        posterior = posterior if posterior is not None else self.posterior(x)
        if self.kl == "closed-form":
            return self.closed_form_kl_per_dim(posterior)
        return self.sample_pass(x, posterior, 1).kl_per_dim()

    def closed_form_kl_per_dim(self, posterior: DiagonalGaussian) -> Tensor:
        """KL(q(z_i|x) || p(z_i)) per coordinate in closed form, (B, d): the factorised
        posterior and prior compared coordinate by coordinate; its sum is the KL."""
        return self.prior.closed_form_kl(posterior)

    def forward(self, x: Tensor, k: int = 1,
                estimator: Reparameterisation = STANDARD) -> Pass:
        return self.sample_pass(x, self.posterior(x), k, estimator)

    def sample_pass(self, x: Tensor, posterior: DiagonalGaussian, k: int,
                    estimator: Reparameterisation = STANDARD) -> Pass:
        """Draw k samples from an already computed q(z₁|x) and decode them (lets importance
        sampling encode a batch once and decode it in chunks of samples)."""
        zs = [posterior.rsample((k,))]  # (k, B, d₁)
        posteriors = [posterior]
        log_qz = estimator.log_q(posterior, zs[0])
        for encoder in self.encoders[1:]:
            q = DiagonalGaussian(*encoder(zs[-1]))  # batch (k, B)
            zs.append(q.rsample())
            posteriors.append(q)
            log_qz = log_qz + estimator.log_q(q, zs[-1])
        log_pz = self.prior.log_prob(zs[-1])
        conditionals = []
        for index, net in enumerate(self.top_down):  # p(z_l | z_{l+1}), l = 1 .. L-1
            p = DiagonalGaussian(*net(zs[index + 1]))
            conditionals.append(p)
            log_pz = log_pz + p.log_prob(zs[index])
        decoded = self.decoder(zs[0])  # (k, B, C, H, W)
        return Pass(
            posteriors=posteriors, conditionals=conditionals, zs=zs,
            decoded=decoded, log_px_given_z=self.likelihood.log_prob(decoded, x),
            log_pz=log_pz, log_qz=log_qz, model=self, estimator=estimator)

    def decode_mean(self, z: Tensor) -> Tensor:
        """The mean image of p(x|z₁) for first-layer latents (..., d₁)."""
        return self.likelihood.mean(self.decoder(z))

    def descend(self, top: Tensor, generator: torch.Generator | None = None,
                sample: bool = True) -> Tensor:
        """First-layer latents from top-layer ones, through p(z_l|z_{l+1}): drawn, or their
        means with `sample=False`. The identity for a one-layer model."""
        z = top
        for net in reversed(self.top_down):
            mean, log_var = net(z)
            if sample:
                noise = torch.randn(mean.shape, generator=generator, device=mean.device,
                                    dtype=mean.dtype)
                z = mean + torch.exp(0.5 * log_var) * noise
            else:
                z = mean
        return z

    @torch.no_grad()
    def sample(self, count: int, generator: torch.Generator | None = None,
               like: Tensor | None = None) -> Tensor:
        """Decoder means of `count` ancestral draws from p(z): (count, C, H, W)."""
        like = like if like is not None else next(self.parameters())
        top = self.prior.sample(count, like, generator)
        return self.decode_mean(self.descend(top, generator))
