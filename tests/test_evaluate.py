"""Test-set evaluation: every metric of a run, on models whose answers are known."""

import math

import torch
from torch import nn

from vae_zoo import zoo
from vae_zoo.data import load_dataset
from vae_zoo.evaluate import (
    EvalConfig,
    active_unit_metrics,
    evaluate,
    latent_statistics,
    sample_reference,
    traversals,
)
from vae_zoo.likelihoods import BernoulliLikelihood
from vae_zoo.metrics.samples import train_feature_net
from vae_zoo.model import VAE
from vae_zoo.nets import Networks
from vae_zoo.priors import StandardNormalPrior

CIRCLES = {"train_size": 400, "val_size": 200, "test_size": 200, "side": 8}
FAST = EvalConfig(nll_samples=20, iwae_ks=(1, 5), fid_samples=200, latent_points=50,
                  traversal_steps=5)


class PartlyUsedEncoder(nn.Module):
    """Posterior means that depend on the image in the first `used` of `latent` dimensions and
    are constant in the others."""

    def __init__(self, pixels: int, latent: int, used: int):
        super().__init__()
        self.linear = nn.Linear(pixels, latent)
        with torch.no_grad():
            self.linear.weight.mul_(20)
            self.linear.weight[used:] = 0.0
            self.linear.bias[used:] = 0.7

    def forward(self, x):
        mean = self.linear(x.flatten(1))
        return mean, torch.full_like(mean, -1.0)


def partly_used_model(used, latent=6, image=(1, 8, 8)):
    torch.manual_seed(0)
    decoder = nn.Sequential(nn.Linear(latent, math.prod(image)), nn.Unflatten(-1, image))
    networks = Networks([PartlyUsedEncoder(math.prod(image), latent, used)], [], decoder,
                        [latent])
    return VAE(networks, BernoulliLikelihood(), StandardNormalPrior(latent)).eval()


def test_active_units_count_exactly_the_dimensions_the_encoder_uses():
    images = load_dataset("circles", CIRCLES).test.images
    for used in (0, 2, 5):
        statistics = latent_statistics(partly_used_model(used), images, batch_size=64)
        assert int((statistics["mean_variance"] > 0.01).sum()) == used


def test_kl_per_dimension_adds_up_to_the_test_kl():
    data = load_dataset("circles", CIRCLES)
    metrics, arrays = evaluate(partly_used_model(3), data, FAST, seed=0, log=lambda line: None)
    assert arrays["kl_per_dim"].shape == (6,)
    assert math.isclose(arrays["kl_per_dim"].sum(), metrics["test_kl"], rel_tol=1e-5)
    # Unused dimensions have a constant posterior N(0.7, e^-1): KL = ½(0.49 + e^-1 - 1 + 1).
    expected = 0.5 * (0.7**2 + math.exp(-1) - 1 + 1)
    assert all(math.isclose(kl, expected, rel_tol=1e-4) for kl in arrays["kl_per_dim"][3:])
    assert metrics["active_units"] == 3


def test_all_metrics_of_a_trained_circles_model(tmp_path):
    data = load_dataset("circles", CIRCLES)
    torch.manual_seed(0)
    model, _ = zoo.build("mlp-vae", data.image_shape, {"latent_dim": 4, "hidden": [16]})
    labels = (data.train.factors[:, 2] > data.train.factors[:, 2].median()).long()
    feature_net = train_feature_net(data.train.images, labels, 2, epochs=1)
    lines = []
    metrics, arrays = evaluate(model, data, FAST, seed=0,
                               samples=sample_reference(feature_net, data, FAST),
                               log=lines.append)
    for name in ("test_elbo", "test_recon", "test_kl", "test_nll", "test_nll_se", "test_bpd",
                 "iwae_k1", "iwae_k5", "active_units", "test_mse", "mig",
                 "probe_r2_centre_x", "probe_r2_centre_y", "probe_r2_radius", "fid", "fid_ref",
                 "precision", "recall", "eval_seconds"):
        assert name in metrics and math.isfinite(metrics[name]), name
    assert math.isclose(metrics["test_bpd"], metrics["test_nll"] / (64 * math.log(2)))
    assert metrics["iwae_k5"] >= metrics["iwae_k1"] - 0.5  # a tighter bound, up to noise
    assert 0 <= metrics["precision"] <= 1 and 0 <= metrics["recall"] <= 1
    assert {line.split(":")[0].strip() for line in lines} >= {"elbo", "nll", "iwae_k",
                                                              "latents", "factors", "samples"}
    assert arrays["latent_means"].shape == (50, 4) and arrays["factors"].shape == (50, 3)
    assert arrays["traversals"].shape == (4, 5, 1, 8, 8)
    assert arrays["samples"].shape[1:] == (1, 8, 8)


