"""Likelihoods p(x|z): each is a normalised distribution over what it models, the dequantised
densities give a lower bound on the 8-bit image's log-probability, and each says which data it
fits."""

import math

import pytest
import torch
from torch.distributions import Bernoulli, Normal

from vae_zoo import zoo
from vae_zoo.likelihoods import (
    LEVELS,
    BernoulliLikelihood,
    ContinuousBernoulliLikelihood,
    DequantizeSettings,
    DiscretisedLogisticLikelihood,
    GaussianLikelihood,
    GaussianSettings,
)
from vae_zoo.settings import NoSettings

pytestmark = pytest.mark.usefixtures("one_thread")

# ---- discretised logistic -------------------------------------------------------------------

LEVEL_VALUES = torch.arange(LEVELS, dtype=torch.float64) / (LEVELS - 1)  # 0, 1/255, ..., 1
# Locations inside and outside [0, 1], none on a boundary between two levels' bins.
LOCATIONS = torch.tensor([-0.5, 0.0, 0.31, 0.5 + 0.3 / 255, 0.77, 1.0, 1.7], dtype=torch.float64)
SCALES = [1e-5, 1e-3, 0.05, 1.0, 1e3]  # the bin's half-width is 0.00196


def level_log_probs(scale: float, dtype: torch.dtype) -> torch.Tensor:
    """log P(level) for every location and level: (locations, 256)."""
    likelihood = DiscretisedLogisticLikelihood().to(dtype)
    with torch.no_grad():
        likelihood.log_scale.fill_(math.log(scale))
        return likelihood.level_log_prob(LOCATIONS.to(dtype)[:, None], LEVEL_VALUES.to(dtype))


@pytest.mark.parametrize("scale", SCALES)
def test_discretised_logistic_probabilities_sum_to_one(scale):
    log_probs = level_log_probs(scale, torch.float64)
    assert torch.isfinite(log_probs).all()
    # The bins tile the real line, so the masses telescope to exactly 1 up to float64 rounding
    # (measured: ≤ 4e-15).
    assert torch.allclose(torch.logsumexp(log_probs, -1),
                          torch.zeros(len(LOCATIONS), dtype=torch.float64), atol=1e-12)


@pytest.mark.parametrize("scale", SCALES)
def test_discretised_logistic_probabilities_sum_to_one_in_float32(scale):
    log_probs = level_log_probs(scale, torch.float32)
    assert torch.isfinite(log_probs).all()
    # In float32 the bin edges x ± 1/510 are rounded (by up to 3e-8, against a bin width of
    # 0.0039) separately for neighbouring levels, so the masses no longer telescope exactly:
    # measured up to 1.6e-5 in total.
    assert torch.allclose(torch.logsumexp(log_probs, -1), torch.zeros(len(LOCATIONS)),
                          atol=1e-4)


def test_discretised_logistic_with_a_tiny_scale_puts_its_mass_on_the_nearest_level():
    log_probs = level_log_probs(1e-5, torch.float64)
    nearest = (LOCATIONS * (LEVELS - 1)).round().clamp(0, LEVELS - 1).long()
    assert torch.equal(log_probs.argmax(-1), nearest)
    # Each location is at least 0.2 of a bin (≥ 39 scales) from its bin's edges: the mass
    # outside is below 2·e^-39.
    assert (log_probs.max(-1).values.exp() > 1 - 1e-12).all()


def test_discretised_logistic_with_a_huge_scale_is_spread_over_the_end_levels():
    # With s = 1000 the logistic is nearly flat over [0, 1]: the tails beyond the end levels
    # hold almost everything, half each side, and every interior level ~ (1/255) / (4s).
    probs = level_log_probs(1e3, torch.float64).exp()
    assert probs[:, 0] + probs[:, -1] == pytest.approx(torch.ones(len(LOCATIONS)), abs=1e-3)
    interior = probs[:, 1:-1]
    assert torch.allclose(interior, torch.full_like(interior, 1 / 255 / 4e3), rtol=1e-3)


# ---- continuous Bernoulli -------------------------------------------------------------------

