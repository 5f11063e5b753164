"""Every metric a run stores, checked by value against an answer worked out by hand, on the split
docs/results-format.md says it uses: through `evaluate()` and through the command line (the
`metrics.json` and `arrays.npz` of a run that `vae-zoo evaluate` measured).

Two models whose answers are known exactly:

- **The data-mean model** (circles, binarised): the `mlp-vae` of the zoo with the output layer of
  its encoder all zeros, so q(z|x) = N(0, I), the prior, for every image; and the output layer of
  its decoder zero weights with bias logit(μ), μ a per-pixel mean of the training images, so
  p(x|z) = Bernoulli(μ) whatever z is. Then log p(x) = Σ_pixels log Bern(x; μ) exactly, every
  importance weight p(x, z)/q(z|x) equals p(x) (so importance sampling and the IWAE bound are
  exact for every K and k), the KL is 0, every unit is inactive, every decoder mean is μ, samples
  are Bernoulli(μ) draws, MIG is 0 (constant latents carry no information) and a linear probe
  predicts each factor by its mean over the probe's training rows.
- **A linear-Gaussian model** (grey levels, through `evaluate()`): z ~ N(0, I₂), x|z ~ N(Wz + b,
  σ²I) with orthogonal columns of W and the exact (diagonal) posterior as the encoder. Then
  log p(x) = log N(x; b, WWᵀ + σ²I) and every importance weight equals it, the KL has a closed
  form, and the expected reconstruction term and its variance have closed forms too.

The validation and test splits have the same size and different content, so a metric measured
on the wrong split gets a different value. Every expected number is computed here in float64
with numpy from the raw images, except where noted: Fréchet distance and precision/recall (tested
in tests/test_samples.py and tests/test_features.py) are called on features this file extracts
from the right images itself.

A metric that appears in a run with no expected value here fails the test: add its known answer
(or, for a cost that is not a value, a line in `NOT_VALUES` saying why).
"""

from __future__ import annotations

import json
import math
import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import vae_zoo.evaluate
from vae_zoo import zoo
from vae_zoo.data import ImageData, Split, load_dataset
from vae_zoo.data.batches import binarize_fixed, make_splits
from vae_zoo.evaluate import EvalConfig, evaluate, sample_reference
from vae_zoo.harness.checkpoints import load_model
from vae_zoo.harness.store import sha256_file
from vae_zoo.likelihoods import GaussianLikelihood
from vae_zoo.metrics.samples import FeatureNet, sample_scores
from vae_zoo.model import VAE
from vae_zoo.nets import Networks
from vae_zoo.priors import StandardNormalPrior

pytestmark = pytest.mark.usefixtures("one_thread")

# --- the data -----------------------------------------------------------------------------------

CIRCLES = {"side": 8, "train_size": 300, "val_size": 100, "test_size": 100, "data_seed": 0}
PIXELS = CIRCLES["side"] ** 2
LATENT_DIM, HIDDEN = 3, 16
MODEL_OPTIONS = {"latent_dim": LATENT_DIM, "hidden": [HIDDEN]}
SEED = 2  # not 0: the probe's split and the sample draws must use the run's seed

# Evaluation settings chosen so that each rule is visible: K and k > 1 (log-mean-exp, not
# logsumexp), K not a multiple of the chunk, nll_images below the test size (the first 60 test
# images), batches that do not divide the splits, fid_samples above the split sizes (capped).
# Cheap AIS and BDMC settings: the two models' exact answers do not depend on them.
CHEAP_AIS = {"likelihood": ("is", "ais"), "ais_images": 20, "ais_steps": 10, "ais_chains": 2,
             "ais_leapfrog": 2, "bdmc_images": 200}
# Disentanglement metrics on few grid points: the data-mean model's code is constant, so their
# answers are exact or chance levels whose sampling error these sizes set.
FEW_FACTOR_POINTS = {"factor_points": 600, "factor_test_points": 600, "factor_votes": 300,
                     "factor_eval_votes": 300, "factor_variance_points": 300, "dci_trees": 5}
EVAL = EvalConfig(nll_samples=10, nll_chunk=4, nll_batch_size=25, nll_images=60,
                  batch_size=40, iwae_ks=(1, 5, 50), fid_samples=1000, pr_neighbours=3,
                  grid_images=16, latent_points=50, traversal_steps=5, **CHEAP_AIS,
                  **FEW_FACTOR_POINTS)

# Costs that are not values: what the test can say about them is that they are finite and >= 0.
NOT_VALUES = {
    "eval_seconds": "wall time of the evaluation",
    "train_seconds": "wall time of the training",
    "train_images_per_s": "training throughput, from wall time",
    "peak_memory_mb": "peak memory of the process: depends on the machine and what ran before",
    "ais_acceptance": "the HMC acceptance rate, a diagnostic without a closed form",
}

NATS = 2e-5  # float32 sums of per-pixel log-probabilities (measured errors: ≤ 4e-7)
ARRAY_FLOAT16 = 1e-3  # arrays.npz stores floats as float16


