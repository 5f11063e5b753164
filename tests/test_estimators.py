"""Gradient estimators: DReG and sticking-the-landing estimate the same gradient as the standard
reparameterisation estimator, with less variance where their papers say so.

Each check draws thousands of independent gradients in one pass: a single image is repeated
along the batch, so row r of the batch is an independent draw of z, and since each row's term
depends on the encoder only through that row's (μ, log σ²), the row's encoder-parameter
gradient is the row's gradient with respect to (μ, log σ²) times the encoder's Jacobian at the
image (checked against autograd in `per_draw_encoder_gradients`).
"""

import math

import pytest
import torch
from torch import nn

from vae_zoo import zoo
from vae_zoo.estimators import (
    DoublyReparameterised,
    Reparameterisation,
    StickingTheLanding,
    log_mean_exp,
)
from vae_zoo.likelihoods import GaussianLikelihood
from vae_zoo.model import VAE
from vae_zoo.nets import Networks
from vae_zoo.objectives import ElboSettings, IwaeSettings, Objective
from vae_zoo.priors import StandardNormalPrior

pytestmark = pytest.mark.usefixtures("one_thread")

IMAGE = (1, 4, 4)
SMALL = {"latent_dim": 2, "hidden": [8]}
DRAWS = 4000


def flat(gradients) -> torch.Tensor:
    return torch.cat([g.flatten() for g in gradients])