GRID = torch.linspace(0, 1, 50_001, dtype=torch.float64)  # spacing 2e-5


def continuous_bernoulli_integral(logit: float) -> float:
    """∫₀¹ p(x | logit) dx by the trapezoid rule, the density evaluated in float32 (as trained);
    at spacing 2e-5 the quadrature error (h·logit)²/12 is below 1e-7 even for |logit| = 50."""
    likelihood = ContinuousBernoulliLikelihood(dequantize=False)
    logits = torch.full((len(GRID),), logit)
    log_density = likelihood.log_density(logits, GRID.float())
    assert torch.isfinite(log_density).all()
    return torch.trapezoid(log_density.double().exp(), GRID).item()


@pytest.mark.parametrize("logit", [-10.0, -1.0, -1e-3, 0.0, 1e-4, 1e-2, 1.0, 10.0])
def test_continuous_bernoulli_density_integrates_to_one(logit):
    # Near logit 0 (λ ≈ ½) the normaliser 2 artanh(1 - 2λ) / (1 - 2λ) is 0/0 and torch switches
    # to a Taylor expansion. float32 rounding of log λ and log(1 - λ) leaves up to 5e-5 (at
    # logit 10, where 1 - λ = 4.5e-5 keeps only a few significant bits).
    assert continuous_bernoulli_integral(logit) == pytest.approx(1.0, abs=1e-4)


# torch's ContinuousBernoulli integrates to 0.8 at |logit| = 20 and 0.32 at 50 in float32
# (pytorch/pytorch#72525); ours takes its normaliser from the logits.
@pytest.mark.parametrize("logit", [-300.0, -50.0, -20.0, 20.0, 50.0, 300.0])
def test_continuous_bernoulli_density_integrates_to_one_for_large_logits(logit):
    assert continuous_bernoulli_integral(logit) == pytest.approx(1.0, abs=1e-4)


# ---- dequantisation -------------------------------------------------------------------------

def dequantisation_problem(scale: float):
    """A Gaussian likelihood of fixed scale with dequantisation, a 4x4 8-bit image and means a
    few scales from each pixel's bin; in float64. Returns the likelihood, the image (1, 1, 4, 4),
    the means (1, 4, 4) and the pixel levels (1, 4, 4)."""
    likelihood = GaussianLikelihood(scale, dequantize=True).double()
    likelihood.log_scale.fill_(math.log(scale))  # the float32 buffer's value, made exact
    generator = torch.Generator().manual_seed(0)
    levels = torch.randint(0, LEVELS, (1, 4, 4), generator=generator).double()
    offsets = 6 * torch.rand(1, 4, 4, generator=generator, dtype=torch.float64) - 3
    means = (levels + 0.5) / LEVELS + scale * offsets
    return likelihood, (levels / (LEVELS - 1))[None], means, levels


def exact_log_probability(means, levels, scale) -> torch.Tensor:
    """log P(image) = Σ log ∫ N(y; μ, σ²) dy over each pixel's bin [k, k + 1] / 256."""
    normal = Normal(means, scale)
    mass = normal.cdf((levels + 1) / LEVELS) - normal.cdf(levels / LEVELS)
    return torch.log(mass).sum()


def expected_dequantised_log_density(means, levels, scale) -> torch.Tensor:
    """E_u[log N(y; μ, σ²)] - log 256 summed over pixels, y uniform on the bin, in closed form:
    E[(y - μ)²] = ((b - μ)³ - (a - μ)³) / (3 (b - a))."""
    low, high = levels / LEVELS - means, (levels + 1) / LEVELS - means
    mean_square = (high.pow(3) - low.pow(3)) * LEVELS / 3
    per_pixel = (-math.log(scale) - 0.5 * math.log(2 * math.pi) - mean_square / (2 * scale**2)
                 - math.log(LEVELS))
    return per_pixel.sum()


