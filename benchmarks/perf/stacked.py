"""Training throughput of a cell's seeds trained one after the other against trained as one stack.

Both train S seeds of a zoo entry (default: the IWAE paper's MLP VAE, 784-200-200-50, tanh,
Bernoulli) with Adam, batch 100, on Fashion-MNIST-sized data with dynamic binarisation: S calls
of `vae_zoo.train.train`, and one of `vae_zoo.stacked.train_stacked`, which gives each seed the
same results. Time is the training batches' only (`train_seconds`, summed over the seeds; the
validation passes are not counted). The two alternate, so machine drift hits both.

    .venv/bin/python benchmarks/perf/stacked.py [--epochs 1] [--repeats 3] [--seeds 3]
        [--model mlp-vae] [--train-images N] [--threads N]

`--train-images N` trains on the first N training images, for a quick check. Prints images/s
(seed-images: S × training images per epoch) of each and the ratio stacked/sequential (the
target: >= 1.5 with 3 seeds on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import replace

import torch
from common import fashion_mnist_sized, first_training_images  # this script's folder

from vae_zoo.data import ImageData
from vae_zoo.stacked import build_seeds, train_stacked
from vae_zoo.train import TrainConfig, train


def images_per_second(results) -> float:
    """Seed-images trained per second of training time, over all seeds."""
    return (sum(result.train_images for result in results)
            / sum(result.train_seconds for result in results))


def sequential(entry: str, data: ImageData, config: TrainConfig, seeds: list[int]) -> float:
    models, objectives, rng_states = build_seeds(entry, data.image_shape, None, seeds)
    results = []
    for model, objective, seed, state in zip(models, objectives, seeds, rng_states, strict=True):
        torch.set_rng_state(state)  # where the runner's stream is after building
        results.append(train(model, objective, data, config, seed=seed))
    return images_per_second(results)


def stacked(entry: str, data: ImageData, config: TrainConfig, seeds: list[int]) -> float:
    models, objectives, rng_states = build_seeds(entry, data.image_shape, None, seeds)
    return images_per_second(train_stacked(models, objectives, data, config, seeds, rng_states))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--model", default="mlp-vae")
    parser.add_argument("--train-images", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = first_training_images(fashion_mnist_sized(), args.train_images)
    # A small validation split: its passes are not timed, only waited for.
    data = replace(data, val=data.val.select(torch.arange(min(1000, len(data.val)))))
    config = TrainConfig(epochs=args.epochs, batch_size=100)
    seeds = list(range(args.seeds))
    print(f"{args.model}, {args.seeds} seeds, {len(data.train)} training images, batch 100, "
          f"{args.epochs} epoch(s) per measurement, {torch.get_num_threads()} threads")
    one_by_one, together = [], []
    for repeat in range(args.repeats):
        one_by_one.append(sequential(args.model, data, config, seeds))
        together.append(stacked(args.model, data, config, seeds))
        print(f"  repeat {repeat + 1}: sequential {one_by_one[-1]:8.0f} images/s   "
              f"stacked {together[-1]:8.0f} images/s")
    sequential_median, stacked_median = statistics.median(one_by_one), statistics.median(together)
    print(f"sequential: {sequential_median:.0f} images/s (median)")
    print(f"stacked:    {stacked_median:.0f} images/s (median)")
    print(f"ratio stacked/sequential: {stacked_median / sequential_median:.2f} (target >= 1.50)")


if __name__ == "__main__":
    main()
