"""AIS and BDMC against models whose log p(x) is known exactly.

The linear-Gaussian model of test_likelihood.py (z ~ N(0, I₂), x | z ~ N(Wz + b, σ²I₆), so
x ~ N(b, WWᵀ + σ²I) and the exact posterior is a diagonal Gaussian that its encoder computes, or
mis-scales on request), and a Bernoulli model with one latent dimension and a mixture prior
(mixture of Gaussians or VampPrior), whose log p(x) a quadrature on a fine grid gives.
"""

import math
from dataclasses import replace

import pytest
import torch
from test_likelihood import SIGMA, linear_gaussian_problem
from torch import nn
from torch.distributions import MultivariateNormal

from vae_zoo import zoo
from vae_zoo.errors import UserError
from vae_zoo.likelihoods import (
    BernoulliLikelihood,
    ContinuousBernoulliLikelihood,
    DiscretisedLogisticLikelihood,
    GaussianLikelihood,
)
from vae_zoo.metrics.ais import (
    AISConfig,
    ais_log_likelihood,
    annealing_schedule,
    bdmc,
    conditional_log_likelihood,
)
from vae_zoo.metrics.likelihood import importance_sampled_log_likelihood
from vae_zoo.model import VAE
from vae_zoo.nets import Networks
from vae_zoo.priors import MixtureOfGaussiansPrior, MixtureSettings, VampPrior, VampSettings

pytestmark = pytest.mark.usefixtures("one_thread")

# Enough annealing for 0.05 nats per image on these models, and cheap: small latents make many
# chains and few leapfrog steps the better use of gradient evaluations. (Not 3 leapfrog steps:
# with the adapted step, 3 of them span half a period of the linear-Gaussian posterior's wider
# coordinate, so HMC maps z to nearly its mirror image and the chains stop mixing.)
ACCURATE = AISConfig(steps=500, chains=32, leapfrog=2, step_size=0.2, max_step_size=1.0)


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def linear_gaussian_marginal(model: VAE) -> MultivariateNormal:
    weight, bias = model.decoder.weight, model.decoder.bias
    return MultivariateNormal(bias, weight @ weight.T + SIGMA**2 * torch.eye(len(bias)))


# --- the linear-Gaussian model ----------------------------------------------------------------


def test_importance_sampling_with_the_exact_posterior_is_exact_for_every_image():
    model, x, exact = linear_gaussian_problem()
    torch.manual_seed(0)
    estimate = importance_sampled_log_likelihood(model, x, samples=10)
    assert torch.allclose(estimate.double(), exact, rtol=0, atol=1e-5)


def test_ais_from_the_exact_posterior_is_exact_for_every_image_whatever_the_chains_do():
    """Started at the exact posterior, log p(x, z) - log q(z|x) = log p(x) at every z, so every
    increment of log w is (β_t - β_{t-1}) log p(x) and the weights are exact, although the HMC
    transitions move the chains."""
    model, x, exact = linear_gaussian_problem()
    result = ais_log_likelihood(model, x, AISConfig(steps=20, chains=3, leapfrog=2),
                                generator=seeded())
    assert result.log_px.dtype == torch.float64 and result.log_px.shape == (len(x),)
    assert result.log_weights.shape == (3, len(x))
    # To float32 precision: the model is built in float32, then made float64.
    assert torch.allclose(result.log_px, exact, rtol=0, atol=1e-5)
    assert torch.allclose(result.log_weights, exact.expand(3, -1), rtol=0, atol=1e-5)
    assert 0.5 < result.acceptance.mean() < 1  # moves were made, and some rejected


def test_a_too_narrow_encoder_biases_importance_sampling_and_ais_removes_the_bias():
    """With q at 0.2x the posterior variance, IS with K = 100 is far below log p(x) (its weights
    are heavy-tailed); AIS from the same q with 500 intermediate distributions is within 0.05
    nats of log p(x) per image, from q or from the prior, with either schedule."""
    model, x, exact = linear_gaussian_problem(var_scale=0.2)
    torch.manual_seed(0)
    importance_gap = (exact - importance_sampled_log_likelihood(model, x, samples=100)).mean()
    assert importance_gap > 0.15
    for start, schedule in (("posterior", "sigmoid"), ("prior", "linear")):
        config = replace(ACCURATE, start=start, schedule=schedule)
        result = ais_log_likelihood(model, x, config, generator=seeded())
        error = result.log_px - exact
        assert error.abs().mean() < 0.05, (start, schedule)
        assert abs(error.mean()) < importance_gap / 5, (start, schedule)
        assert 0.55 < result.acceptance.mean() < 0.75  # the step size steered to 0.65


