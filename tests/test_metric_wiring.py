"""How `vae_zoo.evaluate` wires its metrics, on models built so that every answer is known.

Each test pins one piece of wiring that a plausible one-line slip would break without changing
any shape or making a value non-finite: which split a metric reads, whether a variance or a
standard deviation is thresholded, what an error is averaged over, what a traversal moves, and
whether samples of binary data are binary. `tests/planted_bugs.py` plants those slips and checks
that these tests catch them.

The models are hand-made:
- `ConstantLogits`, a Bernoulli decoder that ignores z: p(x|z) = p(x), so with q(z|x) = p(z)
  (`PriorEncoder`) every importance weight p(x, z) / q(z|x) equals p(x) exactly, for any K;
- `ScaledPixelEncoder`, posterior means that are a chosen multiple of one pixel, so their
  variance across images is known before the model runs;
- `RecordingLinearDecoder`, which keeps the codes it is asked to decode.
Expected values are computed with numpy (and scipy for a matrix square root) from the images.
"""

import math
from dataclasses import replace

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from vae_zoo import zoo
from vae_zoo.data import ImageData, Split
from vae_zoo.data.grid import FactorGrid
from vae_zoo.evaluate import (
    ACTIVE_UNIT_THRESHOLD,
    EvalConfig,
    active_unit_metrics,
    draw_samples,
    evaluate,
    latent_statistics,
    sample_reference,
    traversals,
)
from vae_zoo.likelihoods import BernoulliLikelihood
from vae_zoo.model import VAE
from vae_zoo.nets import Networks
from vae_zoo.priors import StandardNormalPrior

pytestmark = pytest.mark.usefixtures("one_thread")

IMAGE = (1, 4, 4)
PIXELS = math.prod(IMAGE)


def quiet(line: str) -> None:
    pass


def binary_pixels(count: int, on_probability, seed: int, shape=IMAGE) -> torch.Tensor:
    """uint8 pixels of 0 or 255, each on with `on_probability` (a number or one per pixel)."""
    rng = np.random.default_rng(seed)
    on = rng.uniform(size=(count, *shape)) < np.broadcast_to(on_probability, shape)
    return torch.from_numpy(on.astype(np.uint8) * 255)


def made_data(test_pixels, val_pixels, binarize="fixed") -> ImageData:
    """A dataset with exactly these test and validation pixels (training = validation)."""
    return ImageData("made", train=Split(val_pixels.clone()), val=Split(val_pixels),
                     test=Split(test_pixels), binarize=binarize)


class PriorEncoder(nn.Module):
    """q(z|x) = N(0, I) = p(z) for every image."""

    def __init__(self, latent: int):
        super().__init__()
        self.latent = latent

    def forward(self, x):
        zeros = x.new_zeros(len(x), self.latent)
        return zeros, zeros


class ConstantLogits(nn.Module):
    """A decoder that ignores z: the same Bernoulli logits (C, H, W) for every code."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.register_buffer("logits", logits)

    def forward(self, z):
        return self.logits.expand(*z.shape[:-1], *self.logits.shape)


def pixel_logits() -> torch.Tensor:
    return torch.linspace(-2.0, 2.0, PIXELS).reshape(IMAGE)


def constant_model(latent: int = 2) -> VAE:
    networks = Networks([PriorEncoder(latent)], [], ConstantLogits(pixel_logits()), [latent])
    return VAE(networks, BernoulliLikelihood(), StandardNormalPrior(latent)).eval()


def bernoulli_log_px(pixels: torch.Tensor, logits: torch.Tensor) -> np.ndarray:
    """log p(x) per image under independent Bernoulli pixels with these logits, in float64."""
    x = pixels.numpy().reshape(len(pixels), -1) / 255.0
    p = 1.0 / (1.0 + np.exp(-logits.double().numpy().reshape(-1)))
    return (x * np.log(p) + (1 - x) * np.log1p(-p)).sum(1)


# --- likelihood: the split it reads, and log-mean-exp over K samples -------------------------


def test_nll_and_iwae_bounds_are_log_px_of_the_first_test_images_for_every_k():
    """Known answer: with q(z|x) = p(z) and p(x|z) = p(x), every importance weight is p(x), so
    test_nll = -mean log p(x) and iwae_k<k> = mean log p(x) over the first `nll_images` *test*
    images, for every k (log-mean-exp of K equal terms; a logsumexp would add log k). The
    validation images are all white, so reading them instead would change every number; the
    ELBO (KL = 0 here) averages log p(x) over the same first images, and every per-image array
    holds those images' values in order."""
    test_pixels = binary_pixels(40, 0.4, seed=1)
    data = made_data(test_pixels, torch.full((40, *IMAGE), 255, dtype=torch.uint8))
    config = EvalConfig(nll_samples=20, nll_chunk=7, nll_batch_size=16, nll_images=30,
                        iwae_ks=(1, 5, 50))
    metrics, arrays = evaluate(constant_model(), data, config, seed=0, log=quiet,
                               groups=("elbo", "nll", "iwae"))
    log_px = bernoulli_log_px(test_pixels, pixel_logits())
    first = log_px[:30]
    for name in ("image_elbo", "image_log_px", "image_iwae_k1", "image_iwae_k5",
                 "image_iwae_k50"):
        np.testing.assert_allclose(arrays[name], first, rtol=1e-6, err_msg=name)
    assert metrics["test_nll"] == pytest.approx(-first.mean(), abs=1e-4)
    assert metrics["test_nll_se"] == pytest.approx(first.std(ddof=1) / math.sqrt(30), rel=1e-4)
    assert metrics["test_bpd"] == pytest.approx(-first.mean() / (PIXELS * math.log(2)), abs=1e-5)
    for k in (1, 5, 50):
        assert metrics[f"iwae_k{k}"] == pytest.approx(first.mean(), abs=1e-4), k
    assert metrics["test_elbo"] == pytest.approx(first.mean(), abs=1e-4)
    assert metrics["test_kl"] == pytest.approx(0.0, abs=1e-6)