def relative(value: float) -> tuple[float, float]:
    """`value` with a tolerance of 1e-6 of itself: the Fréchet distances here are computed from
    the same features as the code's, and some are small (an untrained feature network's)."""
    return value, 1e-6 * abs(value) + 1e-12


def circles() -> ImageData:
    return load_dataset("circles", CIRCLES)


def as_numpy(images: torch.Tensor) -> np.ndarray:
    """(n, C, H, W) images → (n, pixels) float64."""
    return images.detach().cpu().double().flatten(1).numpy()


# --- the data-mean model ------------------------------------------------------------------------


def data_mean_logits(data: ImageData) -> torch.Tensor:
    """float32 logits of μ = (Σ training pixels + 1) / (n + 2) per pixel: the training images'
    mean (the probability of a pixel being on under binarisation), kept off 0 and 1."""
    train = as_numpy(data.train.images)
    mu = (train.sum(0) + 1) / (len(train) + 2)
    return torch.from_numpy(np.log(mu) - np.log1p(-mu)).float()


def make_data_mean(model: VAE, logits: torch.Tensor) -> VAE:
    """Zero the encoder's output layer (q(z|x) = N(0, I)) and make the decoder's output layer
    constant: zero weights, bias `logits` (p(x|z) = Bernoulli(sigmoid(logits)))."""
    encoder_out, decoder_out = model.encoder.net[-1], model.decoder.net[-1]
    assert isinstance(encoder_out, nn.Linear) and isinstance(decoder_out, nn.Linear)
    with torch.no_grad():
        encoder_out.weight.zero_()
        encoder_out.bias.zero_()
        decoder_out.weight.zero_()
        decoder_out.bias.copy_(logits.reshape(-1))
    return model.eval()


def pixel_means(logits: torch.Tensor) -> np.ndarray:
    """μ in float64 from the float32 logits the model holds: (pixels,)."""
    return 1 / (1 + np.exp(-logits.double().reshape(-1).numpy()))


def bernoulli_log_likelihood(images: torch.Tensor, mu: np.ndarray) -> np.ndarray:
    """log Π_pixels Bern(x; μ) per image, (n,)."""
    x = as_numpy(images)
    assert set(np.unique(x)) <= {0.0, 1.0}, "binarised splits hold 0 and 1 only"
    return (x * np.log(mu) + (1 - x) * np.log1p(-mu)).sum(1)


