"""Test-set evaluation of a trained model: every metric of a run, and the small arrays the report
draws. Shared by every zoo entry: nothing here knows which entry it measures.

Metrics (nats per image unless named otherwise; docs/metrics.md has every definition):
- likelihood, all on one image set, the first `nll_images` test images (the same images for
  every model), each also kept per image in the arrays (`image_<name>`, float32) so the report
  can pair models image by image: `test_elbo` (β = 1), `test_recon`, `test_kl`; `test_nll`
  (importance sampling with K samples) with its standard error across images `test_nll_se` and
  `test_bpd` (bits per dimension); the estimate's own diagnostics, `test_nll_k_tenth` (the same
  estimate from the first ⌈K/10⌉ samples), `nll_k_gap` (= test_nll_k_tenth − test_nll: a gap
  above 0.1 nats says the estimate is still moving with K) and the effective sample size of the
  importance weights, `ess_mean` and `ess_p5` (5th percentile over images); `iwae_k<k>`, the
  IWAE bound with k samples (a log-likelihood bound, like `test_elbo`); with
  `likelihood = ["is", "ais"]`, `test_nll_ais` from annealed importance sampling on the first
  `ais_images`; with `bdmc_images`, bidirectional Monte Carlo bounds on simulated data.
- latent usage: `active_units` (Burda et al. 2015: Cov_x(E_q[z_u]) > 0.01) of `latent_dim`
  units over every stochastic layer, and per layer (`active_units_z1`, ...) for hierarchical
  models; KL per dimension of every layer (Monte Carlo against the prior's marginals when there
  is no closed form).
  Posterior means of layers above the first are taken at the means of the layers below.
- reconstruction: `test_mse`, mean squared error per pixel between the test images and the
  decoder mean at their posterior mean.
- samples (given a `SampleReference`): `fid`, `kid` (with `kid_std`, its spread over
  subsets), `precision`, `recall` of model samples against the test set; the same for several
  disjoint draws of held-out real images, averaged over the draws (`fid_ref`, `kid_ref`,
  `precision_ref`, `recall_ref`) with their standard deviation over draws (`fid_ref_sd`, ...)
  and the number of draws, `ref_draws` (see `sample_reference`).
- factors (datasets with true factors): `probe_r2_<factor>`, from the test images' posterior
  means of every layer; traversals sweep the top layer.
- disentanglement (datasets with a factor grid): `beta_vae`, `factor_vae`, `mig`,
  `dci_disentanglement`, `dci_completeness`, `dci_informativeness`, `sap`, `modularity`,
  `explicitness` (and their `_train` and `factor_vae_active` diagnostics), as
  disentanglement_lib computes them, from images drawn from the grid (`disentanglement_metrics`).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from torch import Tensor

from vae_zoo.data import ImageData
from vae_zoo.data.batches import bernoulli, binarize_fixed
from vae_zoo.metrics.ais import AISConfig, ais_log_likelihood, bdmc, refusal
from vae_zoo.metrics.factors import (
    beta_vae_score,
    dci,
    factor_vae_score,
    linear_probe_r2,
    modularity_explicitness,
    mutual_information_gap,
    normalised_mutual_information,
    sap_score,
)
from vae_zoo.metrics.likelihood import (
    ImportanceSampling,
    elbo_terms,
    importance_sampled_log_likelihood,
    importance_sampling,
    mean_and_standard_error,
)
from vae_zoo.metrics.samples import extract_features, sample_scores
from vae_zoo.model import VAE
from vae_zoo.roles import PRESENTATION, SPEED

ACTIVE_UNIT_THRESHOLD = 0.01  # Burda et al. (2015)
# The disentanglement metrics, in disentanglement_lib's order; see `disentanglement_metrics`.
DISENTANGLEMENT_METRICS = ("beta_vae", "factor_vae", "mig", "dci", "sap", "modularity")
# Evaluation settings that apply only to datasets with a factor grid.
FACTORS = {"applies": "factors"}

# Functions run `with torch.inference_mode():` rather than under the decorator: mutmut (`make
# mutants`) does not mutate decorated functions.


@dataclass(frozen=True)
class EvalConfig:
    # K, importance samples per test image for test_nll
    nll_samples: int = field(default=1000, metadata={"maximum": 1_000_000})
    # test images per importance-sampling batch, and samples decoded at once (bounds memory;
    # 25 is fastest on a CPU)
    nll_batch_size: int = field(default=100, metadata={**SPEED, "maximum": 100_000})
    nll_chunk: int = field(default=25, metadata={**SPEED, "maximum": 1_000_000})
    # test images for every likelihood-type metric (test_elbo, test_nll, iwae_k<k>, AIS): the
    # first N (0: all)
    nll_images: int = field(default=0, metadata={"maximum": 1_000_000})
    # log p(x) estimators: "is" (importance sampling, always: it gives test_nll) and optionally
    # "ais" (annealed importance sampling, a check of the IS estimate) on the first `ais_images`
    likelihood: tuple[str, ...] = field(default=("is",), metadata={"choices": ("is", "ais")})
    ais_images: int = field(default=100, metadata={"maximum": 100_000})
    # intermediate distributions
    ais_steps: int = field(default=500, metadata={"maximum": 100_000})
    ais_chains: int = field(default=4, metadata={"maximum": 10_000})
    # leapfrog steps per HMC transition
    ais_leapfrog: int = field(default=10, metadata={"maximum": 1_000})
    ais_start: str = field(default="posterior", metadata={"choices": ("posterior", "prior")})
    # images simulated from the model for bidirectional Monte Carlo (0: no BDMC), with the AIS
    # settings above
    bdmc_images: int = field(default=0, metadata={"maximum": 100_000})
    # test images per batch otherwise
    batch_size: int = field(default=1000, metadata={**SPEED, "maximum": 100_000})
    # k of the iwae_k<k> bounds
    iwae_ks: tuple[int, ...] = field(default=(1, 5, 50), metadata={"maximum": 1_000_000})
    # model samples (and real images) for fid, precision, recall
    fid_samples: int = field(default=10000, metadata={"minimum": 2, "maximum": 1_000_000})
    # k of the k-NN manifolds of precision and recall
    pr_neighbours: int = field(default=3, metadata={"maximum": 1_000})
    # kept for the report: sample and reconstruction grids, posterior means for the embedding,
    # images per latent dimension in a traversal
    grid_images: int = field(default=64, metadata={**PRESENTATION, "maximum": 10_000})
    latent_points: int = field(default=1000, metadata={**PRESENTATION, "maximum": 1_000_000})
    traversal_steps: int = field(default=9, metadata={**PRESENTATION, "maximum": 1_000})
    # Disentanglement metrics on datasets with a factor grid (circles, sprites), with
    # disentanglement_lib's settings by default; docs/metrics.md defines each. They apply only
    # to such datasets, and are part of the evaluation identity only there.
    disentanglement: tuple[str, ...] = field(
        default=DISENTANGLEMENT_METRICS, metadata={**FACTORS, "choices": DISENTANGLEMENT_METRICS})
    # grid points the codes of MIG, DCI, SAP and modularity are fitted on, and held-out points
    # DCI, SAP and explicitness are scored on
    factor_points: int = field(default=10_000, metadata={**FACTORS, "minimum": 10,
                                                         "maximum": 1_000_000})
    factor_test_points: int = field(default=5_000, metadata={**FACTORS, "minimum": 10,
                                                             "maximum": 1_000_000})
    # BetaVAE and FactorVAE scores: images per vote, votes to train and to score the
    # classifier, points of the global variances and FactorVAE's threshold of an active code
    factor_batch: int = field(default=64, metadata={**FACTORS, "minimum": 2, "maximum": 10_000})
    factor_votes: int = field(default=10_000, metadata={**FACTORS, "minimum": 10,
                                                        "maximum": 1_000_000})
    factor_eval_votes: int = field(default=5_000, metadata={**FACTORS, "minimum": 10,
                                                            "maximum": 1_000_000})
    factor_variance_points: int = field(default=10_000, metadata={**FACTORS, "minimum": 2,
                                                                  "maximum": 1_000_000})
    factor_vae_threshold: float = field(default=0.05, metadata={**FACTORS, "maximum": 1e6})
    # boosting stages of each DCI classifier (scikit-learn's default; they cost the most time)
    dci_trees: int = field(default=100, metadata={**FACTORS, "maximum": 10_000})
    # equal-width bins of each code for MIG and modularity
    mig_bins: int = field(default=20, metadata={**FACTORS, "minimum": 2, "maximum": 10_000})


class Timer:
    """Times named steps and reports each through `log`."""

    def __init__(self, log: Callable[[str], None]):
        self.log, self.seconds = log, {}

    def __call__(self, name: str, step: Callable):
        started = time.perf_counter()
        value = step()
        self.seconds[name] = time.perf_counter() - started
        self.log(f"  {name}: {self.seconds[name]:.1f} s")
        return value


# What `evaluate(groups=...)` can compute on its own (`vae-zoo evaluate --metrics`).
METRIC_GROUPS = ("elbo", "nll", "iwae", "ais", "bdmc", "latents", "factors",
                 "disentanglement", "samples", "images")


def evaluate(model: VAE, data: ImageData, config: EvalConfig, *, seed: int,
             samples: SampleReference | None = None, log: Callable[[str], None] = print,
             groups: tuple[str, ...] | None = None,
             ) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Metrics of `model` on `data.test` and arrays for the report; `log` gets one line per
    metric with the time it took. Sample-quality metrics need `samples`, the dataset's
    `sample_reference` (computed once per dataset, not per model). `groups` (of
    `METRIC_GROUPS`) computes only those metrics; every group uses its own seeded random stream,
    so its values do not depend on which other groups ran."""
    model.eval()
    images = data.test.images
    metrics: dict[str, float] = {}
    arrays: dict[str, np.ndarray] = {}
    timed = Timer(log)

    def wanted(group: str) -> bool:
        if group in (groups or METRIC_GROUPS):
            torch.manual_seed(seed)  # each group's draws are independent of the groups before
            return True
        return False

    # Every likelihood-type metric is measured on one image set, the NLL images, and kept per
    # image (float32) so the report can compare models image by image.
    nll_images = images[:config.nll_images] if config.nll_images else images
    if wanted("elbo"):
        terms = timed("elbo", lambda: elbo_terms(model, nll_images, config.batch_size))
        for name in ("elbo", "recon", "kl"):
            metrics[f"test_{name}"] = terms[name].double().mean().item()
            arrays[f"image_{name}"] = per_image(terms[name])

    if wanted("nll"):
        sampled = timed("nll", lambda: importance_sampling(
            model, nll_images, config.nll_samples, config.nll_batch_size, config.nll_chunk))
        metrics.update(nll_metrics(sampled, math.prod(data.image_shape)))
        arrays["image_log_px"] = per_image(sampled.log_px)

    def iwae_bounds() -> dict[str, Tensor]:
        return {f"iwae_k{k}": importance_sampled_log_likelihood(
            model, nll_images, k, config.nll_batch_size, min(k, config.nll_chunk))
            for k in config.iwae_ks}

    if wanted("iwae"):
        for name, values in timed("iwae_k", iwae_bounds).items():
            metrics[name] = values.double().mean().item()
            arrays[f"image_{name}"] = per_image(values)

    if "ais" in config.likelihood and wanted("ais"):
        metrics.update(timed("ais", lambda: ais_metrics(
            model, nll_images[:config.ais_images], config, seed, arrays, log)))
    if config.bdmc_images and wanted("bdmc"):
        metrics.update(timed("bdmc", lambda: bdmc_metrics(model, config, seed, data.device, log)))

    keep = min(config.latent_points, len(images))
    latents = None
    if wanted("latents"):
        latents = timed("latents", lambda: latent_statistics(model, images, config.batch_size))
        metrics.update(active_unit_metrics(model, latents["mean_variance"]))
        metrics["test_mse"] = latents["mse"]
        arrays["kl_per_dim"] = latents["kl_per_dim"].numpy()
        arrays["latent_means"] = latents["means"][:keep].numpy()
        if data.test.labels is not None:
            arrays["labels"] = data.test.labels[:keep].cpu().numpy().astype(np.int64)

    if data.test.factors is not None and wanted("factors"):
        means = latents["means"] if latents is not None else posterior_means(
            model, images, config.batch_size)
        factors = data.test.factors.cpu()
        arrays["factors"] = factors[:keep].numpy()
        metrics.update(timed("factors", lambda: factor_metrics(
            means, factors, data.factor_names, seed)))
        arrays["traversals"] = traversals(model, images[:1], config.traversal_steps).numpy()

    if data.grid is not None and config.disentanglement and wanted("disentanglement"):
        metrics.update(timed("disentanglement", lambda: disentanglement_metrics(
            model, data, config, seed, arrays)))

    if samples is not None and wanted("samples"):
        metrics.update(timed("samples", lambda: sample_metrics(model, data, samples, config, seed)))

    if wanted("images"):
        arrays.update(report_images(model, data, config, seed))
    metrics["eval_seconds"] = sum(timed.seconds.values())
    return metrics, arrays