# --- latents: active units and the reconstruction error ------------------------------------

# Variances of the posterior means per unit: five below the threshold whose standard deviation
# is above it (0.0002 → 0.014 ... 0.009 → 0.095), one far below, three above.
BELOW = [0.0002, 0.0005, 0.002, 0.005, 0.009, 1e-5]
ABOVE = [0.011, 0.05, 0.5]


def test_active_units_threshold_the_variance_of_the_means_not_their_standard_deviation():
    """Known answer: Cov_x(E_q[z_u]) > 0.01 holds for exactly the three units of `ABOVE`; with
    the standard deviation all but the 1e-5 unit would pass."""
    assert all(math.sqrt(v) > ACTIVE_UNIT_THRESHOLD for v in BELOW[:-1])
    model, _ = zoo.build("mlp-vae", IMAGE, {"latent_dim": 9, "hidden": [4]})
    variance = torch.tensor(BELOW + ABOVE, dtype=torch.float64)
    assert active_unit_metrics(model, variance) == {"active_units": 3.0, "latent_dim": 9.0}


class ScaledPixelEncoder(nn.Module):
    """E_q[z_u | x] = scale_u · x_0 + 0.3 (x_0 the first pixel), log-variance 0."""

    def __init__(self, scales):
        super().__init__()
        self.register_buffer("scales", torch.tensor(scales, dtype=torch.float32))

    def forward(self, x):
        mean = x.flatten(1)[:, :1] * self.scales + 0.3
        return mean, torch.zeros_like(mean)


def test_latent_statistics_and_evaluate_count_units_by_the_variance_of_controlled_means():
    """Known answer: the first pixel alternates 0, 1 over 100 images, so its variance is
    ¼·100/99 (unbiased) and unit u's mean has variance scale_u² times that, chosen to be
    `BELOW + ABOVE`: `mean_variance` equals those (to 2%, either variance convention) and
    exactly 3 units are active, through `latent_statistics` and through `evaluate`."""
    pixels = binary_pixels(100, 0.5, seed=2)
    pixels[:, 0, 0, 0] = torch.tensor([0, 255] * 50, dtype=torch.uint8)
    first_pixel = pixels[:, 0, 0, 0].numpy() / 255.0
    pixel_variance = first_pixel.var(ddof=1)
    assert pixel_variance == pytest.approx(0.25 * 100 / 99)
    targets = np.array(BELOW + ABOVE)
    scales = np.sqrt(targets / pixel_variance)
    latent = len(targets)
    networks = Networks([ScaledPixelEncoder(scales.tolist())], [],
                        ConstantLogits(pixel_logits()), [latent])
    model = VAE(networks, BernoulliLikelihood(), StandardNormalPrior(latent)).eval()
    data = made_data(pixels, pixels.clone())

    statistics = latent_statistics(model, data.test.images, batch_size=32)
    assert statistics["mean_variance"].numpy() == pytest.approx(targets, rel=0.02)
    assert active_unit_metrics(model, statistics["mean_variance"]) == {
        "active_units": 3.0, "latent_dim": float(len(statistics["mean_variance"]))}
    metrics, _ = evaluate(model, data, EvalConfig(batch_size=32), seed=0, log=quiet,
                          groups=("latents",))
    assert metrics["active_units"] == 3.0