def features(net: nn.Module, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return net.eval()(images.float())


def probe_r2_of_constant_latents(factors: np.ndarray, seed: int) -> np.ndarray:
    """Held-out R² per factor of a linear probe on constant latents: it can only predict the mean
    of its training rows. The rows are split as `linear_probe_r2` documents: a numpy
    `default_rng(seed)` permutation, the first 80 % for fitting."""
    order = np.random.default_rng(seed).permutation(len(factors))
    fit, held_out = order[:round(0.8 * len(factors))], order[round(0.8 * len(factors)):]
    truth = factors[held_out]
    residual = ((truth - factors[fit].mean(0)) ** 2).sum(0)
    return 1 - residual / ((truth - truth.mean(0)) ** 2).sum(0)


def data_mean_answers(data: ImageData, mu: np.ndarray, config: EvalConfig, seed: int,
                      feature_net: nn.Module, samples: torch.Tensor) -> dict[str, tuple]:
    """Every metric of the data-mean model: name → (value, tolerance). `samples` are the images
    the sample metrics were given (checked by `check_bernoulli_samples`)."""
    test = data.test.images
    log_px = bernoulli_log_likelihood(test, mu)  # (n_test,)
    first = log_px[:config.nll_images]  # every likelihood-type metric: the first nll_images
    nll = -first.mean()
    answers = {
        "test_elbo": (first.mean(), NATS),
        "test_recon": (-first.mean(), NATS),
        "test_kl": (0.0, 1e-6),
        "test_nll": (nll, NATS),
        "test_nll_se": (first.std(ddof=1) / math.sqrt(len(first)), 1e-5),
        "test_bpd": (nll / (PIXELS * math.log(2)), NATS / (PIXELS * math.log(2))),
        # q = p(z) and a decoder that ignores z: every importance weight is p(x), so a tenth of
        # the samples gives the same estimate and all K samples count.
        "test_nll_k_tenth": (nll, NATS),
        "nll_k_gap": (0.0, NATS),
        "ess_mean": (config.nll_samples, 1e-3),
        "ess_p5": (config.nll_samples, 1e-3),
        **{f"iwae_k{k}": (first.mean(), NATS) for k in config.iwae_ks},
        # p(x, z) / q(z|x) = p(x) for every z: AIS is exact whatever its chains do, and BDMC's
        # bounds meet at log p(x) of the simulated images, Bernoulli(μ) draws, whose mean is
        # −H(μ) within 5 standard errors.
        "test_nll_ais": (-first[:config.ais_images].mean(), NATS),
        **bdmc_answers(-bernoulli_entropy(mu), bernoulli_log_likelihood_sd(mu),
                       config.bdmc_images),
        "active_units": (0.0, 0.0),
        "latent_dim": (LATENT_DIM, 0.0),
        "test_mse": (((as_numpy(test) - mu) ** 2).mean(), 1e-6),
        **constant_code_answers(config),
    }
    factors = data.test.factors.double().numpy()
    for name, r2 in zip(data.factor_names, probe_r2_of_constant_latents(factors, seed),
                        strict=True):
        answers[f"probe_r2_{name}"] = (r2, 1e-9)
    # The reference: the first `count` test images against disjoint runs of `count` held-out
    # images, the validation images then the training images binarised once (with the training
    # split's own seed, as the test images are binarised with theirs).
    count = reference_count(data, config)
    draws = min(5, (len(data.val) + len(data.train)) // count)
    assert draws >= 2 and count == len(samples)
    train = binarize_fixed(data.train.pixels, "train") if data.binarize == "dynamic" else (
        data.train.pixels)
    held_out = torch.cat([data.val.pixels, train])[:draws * count].float() / 255
    real = features(feature_net, data.test.images[:count])
    scores = [sample_scores(real, features(feature_net, images), k=config.pr_neighbours,
                            seed=draw) for draw, images in enumerate(held_out.split(count))]
    answers["ref_draws"] = (float(draws), 0.0)
    for name in ("fid", "kid", "precision", "recall"):
        values = np.array([score[name] for score in scores])
        answers[f"{name}_ref"] = (values.mean(), 1e-6 * abs(values.mean()) + 1e-12)
        answers[f"{name}_ref_sd"] = (values.std(ddof=1), 1e-6 * values.std(ddof=1) + 1e-12)
    fake = sample_scores(real, features(feature_net, samples), k=config.pr_neighbours, seed=seed)
    answers.update({name: (value, 1e-6 * abs(value) + 1e-12) for name, value in fake.items()})
    return answers


def reference_count(data: ImageData, config: EvalConfig) -> int:
    """Test images (and model samples) of the sample metrics: at most `fid_samples`, and at most
    half the held-out (validation + training) images, so that there are two reference draws."""
    return min(config.fid_samples, len(data.test), (len(data.val) + len(data.train)) // 2)


def bernoulli_entropy(mu: np.ndarray) -> float:
    return float(-(mu * np.log(mu) + (1 - mu) * np.log1p(-mu)).sum())


def bernoulli_log_likelihood_sd(mu: np.ndarray) -> float:
    """Standard deviation of log Π Bern(x; μ) over x ~ Bern(μ): independent pixels, each
    contributing μ(1-μ)·logit(μ)²."""
    return float(np.sqrt((mu * (1 - mu) * (np.log(mu) - np.log1p(-mu)) ** 2).sum()))


def bdmc_answers(expected_log_px: float, sd: float, count: int) -> dict[str, tuple]:
    """BDMC when every chain's weight is exact: lower = upper = the mean log p(x) of `count`
    simulated images, known within 5 standard errors of its expectation; a gap of 0."""
    tolerance = 5 * sd / math.sqrt(count)
    return {"bdmc_lower": (expected_log_px, tolerance), "bdmc_upper": (expected_log_px, tolerance),
            "bdmc_gap": (0.0, NATS)}


def check_bernoulli_samples(drawn: list[torch.Tensor], mu: np.ndarray, count: int) -> torch.Tensor:
    """The images the sample metrics were given are `count` Bernoulli(μ) draws: binary, in the
    data's own space, with per-pixel frequencies within 5 standard errors of μ (n = count)."""
    assert drawn, "the sample metrics did not draw their samples through draw_samples"
    samples = torch.cat(drawn)
    assert samples.shape == (count, 1, CIRCLES["side"], CIRCLES["side"])
    values = as_numpy(samples)
    assert set(np.unique(values)) <= {0.0, 1.0}, "samples of binarised data must be binary"
    frequencies = values.mean(0)
    worst = 5 * math.sqrt(0.25 / count)  # 5 standard errors of the worst case, μ = 1/2
    assert np.abs(frequencies - mu).max() < worst
    overall = 5 * math.sqrt((mu * (1 - mu)).sum() * count) / values.size
    assert abs(values.mean() - mu.mean()) < overall
    return samples


def constant_code_answers(config: EvalConfig) -> dict[str, tuple[float, float]]:
    """The disentanglement metrics of a constant code (every posterior mean 0) on circles'
    grid of 16 x 16 x 8 values, with their tolerances.

    Exact: no code varies, so MIG and modularity are 0 (no code shares information with a
    factor), SAP is 0 (a constant code scores 0), FactorVAE finds no active code (score 0), DCI's
    trees never split (importances 0: disentanglement and completeness 0), and explicitness's
    classifiers give every point the same probabilities (ROC-AUC 0.5). At chance: a classifier
    with nothing to go on predicts its training votes' or points' most frequent class, so the
    BetaVAE score is the share of that factor among the held-out votes (about 1/3 of the
    factors, within 5 binomial standard deviations; training: the most frequent share, at
    least 1/3) and DCI's informativeness the mean over factors of its most frequent value's
    share of the held-out points (about 1/16, 1/16 and 1/8)."""
    def within(p: float, n: int) -> float:
        return 5 * math.sqrt(p * (1 - p) / n)

    votes, points = config.factor_eval_votes, config.factor_test_points
    informativeness = np.mean([1 / 16, 1 / 16, 1 / 8])
    return {
        "mig": (0.0, 0.0), "sap": (0.0, 0.0), "modularity": (0.0, 0.0),
        "factor_vae": (0.0, 0.0), "factor_vae_train": (0.0, 0.0), "factor_vae_active": (0.0, 0.0),
        "dci_disentanglement": (0.0, 0.0), "dci_completeness": (0.0, 0.0),
        "explicitness": (0.5, 1e-12), "explicitness_train": (0.5, 1e-12),
        "beta_vae": (1 / 3, within(1 / 3, votes)),
        "beta_vae_train": (1 / 3 + within(1 / 3, config.factor_votes) / 2,
                           within(1 / 3, config.factor_votes) / 2),
        "dci_informativeness": (informativeness, within(1 / 8, points)),
        "dci_informativeness_train": (informativeness, within(1 / 8, config.factor_points)),
    }


def data_mean_arrays(data: ImageData, mu: np.ndarray, config: EvalConfig) -> dict:
    """The report's arrays of the data-mean model: every decoder mean is μ, every posterior mean
    0, every KL per dimension 0."""
    shape = (1, CIRCLES["side"], CIRCLES["side"])
    keep = min(config.latent_points, len(data.test))
    grid = min(config.grid_images, len(data.test))
    image_of_mu = mu.reshape(shape)
    first = bernoulli_log_likelihood(data.test.images, mu)[:config.nll_images]
    return {
        "image_elbo": first, "image_recon": -first, "image_kl": np.zeros_like(first),
        "image_log_px": first, **{f"image_iwae_k{k}": first for k in config.iwae_ks},
        "image_log_px_ais": first[:config.ais_images],
        "kl_per_dim": np.zeros(LATENT_DIM),
        "latent_means": np.zeros((keep, LATENT_DIM)),
        "factors": data.test.factors[:keep].double().numpy(),
        "factor_mi": np.zeros((LATENT_DIM, 3)),
        "traversals": np.broadcast_to(image_of_mu, (LATENT_DIM, config.traversal_steps, *shape)),
        "samples": np.broadcast_to(image_of_mu, (config.grid_images, *shape)),
        "originals": data.test.images[:grid].double().numpy(),
        "reconstructions": np.broadcast_to(image_of_mu, (grid, *shape)),
    }


@contextmanager
def recording_samples():
    """Record the images `draw_samples` hands the sample metrics (and change nothing)."""
    drawn: list[torch.Tensor] = []
    original = vae_zoo.evaluate.draw_samples

    def spy(*args, **kwargs):
        images = original(*args, **kwargs)
        drawn.append(images.detach().cpu().clone())
        return images

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(vae_zoo.evaluate, "draw_samples", spy)
        yield drawn


def assert_matches(stored: dict, answers: dict[str, tuple], not_values: dict[str, str]) -> None:
    """Every stored metric has a known answer here (or is listed as not a value), and matches."""
    unchecked = sorted(set(stored) - set(answers) - set(not_values))
    assert not unchecked, (f"metrics with no known answer in this test: {unchecked}; add "
                           "their hand-computed values to it")
    missing = sorted(set(answers) - set(stored))
    assert not missing, f"metrics the run should have and does not: {missing}"
    wrong = {name: f"stored {stored[name]!r}, expected {float(value)!r} ± {tolerance:.1e}"
             for name, (value, tolerance) in answers.items()
             if not abs(stored[name] - value) <= tolerance}
    assert not wrong, "metrics differ from their known values:\n" + "\n".join(
        f"  {name}: {why}" for name, why in sorted(wrong.items()))
    for name in set(stored) & set(not_values):
        assert math.isfinite(stored[name]) and stored[name] >= 0, (name, stored[name])


def assert_arrays_match(arrays: dict, expected: dict, tolerance: float) -> None:
    """Arrays equal to their expected values within `tolerance`; the per-image values (float32
    in nats, up to hundreds) within float32's resolution at their size."""
    assert set(arrays) == set(expected)
    for name, values in expected.items():
        got = np.asarray(arrays[name], dtype=np.float64)
        assert got.shape == values.shape, name
        if name.startswith("image_"):
            assert arrays[name].dtype == np.float32, name
            np.testing.assert_allclose(got, values, rtol=1e-6, atol=NATS, err_msg=name)
        else:
            np.testing.assert_allclose(got, values, rtol=0, atol=tolerance, err_msg=name)


# --- preconditions ------------------------------------------------------------------------------


def test_val_and_test_splits_are_the_same_size_and_tell_the_metrics_apart():
    """A metric measured on the validation split instead of the test split must change: the two
    splits have the same size, different images and factors, and the data-mean model's known
    answers differ between them by far more than the tolerances."""
    data = circles()
    assert len(data.val) == len(data.test) == CIRCLES["test_size"]
    assert not torch.equal(data.val.pixels, data.test.pixels)
    mu = pixel_means(data_mean_logits(data))
    by_split = {name: bernoulli_log_likelihood(split.images, mu)
                for name, split in (("val", data.val), ("test", data.test))}
    first = EVAL.nll_images
    assert abs(by_split["val"][:first].mean() - by_split["test"][:first].mean()) > 100 * NATS
    assert abs(by_split["val"].mean() - by_split["test"].mean()) > 100 * NATS
    mse = {name: ((as_numpy(split.images) - mu) ** 2).mean()
           for name, split in (("val", data.val), ("test", data.test))}
    assert abs(mse["val"] - mse["test"]) > 1e-3
    val_r2 = probe_r2_of_constant_latents(data.val.factors.double().numpy(), SEED)
    test_r2 = probe_r2_of_constant_latents(data.test.factors.double().numpy(), SEED)
    assert np.abs(val_r2 - test_r2).min() > 1e-3


# --- the data-mean model through evaluate() -----------------------------------------------------


@pytest.fixture(scope="module")
def data_mean_evaluation():
    """The data-mean model evaluated by `evaluate()` with every metric group, against an untrained
    (fixed-seed) feature network: (data, μ, feature net, metrics, arrays, drawn samples)."""
    data = circles()
    torch.manual_seed(0)
    model, _ = zoo.build("mlp-vae", data.image_shape, MODEL_OPTIONS)
    logits = data_mean_logits(data)
    make_data_mean(model, logits)
    torch.manual_seed(0)
    feature_net = FeatureNet(in_channels=1, num_classes=9).eval()
    reference = sample_reference(feature_net, data, EVAL)
    with recording_samples() as drawn:
        metrics, arrays = evaluate(model, data, EVAL, seed=SEED, samples=reference,
                                   log=lambda line: None)
    return data, pixel_means(logits), feature_net, metrics, arrays, drawn


def test_every_metric_of_the_data_mean_model_from_evaluate_has_its_known_value(
        data_mean_evaluation):
    """test_nll = test_recon = -test_elbo = -iwae_k<k> = -mean log Bern(x; μ) over the right test
    images, KL 0, active units 0, per-pixel MSE of μ, MIG 0, probe R² of the mean predictor,
    sample metrics from Bernoulli(μ) draws, reference scores of validation vs test images."""
    data, mu, feature_net, metrics, _, drawn = data_mean_evaluation
    count = reference_count(data, EVAL)
    samples = check_bernoulli_samples(drawn, mu, count)
    answers = data_mean_answers(data, mu, EVAL, SEED, feature_net, samples)
    assert_matches(metrics, answers, {name: NOT_VALUES[name]
                                      for name in ("eval_seconds", "ais_acceptance")})


def test_probe_r2_of_constant_latents_is_below_zero(data_mean_evaluation):
    """Constant latents carry no information: out of sample the probe does no better than
    predicting the held-out mean (R² ≤ 0)."""
    metrics = data_mean_evaluation[3]
    scores = [value for name, value in metrics.items() if name.startswith("probe_r2_")]
    assert len(scores) == 3 and all(score <= 0 for score in scores)


def test_report_arrays_of_the_data_mean_model_from_evaluate(data_mean_evaluation):
    """Decoder means (samples, reconstructions, traversals) are all μ; posterior means and KL per
    dimension 0; originals and factors are the first test images' own."""
    data, mu, _, _, arrays, _ = data_mean_evaluation
    assert_arrays_match(arrays, data_mean_arrays(data, mu, EVAL), 1e-6)


# --- the data-mean model through the command line -----------------------------------------------


def suite_text(eval_table: str) -> str:
    options = "\n".join(f"{key} = {value}" for key, value in CIRCLES.items())
    return f"""
datasets = ["circles"]
models = ["mlp-vae"]
seeds = [{SEED}]
[train]
epochs = 1
batch_size = 100
[eval]
{eval_table}
[dataset.circles]
{options}
[model.mlp-vae]
latent_dim = {LATENT_DIM}
hidden = [{HIDDEN}]
"""


EVAL_TABLE = "\n".join(
    f"{name} = {json.dumps(list(value) if isinstance(value, tuple) else value)}"
    for name, value in vars(EVAL).items())


@pytest.fixture(scope="module")
def evaluated_run(tmp_path_factory):
    """A one-epoch `mlp-vae` cell run by `vae-zoo run` with cheap evaluation settings, its
    checkpoint then replaced by the data-mean weights, and the cell evaluated again by
    `vae-zoo evaluate` with the settings of `EVAL` (which change its evaluation identity):
    (run directory, results directory, the images the sample metrics were given)."""
    from vae_zoo.cli import main

    base = tmp_path_factory.mktemp("known-values")
    suite, results = base / "known.toml", base / "results"
    common = ["--results-dir", str(results), "--device", "cpu", "--wandb", "disabled"]
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        suite.write_text(suite_text("nll_samples = 1\niwae_ks = [1]"))
        assert main(["run", str(suite), *common]) == 0
        (run_dir,) = [path for path in (results / "known" / "runs").iterdir()
                      if path.is_dir() and not path.name.startswith(".")]
        first_eval_id = json.loads((run_dir / "metrics.json").read_text())["eval_id"]

        model, config = load_model(run_dir)
        data = load_dataset("circles", config["dataset"]["options"])
        make_data_mean(model, data_mean_logits(data))
        written = run_dir / "checkpoint.written.safetensors"
        save_file({name: value.contiguous() for name, value in model.state_dict().items()},
                  written)
        os.replace(written, run_dir / "checkpoint.safetensors")
        # The planted weights' checksum goes into metrics.json: the store quarantines a run
        # whose checkpoint differs from the one it recorded.
        record = json.loads((run_dir / "metrics.json").read_text())
        record["checksums"]["checkpoint.safetensors"] = sha256_file(
            run_dir / "checkpoint.safetensors")
        (run_dir / "metrics.json").write_text(json.dumps(record))

        suite.write_text(suite_text(EVAL_TABLE))
        with recording_samples() as drawn:
            assert main(["evaluate", str(suite), *common]) == 0
    finally:
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "finished"
    assert record["eval_id"] != first_eval_id, "the second call must have evaluated again"
    assert any("evaluating the training recorded in" in line for line in record["log"])
    return run_dir, results, drawn


def cached_feature_net(results: Path) -> tuple[FeatureNet, dict]:
    (weights,) = (results / "_cache" / "features").glob("*.pt")
    checkpoint = torch.load(weights, weights_only=True)
    net = FeatureNet(**checkpoint["constructor_args"])
    net.load_state_dict(checkpoint["state_dict"])
    return net.eval(), checkpoint["info"]


def circles_bins(factors: np.ndarray, train_factors: np.ndarray) -> np.ndarray:
    """The feature network's targets on circles: each factor (centre x, centre y, radius) cut
    into 5 equal-width bins over the training factors' range (the top edge in the last bin),
    one head per factor: (n, 3)."""
    low, high = train_factors.min(0), train_factors.max(0)
    return np.clip(np.floor((factors - low) / (high - low) * 5), 0, 4).astype(np.int64)


def untrained_elbo(config: dict, data: ImageData) -> float:
    """The validation ELBO of the cell's model as its seed initialises it, one draw per image."""
    from vae_zoo.metrics.likelihood import elbo_terms

    torch.manual_seed(config["seed"])
    model, _ = zoo.build(config["model"]["entry"], data.image_shape,
                         config["model"]["hyperparameters"])
    with torch.no_grad():
        return elbo_terms(model.eval(), data.val.images, 1000)["elbo"].mean().item()


def test_every_metric_stored_by_the_command_line_has_its_known_value(evaluated_run):
    """metrics.json of the re-evaluated cell: every evaluation metric as for `evaluate()`, the
    reference scores against the cached feature network, its test accuracy, the parameter count
    of the architecture, and the best epoch of a one-epoch training (1); nothing unchecked."""
    run_dir, results, drawn = evaluated_run
    config = json.loads((run_dir / "config.json").read_text())
    data = load_dataset("circles", config["dataset"]["options"])
    assert data.fingerprint() == config["dataset"]["fingerprint"]
    logits = data_mean_logits(data)
    mu = pixel_means(logits)
    net, info = cached_feature_net(results)
    count = reference_count(data, EVAL)
    samples = check_bernoulli_samples(drawn, mu, count)
    answers = data_mean_answers(data, mu, EVAL, SEED, net, samples)

    bins = circles_bins(data.test.factors.double().numpy(), data.train.factors.double().numpy())
    with torch.no_grad():
        predicted = np.stack([head.argmax(1).numpy() for head in net.logits(data.test.images)],
                             axis=1)
    assert predicted.shape == bins.shape == (len(data.test), 3)  # every factor supervised
    hidden, latent = HIDDEN, LATENT_DIM
    params = ((PIXELS + 1) * hidden + (hidden + 1) * 2 * latent  # encoder
              + (latent + 1) * hidden + (hidden + 1) * PIXELS)  # decoder
    answers.update({
        # The worst head's accuracy.
        "feature_net_accuracy": ((predicted == bins).mean(0).min(), 1e-12),
        "params": (float(params), 0.0),
        # One epoch of training: the whole budget, too short to judge convergence.
        "best_epoch": (1.0, 0.0),
        "epochs_trained": (1.0, 0.0),
        "converged": (0.0, 0.0),
        "stopped_early": (0.0, 0.0),
        # One epoch beats the untrained model, whose criterion (the ELBO: β = 1) is that of the
        # weights the seed initialises, here on other single draws (hence 0.5 nats).
        "learned": (1.0, 0.0),
        "initial_criterion": (untrained_elbo(config, data), 0.5),
    })
    assert info["test_accuracy"] == pytest.approx(answers["feature_net_accuracy"][0], abs=1e-12)
    metrics = json.loads((run_dir / "metrics.json").read_text())["metrics"]
    assert_matches(metrics, answers, NOT_VALUES)


def test_report_arrays_stored_by_the_command_line(evaluated_run):
    """arrays.npz of the re-evaluated cell holds the data-mean model's arrays (as float16)."""
    run_dir, _, _ = evaluated_run
    config = json.loads((run_dir / "config.json").read_text())
    data = load_dataset("circles", config["dataset"]["options"])
    mu = pixel_means(data_mean_logits(data))
    with np.load(run_dir / "arrays.npz") as stored:
        arrays = {name: stored[name] for name in stored.files}
    assert_arrays_match(arrays, data_mean_arrays(data, mu, EVAL), ARRAY_FLOAT16)


# --- a linear-Gaussian model through evaluate() -------------------------------------------------

LG_SHAPE = (1, 2, 3)  # D = 6 pixels
LG_SIGMA = 0.05
# Columns of W on disjoint pixels, so WᵀW is diagonal in any precision and the exact posterior
# is in the VAE's (diagonal) family. Unit 1 is strong (Var_x E[z₁|x] ≈ 0.94), unit 2 is weak
# (≈ 0.0036, below the 0.01 threshold of an active unit).
LG_WEIGHT = np.array([[0.1, 0.0], [0.1, 0.0], [-0.1, 0.0], [0.1, 0.0],
                      [0.0, 0.003 / math.sqrt(2)], [0.0, -0.003 / math.sqrt(2)]])
LG_EVAL = EvalConfig(**CHEAP_AIS, nll_samples=10, nll_chunk=3, nll_batch_size=64, nll_images=0,
                     batch_size=70, iwae_ks=(1, 5, 50), grid_images=16, latent_points=30)


class LinearEncoder(nn.Module):
    """The exact posterior q(z|x) = N(S Wᵀ(x - b)/σ², S), S = (I + WᵀW/σ²)⁻¹ (diagonal)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor):
        super().__init__()
        variance = 1 / (1 + (weight.double() ** 2).sum(0) / LG_SIGMA**2)
        self.register_buffer("gain", (variance[:, None] * weight.double().T / LG_SIGMA**2).float())
        self.register_buffer("bias", bias)
        self.register_buffer("log_var", variance.log().float())

    def forward(self, x):
        mean = (x.flatten(1) - self.bias) @ self.gain.T
        return mean, self.log_var.expand_as(mean)


class LinearDecoder(nn.Module):
    def __init__(self, weight: torch.Tensor, bias: torch.Tensor):
        super().__init__()
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)

    def forward(self, z):
        return (z @ self.weight.T + self.bias).unflatten(-1, LG_SHAPE)


def linear_gaussian_case() -> tuple[VAE, ImageData, np.ndarray, np.ndarray]:
    """The model (float32), grey-level data drawn from its marginal and quantised to 8 bits
    (val and test 200 images each), and W, b as float64 copies of the model's float32 values."""
    rng = np.random.default_rng(7)
    weight = torch.from_numpy(LG_WEIGHT).float()
    bias = torch.from_numpy(0.5 + 0.05 * rng.standard_normal(6)).float()
    w, b = weight.double().numpy(), bias.double().numpy()
    covariance = w @ w.T + LG_SIGMA**2 * np.eye(6)
    draws = rng.multivariate_normal(b, covariance, size=600)
    pixels = torch.from_numpy(np.clip(np.rint(draws * 255), 0, 255).astype(np.uint8))
    pixels = pixels.reshape(-1, *LG_SHAPE)
    data = make_splits("linear-gaussian", Split(pixels[:400]), Split(pixels[400:]),
                       val_size=200, binarize="none")
    networks = Networks([LinearEncoder(weight, bias)], [], LinearDecoder(weight, bias), [2])
    model = VAE(networks, GaussianLikelihood(LG_SIGMA, dequantize=False), StandardNormalPrior(2))
    return model.eval(), data, w, b


def linear_gaussian_answers(data: ImageData, w: np.ndarray, b: np.ndarray, config: EvalConfig):
    """name → (value, tolerance) for every metric, and the expected report arrays."""
    x = as_numpy(data.test.images)  # (n, 6)
    n, pixels = x.shape
    sigma2 = LG_SIGMA**2
    covariance = w @ w.T + sigma2 * np.eye(pixels)
    centred = x - b
    _, log_det = np.linalg.slogdet(covariance)
    log_px = -0.5 * (pixels * math.log(2 * math.pi) + log_det
                     + np.einsum("ni,ij,nj->n", centred, np.linalg.inv(covariance), centred))
    variance = 1 / (1 + (w**2).sum(0) / sigma2)  # (2,) posterior variances
    means = centred @ w * variance / sigma2  # (n, 2) posterior means
    kl_per_dim = 0.5 * (variance + means**2 - 1 - np.log(variance))  # (n, 2)
    kl = kl_per_dim.sum(1).mean()
    # recon = E_q[-log N(x; Wz + b, σ²I)] with Wz ~ N(W m, Σ), Σ = W S Wᵀ: its mean, and the
    # variance of its one-sample estimate (a Gaussian quadratic form).
    residual = centred - means @ w.T
    spread = w @ np.diag(variance) @ w.T
    recon = (0.5 * pixels * math.log(2 * math.pi * sigma2)
             + ((residual**2).sum(1) + np.trace(spread)) / (2 * sigma2))
    recon_variance = (4 * np.einsum("ni,ij,nj->n", residual, spread, residual)
                      + 2 * np.trace(spread @ spread)) / (4 * sigma2**2)
    recon_tolerance = 5 * math.sqrt(recon_variance.sum()) / n
    reconstructions = means @ w.T + b
    active = float((means.var(0, ddof=1) > 0.01).sum())
    answers = {
        "test_kl": (kl, NATS),
        "test_recon": (recon.mean(), recon_tolerance),
        "test_nll": (-log_px.mean(), NATS),
        "test_nll_se": (log_px.std(ddof=1) / math.sqrt(n), 1e-5),
        "test_bpd": (-log_px.mean() / (pixels * math.log(2)), NATS),
        **{f"iwae_k{k}": (log_px.mean(), NATS) for k in config.iwae_ks},
        # Every weight is p(x): a tenth of the samples gives the same estimate, all K count
        # (float32 log-weights: equal to ~1e-6 relative).
        "test_nll_k_tenth": (-log_px.mean(), NATS),
        "nll_k_gap": (0.0, NATS),
        "ess_mean": (config.nll_samples, 1e-3),
        "ess_p5": (config.nll_samples, 1e-3),
        # AIS from the exact posterior: p(x, z) / q(z|x) = p(x) along the whole path, so every
        # chain's weight is p(x); BDMC's bounds meet at log p(x) of the simulated images, whose
        # mean is −H(N(b, C)) = −½(D log 2πe + log|C|), with sd √(D/2).
        "test_nll_ais": (-log_px[:config.ais_images].mean(), 1e-4),
        **bdmc_answers(-0.5 * (pixels * math.log(2 * math.pi * math.e) + log_det),
                       math.sqrt(pixels / 2), config.bdmc_images),
        "active_units": (active, 0.0),
        "latent_dim": (2.0, 0.0),
        "test_mse": (((reconstructions - x) ** 2).mean(), 1e-7),
    }
    keep, grid = min(config.latent_points, n), min(config.grid_images, n)
    arrays = {
        "image_log_px": log_px, "image_kl": kl_per_dim.sum(1),
        "image_log_px_ais": log_px[:config.ais_images],
        **{f"image_iwae_k{k}": log_px for k in config.iwae_ks},
        "kl_per_dim": kl_per_dim.mean(0),
        "latent_means": means[:keep],
        "originals": x[:grid].reshape(grid, *LG_SHAPE),
        "reconstructions": np.clip(reconstructions[:grid], 0, 1).reshape(grid, *LG_SHAPE),
    }
    return answers, arrays, active


def test_every_metric_of_a_linear_gaussian_model_from_evaluate_has_its_known_value():
    """With the exact posterior every importance weight is p(x): test_nll = -iwae_k<k> = -mean
    log N(x; b, WWᵀ + σ²I) over the test images for every K and k; test_kl in closed form;
    test_recon within 5 standard errors of its closed-form expectation, and test_elbo =
    -(test_recon + test_kl); one active unit of two; per-pixel MSE of W·E[z|x] + b."""
    model, data, w, b = linear_gaussian_case()
    assert len(data.val) == len(data.test) and not torch.equal(data.val.pixels, data.test.pixels)
    metrics, arrays = evaluate(model, data, LG_EVAL, seed=SEED, log=lambda line: None)
    answers, expected_arrays, active = linear_gaussian_answers(data, w, b, LG_EVAL)
    assert active == 1.0, "the case is built with one active and one inactive unit"
    assert answers["test_kl"][0] > 1.0, "a KL far from 0, so that test_elbo must include it"
    # test_elbo is -(recon + kl) of the same pass: exact given the stored test_recon.
    answers["test_elbo"] = (-(metrics["test_recon"] + answers["test_kl"][0]), NATS)
    assert_matches(metrics, answers, {name: NOT_VALUES[name]
                                      for name in ("eval_seconds", "ais_acceptance")})
    # One-sample per-image terms: the ELBO is -(recon + KL) image by image, their means the
    # metrics checked above.
    recon, elbo = arrays.pop("image_recon"), arrays.pop("image_elbo")
    np.testing.assert_allclose(elbo, -(recon + expected_arrays["image_kl"]), rtol=1e-6, atol=NATS)
    assert abs(recon.astype(np.float64).mean() - metrics["test_recon"]) < NATS
    samples = arrays.pop("samples")  # decoder means of prior draws: W z + b, clamped to [0, 1]
    assert samples.shape == (LG_EVAL.grid_images, *LG_SHAPE)
    assert_arrays_match(arrays, expected_arrays, 1e-5)
