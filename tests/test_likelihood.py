"""Likelihood estimators against a linear-Gaussian model whose log p(x) is known exactly.

z ~ N(0, I_d), x | z ~ N(Wz + b, σ²I). Then x ~ N(b, WWᵀ + σ²I), and with orthogonal columns of W
the exact posterior q*(z|x) = N(S Wᵀ(x - b)/σ², S), S = (I + WᵀW/σ²)⁻¹, is diagonal: it is in
the VAE's family, so importance sampling with it is exact for any K.
"""

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.distributions import MultivariateNormal

from vae_zoo.likelihoods import GaussianLikelihood
from vae_zoo.metrics.likelihood import (
    elbo_terms,
    importance_sampled_log_likelihood,
    importance_sampling,
    mean_and_standard_error,
)
from vae_zoo.model import VAE
from vae_zoo.nets import Networks
from vae_zoo.priors import StandardNormalPrior

pytestmark = pytest.mark.usefixtures("one_thread")

IMAGE = (1, 2, 3)  # D = 6
SIGMA = 0.5


class LinearEncoder(nn.Module):
    """q(z|x) = N(A(x - b) * mean_scale, S * var_scale): exact when both scales are 1."""

    def __init__(self, weight, bias, mean_scale=1.0, var_scale=1.0):
        super().__init__()
        posterior_cov = torch.linalg.inv(torch.eye(weight.shape[1]) + weight.T @ weight / SIGMA**2)
        self.register_buffer("gain", posterior_cov @ weight.T / SIGMA**2 * mean_scale)
        self.register_buffer("bias", bias)
        self.register_buffer("log_var", torch.log(torch.diagonal(posterior_cov) * var_scale))

    def forward(self, x):
        mean = (x.flatten(1) - self.bias) @ self.gain.T
        return mean, self.log_var.expand_as(mean)


class LinearDecoder(nn.Module):
    def __init__(self, weight, bias):
        super().__init__()
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)

    def forward(self, z):
        return (z @ self.weight.T + self.bias).unflatten(-1, IMAGE)


def linear_gaussian_problem(mean_scale=1.0, var_scale=1.0):
    generator = torch.Generator().manual_seed(0)
    # Orthogonal columns with different lengths: WᵀW is diagonal, so is the exact posterior.
    basis, _ = torch.linalg.qr(torch.randn(6, 2, generator=generator))
    weight = basis * torch.tensor([1.5, 0.7])
    bias = torch.randn(6, generator=generator)
    networks = Networks([LinearEncoder(weight, bias, mean_scale, var_scale)], [],
                        LinearDecoder(weight, bias), [2])
    model = VAE(networks, GaussianLikelihood(SIGMA), StandardNormalPrior(2))
    marginal = MultivariateNormal(bias, weight @ weight.T + SIGMA**2 * torch.eye(6))
    with torch.random.fork_rng():  # the same images whichever tests ran before
        torch.manual_seed(0)
        x = marginal.sample((50,)).reshape(50, *IMAGE)
    exact = marginal.log_prob(x.flatten(1))
    return model.double(), x.double(), exact.double()


def test_importance_sampling_is_exact_with_the_exact_posterior():
    model, x, exact = linear_gaussian_problem()
    torch.manual_seed(0)
    estimate = importance_sampled_log_likelihood(model, x, samples=10, batch_size=16, chunk=3)
    assert torch.allclose(estimate, exact, atol=1e-6)


def test_elbo_is_tight_with_the_exact_posterior():
    model, x, exact = linear_gaussian_problem()
    torch.manual_seed(0)
    elbo = torch.stack([elbo_terms(model, x)["elbo"] for _ in range(2000)]).mean(0)
    assert torch.allclose(elbo, exact, atol=0.1)


def test_importance_sampling_converges_with_a_poor_posterior():
    model, x, exact = linear_gaussian_problem(mean_scale=0.5, var_scale=3.0)
    torch.manual_seed(0)
    gaps = {}
    for samples in (1, 10, 100, 5000):
        estimate = importance_sampled_log_likelihood(model, x, samples, batch_size=50, chunk=500)
        gaps[samples] = (exact - estimate).mean().item()
    elbo_gap = (exact - elbo_terms(model, x)["elbo"]).mean().item()
    assert elbo_gap > 0.3  # the poor posterior leaves a visible gap...
    assert gaps[1] > gaps[10] > gaps[100] > gaps[5000] > -0.01  # ...which closes as K grows,
    assert abs(gaps[5000]) < 0.02  # to within 0.02 nats of the exact log-likelihood.


def test_importance_sampling_is_not_above_the_truth_in_expectation():
    model, x, exact = linear_gaussian_problem(mean_scale=0.8, var_scale=2.0)
    torch.manual_seed(1)
    repeats = torch.stack([importance_sampled_log_likelihood(model, x, 20, 50, 20)
                           for _ in range(200)])  # (repeats, images)
    excess = (repeats - exact).mean(1)  # per repeat, averaged over images
    mean, standard_error = excess.mean().item(), excess.std().item() / math.sqrt(len(excess))
    assert mean < 3 * standard_error