def test_test_mse_is_the_mean_squared_error_per_pixel_of_the_decoder_mean():
    """Known answer: the decoder mean is sigmoid(logits) whatever z is, so test_mse is the mean
    over images and pixels of (x - sigmoid(logits))², computed here from the pixels (per image
    it would be 16 times larger)."""
    pixels = binary_pixels(50, 0.3, seed=3)
    data = made_data(pixels, binary_pixels(50, 0.3, seed=4))
    metrics, _ = evaluate(constant_model(), data, EvalConfig(batch_size=16), seed=0, log=quiet,
                          groups=("latents",))
    x = pixels.numpy().reshape(50, -1) / 255.0
    mean = 1.0 / (1.0 + np.exp(-pixel_logits().double().numpy().reshape(-1)))
    assert metrics["test_mse"] == pytest.approx(((x - mean) ** 2).mean(), rel=1e-5)


# --- traversals: one dimension at a time -----------------------------------------------------


class RecordingLinearDecoder(nn.Module):
    """Bernoulli logits linear in z, (..., d) → (..., C, H, W); keeps every code it decodes."""

    def __init__(self, latent: int):
        super().__init__()
        generator = torch.Generator().manual_seed(5)
        self.register_buffer("weight", torch.randn(PIXELS, latent, generator=generator))
        self.register_buffer("bias", torch.randn(PIXELS, generator=generator))
        self.seen = []

    def forward(self, z):
        self.seen.append(z.clone())
        return (z @ self.weight.T + self.bias).unflatten(-1, IMAGE)


def expected_traversal_codes(mean: np.ndarray, steps: int) -> np.ndarray:
    """(d, steps, d): row r is the posterior mean with coordinate r replaced by the sweep."""
    sweep = np.linspace(-3.0, 3.0, steps)
    codes = np.empty((len(mean), steps, len(mean)))
    for row in range(len(mean)):
        for step in range(steps):
            codes[row, step] = mean
            codes[row, step, row] = sweep[step]
    return codes


def test_traversal_row_d_moves_only_coordinate_d_of_the_posterior_mean():
    """Known answer: the codes decoded for row d equal the posterior mean except coordinate d,
    which runs over linspace(-3, 3, steps); the images are sigmoid of the linear decoder's
    logits at those codes."""
    latent, steps = 4, 5
    torch.manual_seed(6)
    encoder = nn.Linear(PIXELS, 2 * latent)

    class Encoder(nn.Module):
        def forward(self, x):
            mean, log_var = encoder(x.flatten(1)).chunk(2, -1)
            return mean, log_var

    decoder = RecordingLinearDecoder(latent)
    model = VAE(Networks([Encoder()], [], decoder, [latent]), BernoulliLikelihood(),
                StandardNormalPrior(latent)).eval()
    image = binary_pixels(1, 0.5, seed=7).float() / 255
    mean = encoder(image.flatten(1)).chunk(2, -1)[0][0].detach().double().numpy()
    assert np.abs(mean).max() < 3  # no coordinate of the mean equals a sweep end by chance

    decoder.seen.clear()
    sweeps = traversals(model, image, steps)
    assert len(decoder.seen) == 1
    codes = decoder.seen[0].double().numpy()
    expected = expected_traversal_codes(mean, steps)
    assert codes.shape == (latent, steps, latent)
    np.testing.assert_allclose(codes, expected, atol=1e-6)
    for row in range(latent):  # exactly which coordinates moved away from the mean
        moved = np.flatnonzero((np.abs(codes[row] - mean) > 1e-6).any(0))
        assert moved.tolist() == [row]
    logits = expected @ decoder.weight.double().numpy().T + decoder.bias.double().numpy()
    images = 1.0 / (1.0 + np.exp(-logits))
    assert sweeps.shape == (latent, steps, *IMAGE)
    np.testing.assert_allclose(sweeps.double().numpy().reshape(latent, steps, -1), images,
                               atol=1e-5)


