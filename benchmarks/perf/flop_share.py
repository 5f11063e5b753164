"""Every zoo entry's training speed against its FLOP share of the bare loop's.

An entry that does F times the bare loop's arithmetic per image should train at 1/F of its
speed: that is its FLOP share. Issue 16's target: every entry within 10 % of it (measured speed
/ share >= 0.9). For each entry this script counts the floating-point operations of one
training step (batch 100: the objective's forward pass, the backward pass, and the auxiliary
network's step where there is one) with `torch.utils.flop_counter.FlopCounterMode`, which counts
matrix products and convolutions (the arithmetic that dominates; elementwise work is not
counted), and times `vae_zoo.train.train` on the first training images of Fashion-MNIST
(`train_seconds`: training batches only). The bare loop is `table.py`'s (the IWAE paper's MLP,
pytorch/examples style), timed on the same images; each repeat runs the bare loop, then every
entry, then the bare loop again, and an entry is compared with the mean of the two bare runs
around it. Printed per entry: GFLOP per step, FLOP share, images/s, measured/bare, and
measured/share (medians over repeats).

    .venv/bin/python benchmarks/perf/flop_share.py [--entries mlp-vae iwae ...]
        [--train-images 10000] [--epochs 1] [--repeats 3] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import replace

import torch
from common import fashion_mnist_sized, first_training_images  # this script's folder
from table import BATCH_SIZE, LEARNING_RATE, bare_vae_like, cpu_model, initial_mlp_vae, train_bare
from torch.utils.flop_counter import FlopCounterMode

from vae_zoo import zoo
from vae_zoo.data import ImageData
from vae_zoo.harness.runner import configure_determinism
from vae_zoo.objectives import TrainingContext
from vae_zoo.train import TrainConfig, backward, train

TARGET = 0.9  # measured speed / FLOP share


def step_flops_bare(image_shape: tuple[int, int, int], images: torch.Tensor) -> int:
    """FLOPs of one step of the bare loop on a batch (its `train_bare`, one batch)."""
    vae = bare_vae_like(initial_mlp_vae(image_shape, 0))
    with FlopCounterMode(display=False) as counter:
        train_bare(vae, images[:BATCH_SIZE], epochs=1, seed=0)
    return counter.get_total_flops()


def step_flops(entry: str, data: ImageData) -> int:
    """FLOPs of one training step of `entry` on one batch, as `train` takes it."""
    torch.manual_seed(0)
    model, objective = zoo.build(entry, data.image_shape)
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    generator = torch.Generator().manual_seed(0)
    batch = next(iter(data.train_batches(BATCH_SIZE, generator)))
    steps = -(-len(data.train) // BATCH_SIZE)
    model.train()
    with FlopCounterMode(display=False) as counter:
        terms = objective(model, batch, TrainingContext(0, steps, len(data.train)))
        optimizer.zero_grad(set_to_none=True)
        backward(model, terms)
        optimizer.step()
        objective.update_auxiliary()
    return counter.get_total_flops()


def train_speed(entry: str, data: ImageData, epochs: int, seed: int) -> float:
    torch.manual_seed(seed)
    model, objective = zoo.build(entry, data.image_shape)
    config = TrainConfig(epochs=epochs, batch_size=BATCH_SIZE, learning_rate=LEARNING_RATE,
                         select="last", keep_checkpoints=False)
    return train(model, objective, data, config, seed=seed).images_per_second


def bare_speed(data: ImageData, epochs: int, seed: int) -> float:
    vae = bare_vae_like(initial_mlp_vae(data.image_shape, seed))
    return train_bare(vae, data.train.images.flatten(1), epochs, seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", nargs="+", default=list(zoo.ZOO))
    parser.add_argument("--train-images", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    configure_determinism("cpu")
    torch.set_flush_denormal(True)  # as the harness runs every cell

    full = fashion_mnist_sized()
    data = first_training_images(full, args.train_images)
    # The validation passes between epochs are not timed; a small set keeps them short.
    data = replace(data, val=data.val.select(torch.arange(1000)))
    print(f"{cpu_model()}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
          f"{data.name}, {len(data.train)} training images, batch {BATCH_SIZE}, "
          f"{args.epochs} epoch(s), {args.repeats} repeat(s)")

    bare_flops = step_flops_bare(data.image_shape, data.train.images.flatten(1))
    flops = {entry: step_flops(entry, data) for entry in args.entries}
    ratios: dict[str, list[float]] = {entry: [] for entry in args.entries}
    speeds: dict[str, list[float]] = {entry: [] for entry in args.entries}
    bare_speeds = []
    for seed in range(args.repeats):
        before = bare_speed(data, args.epochs, seed)
        bare_speeds.append(before)
        for entry in args.entries:
            speed = train_speed(entry, data, args.epochs, seed)
            after = bare_speed(data, args.epochs, seed)
            speeds[entry].append(speed)
            ratios[entry].append(speed / ((before + after) / 2))
            before = after
        print(f"  repeat {seed + 1} done (bare loop {bare_speeds[-1]:,.0f} img/s)", flush=True)

    print(f"\nbare loop: {bare_flops / 1e9:.3f} GFLOP per step, "
          f"{statistics.median(bare_speeds):,.0f} img/s\n")
    print("| entry | GFLOP/step | FLOP share | img/s | vs bare loop | vs its share |")
    print("|---|---|---|---|---|---|")
    missed = []
    for entry in args.entries:
        share = bare_flops / flops[entry]
        ratio = statistics.median(ratios[entry])
        efficiency = ratio / share
        if efficiency < TARGET:
            missed.append(entry)
        print(f"| `{entry}` | {flops[entry] / 1e9:.3f} | {share:.2f} | "
              f"{statistics.median(speeds[entry]):,.0f} | {ratio:.2f} | {efficiency:.2f} |")
    print(f"\nwithin 10 % of the FLOP share (>= {TARGET}): "
          f"{len(args.entries) - len(missed)} of {len(args.entries)}"
          + (f"; below: {', '.join(missed)}" if missed else ""))


if __name__ == "__main__":
    main()
