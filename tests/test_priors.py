"""Priors p(z): their densities are normalised, their one-dimensional marginals are the joint's,
their samples have the moments of the density, and VampPrior is the model's own posterior at its
pseudo-inputs."""

import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from vae_zoo import zoo
from vae_zoo.gaussian import DiagonalGaussian
from vae_zoo.priors import MixtureOfGaussiansPrior, MixtureSettings, StandardNormalPrior

pytestmark = pytest.mark.usefixtures("one_thread")

IMAGE = (1, 4, 4)


def random_mixture(latent_dim: int, components: int = 3, seed: int = 0):
    """A mixture of Gaussians with spread-out means, unequal scales (σ in [0.6, 1.65]) and
    unequal weights, in float64."""
    prior = MixtureOfGaussiansPrior(latent_dim, IMAGE, MixtureSettings(components)).double()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        prior.means.copy_(2.0 * torch.randn(components, latent_dim, generator=generator))
        prior.log_vars.uniform_(-1.0, 1.0, generator=generator)
        prior.logits.copy_(torch.randn(components, generator=generator))
    return prior


def random_vamp(latent_dim: int, pseudo_inputs: int = 4, seed: int = 0):
    """A VampPrior of a small untrained model, pseudo-inputs spread over [0, 1], in float64."""
    torch.manual_seed(seed)
    model, _ = zoo.build("vamp-vae", IMAGE, {"pseudo_inputs": pseudo_inputs,
                                             "latent_dim": latent_dim, "hidden": [8]})
    model.double()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model.prior.pseudo_logits.copy_(
            3.0 * torch.randn(model.prior.pseudo_logits.shape, generator=generator))
    return model.prior


MIXTURES = {"mog": random_mixture, "vamp": random_vamp}


def grid_for(prior, points: int) -> torch.Tensor:
    """A 1-D grid covering every component ± 12 standard deviations in every dimension (the
    Gaussian mass outside is below 1e-30), as fine as `points` allows."""
    with torch.no_grad():
        means, log_vars, _ = prior.components()
        spread = 12 * torch.exp(0.5 * log_vars)
        low, high = (means - spread).min().item(), (means + spread).max().item()
    return torch.linspace(low, high, points, dtype=torch.float64)