def per_image(values: Tensor) -> np.ndarray:
    """Per-image values as stored in a run's arrays: float32 on the CPU."""
    return values.float().cpu().numpy()


def nll_metrics(sampled: ImportanceSampling, dimensions: int) -> dict[str, float]:
    """`test_nll` and its standard error across images, `test_bpd`, the NLL from a tenth of the
    samples and its gap to `test_nll`, and the effective sample size (mean, 5th percentile)."""
    mean_log_px, standard_error = mean_and_standard_error(sampled.log_px)
    nll_tenth = -sampled.log_px_tenth.double().mean().item()
    ess = sampled.ess.double()
    return {
        "test_nll": -mean_log_px,
        "test_nll_se": standard_error,
        "test_bpd": -mean_log_px / (dimensions * math.log(2)),
        "test_nll_k_tenth": nll_tenth,
        "nll_k_gap": nll_tenth + mean_log_px,
        "ess_mean": ess.mean().item(),
        "ess_p5": torch.quantile(ess, 0.05).item(),
    }


def ais_config(config: EvalConfig) -> AISConfig:
    return AISConfig(steps=config.ais_steps, chains=config.ais_chains,
                     leapfrog=config.ais_leapfrog, start=config.ais_start)


def ais_metrics(model: VAE, images: Tensor, config: EvalConfig, seed: int,
                arrays: dict[str, np.ndarray], log: Callable[[str], None]) -> dict[str, float]:
    """`test_nll_ais` and `ais_acceptance` on `images` (per image in `image_log_px_ais`);
    nothing, with a log line saying why, for a model AIS does not support."""
    problem = refusal(model)
    if problem:
        log(f"  ais: skipped: {problem}")
        return {}
    generator = torch.Generator(device=images.device).manual_seed(seed)
    result = ais_log_likelihood(model, images, ais_config(config), generator=generator)
    arrays["image_log_px_ais"] = per_image(result.log_px)
    return {"test_nll_ais": -result.log_px.double().mean().item(),
            "ais_acceptance": result.acceptance.double().nanmean().item()}