@pytest.mark.parametrize("scale", [0.05, 0.002])
def test_dequantised_gaussian_is_a_lower_bound_on_the_discrete_log_probability(scale):
    likelihood, image, means, levels = dequantisation_problem(scale)
    draws = 20_000
    torch.manual_seed(0)
    estimates = likelihood.log_prob(means.expand(draws, 1, 1, 4, 4), image)  # (draws, 1)
    mean, standard_error = estimates.mean(), estimates.std() / math.sqrt(draws)
    expected = expected_dequantised_log_density(means, levels, scale)
    exact = exact_log_probability(means, levels, scale)
    # The draws average to the closed-form expectation (5 standard errors: chance < 1e-6)...
    assert abs(mean - expected) < 5 * standard_error
    # ...which is below the exact log-probability (Jensen: E log p ≤ log E p)...
    assert expected <= exact
    # ...by at most the spread of log p over each bin (log E p ≤ max, E log p ≥ min).
    low, high = levels / LEVELS, (levels + 1) / LEVELS
    nearest = torch.minimum(torch.maximum(means, low), high)
    farthest = torch.where((means - low).abs() > (means - high).abs(), low, high)
    spread = ((farthest - means).pow(2) - (nearest - means).pow(2)) / (2 * scale**2)
    assert exact - expected <= spread.sum()


def test_dequantisation_gap_is_small_for_a_wide_density_and_large_for_a_narrow_one():
    # A density nearly flat across a bin loses almost nothing to Jensen; one narrower than the
    # bin (σ = 0.002 against a bin of 0.0039) loses a visible amount per pixel.
    gaps = {}
    for scale in (0.05, 0.002):
        _, _, means, levels = dequantisation_problem(scale)
        gaps[scale] = (exact_log_probability(means, levels, scale)
                       - expected_dequantised_log_density(means, levels, scale)).item()
    assert 0 < gaps[0.05] < 0.01 * 16  # below 0.01 nats per pixel
    assert gaps[0.002] > 0.05 * 16  # over 0.05 nats per pixel


def gaussian_log_density(mean, x, scale):
    """log N(x; mean, scale²) per element, written out."""
    return -0.5 * ((x - mean) / scale) ** 2 - math.log(scale) - 0.5 * math.log(2 * math.pi)