def integrate_1d(log_density: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """∫ exp(log_density) along the last dimension (trapezoid rule)."""
    return torch.trapezoid(log_density.exp(), grid, dim=-1)


@pytest.mark.parametrize("kind", MIXTURES)
def test_mixture_density_integrates_to_one_in_one_dimension(kind):
    prior = MIXTURES[kind](latent_dim=1)
    grid = grid_for(prior, 4001)  # spacing < 0.01, against σ ≥ 0.7 in these priors
    with torch.no_grad():
        total = integrate_1d(prior.log_prob(grid[:, None]), grid)
    # The trapezoid rule is spectrally accurate for smooth densities that vanish at the box's
    # edges: what is left is float64 rounding (measured: ~1e-15).
    assert total.item() == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("kind", MIXTURES)
def test_mixture_density_integrates_to_one_in_two_dimensions(kind):
    prior = MIXTURES[kind](latent_dim=2)
    grid = grid_for(prior, 801)
    z = torch.stack(torch.meshgrid(grid, grid, indexing="ij"), dim=-1)  # (801, 801, 2)
    with torch.no_grad():
        log_density = prior.log_prob(z)  # (801, 801)
    total = torch.trapezoid(integrate_1d(log_density, grid), grid)
    assert total.item() == pytest.approx(1.0, abs=1e-9)  # as in one dimension


def test_vamp_prior_with_one_pseudo_input_is_the_posterior_at_that_input():
    torch.manual_seed(0)
    model, _ = zoo.build("vamp-vae", IMAGE, {"pseudo_inputs": 1, "latent_dim": 3,
                                             "hidden": [8]})
    with torch.no_grad():
        mean, log_var = model.encoder(model.prior.pseudo_inputs())  # (1, 3) each
        z = torch.randn(50, 3, generator=torch.Generator().manual_seed(1)) * 2
        expected = Normal(mean, torch.exp(0.5 * log_var)).log_prob(z).sum(-1)
        log_prob = model.prior.log_prob(z)
    assert log_prob.shape == (50,)
    # The same Gaussian written two ways: float32 rounding of terms of size ~10.
    assert torch.allclose(log_prob, expected, rtol=1e-5, atol=1e-5)


# ---- one-dimensional marginals --------------------------------------------------------------

def test_standard_normal_marginal_is_the_closed_form():
    prior = StandardNormalPrior(3)
    z = torch.linspace(-6, 6, 61)[:, None].expand(61, 3)
    assert torch.allclose(prior.marginal_log_prob(z), Normal(0.0, 1.0).log_prob(z), atol=1e-6)
    assert torch.allclose(prior.log_prob(z), Normal(0.0, 1.0).log_prob(z).sum(-1), atol=1e-5)


@pytest.mark.parametrize("kind", ["standard-normal", *MIXTURES])
def test_each_marginal_integrates_to_one(kind):
    prior = StandardNormalPrior(3).double() if kind == "standard-normal" else MIXTURES[kind](3)
    grid = (torch.linspace(-12, 12, 4001, dtype=torch.float64) if kind == "standard-normal"
            else grid_for(prior, 4001))
    with torch.no_grad():
        log_marginals = prior.marginal_log_prob(grid[:, None].expand(len(grid), 3))  # (n, 3)
    totals = integrate_1d(log_marginals.T, grid)  # (3,)
    assert torch.allclose(totals, torch.ones(3, dtype=torch.float64), atol=1e-9)  # as above


@pytest.mark.parametrize("kind", MIXTURES)
def test_mixture_marginal_is_the_joint_integrated_over_the_other_dimension(kind):
    prior = MIXTURES[kind](latent_dim=2)
    grid = grid_for(prior, 801)
    z = torch.stack(torch.meshgrid(grid, grid, indexing="ij"), dim=-1)  # (801, 801, 2)
    with torch.no_grad():
        joint = prior.log_prob(z).exp()  # (801, 801): [i, j] = p(grid_i, grid_j)
        marginals = prior.marginal_log_prob(torch.stack([grid, grid], -1)).exp()  # (801, 2)
    first = torch.trapezoid(joint, grid, dim=1)  # ∫ p(z₀, z₁) dz₁
    second = torch.trapezoid(joint, grid, dim=0)  # ∫ p(z₀, z₁) dz₀
    # Quadrature at spacing ≤ 0.05 against σ ≥ 0.6: accurate far beyond 1e-8 of the peak.
    assert torch.allclose(first, marginals[:, 0], atol=1e-8)
    assert torch.allclose(second, marginals[:, 1], atol=1e-8)


def test_marginal_of_a_one_dimensional_mixture_is_its_density():
    prior = random_mixture(latent_dim=1)
    z = torch.linspace(-8, 8, 101, dtype=torch.float64)[:, None]
    with torch.no_grad():
        assert torch.allclose(prior.marginal_log_prob(z)[:, 0], prior.log_prob(z))


# ---- sampling -------------------------------------------------------------------------------

SAMPLES = 200_000


def assert_moments(samples: torch.Tensor, mean: torch.Tensor, variance: torch.Tensor):
    """Sample mean and variance within 5 standard errors of the given ones (a chance failure
    has probability below 1e-5 per coordinate)."""
    centred = samples - mean
    mean_error = (samples.var(0) / len(samples)).sqrt()
    variance_error = ((centred.pow(2) - variance).var(0) / len(samples)).sqrt()
    assert (samples.mean(0) - mean).abs().lt(5 * mean_error).all()
    assert (centred.pow(2).mean(0) - variance).abs().lt(5 * variance_error).all()


def test_standard_normal_samples_have_zero_mean_and_unit_variance():
    prior = StandardNormalPrior(3)
    samples = prior.sample(SAMPLES, torch.zeros(1), torch.Generator().manual_seed(0))
    assert samples.shape == (SAMPLES, 3)
    assert_moments(samples, torch.zeros(3), torch.ones(3))


@pytest.mark.parametrize("kind", MIXTURES)
def test_mixture_samples_have_the_mixture_moments(kind):
    prior = MIXTURES[kind](latent_dim=2)
    with torch.no_grad():
        means, log_vars, log_weights = prior.components()  # (C, d), (C, d), (C,)
        weights = log_weights.exp()[:, None]
        # E[z] = Σ π_c μ_c; Var[z] = Σ π_c (σ_c² + μ_c²) - E[z]² per coordinate.
        mean = (weights * means).sum(0)
        variance = (weights * (log_vars.exp() + means.pow(2))).sum(0) - mean.pow(2)
        samples = prior.sample(SAMPLES, means, torch.Generator().manual_seed(0))
    assert samples.shape == (SAMPLES, 2)
    assert_moments(samples, mean, variance)


@pytest.mark.parametrize("kind", MIXTURES)
def test_sampling_with_a_seeded_generator_is_reproducible(kind):
    prior = MIXTURES[kind](latent_dim=2)
    with torch.no_grad():
        first = prior.sample(10, torch.zeros(1, dtype=torch.float64),
                             torch.Generator().manual_seed(3))
        second = prior.sample(10, torch.zeros(1, dtype=torch.float64),
                              torch.Generator().manual_seed(3))
    assert torch.equal(first, second)


def test_mixture_weights_follow_the_logits():
    # Two far-apart components with weights 0.8 / 0.2: the share of samples near each mode is
    # binomial, standard error sqrt(0.16 / n) = 0.0009, so 0.005 is over 5 standard errors.
    prior = MixtureOfGaussiansPrior(1, IMAGE, MixtureSettings(2))
    with torch.no_grad():
        prior.means.copy_(torch.tensor([[-20.0], [20.0]]))
        prior.log_vars.zero_()
        prior.logits.copy_(torch.tensor([math.log(0.8), math.log(0.2)]))
        samples = prior.sample(SAMPLES, torch.zeros(1), torch.Generator().manual_seed(0))
    assert (samples < 0).float().mean().item() == pytest.approx(0.8, abs=0.005)


def test_closed_form_gaussian_kl_matches_torch_and_a_monte_carlo_estimate():
    torch.manual_seed(0)
    mean, log_var = torch.randn(4, 3), torch.randn(4, 3)
    posterior = DiagonalGaussian(mean, log_var)
    closed_form = StandardNormalPrior(3).closed_form_kl(posterior).sum(-1)
    textbook = 0.5 * (mean**2 + log_var.exp() - 1 - log_var).sum(-1)
    assert torch.allclose(closed_form, textbook, atol=1e-6)
    reference = kl_divergence(Normal(mean, torch.exp(0.5 * log_var)), Normal(0.0, 1.0)).sum(-1)
    assert torch.allclose(closed_form, reference, atol=1e-6)
    z = posterior.rsample((200_000,))
    monte_carlo = (posterior.log_prob(z) - StandardNormalPrior(3).log_prob(z)).mean(0)
    assert torch.allclose(monte_carlo, closed_form, atol=0.03)


def test_standard_normal_prior_log_prob_is_the_normal_density():
    z = torch.randn(5, 7, 3)
    expected = Normal(0.0, 1.0).log_prob(z).sum(-1)
    assert torch.allclose(StandardNormalPrior(3).log_prob(z), expected, atol=1e-5)


@pytest.mark.parametrize("prior", [StandardNormalPrior(3),
                                   MixtureOfGaussiansPrior(3, IMAGE, MixtureSettings(4))])
def test_prior_samples_come_from_the_generator_alone(prior):
    """Model samples (and the sample metrics) repeat with the seed of the generator they are
    given, whatever the global random state."""
    like = torch.empty(0)
    torch.manual_seed(1)
    first = prior.sample(50, generator=torch.Generator().manual_seed(7), like=like)
    torch.manual_seed(2)
    again = prior.sample(50, generator=torch.Generator().manual_seed(7), like=like)
    other = prior.sample(50, generator=torch.Generator().manual_seed(8), like=like)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_vamp_prior_has_its_pseudo_inputs_starting_near_grey():
    """K pseudo-inputs of the image's shape, sigmoid of logits drawn with standard deviation
    0.01: grey (0.5) to within a few hundredths."""
    from vae_zoo.priors import VampPrior, VampSettings

    torch.manual_seed(0)
    prior = VampPrior(2, IMAGE, VampSettings(pseudo_inputs=30))
    assert prior.pseudo_logits.shape == (30, *IMAGE)
    assert 0.008 < prior.pseudo_logits.std().item() < 0.012
    assert (prior.pseudo_inputs() - 0.5).abs().max() < 0.02