def bdmc_metrics(model: VAE, config: EvalConfig, seed: int, device: str | torch.device,
                 log: Callable[[str], None]) -> dict[str, float]:
    """Means over `bdmc_images` simulated images of the BDMC lower and upper bounds of log p(x),
    and their gap; nothing, with a log line saying why, for a model BDMC does not support."""
    problem = refusal(model, simulating=True)
    if problem:
        log(f"  bdmc: skipped: {problem}")
        return {}
    generator = torch.Generator(device=device).manual_seed(seed)
    result = bdmc(model, config.bdmc_images, ais_config(config), generator=generator)
    lower, upper = result.lower.double().mean().item(), result.upper.double().mean().item()
    return {"bdmc_lower": lower, "bdmc_upper": upper, "bdmc_gap": upper - lower}


def posterior_means(model: VAE, images: Tensor, batch_size: int) -> Tensor:
    """E_q[z|x] of every image and every stochastic layer, bottom first: (N, Σ d_l), on the
    CPU. Upper layers are taken at the means of the layers below."""
    with torch.inference_mode():
        return torch.cat([torch.cat(model.posterior_means(batch), -1).cpu()
                          for batch in images.split(batch_size)])


def latent_statistics(model: VAE, images: Tensor, batch_size: int) -> dict:
    """Posterior means of every layer (N, Σ d_l), their variance across images per unit, the
    mean KL per unit and the per-pixel reconstruction error at the posterior mean."""
    with torch.inference_mode():
        means, kl, squared_error = [], [], 0.0
        for batch in images.split(batch_size):
            posterior = model.posterior(batch)  # encoded once for the means and the KL
            layer_means = model.posterior_means(batch, posterior)
            means.append(torch.cat(layer_means, -1).cpu())
            kl.append(model.kl_per_dim(batch, posterior).double().sum(0).cpu())
            reconstruction = model.decode_mean(layer_means[0])
            squared_error += (reconstruction - batch).double().pow(2).sum().item()
        all_means = torch.cat(means)
        return {
            "means": all_means,
            "mean_variance": all_means.double().var(0),
            "kl_per_dim": (torch.stack(kl).sum(0) / len(images)).float(),
            "mse": squared_error / images.numel(),
        }