def test_traversal_of_a_two_layer_model_sweeps_the_top_layer_one_dimension_at_a_time(
        monkeypatch):
    """Known answer: the top-layer codes handed down through the conditional means (not drawn)
    are the top posterior mean with one coordinate swept per row."""
    torch.manual_seed(8)
    model, _ = zoo.build("vae-2layer", IMAGE, {"latent_dim": 3, "top_latent_dim": 2,
                                               "hidden": [8], "top_hidden": [8]})
    model.eval()
    image = binary_pixels(1, 0.5, seed=9).float() / 255
    with torch.no_grad():
        top_mean = model.posterior_means(image)[-1][0].double().numpy()
    calls = []
    descend = model.descend

    def recording_descend(top, generator=None, sample=True):
        calls.append((top.clone(), sample))
        return descend(top, generator, sample)

    monkeypatch.setattr(model, "descend", recording_descend)
    sweeps = traversals(model, image, steps=3)
    assert len(calls) == 1
    top, sample = calls[0]
    assert sample is False
    np.testing.assert_allclose(top.double().numpy(), expected_traversal_codes(top_mean, 3),
                               atol=1e-6)
    assert sweeps.shape == (2, 3, *IMAGE)


# --- samples: binary data gets binary samples -----------------------------------------------


@pytest.mark.parametrize("binarize", ["dynamic", "fixed"])
def test_samples_of_binarised_data_are_bernoulli_draws_of_the_decoder_mean(binarize):
    """Known answer: the decoder mean is p = sigmoid(logits) for every z; samples for binarised
    data are exactly 0 or 1 with per-pixel frequency p (4000 draws: standard error ≤ 0.008)."""
    pixels = binary_pixels(10, 0.5, seed=10)
    data = made_data(pixels, pixels.clone(), binarize=binarize)
    generator = torch.Generator().manual_seed(0)
    samples = draw_samples(constant_model(), data, 4000, generator)
    assert samples.shape == (4000, *IMAGE)
    assert set(samples.unique().tolist()) == {0.0, 1.0}
    p = torch.sigmoid(pixel_logits())
    assert (samples.mean(0) - p).abs().max() < 0.04


def test_samples_of_grey_level_data_are_the_decoder_means():
    """Known answer: with binarize = "none" every sample is the decoder mean sigmoid(logits)."""
    pixels = torch.from_numpy(np.random.default_rng(11).integers(0, 256, (10, *IMAGE),
                                                                   dtype=np.uint8))
    data = made_data(pixels, pixels.clone(), binarize="none")
    samples = draw_samples(constant_model(), data, 20, torch.Generator().manual_seed(0))
    expected = torch.sigmoid(pixel_logits()).expand(20, *IMAGE)
    torch.testing.assert_close(samples, expected)


# --- the sample metrics' reference: held-out images against the test images -----------------