def encoder_jacobian(encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """∂(μ, log σ²)/∂θ of the encoder at one image (1, C, H, W): (2d, P)."""
    parameters = list(encoder.parameters())
    mean, log_var = encoder(x)
    outputs = torch.cat([mean, log_var], -1)[0]  # (2d,)
    return torch.stack([flat(torch.autograd.grad(output, parameters, retain_graph=True))
                        for output in outputs])


def per_draw_encoder_gradients(model: VAE, objective: Objective, x: torch.Tensor,
                               draws: int, seed: int) -> torch.Tensor:
    """The gradient of the objective's surrogate with respect to the encoder's parameters for
    `draws` independent draws of z at one image x (1, C, H, W): (draws, P)."""
    repeated = x.expand(draws, *x.shape[1:])
    captured = {}
    hook = model.encoder.register_forward_hook(
        lambda module, inputs, output: captured.update(output=output))
    torch.manual_seed(seed)
    terms = objective(model, repeated)
    hook.remove()
    surrogate = terms.get("surrogate", terms["loss"])  # (draws,)
    mean, log_var = captured["output"]
    parameters = list(model.encoder.parameters())
    grad_mean, grad_log_var, *grad_parameters = torch.autograd.grad(
        surrogate.sum(), [mean, log_var, *parameters])
    per_draw = torch.cat([grad_mean, grad_log_var], -1) @ encoder_jacobian(model.encoder, x)
    # The decomposition is exact: the draws' gradients add up to autograd's for the batch
    # (float32 sums of 4000 terms: 1e-4 relative).
    assert torch.allclose(per_draw.sum(0), flat(grad_parameters), rtol=1e-4, atol=1e-4)
    return per_draw


def z_scores(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-coordinate difference of the two samples' means in standard errors, over the
    coordinates that vary (weights fed by a zero pixel have no gradient at all)."""
    standard_error = (a.var(0) / len(a) + b.var(0) / len(b)).sqrt()
    varies = standard_error > 0
    return (a.mean(0) - b.mean(0))[varies] / standard_error[varies]


def signal_in_standard_errors(a: torch.Tensor) -> float:
    """|E[g]| in units of the standard error of the mean: large means the comparison has power."""
    return (a.mean(0).norm() / (a.var(0).sum() / len(a)).sqrt()).item()


def binary_image(seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(1, *IMAGE, generator=generator) < 0.5).float()


def same_weights(entry: str, overrides: dict, reference: VAE):
    """Zoo entry `entry` built with `reference`'s weights."""
    model, objective = zoo.build(entry, IMAGE, overrides)
    model.load_state_dict(reference.state_dict())
    return model, objective


def informative_iwae(k: int, seed: int = 0):
    """A small IWAE whose decoder weights are tripled at initialisation. At the plain
    initialisation the likelihood hardly depends on z, so q is nearly the true posterior: the
    regime where the path-derivative estimators are at their best. Tripled, the posterior is
    far from q, a harder test of the claims."""
    torch.manual_seed(seed)
    model, objective = zoo.build("iwae", IMAGE, {**SMALL, "k": k})
    with torch.no_grad():
        for parameter in model.decoder.parameters():
            parameter.mul_(3.0)
    return model, objective


# ---- unbiasedness ---------------------------------------------------------------------------

def test_dreg_encoder_gradient_has_the_standard_iwae_gradient_as_its_mean():
    standard, standard_objective = informative_iwae(k=5)
    dreg, dreg_objective = same_weights("iwae-dreg", {**SMALL, "k": 5}, standard)
    x = binary_image()
    reference = per_draw_encoder_gradients(standard, standard_objective, x, DRAWS, seed=1)
    doubly = per_draw_encoder_gradients(dreg, dreg_objective, x, DRAWS, seed=2)
    # The standard mean is tens of standard errors from zero, so agreement is not vacuous.
    assert signal_in_standard_errors(reference) > 10
    # Independent draws: each coordinate's difference is ~N(0, 1) in standard errors; over
    # ~130 coordinates a 4-SE excursion happens by chance with probability below 1%
    # (union bound: 130 · 6e-5).
    assert z_scores(reference, doubly).abs().max() < 4


def test_the_comparison_detects_a_biased_encoder_gradient():
    # The control for the test above: sticking the landing on the IWAE bound (w̃ instead of
    # DReG's w̃²) is biased (Tucker et al. 2018, section 3), and the same comparison sees it.
    standard, standard_objective = informative_iwae(k=5)
    stl, stl_objective = same_weights("iwae", {**SMALL, "k": 5, "estimator": "stl"}, standard)
    x = binary_image()
    reference = per_draw_encoder_gradients(standard, standard_objective, x, DRAWS, seed=1)
    path_only = per_draw_encoder_gradients(stl, stl_objective, x, DRAWS, seed=2)
    assert z_scores(reference, path_only).abs().max() > 10


def test_stl_encoder_gradient_has_the_standard_elbo_gradient_as_its_mean():
    torch.manual_seed(0)
    standard, standard_objective = zoo.build("mlp-vae", IMAGE, {**SMALL, "kl": "monte-carlo"})
    with torch.no_grad():  # an informative decoder, as in `informative_iwae`
        for parameter in standard.decoder.parameters():
            parameter.mul_(3.0)
    stl, stl_objective = same_weights("vae-stl", SMALL, standard)
    assert stl.kl == "monte-carlo"  # chosen by the zoo: STL has no log q to stop in closed form
    x = binary_image()
    reference = per_draw_encoder_gradients(standard, standard_objective, x, DRAWS, seed=1)
    path_only = per_draw_encoder_gradients(stl, stl_objective, x, DRAWS, seed=2)
    assert signal_in_standard_errors(reference) > 10
    assert z_scores(reference, path_only).abs().max() < 4  # as in the DReG test


@pytest.mark.parametrize("standard_entry, standard_overrides, entry, overrides", [
    ("iwae", {**SMALL, "k": 5}, "iwae-dreg", {**SMALL, "k": 5}),
    ("mlp-vae", {**SMALL, "kl": "monte-carlo"}, "vae-stl", SMALL),
])
def test_decoder_gradient_is_the_standard_one_for_the_same_draws(
        standard_entry, standard_overrides, entry, overrides):
    # DReG and STL change only how gradients reach the encoder: with the same z (same seed)
    # the decoder's gradient is the standard estimator's, not only equal in expectation.
    torch.manual_seed(0)
    standard, standard_objective = zoo.build(standard_entry, IMAGE, standard_overrides)
    with torch.no_grad():
        for parameter in standard.decoder.parameters():
            parameter.mul_(3.0)
    other, other_objective = same_weights(entry, overrides, standard)
    x = torch.cat([binary_image(seed) for seed in range(8)])

    def gradients(model, objective):
        torch.manual_seed(5)
        terms = objective(model, x)
        surrogate = terms.get("surrogate", terms["loss"]).mean()
        decoder = flat(torch.autograd.grad(surrogate, list(model.decoder.parameters()),
                                           retain_graph=True))
        encoder = flat(torch.autograd.grad(surrogate, list(model.encoder.parameters())))
        return terms["loss"], decoder, encoder

    standard_loss, standard_decoder, standard_encoder = gradients(standard, standard_objective)
    loss, decoder, encoder = gradients(other, other_objective)
    assert torch.equal(loss, standard_loss)  # the estimator changes gradients, not the value
    # Same draws, a different but equivalent graph: float32 rounding only.
    assert torch.allclose(decoder, standard_decoder, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(encoder, standard_encoder, rtol=1e-2)  # the encoder's differs


# ---- variance -------------------------------------------------------------------------------

def total_variance(gradients: torch.Tensor) -> float:
    """Σ_p Var[g_p]: the trace of the gradient's covariance across draws."""
    return gradients.var(0).sum().item()


def test_dreg_encoder_gradient_has_lower_variance_and_gains_more_as_k_grows():
    # Tucker et al. (2018): the standard IWAE encoder gradient's signal-to-noise ratio decays as
    # k grows, DReG's does not. On this model (and on four other initialisations tried) the
    # variance ratio is 2.7-14 at k = 5 and 6-340 at k = 20, so a factor 2 is a safe margin.
    x = binary_image()
    ratios = {}
    for k in (5, 20):
        standard, standard_objective = informative_iwae(k)
        dreg, dreg_objective = same_weights("iwae-dreg", {**SMALL, "k": k}, standard)
        reference = per_draw_encoder_gradients(standard, standard_objective, x, DRAWS, seed=1)
        doubly = per_draw_encoder_gradients(dreg, dreg_objective, x, DRAWS, seed=2)
        ratios[k] = total_variance(reference) / total_variance(doubly)
    assert ratios[5] > 2
    assert ratios[20] > ratios[5]


# A linear-Gaussian model whose exact posterior is in the encoder's family (the construction of
# tests/test_likelihood.py): z ~ N(0, I), x | z ~ N(Wz + b, σ²I), with orthogonal columns of W so
# that q*(z|x) = N(S Wᵀ(x - b)/σ², S), S = (I + WᵀW/σ²)⁻¹, is diagonal.
LINEAR_IMAGE = (1, 2, 3)
SIGMA = 0.5


class LinearEncoder(nn.Module):
    """q(z|x) = N(G(x - b), diag exp(log_var)), with learnable G, b and log_var set to the exact
    posterior's values."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor):
        super().__init__()
        identity = torch.eye(weight.shape[1], dtype=weight.dtype)
        posterior_cov = torch.linalg.inv(identity + weight.T @ weight / SIGMA**2)
        self.gain = nn.Parameter(posterior_cov @ weight.T / SIGMA**2)
        self.offset = nn.Parameter(bias.clone())
        self.log_var = nn.Parameter(torch.log(torch.diagonal(posterior_cov)))

    def forward(self, x):
        mean = (x.flatten(1) - self.offset) @ self.gain.T
        return mean, self.log_var.expand_as(mean)


class LinearDecoder(nn.Module):
    def __init__(self, weight: torch.Tensor, bias: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(weight.clone())
        self.bias = nn.Parameter(bias.clone())

    def forward(self, z):
        return (z @ self.weight.T + self.bias).unflatten(-1, LINEAR_IMAGE)


def exact_posterior_model() -> tuple[VAE, torch.Tensor]:
    """The linear-Gaussian VAE with q equal to the exact posterior, and one image from its
    marginal. All in float64 from the start: a posterior computed in float32 is exact only to
    ~1e-7, which would show as a gradient of that size."""
    generator = torch.Generator().manual_seed(0)
    basis, _ = torch.linalg.qr(torch.randn(6, 2, generator=generator, dtype=torch.float64))
    weight = basis * torch.tensor([1.5, 0.7], dtype=torch.float64)
    bias = torch.randn(6, generator=generator, dtype=torch.float64)
    networks = Networks([LinearEncoder(weight, bias)], [], LinearDecoder(weight, bias), [2])
    likelihood = GaussianLikelihood(SIGMA, dequantize=False).double()
    likelihood.log_scale.fill_(math.log(SIGMA))  # the float32 buffer's value, made exact
    model = VAE(networks, likelihood, StandardNormalPrior(2), kl="monte-carlo")
    marginal_cov = weight @ weight.T + SIGMA**2 * torch.eye(6, dtype=torch.float64)
    noise = torch.randn(6, generator=generator, dtype=torch.float64)
    x = (bias + torch.linalg.cholesky(marginal_cov) @ noise).reshape(1, *LINEAR_IMAGE)
    return model, x


def test_stl_gradient_vanishes_at_the_exact_posterior_and_the_standard_one_does_not():
    # Roeder et al. (2017): with q = p(z|x), log p(x, z) - log q(z|x) = log p(x) for every z, so
    # the path derivative is exactly zero on every draw, while the standard estimator keeps the
    # score term -∇ log q(z|x), zero only in expectation. Both agree that the ELBO's gradient
    # is zero here (q is its maximiser).
    model, x = exact_posterior_model()
    standard = Objective("elbo", ElboSettings(k=1), Reparameterisation())
    sticking = Objective("elbo", ElboSettings(k=1), StickingTheLanding())
    reference = per_draw_encoder_gradients(model, standard, x, DRAWS, seed=1)
    path_only = per_draw_encoder_gradients(model, sticking, x, DRAWS, seed=2)
    assert total_variance(reference) > 0.1
    # float64 rounding of terms of size ~1: the path derivative is zero to ~1e-14 per draw.
    assert path_only.abs().max() < 1e-10
    standard_error = (reference.var(0) / len(reference)).sqrt()
    assert (reference.mean(0).abs() < 4 * standard_error).all()


def test_dreg_gradient_vanishes_at_the_exact_posterior():
    # With q = p(z|x) every importance weight is p(x): DReG's encoder gradient, made of
    # ∂log w/∂z only, is exactly zero, as for STL above.
    model, x = exact_posterior_model()
    doubly = Objective("iwae", IwaeSettings(k=5), DoublyReparameterised())
    gradients = per_draw_encoder_gradients(model, doubly, x, 500, seed=1)
    assert gradients.abs().max() < 1e-10  # float64 rounding, as above


# ---- log_mean_exp ---------------------------------------------------------------------------

def test_log_mean_exp_is_the_log_of_the_mean():
    values = torch.log(torch.tensor([[1.0, 3.0], [2.0, 6.0]]))
    assert torch.allclose(log_mean_exp(values, 0), torch.log(torch.tensor([1.5, 4.5])))
    assert torch.allclose(log_mean_exp(values, 1), torch.log(torch.tensor([2.0, 4.0])))


def test_log_mean_exp_is_stable_for_large_and_infinite_values():
    # exp(1000) overflows float32; the logsumexp form does not.
    large = torch.tensor([1000.0, 1000.0 + math.log(3.0)])
    assert torch.allclose(log_mean_exp(large), torch.tensor(1000.0 + math.log(2.0)))
    with_zero_weight = torch.tensor([-math.inf, 0.0])  # one weight exactly 0
    assert torch.allclose(log_mean_exp(with_zero_weight), torch.tensor(math.log(0.5)))
