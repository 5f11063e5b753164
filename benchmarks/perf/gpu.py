"""Training and test-NLL speed of zoo entries on a GPU, and from them a measured estimate of the
wall time of the `paper-iwae` suite.

Everything lives on the device (`data.to(device)`, the model moved there). For `mlp-vae`,
`iwae` and any entries named with --models, it measures:
- training steps/s and images/s of `vae_zoo.train.train` (batch 100, --epochs epochs), from its
  `train_seconds`: the training batches only, not the validation pass after each epoch;
- images/s of the test NLL by `importance_sampled_log_likelihood` with K = 5000 samples (the
  IWAE paper's test setting) on the first --nll-images test images.
Then it measures each distinct model of the suite the same way, built as the harness builds a
cell's model (`zoo.build(entry, image_shape, hyperparameters)`) and trained with the suite's
[train] settings (its batch size, optimiser and schedule) for one epoch of at most
--suite-train-images images, its NLL with the suite's [eval] K, batch and chunk on at most
--suite-nll-images test images, and estimates the suite's wall time, one cell at a time on one
device, as

    Σ over cells  (training images × epochs / training images/s  +  test images / NLL images/s).

The estimate leaves out the per-epoch validation passes, the other test metrics (ELBO,
IWAE bounds, active units, sample quality, ...), data loading and start-up. As the harness does,
it runs with deterministic algorithms and denormals flushed to zero. Training data is Fashion-MNIST,
or random 28x28 images where it is not installed: the same cost per image as the suite's MNIST.

    .venv/bin/python benchmarks/perf/gpu.py [--device cuda] [--epochs 1] [--models NAME ...]
        [--samples 5000] [--nll-images 2000] [--nll-batch-size 100] [--nll-chunk 1000]
        [--train-images N] [--suite paper-iwae] [--suite-train-images 20000]
        [--suite-nll-images 500]

With the defaults it is meant to finish well within 3 minutes on an H100 (an estimate from
the work it does; not yet timed there). A smoke test on a CPU:

    .venv/bin/python benchmarks/perf/gpu.py --device cpu --epochs 1 --train-images 2000 \\
        --nll-images 20 --samples 100
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass, replace

import torch
from common import fashion_mnist_sized, first_training_images  # this script's folder
from torch import Tensor

from vae_zoo import zoo
from vae_zoo.data import ImageData, split_sizes
from vae_zoo.harness.runner import configure_determinism, default_device
from vae_zoo.harness.suite import ModelSpec, Suite, load_suite
from vae_zoo.metrics.likelihood import importance_sampled_log_likelihood
from vae_zoo.train import TrainConfig, train

DEFAULT_MODELS = ("mlp-vae", "iwae")
SECONDS_PER_HOUR = 3600


@dataclass(frozen=True)
class NllSettings:
    samples: int  # K
    batch_size: int  # test images per batch
    chunk: int  # samples decoded at once


@dataclass(frozen=True)
class Speed:
    steps_per_second: float
    train_images_per_second: float
    nll_images_per_second: float
    nll: float  # mean test NLL of the trained model, nats (a sanity check)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(entry: str, hyperparameters: dict | None, data: ImageData, config: TrainConfig,
            test_images: Tensor, nll: NllSettings, seed: int = 0) -> Speed:
    """Train zoo entry `entry` on `data` (on its device) with `config` and time its training
    batches; then time the importance-sampled NLL of the trained model on `test_images`."""
    torch.manual_seed(seed)
    model, objective = zoo.build(entry, data.image_shape, hyperparameters)
    model.to(data.device)
    result = train(model, objective, data, config, seed=seed)  # synchronises every epoch
    steps = result.epochs_trained * math.ceil(len(data.train) / config.batch_size)

    synchronize(data.device)
    started = time.perf_counter()
    log_px = importance_sampled_log_likelihood(model, test_images, nll.samples, nll.batch_size,
                                               nll.chunk)
    synchronize(data.device)
    nll_seconds = time.perf_counter() - started
    return Speed(steps / result.train_seconds, result.images_per_second,
                 len(test_images) / nll_seconds, -log_px.double().mean().item())


def warm_up(data: ImageData, test_images: Tensor) -> None:
    """One short run, so that the first measurement does not pay for CUDA's start-up."""
    measure("mlp-vae", None, first_training_images(data, 1000),
            TrainConfig(epochs=1, batch_size=100, keep_checkpoints=False), test_images[:100],
            NllSettings(samples=100, batch_size=100, chunk=100))