def frechet_by_hand(a: np.ndarray, b: np.ndarray) -> float:
    mean_a, mean_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(cov_a @ cov_b).real
    return float(((mean_a - mean_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root))


def fraction_inside_by_hand(queries: np.ndarray, centres: np.ndarray, k: int) -> float:
    """Fraction of queries within some centre's distance to its k-th nearest other centre."""
    within = np.linalg.norm(centres[:, None] - centres[None], axis=-1)
    radii = np.sort(within, axis=1)[:, k]  # column 0 is each centre itself
    distances = np.linalg.norm(queries[:, None] - centres[None], axis=-1)
    return float((distances <= radii).any(1).mean())


def reference_by_hand(net, test_pixels, held_out_pixels, count, draws, k):
    """fid, precision and recall of each draw (consecutive runs of `count` held-out images)
    against the first `count` test images, by hand: mean and sample sd over draws."""
    weight, bias = net[1].weight.detach().double().numpy(), net[1].bias.detach().double().numpy()

    def features(pixels):
        return (pixels.numpy().reshape(len(pixels), -1) / 255.0) @ weight.T + bias

    real = features(test_pixels[:count])
    scores = {"fid": [], "precision": [], "recall": []}
    for draw in range(draws):
        held_out = features(held_out_pixels[draw * count:(draw + 1) * count])
        scores["fid"].append(frechet_by_hand(real, held_out))
        scores["precision"].append(fraction_inside_by_hand(held_out, real, k))
        scores["recall"].append(fraction_inside_by_hand(real, held_out, k))
    return real, {name: (np.mean(values), np.std(values, ddof=1))
                  for name, values in scores.items()}


def test_reference_scores_compare_disjoint_held_out_draws_with_the_test_images():
    """Known answer: fid_ref, precision_ref and recall_ref are the means (and *_ref_sd the sample
    sds) over draws of `count` held-out images — the validation images, then the training images
    — against the first `count` test images, in the feature net's space, computed here with
    numpy; test images against themselves would give 0, 1 and 1. 60 validation + 60 training
    images hold two draws of 50: the second is validation images 50..59 and training 0..39."""
    rng = np.random.default_rng(12)
    test_pixels = torch.from_numpy(rng.integers(60, 256, (70, *IMAGE), dtype=np.uint8))
    val_pixels = torch.from_numpy(rng.integers(0, 200, (60, *IMAGE), dtype=np.uint8))
    data = made_data(test_pixels, val_pixels, binarize="none")
    torch.manual_seed(13)
    net = nn.Sequential(nn.Flatten(), nn.Linear(PIXELS, 3))
    with torch.no_grad():
        net[1].weight.mul_(4)  # features spread enough that the sets' distance is clear
    reference = sample_reference(net, data, EvalConfig(fid_samples=50, pr_neighbours=3))
    held_out = torch.cat([val_pixels, data.train.pixels])
    real, expected = reference_by_hand(net, test_pixels, held_out, 50, 2, 3)
    assert reference.count == 50 and reference.metrics["ref_draws"] == 2
    np.testing.assert_allclose(reference.real_features.double().numpy(), real, atol=1e-5)
    for name, (mean, sd) in expected.items():
        assert reference.metrics[f"{name}_ref"] == pytest.approx(mean, rel=1e-4, abs=1e-12)
        assert reference.metrics[f"{name}_ref_sd"] == pytest.approx(sd, rel=1e-3, abs=1e-9)
    assert reference.metrics["fid_ref"] > 0.1


# --- what evaluate passes on: groups, estimator settings, the sample stream ------------------


def test_evaluate_computes_only_the_metric_groups_it_is_asked_for():
    """`groups=("elbo",)` gives the three ELBO terms (and their per-image values) and the
    time, nothing else."""
    data = made_data(binary_pixels(20, 0.5, seed=1), binary_pixels(20, 0.5, seed=2))
    metrics, arrays = evaluate(constant_model(), data, EvalConfig(), seed=0, log=quiet,
                               groups=("elbo",))
    assert set(metrics) == {"test_elbo", "test_recon", "test_kl", "eval_seconds"}
    assert set(arrays) == {"image_elbo", "image_recon", "image_kl"}


def test_evaluate_passes_its_settings_to_the_estimators(monkeypatch):
    """The importance sampler gets K = nll_samples (and k for each IWAE bound) with the
    configured batch and chunk sizes, and the ELBO the configured batch size: recorded by
    wrapping the estimators (which still compute)."""
    import vae_zoo.evaluate as evaluation

    calls = []

    def spy(name, function):
        def recorded(*args):
            calls.append((name, args[2:]))
            return function(*args)
        monkeypatch.setattr(evaluation, name, recorded)

    spy("importance_sampling", evaluation.importance_sampling)
    spy("importance_sampled_log_likelihood", evaluation.importance_sampled_log_likelihood)
    spy("elbo_terms", evaluation.elbo_terms)
    data = made_data(binary_pixels(20, 0.5, seed=1), binary_pixels(20, 0.5, seed=2))
    config = EvalConfig(nll_samples=7, nll_batch_size=3, nll_chunk=2, iwae_ks=(1, 4),
                        batch_size=6)
    evaluate(constant_model(), data, config, seed=0, log=quiet, groups=("elbo", "nll", "iwae"))
    assert calls == [("elbo_terms", (6,)),
                     ("importance_sampling", (7, 3, 2)),
                     ("importance_sampled_log_likelihood", (1, 3, 1)),
                     ("importance_sampled_log_likelihood", (4, 3, 2))]


def test_factor_metrics_on_their_own_read_the_same_posterior_means():
    """`groups=("factors",)` encodes the test images itself (no latents group before it) and
    gives the same probe scores as a full evaluation; the factor is the first pixel, which the
    encoder's mean copies, so the probe's R² is 1."""
    pixels = binary_pixels(60, 0.5, seed=3)
    factor = torch.from_numpy(pixels[:, 0, 0, 0].numpy() / 255.0).float()[:, None]
    split = Split(pixels, factors=factor)
    data = ImageData("made", train=split, val=split, test=split, binarize="fixed",
                     factor_names=("first",))
    networks = Networks([ScaledPixelEncoder([1.0, 0.5])], [], ConstantLogits(pixel_logits()), [2])
    model = VAE(networks, BernoulliLikelihood(), StandardNormalPrior(2)).eval()
    alone, _ = evaluate(model, data, EvalConfig(), seed=0, log=quiet, groups=("factors",))
    everything, _ = evaluate(model, data, EvalConfig(), seed=0, log=quiet,
                             groups=("latents", "factors"))
    assert alone["probe_r2_first"] == pytest.approx(1.0)
    assert alone["probe_r2_first"] == everything["probe_r2_first"]


class PixelCopyEncoder(nn.Module):
    """E_q[z_u | x] = 2 · x_u - 1 for the first `latent` pixels (a code equal to the factors
    where each factor is drawn as one pixel), log-variance 0."""

    def __init__(self, latent: int):
        super().__init__()
        self.latent = latent

    def forward(self, x):
        mean = 2 * x.flatten(1)[:, :self.latent] - 1
        return mean, torch.zeros_like(mean)


def pixel_grid(sizes=(2, 2, 2)) -> FactorGrid:
    """A grid of binary factors, factor k drawn as pixel k (on when its index is 1)."""
    def render(indices):
        pixels = np.zeros((len(indices), *IMAGE), dtype=np.uint8).reshape(len(indices), -1)
        pixels[:, :indices.shape[1]] = indices * 255
        return pixels.reshape(len(indices), *IMAGE)

    return FactorGrid(("a", "b", "c"), tuple(np.arange(size, dtype=float) for size in sizes),
                      render)


def test_disentanglement_metrics_score_a_code_equal_to_the_factors_at_their_maximum():
    """Wiring, with a known answer: the model's code copies the pixels that draw the grid's
    factors, so every metric drawn from the grid through `evaluate` is at its maximum (the
    values the metrics give a code equal to the factors, tests/test_factors.py): BetaVAE,
    FactorVAE, DCI and explicitness 1, and SAP 1/2 (binary factors: the best code classifies
    perfectly and the others at chance, up to the sampling error of the held-out points: 3
    standard deviations allowed). MIG, modularity and `factor_mi` (the identity matrix)
    are 1 less the plug-in bias of the mutual information of independent codes and factors on
    N random points, about (2 - 1)(2 - 1) / 2N nats over an entropy of log 2 (allowed twice
    over). Each metric has its own stream, so computing it alone gives the same value."""
    pixels = binary_pixels(40, 0.5, seed=5)
    data = replace(made_data(pixels, pixels.clone()), grid=pixel_grid())
    networks = Networks([PixelCopyEncoder(3)], [], ConstantLogits(pixel_logits()), [3])
    model = VAE(networks, BernoulliLikelihood(), StandardNormalPrior(3)).eval()
    config = EvalConfig(factor_points=400, factor_test_points=200, factor_votes=60,
                        factor_eval_votes=30, factor_variance_points=200, factor_batch=16,
                        dci_trees=10, batch_size=50)
    metrics, arrays = evaluate(model, data, config, seed=0, log=quiet,
                               groups=("disentanglement",))
    for name in ("beta_vae", "factor_vae", "dci_disentanglement", "dci_completeness",
                 "dci_informativeness", "explicitness"):
        assert metrics[name] == pytest.approx(1.0, abs=1e-9), name
    chance_error = 3 * math.sqrt(0.25 / config.factor_test_points)
    assert 0.5 - chance_error <= metrics["sap"] <= 0.5
    bias = 2 * 1 / (2 * config.factor_points * math.log(2))
    assert 1 - bias <= metrics["mig"] <= 1
    assert 1 - bias <= metrics["modularity"] <= 1
    np.testing.assert_allclose(arrays["factor_mi"], np.eye(3), atol=bias)
    alone, _ = evaluate(model, data, replace(config, disentanglement=("sap",)), seed=0,
                        log=quiet, groups=("disentanglement",))
    assert alone["sap"] == metrics["sap"]


def test_disentanglement_metrics_need_a_factor_grid():
    """A dataset without a factor grid gets no disentanglement metric (and no error)."""
    pixels = binary_pixels(20, 0.5, seed=6)
    metrics, _ = evaluate(constant_model(), made_data(pixels, pixels.clone()), EvalConfig(),
                          seed=0, log=quiet, groups=("disentanglement",))
    assert set(metrics) == {"eval_seconds"}


@pytest.mark.parametrize("test_count, val_count, count, draws",
                         [(40, 60, 40, 3), (70, 45, 45, 2)])
def test_the_reference_draws_as_many_held_out_as_test_images(test_count, val_count, count,
                                                              draws):
    """fid_samples = 50 capped by the test split and by half the held-out images (validation +
    training, 2 × val_count here): `count` images per draw, as many disjoint draws as fit (at
    most 5), and the scores use `pr_neighbours` (1 here, not the default 3)."""
    rng = np.random.default_rng(5)
    test_pixels = torch.from_numpy(rng.integers(60, 256, (test_count, *IMAGE), dtype=np.uint8))
    val_pixels = torch.from_numpy(rng.integers(0, 200, (val_count, *IMAGE), dtype=np.uint8))
    data = made_data(test_pixels, val_pixels, binarize="none")
    torch.manual_seed(13)
    net = nn.Sequential(nn.Flatten(), nn.Linear(PIXELS, 3))
    reference = sample_reference(net, data, EvalConfig(fid_samples=50, pr_neighbours=1))
    held_out = torch.cat([val_pixels, data.train.pixels])
    _, expected = reference_by_hand(net, test_pixels, held_out, count, draws, 1)
    assert reference.count == count and reference.metrics["ref_draws"] == draws
    for name, (mean, _) in expected.items():
        assert reference.metrics[f"{name}_ref"] == pytest.approx(mean, rel=1e-4, abs=1e-12)


def test_sample_metrics_score_the_drawn_samples_and_repeat_with_the_seed(monkeypatch):
    """FID, precision and recall (with `pr_neighbours` = 1) are those of the samples
    `draw_samples` returned against the reference, computed here with numpy; the samples come
    from the seed alone, whatever the global random state."""
    import vae_zoo.evaluate as evaluation

    drawn = []
    original = evaluation.draw_samples

    def recorded(*args):
        drawn.append(original(*args))
        return drawn[-1]

    monkeypatch.setattr(evaluation, "draw_samples", recorded)
    data = made_data(binary_pixels(60, 0.5, seed=6), binary_pixels(60, 0.3, seed=7))
    torch.manual_seed(13)
    net = nn.Sequential(nn.Flatten(), nn.Linear(PIXELS, 3))
    config = EvalConfig(fid_samples=50, pr_neighbours=1, batch_size=20)
    reference = sample_reference(net, data, config)
    torch.manual_seed(100)
    first = evaluation.sample_metrics(constant_model(), data, reference, config, seed=4)
    samples = torch.cat(drawn).double().numpy().reshape(50, -1)
    torch.manual_seed(200)
    again = evaluation.sample_metrics(constant_model(), data, reference, config, seed=4)
    assert first == again
    weight, bias = net[1].weight.detach().double().numpy(), net[1].bias.detach().double().numpy()
    fake = samples @ weight.T + bias
    real = reference.real_features.double().numpy()
    assert first["fid"] == pytest.approx(frechet_by_hand(real, fake), rel=1e-4)
    assert first["precision"] == fraction_inside_by_hand(fake, real, 1)
    assert first["recall"] == fraction_inside_by_hand(real, fake, 1)


# --- the latents of a two-layer model; samples in the data's range ---------------------------


def test_posterior_means_of_a_two_layer_model_are_one_row_per_image_bottom_layer_first():
    """(N, d₁ + d₂): the first d₁ columns are q(z₁|x)'s means, the next d₂ those of q(z₂|z₁)
    at z₁'s means, through `posterior_means` and `latent_statistics` alike."""
    from vae_zoo.evaluate import posterior_means

    torch.manual_seed(0)
    model, _ = zoo.build("vae-2layer", IMAGE, {"latent_dim": 3, "top_latent_dim": 2,
                                               "hidden": [8], "top_hidden": [6]})
    model.eval()
    images = binary_pixels(7, 0.5, seed=3).float() / 255
    with torch.no_grad():
        bottom = model.encoders[0](images)[0]
        top = model.encoders[1](bottom)[0]
    expected = torch.cat([bottom, top], 1)
    torch.testing.assert_close(posterior_means(model, images, batch_size=3), expected)
    statistics = latent_statistics(model, images, batch_size=3)
    torch.testing.assert_close(statistics["means"], expected)
    assert statistics["kl_per_dim"].shape == (5,)


OUT_OF_RANGE = torch.tensor([-0.5, 0.3, 1.7]).repeat(6)[:PIXELS].reshape(IMAGE)
CLIPPED = OUT_OF_RANGE.clamp(0, 1)


class ConstantMeans(nn.Module):
    """A Gaussian decoder whose means, -0.5, 0.3 and 1.7 over the pixels, ignore z."""

    def forward(self, z):
        return OUT_OF_RANGE.expand(*z.shape[:-1], *IMAGE)


def out_of_range_model() -> VAE:
    from vae_zoo.likelihoods import GaussianLikelihood

    networks = Networks([PriorEncoder(2)], [], ConstantMeans(), [2])
    return VAE(networks, GaussianLikelihood(0.1, dequantize=True), StandardNormalPrior(2))


def test_samples_of_grey_level_data_are_clipped_to_the_pixel_range_and_follow_the_seed():
    """Decoder means outside [0, 1] (a Gaussian decoder's can be) are clipped: samples of a
    decoder putting out -0.5, 0.3 and 1.7 are 0, 0.3 and 1; and they depend on the generator's
    seed alone, whatever the global random state."""
    model = out_of_range_model()
    pixels = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (10, *IMAGE),
                                                                  dtype=np.uint8))
    data = made_data(pixels, pixels.clone(), binarize="none")
    samples = draw_samples(model, data, 4, torch.Generator().manual_seed(0))
    torch.testing.assert_close(samples, CLIPPED.expand(4, *IMAGE))

    grey = made_data(pixels, pixels.clone(), binarize="none")
    networks = Networks([PriorEncoder(2)], [], RecordingLinearDecoder(2), [2])
    linear = VAE(networks, BernoulliLikelihood(), StandardNormalPrior(2)).eval()
    torch.manual_seed(1)
    first = draw_samples(linear, grey, 30, torch.Generator().manual_seed(5))
    torch.manual_seed(2)
    again = draw_samples(linear, grey, 30, torch.Generator().manual_seed(5))
    assert torch.equal(first, again)
    assert not torch.equal(first, draw_samples(linear, grey, 30, torch.Generator().manual_seed(6)))