def test_without_dequantisation_the_density_is_applied_to_x_as_it_is():
    likelihood = GaussianLikelihood(0.1, dequantize=False)
    x = torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    means = torch.rand(3, 2, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    expected = gaussian_log_density(means, x, 0.1).flatten(-3).sum(-1)  # (3, 2)
    assert torch.allclose(likelihood.log_prob(means, x), expected, rtol=1e-6, atol=1e-5)


# ---- Bernoulli ------------------------------------------------------------------------------

def test_bernoulli_log_prob_is_the_sum_of_pixel_log_probabilities():
    generator = torch.Generator().manual_seed(0)
    logits = 10 * torch.randn(3, 2, 1, 4, 4, generator=generator)  # (k, B, C, H, W), |l| up to ~30
    x = (torch.rand(2, 1, 4, 4, generator=generator) < 0.5).float()
    expected = Bernoulli(logits=logits).log_prob(x.expand_as(logits)).flatten(-3).sum(-1)
    log_prob = BernoulliLikelihood().log_prob(logits, x)
    assert log_prob.shape == (3, 2)
    # Two float32 formulas for sums of 16 terms of size up to ~30: 1e-5 relative.
    assert torch.allclose(log_prob, expected, rtol=1e-5, atol=1e-4)


# ---- which data each likelihood fits --------------------------------------------------------

def test_bernoulli_needs_binary_pixels():
    refusal = BernoulliLikelihood.requirement("none", NoSettings())
    assert refusal.startswith("the Bernoulli likelihood needs binary pixels")
    assert 'binarize = "dynamic"' in refusal  # and says how to fix it
    assert BernoulliLikelihood.requirement("dynamic", NoSettings()) is None
    assert BernoulliLikelihood.requirement("fixed", NoSettings()) is None


@pytest.mark.parametrize("likelihood, settings, name", [
    (GaussianLikelihood, GaussianSettings, "Gaussian"),
    (ContinuousBernoulliLikelihood, DequantizeSettings, "ContinuousBernoulli"),
])
def test_densities_need_grey_levels_and_dequantisation(likelihood, settings, name):
    for refusal in (likelihood.requirement("fixed", settings()),
                    likelihood.requirement("none", settings(dequantize=False))):
        assert refusal.startswith(f"{name} ")  # the message names the likelihood
    assert "binary" in likelihood.requirement("dynamic", settings())
    assert "binary" in likelihood.requirement("fixed", settings())
    assert "dequantize" in likelihood.requirement("none", settings(dequantize=False))
    assert likelihood.requirement("none", settings()) is None


def test_discretised_logistic_needs_grey_levels():
    for binarize in ("dynamic", "fixed"):
        refusal = DiscretisedLogisticLikelihood.requirement(binarize, NoSettings())
        assert refusal.startswith("the discretised logistic is a likelihood of 256 grey levels")
        assert 'binarize = "none"' in refusal
    assert DiscretisedLogisticLikelihood.requirement("none", NoSettings()) is None


@pytest.mark.parametrize("overrides, binarize, fits", [
    ({}, "dynamic", True),  # mlp-vae's Bernoulli
    ({}, "none", False),
    ({"likelihood": "continuous-bernoulli"}, "none", True),
    ({"likelihood": "continuous-bernoulli"}, "fixed", False),
    ({"likelihood": "continuous-bernoulli", "dequantize": False}, "none", False),
    ({"likelihood": "gaussian", "gaussian_scale": 0.1}, "none", True),
    ({"likelihood": "discretised-logistic"}, "none", True),
    ({"likelihood": "discretised-logistic"}, "dynamic", False),
])
def test_check_data_fit_asks_the_resolved_likelihood(overrides, binarize, fits):
    hyperparameters = zoo.resolve_hyperparameters("mlp-vae", overrides)
    assert (zoo.check_data_fit(hyperparameters, binarize) is None) == fits


def test_gaussian_likelihood_with_fixed_and_learned_scale():
    mean, x = torch.randn(2, 3, 1, 2, 2), torch.randn(3, 1, 2, 2)
    fixed = GaussianLikelihood(0.5)
    expected = gaussian_log_density(mean, x, 0.5).flatten(-3).sum(-1)
    assert torch.allclose(fixed.log_prob(mean, x), expected, atol=1e-5)
    assert not any(p.requires_grad for p in fixed.parameters())
    learned = GaussianLikelihood("learned")
    assert learned.log_scale.requires_grad  # starting at log σ = 0
    unit = gaussian_log_density(mean, x, 1.0).flatten(-3).sum(-1)
    assert torch.allclose(learned.log_prob(mean, x), unit, atol=1e-5)


def test_bernoulli_log_prob_is_the_pmf_in_double_precision_for_large_logits():
    """log σ((2x - 1)·l) against x·l - softplus(l) in float64, for logits far into the tails."""
    logits = torch.randn(50, 1, 28, 28) * 30
    x = torch.bernoulli(torch.full((50, 1, 28, 28), 0.4))
    exact = (x.double() * logits.double()
             - torch.nn.functional.softplus(logits.double())).flatten(1).sum(-1)
    likelihood = BernoulliLikelihood()
    assert torch.allclose(likelihood.log_prob(logits, x).double(), exact, atol=1e-2, rtol=1e-6)
    assert torch.allclose(likelihood.log_prob(logits.double(), x.double()), exact, atol=1e-9)


# ---- the Gaussian's mean: what samples and reconstructions show ----------------------------

@pytest.mark.parametrize("scale", [0.05, "learned"])  # learned: σ = 1 at the start
def test_gaussian_mean_is_the_expectation_of_its_density(scale):
    """`mean(params)`, the image drawn for samples and reconstructions, is ∫ y p(y | params) dy of
    the density the model is trained with: the decoder output itself, in the [0, 1] space of the
    (dequantised) pixels, not squashed, even where it lies outside [0, 1]."""
    likelihood = GaussianLikelihood(scale, dequantize=False).double()
    sigma = likelihood.log_scale.exp().item()
    for location in (-0.2, 0.0, 0.37, 1.1):
        grid = torch.linspace(location - 12 * sigma, location + 12 * sigma, 200_001,
                              dtype=torch.float64)
        density = likelihood.log_density(torch.full_like(grid, location), grid).exp()
        assert torch.trapezoid(density, grid).item() == pytest.approx(1.0, abs=1e-9)
        expectation = torch.trapezoid(grid * density, grid).item()
        mean = likelihood.mean(torch.tensor([location], dtype=torch.float64)).item()
        assert mean == pytest.approx(expectation, abs=1e-9)


def test_discretised_logistic_starts_with_a_scale_of_a_tenth_of_the_pixel_range():
    """The learned scale starts at 0.1 (PixelCNN++'s order of magnitude): the mass a fresh
    likelihood gives the level at its location is σ(½·Δ/0.1) - σ(-½·Δ/0.1), Δ = 1/255."""
    likelihood = DiscretisedLogisticLikelihood()
    half_bin = 0.5 / 255
    expected = 1 / (1 + math.exp(-half_bin / 0.1)) - 1 / (1 + math.exp(half_bin / 0.1))
    location = torch.tensor([[[[128 / 255]]]])
    assert likelihood.log_prob(location, location).item() == pytest.approx(
        math.log(expected), rel=1e-5)


# ---- continuous Bernoulli: dequantisation and the normaliser near η = 0 ----------------------

def continuous_bernoulli_log_normaliser(logit: float) -> float:
    """log ∫₀¹ e^{ηt} dt = log((e^η - 1) / η), in float64 (exact to ~1e-16 for 1e-3 ≤ |η| ≤ 30)."""
    return math.log(math.expm1(logit) / logit)


def continuous_bernoulli_bin_log_mass(logit: float, level: int) -> float:
    """log ∫ p(t | η) dt over the bin [k, k + 1] / 256: (e^{ηb} - e^{ηa}) / (e^η - 1)."""
    low, high = level / LEVELS, (level + 1) / LEVELS
    return math.log((math.exp(logit * high) - math.exp(logit * low)) / math.expm1(logit))


@pytest.mark.parametrize("build", ["constructor", "settings"])
def test_dequantised_continuous_bernoulli_gives_the_log_probability_of_8_bit_pixels(build):
    # With dequantisation log p(image) = Σ_pixels log p(y | η) - log 256, y = (k + u) / 256:
    # a log-probability, ≤ 0 for every draw, whose mean over u is, in closed form,
    # Σ [η (k + ½)/256 - log((e^η - 1)/η) - log 256], just below the exact Σ log(bin mass)
    # (Jensen; the density varies by at most e^{20/256} across a bin, so by < 0.003 nats per
    # pixel). Logits up to |η| = 20, where the density itself exceeds 1 (max 20).
    likelihood = (ContinuousBernoulliLikelihood(dequantize=True) if build == "constructor"
                  else ContinuousBernoulliLikelihood.from_settings(DequantizeSettings()))
    generator = torch.Generator().manual_seed(0)
    levels = torch.randint(0, LEVELS, (1, 4, 4), generator=generator)
    logits = (40 * torch.rand(1, 4, 4, generator=generator, dtype=torch.float64) - 20)
    logits[0, 0, :2] = torch.tensor([20.0, -20.0], dtype=torch.float64)
    levels[0, 0, :2] = torch.tensor([LEVELS - 1, 0])  # where the density is near its maximum
    image = (levels.double() / (LEVELS - 1))[None]  # (1, 1, 4, 4)
    draws = 20_000
    torch.manual_seed(0)
    estimates = likelihood.log_prob(logits.expand(draws, 1, 1, 4, 4), image)  # (draws, 1)
    assert (estimates <= 0).all()
    pairs = list(zip(logits.flatten().tolist(), levels.flatten().tolist(), strict=True))
    expected = sum(eta * (k + 0.5) / LEVELS - continuous_bernoulli_log_normaliser(eta)
                   - math.log(LEVELS) for eta, k in pairs)
    exact = sum(continuous_bernoulli_bin_log_mass(eta, k) for eta, k in pairs)
    mean, standard_error = estimates.mean().item(), estimates.std().item() / math.sqrt(draws)
    assert abs(mean - expected) < 5 * standard_error  # chance < 1e-6
    assert expected <= exact < expected + 16 * 0.003
    assert mean == pytest.approx(exact, abs=0.05)


def test_continuous_bernoulli_without_dequantisation_is_a_density_that_can_exceed_one():
    # p(1 | η = 20) = 20 e^{20} / (e^{20} - 1) ≈ 20: log p = log 20 per pixel, 16 log 20 for
    # a white 4x4 image, a log-density above 0, not a log-probability.
    likelihood = ContinuousBernoulliLikelihood(dequantize=False)
    image = torch.ones(1, 1, 4, 4, dtype=torch.float64)
    logits = torch.full((1, 1, 4, 4), 20.0, dtype=torch.float64)
    expected = 16 * (20.0 - continuous_bernoulli_log_normaliser(20.0))
    assert expected > 0
    assert likelihood.log_prob(logits, image).item() == pytest.approx(expected, rel=1e-12)


def log_normaliser_series(logit: float) -> float:
    """log((e^η - 1)/η) = η/2 + η²/24 - η⁴/2880 + O(η⁶): the next term, η⁶/181440, is below
    3e-24 for |η| < 1e-3."""
    return logit / 2 + logit**2 / 24 - logit**4 / 2880


@pytest.mark.parametrize("logit", [-9e-4, -5e-4, -2e-4, 2e-4, 5e-4, 9e-4])
def test_continuous_bernoulli_log_normaliser_near_zero_matches_its_series(logit):
    # For |η| < 1e-3 the closed form is 0/0-prone and the code uses a Taylor series: it must
    # agree with the series above to 1e-14 in float64 (η²/24 matters at ~2e-9, the neglected
    # η⁴/2880 is below 3e-16). Read off at x = 0, where log p(0 | η) = -log normaliser.
    likelihood = ContinuousBernoulliLikelihood(dequantize=False)
    log_density = likelihood.log_density(torch.tensor([logit], dtype=torch.float64),
                                         torch.zeros(1, dtype=torch.float64))
    assert -log_density.item() == pytest.approx(log_normaliser_series(logit), abs=1e-14)
    # ... and at x = 1: log p(1 | η) = η - log normaliser.
    log_density = likelihood.log_density(torch.tensor([logit], dtype=torch.float64),
                                         torch.ones(1, dtype=torch.float64))
    assert log_density.item() == pytest.approx(logit - log_normaliser_series(logit), abs=1e-14)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_continuous_bernoulli_log_normaliser_is_continuous_at_the_series_cutoff(sign):
    # Just below |η| = 1e-3 (the largest float64 under it) the series is used, at 1e-3 the
    # closed form: the true values differ by ~1e-19, so the two must agree to 1e-12, and each
    # matches log((e^η - 1)/η) from expm1 in float64.
    cutoff = sign * 1e-3
    below = sign * math.nextafter(1e-3, 0.0)
    likelihood = ContinuousBernoulliLikelihood(dequantize=False)
    values = -likelihood.log_density(torch.tensor([below, cutoff], dtype=torch.float64),
                                     torch.zeros(2, dtype=torch.float64))
    assert values[0].item() == pytest.approx(values[1].item(), abs=1e-12)
    for value, logit in zip(values.tolist(), (below, cutoff), strict=True):
        assert value == pytest.approx(continuous_bernoulli_log_normaliser(logit), abs=1e-13)


def test_likelihoods_built_directly_have_the_documented_defaults():
    """Built without arguments: the Gaussian learns its scale (starting at 1) and does not
    dequantise unless asked; the continuous Bernoulli dequantises."""
    gaussian = GaussianLikelihood()
    assert isinstance(gaussian.log_scale, torch.nn.Parameter) and gaussian.log_scale.item() == 0
    assert gaussian.dequantize is False
    assert ContinuousBernoulliLikelihood().dequantize is True
