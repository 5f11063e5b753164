"""Write the outcome of the last `mutmut run` as Markdown (`make mutants` → docs/mutants.md).

Every mutant that no test killed is listed with its diff. A survivor is either *explained* — it
matches an entry of EQUIVALENT below, which says why the change cannot alter a reported number —
or *unexplained*, and then this script exits 1: write the test that kills it, or, when it truly
cannot change a number, add it to EQUIVALENT with the reason.

An entry matches on the module and the changed line's text before and after (whitespace
stripped), not on mutmut's mutant number, so it keeps matching when code above it moves.

Usage: python tests/mutants_report.py [OUTPUT.md]   (run from the repository root, after
`mutmut run`)
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

MUTMUT = [sys.executable, "-m", "mutmut"]

DEVICE = ("device placement: on the CPU, where the tests run, every tensor is on the one device; "
          "on a GPU a tensor on the wrong device is an error that stops the run, never a "
          "different number")
DTYPE = ("a dtype the tensor has already: every model, image, latent and feature the harness "
         "makes is float32, so casting to float32 or taking the float32 default changes nothing")
BATCHING = ("how many images go through the network at once, in eval mode without gradients: "
            "each image's output does not depend on the others in its batch")
BLOCKS = ("how many rows of the distance matrix are computed at once (bounds memory); every row "
          "is computed whole whichever block it falls in (tested point by point in "
          "test_precision_recall_in_blocks_matches_the_definition_point_by_point)")

VALIDATION = ("torch.distributions' argument checks: they can raise on an invalid parameter, "
              "never change a value; every parameter here is valid by construction")
ZERO_GRAD = ("gradients zeroed instead of set to None before the next backward pass: the same "
             "gradients and the same Adam step")
DETERMINISM = ("torch's deterministic-algorithm switch: the feature net's CPU kernels are "
               "deterministic either way (its runs are bit-identical with the switch off), and "
               "warn_only only decides whether a missing deterministic kernel warns or raises")
# The spellings of validate_args=False in torch.distributions calls, line before/after.
VALIDATE_ARGS = [
    (module, before.format(flag="validate_args=False"), before.format(flag=flag))
    for module, before in [
        ("vae_zoo/likelihoods.py", "{flag})"),
        ("vae_zoo/likelihoods.py",
         "return Normal(mean, self.log_scale.exp(), {flag}).log_prob(x)"),
    ]
    for flag in ("validate_args=None", "validate_args=True", "")
]

UNUSED_DEFAULT = ("a default the harness never uses: evaluate passes its configured sizes "
                  "(tested in test_evaluate_passes_its_settings_to_the_estimators), which only "
                  "decide how many images and samples are computed at once")
SEEDED_GROUP = ("report_images runs only inside evaluate, which seeds the global random stream "
                "with the run's seed before each metric group: samples drawn from the global "
                "stream repeat with the seed just as those of the seeded generator do (tested: "
                "the report's sample grid repeats whatever the global state before)")
ENCODED_ONCE = ("the batch is encoded once and its posterior handed on; without the posterior "
                "the method encodes the same batch again (the same means and KL), and with it "
                "the batch itself is not read")

# (module file, line before, line after, why no reported number can change)
EQUIVALENT: list[tuple[str, str, str, str]] = [
    # ---- objectives
    ("vae_zoo/objectives.py",
     "below = kl_per_dim.mean(0) < s.free_bits  # (d,)",
     "below = kl_per_dim.mean(0) <= s.free_bits  # (d,)",
     "differs only when a dimension's batch-mean KL equals λ exactly; then the batch's loss "
     "(its mean over images) is the same either way: Σ_i λ = Σ_i KL_i"),
    ("vae_zoo/objectives.py",
     "penalty = torch.where(below, torch.full_like(kl_per_dim, s.free_bits), kl_per_dim).sum(-1)",
     "penalty = torch.where(below, torch.full_like(kl_per_dim, s.free_bits), kl_per_dim).sum(+1)",
     "the tensor is (batch, d): dimension 1 is dimension -1"),
    ("vae_zoo/objectives.py",
     "log_qz_given_x = base.log_prob(z).sum(-1)",
     "log_qz_given_x = base.log_prob(z).sum(+1)",
     "the tensor is (batch, d): dimension 1 is dimension -1"),
    ("vae_zoo/objectives.py",
     "combined = s.beta * log_w.mean(0) + (1 - s.beta) * log_mean_exp(log_w, 0)",
     "combined = s.beta * log_w.mean(0) + (1 - s.beta) * log_mean_exp(log_w, )",
     "log_mean_exp's default dimension is 0"),
    ("vae_zoo/objectives.py",
     "return dip_vae(out, s, include_posterior_variance=False)",
     "return dip_vae(out, s, include_posterior_variance=None)",
     "None is false like False: the same branch"),
    ("vae_zoo/objectives.py", "bound = log_mean_exp(log_w, 0)", "bound = log_mean_exp(log_w, )",
     "log_mean_exp's default dimension is 0"),
    ("vae_zoo/objectives.py",
     'return {"loss": -log_mean_exp(log_w, 0), "surrogate": -out.bound_surrogate(log_w),',
     'return {"loss": -log_mean_exp(log_w, ), "surrogate": -out.bound_surrogate(log_w),',
     "log_mean_exp's default dimension is 0"),
    ("vae_zoo/estimators.py", "return log_mean_exp(log_w, 0)", "return log_mean_exp(log_w, )",
     "log_mean_exp's default dimension is 0"),
    ("vae_zoo/evaluate.py",
     'means = latents["means"] if latents is not None else posterior_means(',
     'means = latents["means"] if (latents is not None) and False else posterior_means(',
     "the factors group then encodes the test images again: posterior means are deterministic, "
     "so the same means (tested: factor metrics alone equal those after the latents group)"),
    # ---- likelihoods
    ("vae_zoo/likelihoods.py", "small = size < 1e-3", "small = size <= 1e-3",
     "at |η| = 1e-3 the series and the closed form agree to 1e-13 (tested)"),
    ("vae_zoo/likelihoods.py", "right = (upper + lower) > 0", "right = (upper + lower) >= 0",
     "which side of the logistic log(σ(u) - σ(l)) is computed on: both sides give the same "
     "value; the side only guards against cancellation far in a tail, not at 0"),
    ("vae_zoo/likelihoods.py", "right = (upper + lower) > 0", "right = (upper + lower) > 1",
     "which side of the logistic log(σ(u) - σ(l)) is computed on: for (u + l) in (0, 1] both "
     "sigmoids are near ½ and both sides are exact to float precision"),
    ("vae_zoo/likelihoods.py",
     "interior = log_high + torch.log(-torch.expm1(torch.clamp(log_low - log_high, max=-1e-12)))",
     "interior = log_high + torch.log(-torch.expm1(torch.clamp(log_low - log_high, max=+1e-12)))",
     "a guard for a bin whose mass underflows (log_low == log_high), which needs a scale over "
     "1e9 bin widths; a bin's log_low - log_high is otherwise far below -1e-12"),
    ("vae_zoo/likelihoods.py",
     "return torch.where(x < half_bin, first, torch.where(x > 1 - half_bin, last, interior))",
     "return torch.where(x <= half_bin, first, torch.where(x > 1 - half_bin, last, interior))",
     "pixels are on the grid k/255, never at half a bin (1/510)"),
    ("vae_zoo/likelihoods.py",
     "return torch.where(x < half_bin, first, torch.where(x > 1 - half_bin, last, interior))",
     "return torch.where(x < half_bin, first, torch.where(x >= 1 - half_bin, last, interior))",
     "pixels are on the grid k/255, never at 1 - 1/510"),
    # ---- priors
    ("vae_zoo/priors.py",
     "return means[chosen] + torch.exp(0.5 * log_vars[chosen]) * noise",
     "return means[chosen] - torch.exp(0.5 * log_vars[chosen]) * noise",
     "the noise is N(0, I), symmetric: μ - σε has the same distribution as μ + σε"),
    ("vae_zoo/priors.py",
     "means, log_vars, log_weights = (t.to(like.device) for t in self.components())",
     "means, log_vars, log_weights = (t.to(None) for t in self.components())",
     DEVICE),
    ("vae_zoo/priors.py",
     "noise = torch.randn(count, self.latent_dim, generator=generator, device=like.device,",
     "noise = torch.randn(count, self.latent_dim, generator=generator, device=None,", DEVICE),
    ("vae_zoo/priors.py",
     "noise = torch.randn(count, self.latent_dim, generator=generator, device=like.device, / "
     "dtype=like.dtype)",
     "noise = torch.randn(count, self.latent_dim, generator=generator, dtype=like.dtype)",
     DEVICE),
    ("vae_zoo/priors.py", "dtype=like.dtype)", "dtype=None)", DTYPE),
    ("vae_zoo/priors.py", "dtype=like.dtype)", ")", DTYPE),
    ("vae_zoo/priors.py",
     "return torch.randn(count, self.latent_dim, generator=generator, device=like.device,",
     "return torch.randn(count, self.latent_dim, generator=generator, device=None,", DEVICE),
    ("vae_zoo/priors.py",
     "return torch.randn(count, self.latent_dim, generator=generator, device=like.device, / "
     "dtype=like.dtype)",
     "return torch.randn(count, self.latent_dim, generator=generator, dtype=like.dtype)",
     DEVICE),
    # ---- evaluation
    ("vae_zoo/evaluate.py", "device = feature_device(feature_net)", "device = None", DEVICE),
    ("vae_zoo/evaluate.py",
     "real = extract_features(feature_net, data.test.first_images(count).to(device))",
     "real = extract_features(feature_net, data.test.first_images(count).to(None))", DEVICE),
    ("vae_zoo/evaluate.py",
     "held_out = extract_features(feature_net, data.val.first_images(count).to(device))",
     "held_out = extract_features(feature_net, data.val.first_images(count).to(None))", DEVICE),
    ("vae_zoo/evaluate.py",
     "generator = torch.Generator(device=data.device).manual_seed(seed)",
     "generator = torch.Generator(device=None).manual_seed(seed)", DEVICE),
    ("vae_zoo/evaluate.py", "fake = extract_features(net, samples.to(feature_device(net)))",
     "fake = extract_features(net, samples.to(None))", DEVICE),
    ("vae_zoo/evaluate.py",
     "return torch.cat([torch.cat(model.posterior_means(batch), -1).cpu()",
     "return torch.cat([torch.cat(model.posterior_means(batch), +1).cpu()",
     "the layers' means are (batch, d_l): dimension 1 is dimension -1"),
    ("vae_zoo/evaluate.py", "means.append(torch.cat(layer_means, -1).cpu())",
     "means.append(torch.cat(layer_means, +1).cpu())",
     "the layers' means are (batch, d_l): dimension 1 is dimension -1"),
    *[("vae_zoo/evaluate.py", before, after, ENCODED_ONCE) for before, after in [
        ("posterior = model.posterior(batch)  # encoded once for the means and the KL",
         "posterior = None  # encoded once for the means and the KL"),
        ("layer_means = model.posterior_means(batch, posterior)",
         "layer_means = model.posterior_means(batch, None)"),
        ("layer_means = model.posterior_means(batch, posterior)",
         "layer_means = model.posterior_means(batch, )"),
        ("layer_means = model.posterior_means(batch, posterior)",
         "layer_means = model.posterior_means(None, posterior)"),
        ("kl.append(model.kl_per_dim(batch, posterior).double().sum(0).cpu())",
         "kl.append(model.kl_per_dim(batch, None).double().sum(0).cpu())"),
        ("kl.append(model.kl_per_dim(batch, posterior).double().sum(0).cpu())",
         "kl.append(model.kl_per_dim(batch, ).double().sum(0).cpu())"),
    ]],
    ("vae_zoo/evaluate.py",
     "kl.append(model.kl_per_dim(batch, posterior).double().sum(0).cpu())",
     "kl.append(model.kl_per_dim(None, posterior).double().sum(0).cpu())", ENCODED_ONCE),
    ("vae_zoo/evaluate.py",
     "like = torch.empty(0, device=data.device)  # the samples' dtype and device",
     "like = torch.empty(0, device=None)  # the samples' dtype and device", DEVICE),
    ("vae_zoo/evaluate.py",
     "like = torch.empty(0, device=data.device)  # the samples' dtype and device",
     "like = torch.empty(0, )  # the samples' dtype and device", DEVICE),
    ("vae_zoo/evaluate.py",
     "like = torch.empty(0, device=data.device)  # the samples' dtype and device",
     "like = torch.empty(1, device=data.device)  # the samples' dtype and device",
     "`like` only carries the samples' dtype and device; its size is never read"),
    *[("vae_zoo/evaluate.py", before, after, DEVICE) for before, after in [
        ("values = torch.linspace(-3, 3, steps, device=code.device)",
         "values = torch.linspace(-3, 3, steps, device=None)"),
        ("values = torch.linspace(-3, 3, steps, device=code.device)",
         "values = torch.linspace(-3, 3, steps, )"),
        ("dims = torch.arange(size, device=code.device)", "dims = torch.arange(size, device=None)"),
        ("dims = torch.arange(size, device=code.device)", "dims = torch.arange(size, )"),
    ]],
    *[("vae_zoo/evaluate.py", before, after, SEEDED_GROUP) for before, after in [
        ("generator = torch.Generator(device=data.device).manual_seed(seed)", "generator = None"),
        ("samples = model.sample(config.grid_images, generator=generator, like=originals)",
         "samples = model.sample(config.grid_images, generator=None, like=originals)"),
        ("samples = model.sample(config.grid_images, generator=generator, like=originals)",
         "samples = model.sample(config.grid_images, like=originals)"),
    ]],
    # ---- sample metrics
    ("vae_zoo/metrics/samples.py", "device = next(net.parameters()).device", "device = None",
     DEVICE),
    ("vae_zoo/metrics/samples.py",
     "predicted = _batched(net.logits, images, device, batch_size).argmax(dim=1)",
     "predicted = _batched(net.logits, images, None, batch_size).argmax(dim=1)", DEVICE),
    ("vae_zoo/metrics/samples.py", "return _batched(net, images, device, batch_size)",
     "return _batched(net, images, None, batch_size)", DEVICE),
    ("vae_zoo/metrics/samples.py",
     "net_call(images[start : start + batch_size].to(device=device, dtype=torch.float32)).cpu()",
     "net_call(images[start : start + batch_size].to(device=None, dtype=torch.float32)).cpu()",
     DEVICE),
    ("vae_zoo/metrics/samples.py",
     "net_call(images[start : start + batch_size].to(device=device, dtype=torch.float32)).cpu()",
     "net_call(images[start : start + batch_size].to(dtype=torch.float32)).cpu()", DEVICE),
    ("vae_zoo/metrics/samples.py",
     "net_call(images[start : start + batch_size].to(device=device, dtype=torch.float32)).cpu()",
     "net_call(images[start : start + batch_size].to(device=device, dtype=None)).cpu()", DTYPE),
    ("vae_zoo/metrics/samples.py",
     "net_call(images[start : start + batch_size].to(device=device, dtype=torch.float32)).cpu()",
     "net_call(images[start : start + batch_size].to(device=device, )).cpu()", DTYPE),
    ("vae_zoo/metrics/samples.py",
     "def extract_features(net: nn.Module, images: Tensor, batch_size: int = 1000) -> Tensor:",
     "def extract_features(net: nn.Module, images: Tensor, batch_size: int = 1001) -> Tensor:",
     BATCHING),
    ("vae_zoo/metrics/samples.py",
     "net: FeatureNet, images: Tensor, labels: Tensor, batch_size: int = 1000",
     "net: FeatureNet, images: Tensor, labels: Tensor, batch_size: int = 1001", BATCHING),
    ("vae_zoo/metrics/samples.py", "seed: int = 0,", "seed: int = 1,",
     "a default the harness never uses: it passes the feature net's seed (FEATURE_SEED)"),
    ("vae_zoo/metrics/samples.py",
     "rows_per_block = max(1, DISTANCE_BLOCK_ENTRIES // features.shape[0])",
     "rows_per_block = max(2, DISTANCE_BLOCK_ENTRIES // features.shape[0])", BLOCKS),
    ("vae_zoo/metrics/samples.py",
     "rows_per_block = max(1, DISTANCE_BLOCK_ENTRIES // features.shape[0])",
     "rows_per_block = max(1, DISTANCE_BLOCK_ENTRIES // features.shape[1])", BLOCKS),
    ("vae_zoo/metrics/samples.py",
     "rows_per_block = max(1, DISTANCE_BLOCK_ENTRIES // centres.shape[0])",
     "rows_per_block = max(2, DISTANCE_BLOCK_ENTRIES // centres.shape[0])", BLOCKS),
    ("vae_zoo/metrics/samples.py",
     "rows_per_block = max(1, DISTANCE_BLOCK_ENTRIES // centres.shape[0])",
     "rows_per_block = max(1, DISTANCE_BLOCK_ENTRIES // centres.shape[1])", BLOCKS),
    ("vae_zoo/metrics/samples.py",
     "radii.append(distances.topk(k + 1, dim=1, largest=False).values[:, k])",
     "radii.append(distances.topk(k + 1, largest=False).values[:, k])",
     "the distances are (rows, N): topk's default dimension, the last, is dimension 1"),
    # ---- argument validation, zeroing gradients, devices (every module)
    *[(module, before, after, VALIDATION) for module, before, after in VALIDATE_ARGS],
    ("vae_zoo/objectives.py", "self.optimizer.zero_grad(set_to_none=True)",
     "self.optimizer.zero_grad(set_to_none=None)", ZERO_GRAD),
    ("vae_zoo/objectives.py", "self.optimizer.zero_grad(set_to_none=True)",
     "self.optimizer.zero_grad(set_to_none=False)", ZERO_GRAD),
    ("vae_zoo/metrics/samples.py", "optimiser.zero_grad(set_to_none=True)",
     "optimiser.zero_grad(set_to_none=None)", ZERO_GRAD),
    ("vae_zoo/metrics/samples.py", "optimiser.zero_grad(set_to_none=True)",
     "optimiser.zero_grad(set_to_none=False)", ZERO_GRAD),
    ("vae_zoo/objectives.py", "dtype=z.dtype, device=z.device)", "dtype=None, device=z.device)",
     DTYPE),
    ("vae_zoo/objectives.py", "dtype=z.dtype, device=z.device)", "device=z.device)", DTYPE),
    ("vae_zoo/objectives.py", "dtype=z.dtype, device=z.device)", "dtype=z.dtype, device=None)",
     DEVICE),
    ("vae_zoo/objectives.py", "dtype=z.dtype, device=z.device)", "dtype=z.dtype, )", DEVICE),
    ("vae_zoo/objectives.py",
     "log_marginals = torch.logsumexp(matrix + log_weights.unsqueeze(-1), dim=1).sum(-1)",
     "log_marginals = torch.logsumexp(matrix + log_weights.unsqueeze(-1), dim=1).sum(+1)",
     "the tensor is (batch, d): dimension 1 is dimension -1"),
    ("vae_zoo/objectives.py", "return self.net(z).squeeze(-1)", "return self.net(z).squeeze(+1)",
     "the logits are (batch, 1): dimension 1 is dimension -1"),
    ("vae_zoo/objectives.py",
     "targets = torch.cat([torch.ones(len(z)), torch.zeros(len(z))]).to(logits)",
     "targets = torch.cat([torch.ones(len(z)), torch.zeros(len(z))]).to(None)", DTYPE),
    ("vae_zoo/objectives.py",
     "order = torch.argsort(torch.rand(z.shape, device=z.device), dim=0)",
     "order = torch.argsort(torch.rand(z.shape, device=None), dim=0)", DEVICE),
    ("vae_zoo/objectives.py",
     "order = torch.argsort(torch.rand(z.shape, device=z.device), dim=0)",
     "order = torch.argsort(torch.rand(z.shape, ), dim=0)", DEVICE),
    ("vae_zoo/objectives.py", "latent_dim: int = 0):", "latent_dim: int = 1):",
     "the default serves objectives without an auxiliary network, which never read it"),
    ("vae_zoo/objectives.py", "self.name = name", "self.name = None",
     "the name is kept for display; every term comes from `spec`"),
    ("vae_zoo/likelihoods.py",
     "noise = torch.rand(params.shape, device=params.device, dtype=params.dtype)",
     "noise = torch.rand(params.shape, device=None, dtype=params.dtype)", DEVICE),
    ("vae_zoo/likelihoods.py",
     "noise = torch.rand(params.shape, device=params.device, dtype=params.dtype)",
     "noise = torch.rand(params.shape, dtype=params.dtype)", DEVICE),
    ("vae_zoo/likelihoods.py",
     "noise = torch.rand(params.shape, device=params.device, dtype=params.dtype)",
     "noise = torch.rand(params.shape, device=params.device, dtype=None)", DTYPE),
    ("vae_zoo/likelihoods.py",
     "noise = torch.rand(params.shape, device=params.device, dtype=params.dtype)",
     "noise = torch.rand(params.shape, device=params.device, )", DTYPE),
    ("vae_zoo/priors.py", "self.top_posterior: Callable | None = None",
     "self.top_posterior: Callable | None = \"\"",
     "before `attach` the prior cannot be used either way (an error, not a number); the model "
     "attaches its encoder when it is built"),
    ("vae_zoo/evaluate.py",
     'arrays["traversals"] = traversals(model, images[:1], config.traversal_steps).numpy()',
     'arrays["traversals"] = traversals(model, images[:2], config.traversal_steps).numpy()',
     "traversals sweep around the first image's code; a second image would be encoded and "
     "ignored"),
    ("vae_zoo/metrics/factors.py", "codes = np.empty(values.shape, dtype=np.int64)",
     "codes = np.empty(values.shape, dtype=None)",
     "bin indices stored as floats are the same labels to mutual_info_score"),
    ("vae_zoo/metrics/factors.py", "codes = np.empty(values.shape, dtype=np.int64)",
     "codes = np.empty(values.shape, )",
     "bin indices stored as floats are the same labels to mutual_info_score"),
    ("vae_zoo/metrics/samples.py", "with torch.random.fork_rng(devices=[]):",
     "with torch.random.fork_rng(devices=None):",
     "which CUDA generators to save and restore: none exist on the CPU; on a GPU the feature "
     "net's draws come from its own seeded generators either way"),
    ("vae_zoo/metrics/samples.py", "torch.use_deterministic_algorithms(True, warn_only=True)",
     "torch.use_deterministic_algorithms(True, )", DETERMINISM),
    ("vae_zoo/metrics/samples.py", "torch.use_deterministic_algorithms(True, warn_only=True)",
     "torch.use_deterministic_algorithms(True, warn_only=False)", DETERMINISM),
    ("vae_zoo/metrics/samples.py", "torch.use_deterministic_algorithms(True, warn_only=True)",
     "torch.use_deterministic_algorithms(False, warn_only=True)", DETERMINISM),
    ("vae_zoo/metrics/samples.py",
     "torch.use_deterministic_algorithms(was_deterministic, warn_only=was_warn_only)",
     "torch.use_deterministic_algorithms(was_deterministic, )", DETERMINISM),
    *[("vae_zoo/metrics/samples.py", before, after, DEVICE) for before, after in [
        ("images = images.to(device=device, dtype=torch.float32)  # (N, C, H, W)",
         "images = images.to(device=None, dtype=torch.float32)  # (N, C, H, W)"),
        ("images = images.to(device=device, dtype=torch.float32)  # (N, C, H, W)",
         "images = images.to(dtype=torch.float32)  # (N, C, H, W)"),
        ("labels = labels.to(device=device, dtype=torch.long)  # (N,)",
         "labels = labels.to(device=None, dtype=torch.long)  # (N,)"),
        ("labels = labels.to(device=device, dtype=torch.long)  # (N,)",
         "labels = labels.to(dtype=torch.long)  # (N,)"),
        ("net.to(device).train()", "net.to(None).train()"),
        ("order = torch.randperm(num_images, generator=shuffle).to(device)",
         "order = torch.randperm(num_images, generator=shuffle).to(None)"),
    ]],
    *[("vae_zoo/metrics/samples.py", before, after, DTYPE) for before, after in [
        ("images = images.to(device=device, dtype=torch.float32)  # (N, C, H, W)",
         "images = images.to(device=device, dtype=None)  # (N, C, H, W)"),
        ("images = images.to(device=device, dtype=torch.float32)  # (N, C, H, W)",
         "images = images.to(device=device, )  # (N, C, H, W)"),
        ("labels = labels.to(device=device, dtype=torch.long)  # (N,)",
         "labels = labels.to(device=device, dtype=None)  # (N,)"),
        ("labels = labels.to(device=device, dtype=torch.long)  # (N,)",
         "labels = labels.to(device=device, )  # (N,)"),
    ]],
    # ---- likelihood estimators
    ("vae_zoo/metrics/likelihood.py",
     "def elbo_terms(model: VAE, images: Tensor, batch_size: int = 1000) -> dict[str, Tensor]:",
     "def elbo_terms(model: VAE, images: Tensor, batch_size: int = 1001) -> dict[str, Tensor]:",
     UNUSED_DEFAULT),
    ("vae_zoo/metrics/likelihood.py", "out = model(batch, 1)", "out = model(batch, )",
     "the model's default is one sample of z"),
    ("vae_zoo/metrics/likelihood.py",
     "model: VAE, images: Tensor, samples: int, batch_size: int = 100, chunk: int = 100",
     "model: VAE, images: Tensor, samples: int, batch_size: int = 101, chunk: int = 100",
     UNUSED_DEFAULT),
    ("vae_zoo/metrics/likelihood.py",
     "model: VAE, images: Tensor, samples: int, batch_size: int = 100, chunk: int = 100",
     "model: VAE, images: Tensor, samples: int, batch_size: int = 100, chunk: int = 101",
     UNUSED_DEFAULT),
    ("vae_zoo/metrics/likelihood.py",
     "total = torch.full((len(batch),), -math.inf, device=batch.device)",
     "total = torch.full((len(batch),), -math.inf, device=None)", DEVICE),
    ("vae_zoo/metrics/likelihood.py",
     "total = torch.full((len(batch),), -math.inf, device=batch.device)",
     "total = torch.full((len(batch),), -math.inf, )", DEVICE),
    ("vae_zoo/objectives.py",
     "log_weights = torch.zeros(batch, batch, dtype=z.dtype, device=z.device)",
     "log_weights = torch.zeros(batch, dtype=z.dtype, device=z.device)",
     "zeros of shape (B,) broadcast over the (B, B) matrix as the (B, B) zeros do"),
    *[("vae_zoo/objectives.py",
       "log_weights = torch.zeros(batch, batch, dtype=z.dtype, device=z.device)", after, reason)
      for after, reason in [
          ("log_weights = torch.zeros(batch, batch, dtype=None, device=z.device)", DTYPE),
          ("log_weights = torch.zeros(batch, batch, device=z.device)", DTYPE),
          ("log_weights = torch.zeros(batch, batch, dtype=z.dtype, device=None)", DEVICE),
          ("log_weights = torch.zeros(batch, batch, dtype=z.dtype, )", DEVICE)]],
    # ---- the report's statistics
    ("vae_zoo/report/statistics.py",
     'values = finished[metric].dropna() if metric in finished else pd.Series(dtype=float)',
     'values = finished[metric].dropna() if metric in finished else pd.Series(dtype=None)',
     "an empty series either way: mean NaN, n 0"),
    ("vae_zoo/report/statistics.py",
     'row[f"{metric}_mean"] = values.mean() if len(values) else np.nan',
     'row[f"{metric}_mean"] = values.mean() if (len(values)) or True else np.nan',
     "pandas' mean of no values is NaN too"),
    ("vae_zoo/report/statistics.py",
     'row[f"{metric}_std"] = values.std(ddof=1) if len(values) > 1 else np.nan',
     'row[f"{metric}_std"] = values.std(ddof=1) if (len(values) > 1) or True else np.nan',
     "pandas' sample std (ddof=1) of fewer than two values is NaN too"),
    ("vae_zoo/report/statistics.py",
     'row[f"{metric}_std"] = values.std(ddof=1) if len(values) > 1 else np.nan',
     'row[f"{metric}_std"] = values.std(ddof=1) if len(values) >= 1 else np.nan',
     "pandas' sample std (ddof=1) of one value is NaN too"),
    ("vae_zoo/report/statistics.py", "return table.iloc[0:0]", "return table.iloc[1:0]",
     "both are the table's empty slice"),
    ("vae_zoo/report/statistics.py",
     'return rows.sort_values(column, ascending=direction == "min", kind="stable")',
     'return rows.sort_values(column, ascending=direction == "min", kind="STABLE")',
     "numpy reads the sort kind case-insensitively"),
]

KILLED = {"killed", "timeout", "segfault", "caught by type check"}


def mutmut(*args: str) -> str:
    done = subprocess.run([*MUTMUT, *args], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"mutmut {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return done.stdout


def statuses() -> dict[str, str]:
    """Every mutant of the last run: name → status (killed, survived, no tests, ...)."""
    found = {}
    for line in mutmut("results", "--all", "true").splitlines():
        match = re.match(r"\s*(\S+): (.+)$", line)
        if match:
            found[match.group(1)] = match.group(2).strip()
    return found


def changed_lines(diff: str) -> tuple[str, str, str]:
    """(module file, line before, line after) of a one-change mutant's diff."""
    path = re.search(r"^--- (\S+)", diff, re.M).group(1)
    before = [line[1:].strip() for line in diff.splitlines()
              if line.startswith("-") and not line.startswith("---")]
    after = [line[1:].strip() for line in diff.splitlines()
             if line.startswith("+") and not line.startswith("+++")]
    return path, " / ".join(before), " / ".join(after)


