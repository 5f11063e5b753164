"""Speed of the importance-sampled test NLL next to this machine's matrix-multiply rate.

Runs `importance_sampled_log_likelihood` for `mlp-vae` (the IWAE paper's MLP) with K samples per
image on Fashion-MNIST-sized test data, and prints images/s, the achieved GFLOP/s of its matrix
work (decoder and encoder layers), and the measured fp32 matmul rate of 2048x2048 products.

    .venv/bin/python benchmarks/perf/nll_speed.py [--images 10000] [--samples 1000]
                                                  [--batch-size 100] [--chunk 25]

The target: K = 1000 on 10,000 images in under 60 s on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from vae_zoo import zoo
from vae_zoo.metrics.likelihood import importance_sampled_log_likelihood


def matmul_gflops(size: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm up
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - started) / 1e9


def linear_flops(module: torch.nn.Module) -> int:
    """Multiply-adds of every Linear layer for one input row, counted as 2 FLOPs each."""
    return sum(2 * layer.in_features * layer.out_features for layer in module.modules()
               if isinstance(layer, torch.nn.Linear))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--chunk", type=int, default=25)
    args = parser.parse_args()

    torch.manual_seed(0)
    model, _ = zoo.build("mlp-vae", (1, 28, 28))
    model.eval()
    images = torch.bernoulli(torch.full((args.images, 1, 28, 28), 0.3))
    peak = matmul_gflops()
    started = time.perf_counter()
    importance_sampled_log_likelihood(model, images, args.samples, args.batch_size, args.chunk)
    seconds = time.perf_counter() - started
    flops = (args.images * args.samples * linear_flops(model.decoder)
             + args.images * linear_flops(model.encoder))
    achieved = flops / seconds / 1e9
    print(f"{torch.get_num_threads()} threads; K = {args.samples}, {args.images} images, "
          f"batch {args.batch_size}, chunk {args.chunk}")
    print(f"test_nll: {seconds:.1f} s, {args.images / seconds:.0f} images/s")
    print(f"matrix work: {flops / 1e12:.2f} TFLOP, {achieved:.0f} GFLOP/s achieved; "
          f"machine fp32 matmul (2048^2): {peak:.0f} GFLOP/s "
          f"({100 * achieved / peak:.0f} % of it)")
    print(f"bound from matrix work alone: {args.images / (flops / (peak * 1e9)):.0f} images/s")
    assert math.isfinite(seconds)


if __name__ == "__main__":
    main()
