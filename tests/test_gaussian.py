"""`DiagonalGaussian` against `torch.distributions`, which it replaces in the model pass."""

import torch
from torch.distributions import Independent, Normal, kl_divergence

from vae_zoo.gaussian import DiagonalGaussian


def pair(seed: int = 0) -> tuple[DiagonalGaussian, Independent]:
    generator = torch.Generator().manual_seed(seed)
    mean = torch.randn(5, 3, generator=generator, dtype=torch.float64)
    log_var = torch.randn(5, 3, generator=generator, dtype=torch.float64)
    return (DiagonalGaussian(mean, log_var),
            Independent(Normal(mean, torch.exp(0.5 * log_var)), 1))


def test_moments_are_torch_distributions():
    ours, theirs = pair()
    assert torch.equal(ours.mean, theirs.mean)
    assert torch.equal(ours.stddev, theirs.stddev)
    assert torch.allclose(ours.variance, theirs.variance, rtol=1e-12)


def test_rsample_draws_the_same_values_from_the_same_stream():
    ours, theirs = pair()
    torch.manual_seed(3)
    drawn = ours.rsample((4,))
    torch.manual_seed(3)
    expected = theirs.rsample((4,))
    assert drawn.shape == (4, 5, 3)
    assert torch.equal(drawn, expected)


def test_log_prob_and_log_density_are_torch_distributions():
    ours, theirs = pair()
    z = torch.randn(7, 5, 3, dtype=torch.float64)
    assert torch.allclose(ours.log_prob(z), theirs.log_prob(z), rtol=1e-12, atol=1e-12)
    assert torch.allclose(ours.log_density(z), theirs.base_dist.log_prob(z), rtol=1e-12,
                          atol=1e-12)


def test_closed_form_kl_to_the_standard_normal_is_torch_distributions():
    ours, theirs = pair()
    standard = Independent(Normal(torch.zeros(3, dtype=torch.float64),
                                  torch.ones(3, dtype=torch.float64)), 1)
    assert torch.allclose(ours.kl_standard_normal().sum(-1), kl_divergence(theirs, standard),
                          rtol=1e-12, atol=1e-12)


def test_detach_keeps_the_values_and_cuts_the_parameters_gradient():
    mean = torch.randn(4, 2, requires_grad=True)
    log_var = torch.randn(4, 2, requires_grad=True)
    q = DiagonalGaussian(mean, log_var)
    z = q.rsample((3,))
    stopped = q.detach()
    assert torch.equal(stopped.log_prob(z), q.log_prob(z))
    # Only z's path reaches the parameters: d/dμ log q(z) through z = μ + σε alone is
    # Σ_k -(z_k - μ)/σ², with μ and σ held fixed inside log q.
    gradient, = torch.autograd.grad(stopped.log_prob(z).sum(), mean)
    expected = (-(z - mean) / torch.exp(log_var)).sum(0).detach()
    assert torch.allclose(gradient, expected, rtol=1e-5, atol=1e-6)
    assert not stopped.loc.requires_grad and not stopped.log_var.requires_grad