def test_ais_with_one_step_from_the_posterior_is_importance_sampling_with_one_sample_a_chain():
    """Known answer: with T = 1 there is no transition, and each chain's log w is
    log p(x, z) - log q(z|x) for its start z = μ + σε, the ε being the generator's first draw."""
    model, x, _ = linear_gaussian_problem(var_scale=0.2)
    chains = 7
    result = ais_log_likelihood(model, x, AISConfig(steps=1, chains=chains), generator=seeded(3))
    with torch.no_grad():
        q = model.posterior(x)
        z = q.mean + q.stddev * torch.randn((chains, *q.mean.shape), generator=seeded(3),
                                            dtype=x.dtype)
        log_weights = (model.likelihood.log_prob(model.decoder(z), x) + model.prior.log_prob(z)
                       - q.log_prob(z))  # (chains, N)
    assert log_weights.std(0).mean() > 0.5  # the weights differ: this is not the exact case
    assert torch.allclose(result.log_weights, log_weights, rtol=0, atol=1e-10)
    expected = torch.logsumexp(log_weights, 0) - math.log(chains)
    assert torch.allclose(result.log_px, expected, rtol=0, atol=1e-10)
    assert result.acceptance.isnan().all()  # no transitions to accept


def test_the_same_seed_gives_the_same_results_and_another_seed_others():
    model, x, _ = linear_gaussian_problem(var_scale=0.2)
    config = AISConfig(steps=10, chains=2, leapfrog=2, batch_size=16)
    first, again, other = (ais_log_likelihood(model, x, config, generator=seeded(seed))
                           for seed in (0, 0, 1))
    for name in ("log_px", "log_weights", "acceptance", "step_sizes"):
        assert torch.equal(getattr(first, name), getattr(again, name)), name
    assert not torch.equal(first.log_px, other.log_px)
    bdmc_first, bdmc_again = (bdmc(model, 5, config, generator=seeded(2)) for _ in range(2))
    for name in ("lower", "upper", "images", "latents", "reverse_acceptance"):
        assert torch.equal(getattr(bdmc_first, name), getattr(bdmc_again, name)), name


def test_dequantised_ais_estimates_the_expected_log_density_of_the_dequantised_image():
    """With a dequantising Gaussian each chain anneals to one y = (pixel + u)/256. The known
    answer: E_u log N(y; b, Σ) - D log 256 = log N(m; b, Σ) - tr(Σ⁻¹)/(2·12·256²) - D log 256,
    m = (pixel + ½)/256 (the uniform noise has variance 1/12 per pixel before scaling)."""
    model, x, _ = linear_gaussian_problem()
    model.likelihood = GaussianLikelihood(SIGMA, dequantize=True).double()
    pixels = (x.clamp(0, 1) * 255).round()
    marginal = linear_gaussian_marginal(model)
    centre = ((pixels + 0.5) / 256).flatten(1)
    pixel_count = centre.shape[1]
    expected = (marginal.log_prob(centre) - marginal.precision_matrix.trace() / (24 * 256**2)
                - pixel_count * math.log(256))
    result = ais_log_likelihood(model, pixels / 255, ACCURATE, generator=seeded())
    assert (result.log_px - expected).abs().mean() < 0.05


def test_bdmc_bounds_sandwich_the_exact_log_likelihood_and_close_in_as_steps_grow():
    """On images simulated from the model, forward AIS is below log p(x) and reverse AIS above,
    each on average over images (within Monte Carlo error); the gap shrinks from 10 to 300
    intermediate distributions. The dequantising Gaussian's simulated images are continuous, and
    the bounds are of their density."""
    model, _, _ = linear_gaussian_problem(var_scale=0.2)
    model.likelihood = GaussianLikelihood(SIGMA, dequantize=True).double()
    gaps = {}
    for steps in (10, 300):
        config = AISConfig(steps=steps, chains=8, leapfrog=3, start="prior", max_step_size=1.0)
        result = bdmc(model, 40, config, generator=seeded())
        exact = linear_gaussian_marginal(model).log_prob(result.images.flatten(1))
        assert result.images.shape == (40, 1, 2, 3) and result.latents.shape == (40, 2)
        assert result.lower.mean() < exact.mean() + 0.01, steps
        assert result.upper.mean() > exact.mean() - 0.01, steps
        assert result.reverse_acceptance.mean() > 0.5
        gaps[steps] = result.gap.mean().item()
    assert gaps[10] > 1.0  # far apart with few steps...
    assert gaps[300] < 0.1  # ...and close with many
    assert (result.step_sizes > 0.05).all()