def cpu_agreement(data: ImageData, test_images: Tensor, nll: NllSettings) -> str:
    """The test NLL of one trained `mlp-vae` computed on the device and on the CPU (same weights,
    same images, independent draws): their difference against its standard error."""
    torch.manual_seed(0)
    model, objective = zoo.build("mlp-vae", data.image_shape)
    model.to(data.device)
    train(model, objective, data, TrainConfig(epochs=1, keep_checkpoints=False), seed=0)
    on_device = importance_sampled_log_likelihood(model, test_images, nll.samples,
                                                  nll.batch_size, nll.chunk).double().cpu()
    on_cpu = importance_sampled_log_likelihood(model.cpu(), test_images.cpu(), nll.samples,
                                               nll.batch_size, nll.chunk).double()
    difference = on_device - on_cpu  # per image: paired
    standard_error = difference.std().item() / len(difference) ** 0.5
    return (f"test NLL of one mlp-vae on {len(test_images):,} images, K = {nll.samples}: "
            f"{data.device.type} {-on_device.mean().item():.4f}, cpu {-on_cpu.mean().item():.4f}, "
            f"difference {-difference.mean().item():+.4f} ± {standard_error:.4f} (paired "
            f"standard error; agreement: |difference| < 2 standard errors)")


# ---- the entries -------------------------------------------------------------------------------

def entry_table(speeds: dict[str, Speed], nll: NllSettings, test_count: int) -> str:
    lines = [f"| entry | train steps/s | train img/s | NLL img/s (K = {nll.samples}, batch "
             f"{nll.batch_size}, chunk {nll.chunk}) | NLL s per {test_count:,} test images | "
             "test NLL |", "|---|---|---|---|---|---|"]
    for name, speed in speeds.items():
        lines.append(f"| `{name}` | {speed.steps_per_second:,.0f} | "
                     f"{speed.train_images_per_second:,.0f} | "
                     f"{speed.nll_images_per_second:,.0f} | "
                     f"{test_count / speed.nll_images_per_second:,.1f} | {speed.nll:.2f} |")
    return "\n".join(lines)


# ---- the suite ---------------------------------------------------------------------------------

def model_key(spec: ModelSpec) -> str:
    """What a suite model is built and trained from: models with equal keys cost the same."""
    return json.dumps([spec.entry, spec.hyperparameters], sort_keys=True)


def suite_sized_validation(suite: Suite, data: ImageData) -> ImageData:
    """`data` with at most as many validation images as the suite's smallest validation split
    (the validation passes between epochs are not timed, but they take the script's time)."""
    val_count = min(split_sizes(dataset, options)[1]
                    for dataset, options in suite.datasets.items())
    if val_count >= len(data.val):
        return data
    return replace(data, val=data.val.select(torch.arange(val_count, device=data.device)))


def measure_suite(suite: Suite, data: ImageData, test_images: Tensor, train_images: int
                  ) -> dict[str, Speed]:
    """Speed of every model of `suite`, by name, trained with the suite's [train] settings for
    one epoch of `train_images` images and evaluated with its [eval] K, batch and chunk; models
    built and trained alike are measured once."""
    config = replace(suite.train, epochs=1, patience=0, keep_checkpoints=False)
    nll = NllSettings(suite.eval.nll_samples, suite.eval.nll_batch_size, suite.eval.nll_chunk)
    subset = suite_sized_validation(suite, first_training_images(data, train_images))
    measured: dict[str, Speed] = {}
    for spec in suite.models:
        if model_key(spec) not in measured:
            measured[model_key(spec)] = measure(spec.entry, spec.hyperparameters, subset, config,
                                                test_images, nll)
    return {spec.name: measured[model_key(spec)] for spec in suite.models}


def cell_hours(suite: Suite, dataset: str, speed: Speed) -> tuple[float, float]:
    """Hours of one cell of `dataset`: training (every epoch of the budget, no early stopping)
    and the test NLL."""
    options = suite.datasets[dataset]
    train_count, _, test_count = split_sizes(dataset, options)
    nll_count = min(suite.eval.nll_images, test_count) if suite.eval.nll_images else test_count
    train_seconds = train_count * suite.train.epochs / speed.train_images_per_second
    nll_seconds = nll_count / speed.nll_images_per_second
    return train_seconds / SECONDS_PER_HOUR, nll_seconds / SECONDS_PER_HOUR