def test_standard_error_of_the_mean():
    values = torch.tensor([1.0, 2.0, 3.0, 4.0])
    mean, standard_error = mean_and_standard_error(values)
    assert mean == 2.5
    assert math.isclose(standard_error, values.std().item() / 2, rel_tol=1e-6)


def test_importance_sampling_is_exact_with_the_exact_posterior_for_every_k_and_chunk():
    """Known answer: with the exact posterior every importance weight equals p(x), so the
    log-mean-exp of K of them is log p(x) for any K, however the samples are chunked (a
    logsumexp would be log p(x) + log K; dividing by the chunk size would be off by a chunk's)."""
    model, x, exact = linear_gaussian_problem()
    torch.manual_seed(0)
    for samples in (2, 5, 50):
        for chunk in (1, 4, 64):
            estimate = importance_sampled_log_likelihood(model, x, samples, batch_size=16,
                                                         chunk=chunk)
            assert torch.allclose(estimate, exact, atol=1e-6), (samples, chunk)


def test_importance_sampling_is_the_log_mean_exp_of_the_weights_of_its_draws():
    """Known answer: with a poor posterior (unequal weights) and K = 7, the estimate is
    log((1/7) Σ_k p(x, z_k) / q(z_k|x)) for the very draws z_k it makes (replayed here from the
    same seed), with the densities written out in numpy."""
    model, x, _ = linear_gaussian_problem(mean_scale=0.5, var_scale=3.0)
    samples = 7
    torch.manual_seed(3)
    estimate = importance_sampled_log_likelihood(model, x, samples, batch_size=len(x),
                                                 chunk=samples).numpy()
    with torch.no_grad():
        mean, log_var = model.encoder(x)
        torch.manual_seed(3)
        # Drawn as the estimator draws them: the first ⌈K/10⌉ = 1, then the other 6.
        posterior = torch.distributions.Normal(mean, torch.exp(0.5 * log_var))
        z = torch.cat([posterior.rsample((1,)), posterior.rsample((samples - 1,))])
    z, mean, var = z.numpy(), mean.numpy(), torch.exp(log_var).numpy()
    weight = model.decoder.weight.numpy()
    bias = model.decoder.bias.numpy()
    pixels = x.flatten(1).numpy()

    def log_normal(value, centre, variance):
        return -0.5 * (np.log(2 * np.pi * variance) + (value - centre) ** 2 / variance)

    log_px_given_z = log_normal(pixels, z @ weight.T + bias, SIGMA**2).sum(-1)  # (K, N)
    log_pz = log_normal(z, 0.0, 1.0).sum(-1)
    log_qz = log_normal(z, mean, var).sum(-1)
    log_weights = log_px_given_z + log_pz - log_qz
    assert log_weights.std(0).mean() > 0.5  # the weights differ: K matters
    top = log_weights.max(0)
    log_mean_exp = top + np.log(np.exp(log_weights - top).mean(0))
    np.testing.assert_allclose(estimate, log_mean_exp, atol=1e-8)


def test_with_the_exact_posterior_every_weight_counts_and_a_tenth_of_k_is_already_exact():
    """Known answer: equal weights give an effective sample size of exactly K, and the estimate
    from the first ⌈K/10⌉ samples is log p(x) too."""
    model, x, exact = linear_gaussian_problem()
    torch.manual_seed(0)
    for samples, chunk in ((30, 7), (5, 2), (1, 1)):
        sampled = importance_sampling(model, x, samples, batch_size=16, chunk=chunk)
        assert torch.allclose(sampled.ess, torch.full_like(sampled.ess, samples), rtol=1e-9)
        assert torch.allclose(sampled.log_px_tenth, exact, atol=1e-6)
        assert torch.allclose(sampled.log_px, exact, atol=1e-6)


def test_the_diagnostics_are_those_of_the_draws_made():
    """K = 20 in chunks of 7: the chunks are cut at ⌈K/10⌉ = 2 (sizes 2, 5, 7, 6); the estimate
    from a tenth is the log-mean-exp of the first two weights, and the effective sample size is
    (Σ w)² / Σ w² over all 20, for the very draws made (replayed from the same seed)."""
    model, x, _ = linear_gaussian_problem(mean_scale=0.5, var_scale=3.0)
    torch.manual_seed(5)
    sampled = importance_sampling(model, x, 20, batch_size=len(x), chunk=7)
    torch.manual_seed(5)
    with torch.no_grad():
        posterior = model.posterior(x)
        log_weights = torch.cat([model.sample_pass(x, posterior, size).log_importance_weights()
                                 for size in (2, 5, 7, 6)])  # (20, N)
    weights = torch.exp(log_weights)
    assert torch.allclose(sampled.log_px_tenth,
                          torch.log(weights[:2].mean(0)), atol=1e-9)
    assert torch.allclose(sampled.log_px, torch.log(weights.mean(0)), atol=1e-9)
    ess = weights.sum(0) ** 2 / weights.pow(2).sum(0)
    assert torch.allclose(sampled.ess, ess, rtol=1e-9)
    assert 1 < sampled.ess.min() and sampled.ess.max() < 20  # unequal weights