def test_report_images_and_traversals_are_clipped_to_the_pixel_range_and_follow_the_seed():
    """The report's sample grid, reconstructions and traversals show decoder means clipped to
    [0, 1]; the sample grid comes from the seed alone, whatever the global random state."""
    pixels = torch.from_numpy(np.random.default_rng(2).integers(0, 256, (6, *IMAGE),
                                                                  dtype=np.uint8))
    data = made_data(pixels, pixels.clone(), binarize="none")
    config = EvalConfig(grid_images=4, traversal_steps=3)
    model = out_of_range_model()
    _, arrays = evaluate(model, data, config, seed=3, log=quiet, groups=("images",))
    for name in ("samples", "reconstructions"):
        np.testing.assert_allclose(arrays[name], CLIPPED.expand(4, *IMAGE).numpy())
    torch.testing.assert_close(traversals(model, data.test.images[:1], 3),
                               CLIPPED.expand(2, 3, *IMAGE))
    networks = Networks([PriorEncoder(2)], [], RecordingLinearDecoder(2), [2])
    linear = VAE(networks, BernoulliLikelihood(), StandardNormalPrior(2)).eval()
    torch.manual_seed(1)
    _, first = evaluate(linear, data, config, seed=3, log=quiet, groups=("images",))
    torch.manual_seed(2)
    _, again = evaluate(linear, data, config, seed=3, log=quiet, groups=("images",))
    _, other = evaluate(linear, data, config, seed=4, log=quiet, groups=("images",))
    np.testing.assert_array_equal(first["samples"], again["samples"])
    assert not np.array_equal(first["samples"], other["samples"])


def test_the_elbo_is_measured_with_one_sample_of_z_per_image(monkeypatch):
    """test_elbo is the β = 1 ELBO with one sample: the model is asked for k = 1."""
    from vae_zoo.metrics.likelihood import elbo_terms

    model = constant_model()
    asked = []
    forward = type(model).forward

    def recording_forward(self, x, *args, **kwargs):
        asked.append(args[0] if args else kwargs.get("k", 1))
        return forward(self, x, *args, **kwargs)

    monkeypatch.setattr(type(model), "forward", recording_forward)
    elbo_terms(model, binary_pixels(5, 0.5, seed=1).float() / 255, batch_size=2)
    assert asked == [1, 1, 1]
