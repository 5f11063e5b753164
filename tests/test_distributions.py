"""Likelihoods and priors against torch.distributions and closed forms."""

import math

import torch
from torch.distributions import Bernoulli, Normal, kl_divergence

from vae_zoo.distributions import (
    BernoulliLikelihood,
    GaussianLikelihood,
    StandardNormalPrior,
    diagonal_gaussian,
)


def test_closed_form_gaussian_kl_matches_a_monte_carlo_estimate():
    torch.manual_seed(0)
    mean, log_var = torch.randn(4, 3), torch.randn(4, 3)
    posterior = diagonal_gaussian(mean, log_var)
    prior = StandardNormalPrior().distribution(3, mean)
    closed_form = kl_divergence(posterior, prior)
    textbook = 0.5 * (mean**2 + log_var.exp() - 1 - log_var).sum(-1)
    assert torch.allclose(closed_form, textbook, atol=1e-6)
    z = posterior.sample((200_000,))
    monte_carlo = (posterior.log_prob(z) - prior.log_prob(z)).mean(0)
    assert torch.allclose(monte_carlo, closed_form, atol=0.03)


def test_standard_normal_prior_log_prob_is_the_normal_density():
    z = torch.randn(5, 7, 3)
    expected = Normal(0.0, 1.0).log_prob(z).sum(-1)
    assert torch.allclose(StandardNormalPrior().log_prob(z), expected, atol=1e-5)


def test_bernoulli_likelihood_sums_pixel_log_probabilities_over_samples():
    logits = torch.randn(3, 2, 1, 4, 4)  # (k, B, C, H, W)
    x = torch.randint(0, 2, (2, 1, 4, 4)).float()
    expected = Bernoulli(logits=logits).log_prob(x.expand_as(logits)).flatten(-3).sum(-1)
    assert torch.allclose(BernoulliLikelihood().log_prob(logits, x), expected, atol=1e-5)


def test_gaussian_likelihood_with_fixed_and_learned_scale():
    mean, x = torch.randn(2, 3, 1, 2, 2), torch.randn(3, 1, 2, 2)
    fixed = GaussianLikelihood(0.5)
    expected = Normal(mean, 0.5).log_prob(x).flatten(-3).sum(-1)
    assert torch.allclose(fixed.log_prob(mean, x), expected, atol=1e-5)
    assert not any(p.requires_grad for p in fixed.parameters())
    learned = GaussianLikelihood("learned")
    assert learned.log_scale.requires_grad
    unit = Normal(mean, 1.0).log_prob(x).flatten(-3).sum(-1)
    assert torch.allclose(learned.log_prob(mean, x), unit, atol=1e-5)


def test_prior_samples_have_unit_variance():
    samples = StandardNormalPrior().sample(100_000, 2, torch.zeros(1),
                                           torch.Generator().manual_seed(0))
    assert abs(samples.var(0).mean().item() - 1) < 0.02
    assert abs(samples.mean().item()) < 0.01
    assert math.isclose(float(samples.shape[1]), 2)


def test_softplus_sum_matches_softplus_in_double_precision():
    from vae_zoo.distributions import softplus_sum

    values = torch.randn(50, 784) * 30
    exact = torch.nn.functional.softplus(values.double()).sum(-1)
    assert torch.allclose(softplus_sum(values).double(), exact, atol=1e-3, rtol=1e-6)
    assert torch.allclose(softplus_sum(values.double()), exact, atol=1e-9)