def test_bdmc_refuses_a_likelihood_it_cannot_sample():
    model, _, _ = linear_gaussian_problem()
    for likelihood in (DiscretisedLogisticLikelihood(), ContinuousBernoulliLikelihood()):
        model.likelihood = likelihood.double()
        with pytest.raises(ValueError, match=f"cannot draw them from its "
                                             f"{type(likelihood).__name__}"):
            bdmc(model, 3, AISConfig(steps=2), generator=seeded())


# --- a Bernoulli model with one latent dimension and a mixture prior ------------------------------

BERNOULLI_IMAGE = (1, 2, 4)


class AffineEncoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(8, 2)

    def forward(self, x):
        mean, log_var = self.layer(x.flatten(1)).chunk(2, dim=-1)
        return mean, log_var


class AffineDecoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(1, 8)

    def forward(self, z):
        return self.layer(z).unflatten(-1, BERNOULLI_IMAGE)


def bernoulli_mixture_model(prior_kind: str) -> VAE:
    """Logits 2·w·z + c on 8 pixels; the prior a mixture of three Gaussians at -2, 0, 2 or a
    VampPrior of three pseudo-inputs, with the encoder untrained (a poor q)."""
    torch.manual_seed(0)
    if prior_kind == "mog":
        prior = MixtureOfGaussiansPrior(1, BERNOULLI_IMAGE, MixtureSettings(components=3))
        with torch.no_grad():
            prior.means.copy_(torch.tensor([[-2.0], [0.0], [2.0]]))
            prior.log_vars.fill_(math.log(0.3))
    else:
        prior = VampPrior(1, BERNOULLI_IMAGE, VampSettings(pseudo_inputs=3))
        with torch.no_grad():
            prior.pseudo_logits.normal_(0, 3)
    decoder = AffineDecoder()
    with torch.no_grad():
        decoder.layer.weight.mul_(2)
    networks = Networks([AffineEncoder()], [], decoder, [1])
    return VAE(networks, BernoulliLikelihood(), prior, kl="monte-carlo").double().eval()


def quadrature_log_likelihood(model: VAE, images: torch.Tensor) -> torch.Tensor:
    """log ∫ p(z) p(x|z) dz per image by the rectangle rule on [-15, 15] (spacing 1e-3): the
    integrand is smooth and negligible at the ends, so this is exact to float precision."""
    grid = torch.linspace(-15, 15, 30001, dtype=torch.float64)[:, None, None]  # (G, 1, 1)
    with torch.no_grad():
        log_joint = (model.prior.log_prob(grid)
                     + model.likelihood.log_prob(model.decoder(grid), images))  # (G, N)
    return torch.logsumexp(log_joint, 0) + math.log(grid[1, 0, 0] - grid[0, 0, 0])


@pytest.mark.parametrize("prior_kind", ["mog", "vamp"])
def test_ais_and_bdmc_agree_with_quadrature_on_a_bernoulli_model_with_a_mixture_prior(prior_kind):
    """On binary images simulated by BDMC, the bounds sandwich the quadrature value with 5
    intermediate distributions and meet at it with 500; forward AIS on the same images from
    the (poor) encoder is within 0.05 nats of it per image."""
    model = bernoulli_mixture_model(prior_kind)
    few = bdmc(model, 20, replace(ACCURATE, steps=5, chains=16, start="prior"),
               generator=seeded())
    exact = quadrature_log_likelihood(model, few.images)
    assert set(few.images.unique().tolist()) == {0.0, 1.0}
    assert few.lower.mean() < exact.mean() < few.upper.mean() - 0.1
    many = bdmc(model, 20, replace(ACCURATE, chains=16, start="prior"), generator=seeded())
    assert torch.equal(many.images, few.images)  # drawn first, from the same seed
    # With 500, both are within Monte Carlo error of it (about 0.1 nats per image, 0.025 on the
    # mean of 20 images): reverse weights started at one exact sample are the noisier.
    assert many.gap.mean() < 0.05
    assert abs(many.lower.mean() - exact.mean()) < 0.05
    assert abs(many.upper.mean() - exact.mean()) < 0.05
    result = ais_log_likelihood(model, few.images, ACCURATE, generator=seeded(1))
    assert (result.log_px - exact).abs().mean() < 0.05