def suite_table(suite: Suite, speeds: dict[str, Speed]) -> tuple[str, float]:
    """The per-model estimate as a markdown table, and the suite's total hours."""
    lines = ["| dataset | model | entry | k | batch | train steps/s | train img/s | "
             f"NLL img/s (K = {suite.eval.nll_samples}) | cells | train h per cell | "
             "NLL h per cell | hours |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    total = 0.0
    for dataset in suite.datasets:
        for spec in suite.models:
            speed = speeds[spec.name]
            train_hours, nll_hours = cell_hours(suite, dataset, speed)
            hours = len(suite.seeds) * (train_hours + nll_hours)
            total += hours
            lines.append(
                f"| {dataset} | {spec.name} | {spec.entry} | {spec.hyperparameters.get('k', '')} "
                f"| {suite.train.batch_size} | {speed.steps_per_second:,.0f} | "
                f"{speed.train_images_per_second:,.0f} | {speed.nll_images_per_second:,.0f} | "
                f"{len(suite.seeds)} | {train_hours:,.2f} | {nll_hours:,.3f} | {hours:,.2f} |")
    return "\n".join(lines), total


def describe_suite(suite: Suite, data: ImageData) -> None:
    for dataset, options in suite.datasets.items():
        train_count, _, test_count = split_sizes(dataset, options)
        print(f"suite {suite.name}: {dataset} ({train_count:,} training images per epoch, "
              f"{test_count:,} test images), {len(suite.models)} models x {len(suite.seeds)} "
              f"seed(s), {suite.train.epochs:,} epochs at batch {suite.train.batch_size}, "
              f"test NLL with K = {suite.eval.nll_samples:,}")
    print(f"measured on {data.name} images of shape {data.image_shape} standing in for the "
          "suite's datasets (same shape: same cost per image)")


# ---- main --------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=default_device())
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--models", nargs="*", default=[],
                        help=f"zoo entries to measure besides {', '.join(DEFAULT_MODELS)}")
    parser.add_argument("--samples", type=int, default=5000, help="K of the test NLL")
    parser.add_argument("--nll-images", type=int, default=2000, help="first N test images")
    parser.add_argument("--nll-batch-size", type=int, default=100)
    parser.add_argument("--nll-chunk", type=int, default=1000)
    parser.add_argument("--train-images", type=int, default=0,
                        help="train on the first N training images only (0: all)")
    parser.add_argument("--suite", default="paper-iwae", help="suite to estimate ('': none)")
    parser.add_argument("--suite-train-images", type=int, default=20000,
                        help="training images per measurement of a suite model (at most "
                             "--train-images)")
    parser.add_argument("--suite-nll-images", type=int, default=500,
                        help="test images per NLL measurement of a suite model (at most "
                             "--nll-images)")
    args = parser.parse_args()
    device = torch.device(args.device)
    configure_determinism(args.device)  # before CUDA starts: it sets cuBLAS's workspace
    torch.set_flush_denormal(True)  # as the harness runs every cell (runner.denormals_flushed)

    data = first_training_images(fashion_mnist_sized(), args.train_images).to(device)
    test_images = data.test.first_images(args.nll_images)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"{device} ({device_name}), torch {torch.__version__}, "
          f"{torch.get_num_threads()} CPU threads")
    print(f"{data.name}: {len(data.train):,} training images, {args.epochs} epoch(s) per "
          f"measurement; test NLL on {len(test_images):,} test images\n")
    warm_up(data, test_images)

    nll = NllSettings(args.samples, args.nll_batch_size, args.nll_chunk)
    config = TrainConfig(epochs=args.epochs, batch_size=100, keep_checkpoints=False)
    names = list(dict.fromkeys([*DEFAULT_MODELS, *args.models]))
    speeds = {name: measure(name, None, data, config, test_images, nll) for name in names}
    print(f"training: batch {config.batch_size}, Adam lr {config.learning_rate}\n")
    print(entry_table(speeds, nll, len(data.test)))
    print()
    print(cpu_agreement(data, test_images[:args.suite_nll_images], nll))

    if args.suite:
        suite = load_suite(args.suite)
        print()
        describe_suite(suite, data)
        suite_speeds = measure_suite(suite, data, test_images[:args.suite_nll_images],
                                     args.suite_train_images)
        table, total = suite_table(suite, suite_speeds)
        print(f"each model measured on {min(args.suite_train_images, len(data.train)):,} "
              f"training images (one epoch) and "
              f"{min(args.suite_nll_images, len(test_images)):,} test images\n")
        print(table)
        print(f"\nestimated wall time of suite {suite.name}: {total:,.1f} hours "
              f"({total / 24:,.1f} days), one cell at a time on one {device_name}; training and "
              "test NLL only (no validation passes, other metrics or start-up)")


if __name__ == "__main__":
    main()