def active_unit_metrics(model: VAE, mean_variance: Tensor) -> dict[str, float]:
    """`active_units` over every stochastic layer (of `latent_dim` units in all), and per layer
    (`active_units_z1`, ...) when there is more than one."""
    active = mean_variance > ACTIVE_UNIT_THRESHOLD
    metrics = {"active_units": float(active.sum()), "latent_dim": float(len(active))}
    if model.layers > 1:
        for layer, units in enumerate(active.split(model.latent_dims), 1):
            metrics[f"active_units_z{layer}"] = float(units.sum())
    return metrics


def factor_metrics(latent_means: Tensor, factors: Tensor, factor_names: tuple[str, ...],
                   seed: int) -> dict[str, float]:
    """A linear probe's held-out R² per factor, from the test images' posterior means."""
    scores = linear_probe_r2(latent_means, factors, seed=seed)
    return {f"probe_r2_{name}": score for name, score in zip(factor_names, scores)}


def grid_encoder(model: VAE, data: ImageData, generator: torch.Generator,
                 batch_size: int) -> Callable[[np.ndarray], np.ndarray]:
    """The representation the disentanglement metrics score: factor indices `(N, F)` on the
    data's grid -> posterior means of every layer `(N, Σ d_l)` float64 of their images,
    binarised as the test images are (a fresh draw from `generator`) where the data are."""

    def encode(indices: np.ndarray) -> np.ndarray:
        codes = []
        with torch.inference_mode():
            for part in np.array_split(indices, max(1, -(-len(indices) // batch_size))):
                pixels = torch.from_numpy(data.grid.images(part)).to(data.device)
                images = pixels.float().div_(255)
                if data.binarize != "none":
                    images = bernoulli(images, generator)
                codes.append(torch.cat(model.posterior_means(images), -1).double().cpu())
        return torch.cat(codes).numpy()

    return encode


def disentanglement_metrics(model: VAE, data: ImageData, config: EvalConfig, seed: int,
                            arrays: dict[str, np.ndarray]) -> dict[str, float]:
    """The metrics of `config.disentanglement` from images drawn from the data's factor grid,
    as disentanglement_lib computes them (`vae_zoo.metrics.factors`), each with its own random
    stream (seeded with `seed` and the metric's place in `DISENTANGLEMENT_METRICS`) so that its
    value does not depend on which others ran. `arrays["factor_mi"]` keeps the mutual
    information of each code with each factor over the factor's entropy `(L, F)`, from MIG's
    points, to label traversals."""
    metrics: dict[str, float] = {}
    with warnings.catch_warnings():
        # scikit-learn's logistic regressions (BetaVAE, explicitness) stop at their default
        # 100 iterations on separable votes, as disentanglement_lib's settings have them do.
        warnings.simplefilter("ignore", ConvergenceWarning)
        for metric in config.disentanglement:
            disentanglement_metric(metric, model, data, config, seed, metrics, arrays)
    return metrics


def disentanglement_metric(metric: str, model: VAE, data: ImageData, config: EvalConfig,
                           seed: int, metrics: dict[str, float],
                           arrays: dict[str, np.ndarray]) -> None:
    """One metric of `disentanglement_metrics`, added to `metrics` (MIG also to `arrays`)."""
    grid = data.grid
    rng = np.random.default_rng([seed, DISENTANGLEMENT_METRICS.index(metric)])
    generator = torch.Generator(device=data.device).manual_seed(int(rng.integers(2**62)))
    encode = grid_encoder(model, data, generator, config.batch_size)
    if metric == "beta_vae":
        metrics.update(beta_vae_score(
            encode, grid.sizes, rng, batch_size=config.factor_batch,
            num_train=config.factor_votes, num_eval=config.factor_eval_votes))
        return
    if metric == "factor_vae":
        metrics.update(factor_vae_score(
            encode, grid.sizes, rng, batch_size=config.factor_batch,
            num_train=config.factor_votes, num_eval=config.factor_eval_votes,
            num_variance_estimate=config.factor_variance_points,
            threshold=config.factor_vae_threshold))
        return
    train_factors = grid.sample(config.factor_points, rng)
    train_codes = encode(train_factors)
    if metric == "mig":
        metrics["mig"] = mutual_information_gap(train_codes, train_factors, bins=config.mig_bins)
        arrays["factor_mi"] = normalised_mutual_information(
            train_codes, train_factors, bins=config.mig_bins).astype(np.float32)
        return
    test_factors = grid.sample(config.factor_test_points, rng)
    test_codes = encode(test_factors)
    if metric == "dci":
        metrics.update(dci(train_codes, train_factors, test_codes, test_factors,
                           seed=int(rng.integers(2**31)), trees=config.dci_trees))
    elif metric == "sap":
        metrics["sap"] = sap_score(train_codes, train_factors, test_codes, test_factors)
    else:
        metrics.update(modularity_explicitness(train_codes, train_factors, test_codes,
                                               test_factors, bins=config.mig_bins))


def draw_samples(model: VAE, data: ImageData, count: int, generator: torch.Generator) -> Tensor:
    """`count` images from the model in the data's own space: x ~ p(x|z) for binarised data (as
    the real test images are binary), the decoder mean for grey-level data."""
    with torch.inference_mode():
        like = torch.empty(0, device=data.device)  # the samples' dtype and device
        means = model.sample(count, generator=generator, like=like).clamp(0, 1)
        if data.binarize == "none":
            return means
        return bernoulli(means, generator)


@dataclass(frozen=True)
class SampleReference:
    """What the sample metrics compare against, the same for every model of a dataset: the test
    images' features and the scores of held-out real images against them (`sample_reference`)."""

    feature_net: torch.nn.Module
    real_features: Tensor  # (count, F)
    metrics: dict[str, float]  # <name>_ref and <name>_ref_sd of REFERENCE_SCORES, ref_draws

    # The scores averaged over the reference draws.
    REFERENCE_SCORES = ("fid", "kid", "precision", "recall")

    @property
    def count(self) -> int:
        return len(self.real_features)


def sample_reference(feature_net: torch.nn.Module, data: ImageData, config: EvalConfig,
                     draws: int = 5) -> SampleReference:
    """Features of the first `count` test images, and the sample metrics of held-out real
    images against them, drawn several times, so that a model's numbers have a scale (in 64
    dimensions real-against-real precision and recall are well below 1) and a spread.

    The held-out images are the validation images followed by the training images (those
    binarised once, with the training split's seed, where the data are binarised dynamically,
    as the test images are); draw d is their d-th run of `count` consecutive images, so the
    draws are disjoint from each other and from the test images, and the first ones are images
    no model trained on. `count` = min(fid_samples, test images, held-out images // 2) and there
    are min(`draws`, held-out images // count) >= 2 draws. Metrics: `fid_ref`, `kid_ref`,
    `precision_ref`, `recall_ref`, the mean over draws of each draw's `fid`, `kid`, `precision`
    and `recall` (`sample_scores`, its KID subsets seeded with the draw's index);
    `fid_ref_sd`, `kid_ref_sd`, `precision_ref_sd`, `recall_ref_sd`, their sample standard
    deviation over draws (divisor draws - 1); `ref_draws`, the number of draws."""
    held_out = len(data.val) + len(data.train)
    count = min(config.fid_samples, len(data.test), held_out // 2)
    draws = min(draws, held_out // count)
    device = feature_device(feature_net)
    real = extract_features(feature_net, data.test.first_images(count).to(device))
    train_pixels = data.train.pixels[:max(0, draws * count - len(data.val))]
    if data.binarize == "dynamic":
        train_pixels = binarize_fixed(train_pixels, "train")
    pixels = torch.cat([data.val.pixels[:draws * count], train_pixels])  # (draws * count, ...)
    scores = [sample_scores(real, extract_features(feature_net, images.float().div(255).to(
        device)), k=config.pr_neighbours, seed=draw)
        for draw, images in enumerate(pixels.split(count))]
    metrics = {"ref_draws": float(draws)}
    for name in SampleReference.REFERENCE_SCORES:
        values = torch.tensor([score[name] for score in scores], dtype=torch.float64)
        metrics[f"{name}_ref"] = values.mean().item()
        metrics[f"{name}_ref_sd"] = values.std().item()
    return SampleReference(feature_net, real, metrics)


def sample_metrics(model: VAE, data: ImageData, reference: SampleReference,
                   config: EvalConfig, seed: int) -> dict[str, float]:
    """FID, KID (`kid`, `kid_std`), precision and recall of `reference.count` model samples
    against the test set, in the feature space of the dataset's classifier (`sample_scores`,
    KID subsets drawn with `seed`), beside the reference's scores of held-out real images."""
    generator = torch.Generator(device=data.device).manual_seed(seed)
    samples = torch.cat([draw_samples(model, data, len(part), generator)
                         for part in torch.arange(reference.count).split(config.batch_size)])
    net = reference.feature_net
    fake = extract_features(net, samples.to(feature_device(net)))
    return {**sample_scores(reference.real_features, fake, k=config.pr_neighbours, seed=seed),
            **reference.metrics}


def feature_device(net: torch.nn.Module) -> torch.device:
    return next(net.parameters()).device


def traversals(model: VAE, image: Tensor, steps: int) -> Tensor:
    """Decoder means as each dimension of the top layer's posterior mean for one image is swept
    over [-3, 3] with the others fixed, decoded through the means of the layers below:
    (top latent, steps, C, H, W)."""
    with torch.inference_mode():
        code = model.posterior_means(image)[-1][0]  # (top latent,)
        size = len(code)
        values = torch.linspace(-3, 3, steps, device=code.device)
        codes = code.repeat(size, steps, 1)  # (latent, steps, latent)
        dims = torch.arange(size, device=code.device)
        codes[dims, :, dims] = values
        return model.decode_mean(model.descend(codes, sample=False)).clamp(0, 1).float().cpu()


def report_images(model: VAE, data: ImageData, config: EvalConfig,
                  seed: int) -> dict[str, np.ndarray]:
    """Decoder means of prior samples, and test images with their reconstructions."""
    with torch.inference_mode():
        generator = torch.Generator(device=data.device).manual_seed(seed)
        count = min(config.grid_images, len(data.test))
        originals = data.test.first_images(count)
        reconstructions = model.decode_mean(model.posterior(originals).mean)
        samples = model.sample(config.grid_images, generator=generator, like=originals)

        def as_array(images: Tensor) -> np.ndarray:
            return images.clamp(0, 1).float().cpu().numpy()

        return {"samples": as_array(samples), "originals": as_array(originals),
                "reconstructions": as_array(reconstructions)}