def test_the_bernoulli_log_likelihood_that_ais_differentiates_is_the_likelihoods_own():
    """AIS evaluates a Bernoulli log p(x|z) through binary_cross_entropy_with_logits, for its
    faster backward pass: the same values as BernoulliLikelihood.log_prob, and gradients."""
    likelihood = BernoulliLikelihood()
    x = torch.bernoulli(torch.full((5, *BERNOULLI_IMAGE), 0.5, dtype=torch.float64),
                        generator=seeded())
    logits = (4 * torch.randn((3, *x.shape), generator=seeded(), dtype=x.dtype)).requires_grad_()
    ours = conditional_log_likelihood(likelihood, x, 3, seeded(), dequantise=True)(logits)
    theirs = likelihood.log_prob(logits, x)
    assert ours.shape == (3, 5)
    assert torch.allclose(ours, theirs, rtol=0, atol=1e-12)
    assert torch.allclose(torch.autograd.grad(ours.sum(), logits)[0],
                          torch.autograd.grad(theirs.sum(), logits)[0], rtol=0, atol=1e-12)


def test_ais_runs_under_inference_mode_and_leaves_the_parameters_gradients_alone():
    model = bernoulli_mixture_model("mog")
    with torch.inference_mode():
        images = torch.bernoulli(torch.full((4, *BERNOULLI_IMAGE), 0.5, dtype=torch.float64))
        result = ais_log_likelihood(model, images, AISConfig(steps=5, leapfrog=2),
                                    generator=seeded())
        bounds = bdmc(model, 4, AISConfig(steps=5, leapfrog=2), generator=seeded())
    assert result.log_px.isfinite().all() and bounds.gap.isfinite().all()
    assert all(parameter.grad is None for parameter in model.parameters())


# --- refusals, settings and the schedule -------------------------------------------------------


def test_a_model_with_several_stochastic_layers_is_refused_with_what_to_use_instead():
    model, _ = zoo.build("vae-2layer", (1, 4, 4))
    images = torch.zeros(2, 1, 4, 4)
    message = (r"AIS supports one stochastic layer, and this model has 2: .*"
               r"\(iwae-2layer, vae-2layer\) by importance sampling .* e\.g\. mlp-vae or iwae")
    with pytest.raises(ValueError, match=message):
        ais_log_likelihood(model, images, generator=seeded())
    with pytest.raises(ValueError, match=message):
        bdmc(model, 2, generator=seeded())


@pytest.mark.parametrize("key, value", [
    ("steps", 0), ("chains", 0), ("leapfrog", 0), ("batch_size", 0), ("start", "data"),
    ("schedule", "cosine"), ("step_size", 0.0), ("step_size_factor", 0.9),
    ("target_acceptance", 1.0), ("step_size", 0.6),
])
def test_a_setting_out_of_range_is_an_error_that_names_it(key, value):
    with pytest.raises(UserError, match=f"'{key}' = {value!r}"):
        AISConfig(**{key: value})


def test_defaults():
    config = AISConfig()
    assert (config.steps, config.chains, config.leapfrog) == (500, 4, 10)
    assert (config.start, config.schedule, config.target_acceptance) == ("posterior", "sigmoid",
                                                                         0.65)


def test_annealing_schedules_rise_from_0_to_1_and_the_sigmoid_one_is_denser_at_the_ends():
    assert annealing_schedule(1) == [0.0, 1.0] == annealing_schedule(1, "linear")
    linear, sigmoid = annealing_schedule(100, "linear"), annealing_schedule(100)
    for betas in (linear, sigmoid):
        assert betas[0] == 0.0 and betas[-1] == 1.0 and len(betas) == 101
        assert all(a < b for a, b in zip(betas[:-1], betas[1:]))
    assert linear[50] == pytest.approx(0.5) and sigmoid[50] == pytest.approx(0.5)
    assert sigmoid[1] < linear[1] / 3 and 1 - sigmoid[99] < (1 - linear[99]) / 3
