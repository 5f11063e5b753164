"""Objectives against known answers: total-correlation estimators on a Gaussian whose total
correlation is known in closed form, the DIP penalty, free bits, the warm-up and capacity
schedules, and the importance-weighted family's special cases."""

import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import Tensor, nn
from torch.distributions import MultivariateNormal, Normal

from vae_zoo import objectives, zoo
from vae_zoo.gaussian import DiagonalGaussian
from vae_zoo.objectives import (
    CapacitySettings,
    CombinationSettings,
    Dip2Settings,
    DipSettings,
    Discriminator,
    FactorSettings,
    FreeBitsSettings,
    GroupedSettings,
    IwaeSettings,
    Objective,
    TcSettings,
    TrainingContext,
    WarmupSettings,
)

pytestmark = pytest.mark.usefixtures("one_thread")

# ---- total correlation of a Gaussian --------------------------------------------------------
# x ~ N(0, Σ_x) and q(z|x) = N(x, s²I): the aggregate posterior q(z) = E_x q(z|x) is
# N(0, C), C = Σ_x + s²I, and its total correlation KL(q(z) || Π_d q(z_d)) is
# ½ (Σ_d log C_dd - log det C).

MIXING = torch.tensor([[1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [0.3, -0.5, 0.8]])  # Σ_x = A Aᵀ
POSTERIOR_SCALE = 0.5
DIMS = 3
COVARIANCE = MIXING @ MIXING.T + POSTERIOR_SCALE**2 * torch.eye(DIMS)
EXACT_TC = 0.5 * (torch.log(torch.diagonal(COVARIANCE)).sum() - torch.logdet(COVARIANCE)).item()


def gaussian_batch(size: int, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """Posterior means x, log-variances and codes z ~ q(z|x) for a batch: each (size, d)."""
    x = torch.randn(size, DIMS, generator=generator) @ MIXING.T
    z = x + POSTERIOR_SCALE * torch.randn(size, DIMS, generator=generator)
    return x, torch.full_like(x, math.log(POSTERIOR_SCALE**2)), z


def test_minibatch_stratified_sampling_weights_the_own_image_by_one_over_n():
    # q(z_i) ≈ (1/N) q(z_i|x_i) + (N - 1)/(N (B - 1)) Σ_{j≠i} q(z_i|x_j): Chen et al. (2018),
    # appendix C.2; per dimension the same with q(z_i,d|x_j). Checked term by term in float64.
    generator = torch.Generator().manual_seed(0)
    mean = torch.randn(5, 2, generator=generator, dtype=torch.float64)
    log_var = torch.randn(5, 2, generator=generator, dtype=torch.float64) * 0.3
    z = torch.randn(5, 2, generator=generator, dtype=torch.float64)
    dataset_size = 7
    log_qz, log_marginals = objectives.minibatch_stratified_log_densities(
        z, mean, log_var, dataset_size)
    density = Normal(mean[None], torch.exp(0.5 * log_var[None])).log_prob(z[:, None]).exp()
    weights = torch.full((5, 5), (dataset_size - 1) / (dataset_size * 4), dtype=torch.float64)
    weights.fill_diagonal_(1 / dataset_size)
    assert torch.allclose(log_qz, torch.log((density.prod(-1) * weights).sum(1)))
    assert torch.allclose(log_marginals,
                          torch.log((density * weights[..., None]).sum(1)).sum(-1))


def test_beta_tcvae_total_correlation_estimate_converges_to_the_exact_value():
    # With the batch as the data (N = B), the stratified weights are uniform and q(z) is exactly
    # the batch's mixture (1/B) Σ_j q(z|x_j): the estimate is consistent, its error falls as B
    # grows. Measured root-mean-square errors: ~0.09, ~0.035, ~0.01 at B = 100, 500, 2000
    # (over several seeds); the sampling error of the mean at B = 2000 is ~0.01.
    generator = torch.Generator().manual_seed(0)
    rms_errors = {}
    for batch, repeats in ((100, 8), (500, 4), (2000, 2)):
        errors = []
        for _ in range(repeats):
            x, log_var, z = gaussian_batch(batch, generator)
            log_qz, log_marginals = objectives.minibatch_stratified_log_densities(
                z, x, log_var, dataset_size=batch)
            estimate = (log_qz - log_marginals).mean().item()
            errors.append(estimate - EXACT_TC)
        rms_errors[batch] = math.sqrt(sum(e * e for e in errors) / repeats)
    assert rms_errors[2000] < rms_errors[500] < rms_errors[100]
    assert rms_errors[2000] < 0.05


def test_factor_vae_discriminator_recovers_the_total_correlation():
    # The density-ratio trick: a discriminator between samples of q(z) and of Π_d q(z_d)
    # (FactorVAE's permuted batch) has, at its optimum, logit log q(z) / Π_d q(z_d), whose mean
    # under q(z) is the TC. 1500 Adam steps at rate 1e-3 on batches of 512 (under 2 s): over
    # four seeds, measured mean-logit errors ≤ 0.03 and pointwise RMS errors ≤ 0.09 (at rate
    # 3e-3 the last iterate is noisier: errors up to 0.1).
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    discriminator = Discriminator(DIMS, [64, 64], learning_rate=1e-3)
    for _ in range(1500):
        discriminator.last_z = gaussian_batch(512, generator)[2]
        discriminator.update()
        assert discriminator.last_z is None  # consumed by the step
    z = gaussian_batch(20_000, generator)[2]
    exact_log_ratio = (MultivariateNormal(torch.zeros(DIMS), COVARIANCE).log_prob(z)
                       - Normal(0.0, torch.diagonal(COVARIANCE).sqrt()).log_prob(z).sum(-1))
    with torch.no_grad():
        logits = discriminator(z)
    assert logits.mean().item() == pytest.approx(EXACT_TC, abs=0.1)
    assert (logits - exact_log_ratio).pow(2).mean().sqrt() < 0.15


def test_beta_tcvae_with_unit_weights_regularises_by_the_single_sample_kl():
    # MI + TC + dimension-wise KL telescopes to log q(z|x) - log p(z): with α = β = γ = 1,
    # β-TCVAE is the ELBO with a one-sample KL estimate, whatever the log q(z) estimate.
    torch.manual_seed(0)
    model, _ = zoo.build("beta-tcvae", (1, 4, 4), {"latent_dim": 2, "hidden": [8]})
    x = (torch.rand(6, 1, 4, 4) < 0.5).float()
    out = model(x, 1)
    terms = objectives.beta_tcvae(out, TrainingContext(dataset_size=100),
                                  TcSettings(alpha=1.0, beta=1.0, gamma=1.0))
    z = out.z[0]
    single_sample_kl = out.posterior.log_prob(z) - model.prior.log_prob(z)
    assert torch.allclose(terms["loss"], terms["recon"] + single_sample_kl, atol=1e-5)


def test_beta_tcvae_total_correlation_is_that_of_the_batch_mixture_of_its_posteriors():
    # With the batch as the data (N = B) the stratified weights are uniform, so
    # log q(z_i) = log (1/B) Σ_j q(z_i|x_j) and the marginals likewise per dimension: the TC
    # term is their difference, written out here with the posteriors' own Normal densities.
    torch.manual_seed(0)
    model, _ = zoo.build("beta-tcvae", (1, 4, 4), {"latent_dim": 3, "hidden": [8]})
    x = (torch.rand(6, 1, 4, 4) < 0.5).float()
    out = model(x, 1)
    terms = objectives.beta_tcvae(out, TrainingContext(dataset_size=6), TcSettings())
    z, posterior = out.z[0].double(), out.posterior
    density = Normal(posterior.loc.double()[None],
                     posterior.scale.double()[None]).log_prob(z[:, None])
    log_qz = torch.logsumexp(density.sum(-1), 1) - math.log(6)  # (B,)
    log_marginals = (torch.logsumexp(density, 1) - math.log(6)).sum(-1)
    assert torch.allclose(terms["total_correlation"].double(), log_qz - log_marginals, atol=1e-5)


@pytest.mark.parametrize("name", sorted(objectives.OBJECTIVES))
def test_every_objective_reports_the_reconstruction_and_kl_of_its_pass(name):
    # The `recon` and `kl` columns of a run's history mean the same for every objective: the
    # pass's -log p(x|z) averaged over its k samples, and its KL, whatever the loss is.
    torch.manual_seed(0)
    model, _ = zoo.build("mlp-vae", (1, 4, 4), {"latent_dim": 2, "hidden": [8]})
    x = (torch.rand(6, 1, 4, 4) < 0.5).float()
    spec = objectives.OBJECTIVES[name]
    objective = Objective(name, spec.Settings(), latent_dim=2)
    context = TrainingContext(dataset_size=100)
    torch.manual_seed(1)
    terms = objective(model, x, context)
    torch.manual_seed(1)
    out = model(x, objective.k, objective.estimator)
    assert torch.allclose(terms["recon"], -out.log_px_given_z.mean(0))
    assert torch.allclose(terms["kl"], out.kl())
    assert terms["loss"].shape == (6,)


# ---- DIP ------------------------------------------------------------------------------------

@pytest.mark.parametrize("dims", [1, 3, 5])
def test_dip_penalty_is_zero_at_the_identity(dims):
    assert objectives.dip_penalty(torch.eye(dims), DipSettings()).item() == 0.0


def test_dip_penalty_known_value():
    covariance = torch.tensor([[3.0, 0.5], [0.5, 0.5]])
    # λ_od Σ_{i≠j} C_ij² + λ_d Σ_i (C_ii - 1)² = λ_od · 0.5 + λ_d · (4 + 0.25).
    assert objectives.dip_penalty(covariance, DipSettings()).item() == pytest.approx(
        10 * 0.5 + 100 * 4.25)
    assert objectives.dip_penalty(covariance, Dip2Settings()).item() == pytest.approx(
        10 * 0.5 + 10 * 4.25)


# ---- free bits and schedules ----------------------------------------------------------------

@dataclass
class FixedPass:
    """A stand-in for `Pass` with chosen terms: what the ELBO-family objectives read."""

    log_px_given_z: Tensor  # (k, B)
    kl_value: Tensor  # (B,)
    kl_per_dim_value: Tensor | None = None  # (B, d)

    def kl(self) -> Tensor:
        return self.kl_value

    def kl_per_dim(self) -> Tensor:
        return self.kl_per_dim_value


RECON = torch.tensor([10.0, 20.0])  # -log p(x|z) of two images
KL = torch.tensor([4.0, 30.0])


def fixed_pass() -> FixedPass:
    return FixedPass(log_px_given_z=-RECON[None], kl_value=KL)


def test_free_bits_charge_lambda_for_a_dimension_below_it_and_its_kl_above():
    kl_per_dim = torch.tensor([[0.05, 2.0, 0.30],
                               [0.03, 1.0, 0.05]], requires_grad=True)  # batch means .04 1.5 .175
    out = FixedPass(-RECON[None], kl_per_dim.sum(-1).detach(), kl_per_dim)
    terms = objectives.elbo_free_bits(out, TrainingContext(), FreeBitsSettings(free_bits=0.1))
    # Dimension 0 (mean 0.04 < λ) costs λ per image; dimensions 1 and 2 (means above λ) cost
    # each image's own KL, even image 1's 0.05 in dimension 2.
    expected = RECON + torch.tensor([0.1 + 2.0 + 0.30, 0.1 + 1.0 + 0.05])
    assert torch.allclose(terms["loss"], expected)
    assert torch.equal(terms["recon"], RECON)
    (gradient,) = torch.autograd.grad(terms["loss"].sum(), kl_per_dim)
    assert torch.equal(gradient, torch.tensor([[0.0, 1.0, 1.0], [0.0, 1.0, 1.0]]))


def test_training_context_counts_fractional_epochs():
    assert TrainingContext(step=0, steps_per_epoch=100).epochs_done == 0.0
    assert TrainingContext(step=50, steps_per_epoch=100).epochs_done == 0.5
    assert TrainingContext(step=250, steps_per_epoch=100).epochs_done == 2.5


@pytest.mark.parametrize("step, beta", [(0, 0.0), (50, 0.25), (100, 0.5), (200, 1.0),
                                        (1000, 1.0)])
def test_warmup_beta_rises_linearly_to_one(step, beta):
    settings = WarmupSettings(warmup_epochs=2.0)
    terms = objectives.elbo_warmup(fixed_pass(), TrainingContext(step, 100), settings)
    assert torch.allclose(terms["loss"], RECON + beta * KL)
    assert torch.equal(terms["kl"], KL)  # the KL is reported unweighted


@pytest.mark.parametrize("step, capacity", [(0, 0.0), (10, 6.25), (20, 12.5), (40, 25.0),
                                            (400, 25.0)])
def test_capacity_rises_linearly_to_its_maximum(step, capacity):
    settings = CapacitySettings(gamma=1000.0, capacity_max=25.0, capacity_epochs=4.0)
    terms = objectives.beta_vae_capacity(fixed_pass(), TrainingContext(step, 10), settings)
    assert torch.allclose(terms["loss"], RECON + 1000.0 * (KL - capacity).abs())


# ---- the importance-weighted family ---------------------------------------------------------

def small_pass(samples: int):
    """A pass of a small untrained IWAE over a batch of binary images with `samples` draws."""
    torch.manual_seed(0)
    model, _ = zoo.build("iwae", (1, 4, 4), {"latent_dim": 2, "hidden": [8]})
    x = (torch.rand(4, 1, 4, 4) < 0.5).float()
    return model, x, model(x, samples)


def test_miwae_with_one_bound_is_iwae_for_the_same_draws():
    model, x, _ = small_pass(1)
    miwae = Objective("miwae", GroupedSettings(k=5, m=1))
    iwae = Objective("iwae", IwaeSettings(k=5))
    assert miwae.k == iwae.k == 5  # both draw k·m = 5 samples, so the same seed gives same z
    torch.manual_seed(1)
    miwae_loss = miwae(model, x)["loss"]
    torch.manual_seed(1)
    iwae_loss = iwae(model, x)["loss"]
    assert torch.allclose(miwae_loss, iwae_loss)


def test_miwae_is_the_mean_of_the_groups_iwae_bounds():
    _, _, out = small_pass(6)
    log_w = out.log_importance_weights()  # (6, B): groups of k = 2 are rows 0-1, 2-3, 4-5
    groups = [objectives.log_mean_exp(log_w[i:i + 2], 0) for i in (0, 2, 4)]
    expected = -torch.stack(groups).mean(0)
    terms = objectives.miwae(out, TrainingContext(), GroupedSettings(k=2, m=3))
    assert torch.allclose(terms["loss"], expected)
    # With k = 1 each "bound" is one log-weight: MIWAE(m, 1) is the m-sample ELBO estimate.
    terms = objectives.miwae(out, TrainingContext(), GroupedSettings(k=1, m=6))
    assert torch.allclose(terms["loss"], -log_w.mean(0))


def test_ciwae_interpolates_between_the_elbo_and_the_iwae_bound():
    _, _, out = small_pass(5)
    log_w = out.log_importance_weights()  # (5, B)
    context = TrainingContext()

    def ciwae_loss(beta):
        return objectives.ciwae(out, context, CombinationSettings(k=5, beta=beta))["loss"]

    iwae_loss = objectives.iwae(out, context, IwaeSettings(k=5))["loss"]
    assert torch.allclose(ciwae_loss(1.0), -log_w.mean(0))  # the ELBO estimate mean_k log w
    assert torch.allclose(ciwae_loss(0.0), iwae_loss)  # the IWAE bound
    assert torch.allclose(ciwae_loss(0.25), 0.25 * ciwae_loss(1.0) + 0.75 * ciwae_loss(0.0))
    # For every draw the IWAE bound is at least the ELBO estimate (Jensen): loss is lower.
    assert (iwae_loss <= -log_w.mean(0) + 1e-6).all()


def test_piwae_loss_is_the_iwae_bound_of_all_samples_and_the_encoder_surrogate_miwae():
    # PIWAE(m = 3, k = 2) on a pass of k·m = 6 samples over B = 4 images (B ≠ m):
    #   loss = -log (1/6) Σ_{i=1..6} w_i, the IWAE bound of all six samples;
    #   encoder_surrogate = -(1/3) Σ_g log (1/2) Σ_{i in g} w_i, MIWAE on the groups of rows
    #   0-1, 2-3, 4-5 — both per image, shape (B,). Written out in float64 with logsumexp.
    _, _, out = small_pass(6)
    log_w = out.log_importance_weights().detach().double()  # (6, 4)
    iwae_bound = torch.logsumexp(log_w, 0) - math.log(6)
    group_bounds = torch.stack([torch.logsumexp(log_w[i:i + 2], 0) - math.log(2)
                                for i in (0, 2, 4)])  # (3, 4)
    terms = objectives.piwae(out, TrainingContext(), GroupedSettings(k=2, m=3))
    assert terms["loss"].shape == terms["encoder_surrogate"].shape == (4,)
    assert torch.allclose(terms["loss"].double(), -iwae_bound, atol=1e-5)
    assert torch.allclose(terms["encoder_surrogate"].double(), -group_bounds.mean(0), atol=1e-5)
    # The groups' mean bound is looser (Jensen within each group): the surrogate is larger.
    assert (terms["encoder_surrogate"] >= terms["loss"] - 1e-5).all()


FACTOR_SETTINGS = FactorSettings(gamma=3.5, discriminator_hidden=[5, 7],
                                 discriminator_lr=2.5e-3)


def test_factor_vae_builds_its_discriminator_from_its_settings():
    # The auxiliary network is an MLP latent_dim → hidden... → 1 with the settings' widths,
    # stepped by Adam at the settings' learning rate.
    objective = Objective("factor-vae", FACTOR_SETTINGS, latent_dim=3)
    discriminator = objective.auxiliary
    assert isinstance(discriminator, Discriminator)
    linear = [layer for layer in discriminator.net if isinstance(layer, nn.Linear)]
    assert [(layer.in_features, layer.out_features) for layer in linear] == [(3, 5), (5, 7),
                                                                              (7, 1)]
    assert discriminator.learning_rate == 2.5e-3
    discriminator.last_z = torch.randn(8, 3)
    discriminator.update()
    assert discriminator.optimizer.param_groups[0]["lr"] == 2.5e-3


def test_factor_vae_loss_adds_gamma_times_the_discriminator_logit_of_the_first_sample():
    # loss = recon + KL + γ·D(z), recon = -mean_k log p(x|z), D the discriminator's logit on
    # the pass's z (its first sample); the codes are left, detached, for the discriminator's
    # own step. γ = 3.5 and D computed here by calling the discriminator on the same z.
    torch.manual_seed(0)
    model, _ = zoo.build("factor-vae", (1, 4, 4), {"latent_dim": 3, "hidden": [8]})
    x = (torch.rand(6, 1, 4, 4) < 0.5).float()
    objective = Objective("factor-vae", FACTOR_SETTINGS, latent_dim=3)
    torch.manual_seed(1)
    terms = objective(model, x)
    torch.manual_seed(1)
    out = model(x, 1)
    z = out.z[0]
    with torch.no_grad():
        logit = objective.auxiliary(z)
    recon = -out.log_px_given_z.mean(0)
    assert torch.allclose(terms["total_correlation"], logit)
    assert torch.allclose(terms["loss"], recon + out.kl() + 3.5 * logit, atol=1e-5)
    assert (logit.abs() > 1e-3).all()  # so that a wrong γ or sign shows
    last_z = objective.auxiliary.last_z
    assert last_z is not None and torch.equal(last_z, z)
    assert not last_z.requires_grad  # detached: the discriminator's step leaves the model alone


@dataclass
class DipPass(FixedPass):
    """A `FixedPass` with a chosen posterior q(z|x), batch (B,) and event (d,)."""

    posterior: DiagonalGaussian | None = None


# Posterior means of a batch of 5 in 3 dimensions, each column off zero by a different amount
# (column means 2, -1 and 0.4), so that centring, and centring per dimension, matter.
DIP_MEANS = np.array([[2.5, -1.2, 0.1],
                      [1.0, -0.4, 0.9],
                      [3.1, -2.0, 0.2],
                      [2.2, -0.9, 1.3],
                      [1.2, -0.5, -0.5]])
DIP_SCALES = np.array([[0.5, 2.0, 1.5],
                       [0.6, 1.1, 0.3],
                       [0.4, 0.9, 0.7],
                       [0.8, 1.7, 1.2],
                       [0.3, 0.5, 2.2]])
DIP_RECON = np.array([3.0, 5.0, 7.0, 11.0, 13.0])
DIP_KL = np.array([0.5, 1.5, 2.5, 3.5, 4.5])


def dip_pass() -> DipPass:
    posterior = DiagonalGaussian(torch.tensor(DIP_MEANS), 2 * torch.log(torch.tensor(DIP_SCALES)))
    return DipPass(log_px_given_z=-torch.tensor(DIP_RECON)[None],
                   kl_value=torch.tensor(DIP_KL), posterior=posterior)


def expected_dip_loss(covariance: np.ndarray, lambda_od: float, lambda_d: float) -> np.ndarray:
    """recon + KL + λ_od Σ_{i≠j} C_ij² + λ_d Σ_i (C_ii - 1)², per image."""
    off_diagonal = covariance - np.diag(np.diag(covariance))
    penalty = (lambda_od * (off_diagonal**2).sum()
               + lambda_d * ((np.diag(covariance) - 1) ** 2).sum())
    return DIP_RECON + DIP_KL + penalty


def test_dip_vae_i_penalises_the_biased_covariance_of_the_posterior_means():
    # C = (1/B) Σ_b (μ_b - μ̄)(μ_b - μ̄)ᵀ, the covariance of the posterior means over the batch
    # (numpy's, bias=True), in float64.
    covariance = np.cov(DIP_MEANS, rowvar=False, bias=True)
    settings = DipSettings(lambda_od=3.0, lambda_d=7.0)
    terms = objectives.dip_vae_i(dip_pass(), TrainingContext(), settings)
    expected = expected_dip_loss(covariance, 3.0, 7.0)
    assert terms["loss"].shape == (5,)
    np.testing.assert_allclose(terms["loss"].numpy(), expected, rtol=1e-12)


def test_dip_vae_ii_adds_the_mean_posterior_variance_to_the_covariance_diagonal():
    # C = Cov_b[μ_b] + diag((1/B) Σ_b σ_b²), the covariance of q(z) = (1/B) Σ_b q(z|x_b).
    covariance = (np.cov(DIP_MEANS, rowvar=False, bias=True)
                  + np.diag((DIP_SCALES**2).mean(0)))
    settings = Dip2Settings(lambda_od=3.0, lambda_d=7.0)
    terms = objectives.dip_vae_ii(dip_pass(), TrainingContext(), settings)
    expected = expected_dip_loss(covariance, 3.0, 7.0)
    assert terms["loss"].shape == (5,)
    np.testing.assert_allclose(terms["loss"].numpy(), expected, rtol=1e-12)


def test_minibatch_stratified_weights_for_batches_of_one_and_two():
    """One image: q(z) is its own posterior (weight 1). Two images out of N: weight 1/N on the
    own image and (N - 1)/N on the other; out of N = 2, ½ each."""
    z = torch.tensor([[0.3, -1.0], [1.2, 0.5]], dtype=torch.float64)
    mean = torch.tensor([[0.0, -0.5], [1.0, 1.0]], dtype=torch.float64)
    log_var = torch.tensor([[0.0, -1.0], [0.5, 0.2]], dtype=torch.float64)
    density = Normal(mean[None], torch.exp(0.5 * log_var[None])).log_prob(z[:, None]).exp()
    log_qz, log_marginals = objectives.minibatch_stratified_log_densities(
        z[:1], mean[:1], log_var[:1], dataset_size=100)
    assert torch.allclose(log_qz, torch.log(density[0, 0].prod())[None])
    assert torch.allclose(log_marginals, torch.log(density[0, 0]).sum()[None])
    for dataset_size in (2, 10):
        weights = torch.full((2, 2), (dataset_size - 1) / dataset_size, dtype=torch.float64)
        weights.fill_diagonal_(1 / dataset_size)
        log_qz, log_marginals = objectives.minibatch_stratified_log_densities(
            z, mean, log_var, dataset_size=dataset_size)
        assert torch.allclose(log_qz, torch.log((density.prod(-1) * weights).sum(1)))
        assert torch.allclose(log_marginals,
                              torch.log((density * weights[..., None]).sum(1)).sum(-1))


def test_iwae_trains_through_its_estimators_surrogate():
    """The IWAE objective hands the training loop the estimator's surrogate (what DReG
    replaces), negated like the loss: for reparameterisation it is the bound itself."""
    _, _, out = small_pass(5)
    terms = objectives.iwae(out, TrainingContext(), IwaeSettings(k=5))
    log_w = out.log_importance_weights().double()
    bound = torch.logsumexp(log_w, 0) - math.log(5)
    assert torch.allclose(terms["loss"].double(), -bound, atol=1e-5)
    assert torch.allclose(terms["surrogate"].double(), -bound, atol=1e-5)


def test_the_factor_vae_discriminator_waits_for_codes_and_uses_kim_and_mnih_betas():
    """Before any codes update() does nothing; its Adam has β = (0.5, 0.9) (Kim & Mnih)."""
    discriminator = Discriminator(2, [4], learning_rate=1e-3)
    before = [p.detach().clone() for p in discriminator.parameters()]
    discriminator.update()
    assert all(torch.equal(a, b) for a, b in zip(before, discriminator.parameters()))
    discriminator.last_z = torch.randn(8, 2)
    discriminator.update()
    assert discriminator.optimizer.param_groups[0]["betas"] == (0.5, 0.9)
    assert not all(torch.equal(a, b) for a, b in zip(before, discriminator.parameters()))