def explanation(path: str, before: str, after: str) -> str | None:
    for module, old, new, reason in EQUIVALENT:
        if path == module and before == old and after == new:
            return reason
    return None


def module_of(name: str) -> str:
    """`vae_zoo.objectives` of `vae_zoo.objectives.x_elbo__mutmut_3` (a function) or of
    `vae_zoo.priors.xǁVampPriorǁ__init____mutmut_1` (a method)."""
    return re.split(r"\.x(?:_|ǁ)", name, maxsplit=1)[0]


def main(output: Path) -> int:
    results = statuses()
    if not results:
        sys.exit("no mutmut results: run `mutmut run` first (make mutants)")
    per_module: dict[str, Counter] = {}
    explained, unexplained = [], []
    for name, status in sorted(results.items()):
        counts = per_module.setdefault(module_of(name), Counter())
        if status in KILLED:
            counts["killed"] += 1
            continue
        diff = mutmut("show", name).split("\n", 1)[1].strip()
        path, before, after = changed_lines(diff)
        reason = explanation(path, before, after)
        counts["equivalent" if reason else "unexplained"] += 1
        (explained if reason else unexplained).append((name, status, diff, reason))

    lines = ["# Mutation testing: the last `make mutants`", "",
             "Generated by `tests/mutants_report.py` from mutmut's results; how to read it: "
             "README, *Development*.", "",
             "| module | mutants | killed | equivalent (explained) | unexplained |",
             "|---|---:|---:|---:|---:|"]
    for module, counts in sorted(per_module.items()):
        lines.append(f"| `{module}` | {sum(counts.values())} | {counts['killed']} | "
                     f"{counts['equivalent']} | {counts['unexplained']} |")
    total = Counter()
    for counts in per_module.values():
        total.update(counts)
    lines.append(f"| **all** | {sum(total.values())} | {total['killed']} | "
                 f"{total['equivalent']} | {total['unexplained']} |")
    lines += ["", f"## Unexplained survivors ({len(unexplained)})", ""]
    lines += ["None: every mutant that could change a reported number is killed by a test."
              if not unexplained else
              "Each needs a test that kills it, or an entry in EQUIVALENT with its reason."]
    for name, status, diff, _ in unexplained:
        lines += ["", f"### `{name}` ({status})", "", "```diff", diff, "```"]
    lines += ["", f"## Equivalent survivors ({len(explained)})", "",
              "Changes no test can see because no reported number depends on them."]
    for name, status, diff, reason in explained:
        lines += ["", f"### `{name}` ({status})", "", f"Why harmless: {reason}", "",
                  "```diff", diff, "```"]
    output.write_text("\n".join(lines) + "\n")
    print(f"{sum(total.values())} mutants: {total['killed']} killed, {total['equivalent']} "
          f"equivalent, {total['unexplained']} unexplained → {output}")
    return 1 if unexplained else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/mutants.md")))