def test_test_mse_is_zero_for_a_perfect_reconstruction():
    data = load_dataset("circles", {**CIRCLES, "binarize": "none"})

    class Identity(nn.Module):  # "latents" are the pixels themselves
        def forward(self, x):
            return x.flatten(1), torch.zeros_like(x.flatten(1))

    class Logit(nn.Module):  # Bernoulli mean sigmoid(logit(x)) = x
        def forward(self, z):
            return torch.logit(z.clamp(1e-6, 1 - 1e-6)).unflatten(-1, (1, 8, 8))

    model = VAE(Networks([Identity()], [], Logit(), [64]), BernoulliLikelihood(),
                StandardNormalPrior(64))
    assert latent_statistics(model, data.test.images, 64)["mse"] < 1e-10


def test_traversals_sweep_one_dimension_at_a_time():
    model = partly_used_model(2, latent=3)
    image = load_dataset("circles", CIRCLES).test.images[:1]
    sweeps = traversals(model, image, steps=4)
    assert sweeps.shape == (3, 4, 1, 8, 8)
    # Each row differs along its sweep; the decoder is linear, so the ends differ the most.
    assert (sweeps[:, 0] - sweeps[:, -1]).abs().sum() > 0


def test_active_units_of_a_two_layer_model_are_counted_overall_and_per_layer():
    model, _ = zoo.build("vae-2layer", (1, 4, 4), {"latent_dim": 3, "top_latent_dim": 2,
                                                    "hidden": [4], "top_hidden": [4]})
    # Variance of the posterior means per unit, z1's three units then z2's two.
    variance = torch.tensor([0.5, 0.001, 0.02, 0.0, 0.3], dtype=torch.float64)
    assert active_unit_metrics(model, variance) == {
        "active_units": 3.0, "active_units_z1": 2.0, "active_units_z2": 1.0, "latent_dim": 5.0}
    one_layer, _ = zoo.build("mlp-vae", (1, 4, 4), {"latent_dim": 5, "hidden": [4]})
    assert active_unit_metrics(one_layer, variance) == {"active_units": 3.0, "latent_dim": 5.0}


def test_a_unit_is_active_only_above_the_threshold_not_at_it():
    """Burda et al.: active when Cov_x(E_q[z_u]) > 0.01; a variance of exactly 0.01 is not."""
    model = zoo.build("mlp-vae", (1, 4, 4), {"latent_dim": 3, "hidden": [8]})[0]
    variances = torch.tensor([0.01, 0.0100001, 0.5], dtype=torch.float64)
    assert active_unit_metrics(model, variances) == {"active_units": 2.0, "latent_dim": 3.0}


def test_the_timer_reports_the_seconds_a_step_took():
    import time

    from vae_zoo.evaluate import Timer

    lines = []
    timed = Timer(lines.append)
    assert timed("nap", lambda: time.sleep(0.05) or 42) == 42
    assert 0.05 <= timed.seconds["nap"] < 2.0
    assert lines == [f"  nap: {timed.seconds['nap']:.1f} s"]


def test_ais_and_bdmc_skip_the_models_they_do_not_support_and_say_why():
    """A two-layer model gets neither (AIS needs one stochastic layer); a one-layer model with a
    discretised-logistic likelihood gets AIS but not BDMC (which must simulate images); the
    other metrics are computed either way."""
    data = load_dataset("circles", {**CIRCLES, "binarize": "none"})
    config = EvalConfig(nll_samples=4, iwae_ks=(1,), nll_images=10, likelihood=("is", "ais"),
                        ais_images=5, ais_steps=3, ais_chains=2, ais_leapfrog=1, bdmc_images=4)
    two_layer = zoo.build("vae-2layer", data.image_shape,
                          {"latent_dim": 3, "top_latent_dim": 2, "hidden": [8],
                           "top_hidden": [8], "likelihood": "discretised-logistic"})[0]
    logistic = zoo.build("mlp-vae", data.image_shape, {"latent_dim": 3, "hidden": [8],
                                                       "likelihood": "discretised-logistic"})[0]
    groups = ("nll", "ais", "bdmc")
    lines: list[str] = []
    metrics, arrays = evaluate(two_layer, data, config, seed=0, log=lines.append, groups=groups)
    assert "test_nll" in metrics and not {"test_nll_ais", "bdmc_gap"} & set(metrics)
    assert "image_log_px_ais" not in arrays
    assert any(line.startswith("  ais: skipped: AIS supports one stochastic layer")
               for line in lines)
    assert any(line.startswith("  bdmc: skipped: AIS supports one stochastic layer")
               for line in lines)
    lines.clear()
    metrics, arrays = evaluate(logistic, data, config, seed=0, log=lines.append, groups=groups)
    assert math.isfinite(metrics["test_nll_ais"]) and arrays["image_log_px_ais"].shape == (5,)
    assert 0 <= metrics["ais_acceptance"] <= 1 and "bdmc_gap" not in metrics
    assert any(line.startswith("  bdmc: skipped: BDMC simulates images from the model, and "
                               "cannot draw them") for line in lines)
