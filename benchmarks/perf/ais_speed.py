"""Speed of the AIS log-likelihood estimate, with the importance-sampled one beside it.

Runs `ais_log_likelihood` on the first test images of Fashion-MNIST (dynamically binarised, as
the zoo trains on it) for `mlp-vae` (the IWAE paper's MLP), trained briefly first so that the
posterior is not the prior's, and prints the wall time, images/s, gradient evaluations/s, the
acceptance rate, and the test NLL by AIS next to importance sampling with K samples.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/perf/ais_speed.py [--images 100] [--chains 4]
        [--steps 500] [--leapfrog 10] [--epochs 1] [--is-samples 1000]

The target: 100 images, 4 chains, 500 intermediate distributions and 10 leapfrog steps in under
5 minutes on a 2-core CPU. All chains of all images run as one batch (images x chains rows).
"""

from __future__ import annotations

import argparse
import math
import os
import time

import torch

# The benchmark scripts' shared data: run as a script, this directory is on sys.path.
from common import fashion_mnist_sized

from vae_zoo import zoo
from vae_zoo.metrics.ais import AISConfig, ais_log_likelihood
from vae_zoo.metrics.likelihood import importance_sampled_log_likelihood, mean_and_standard_error
from vae_zoo.train import TrainConfig, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--leapfrog", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=1, help="training epochs (0: untrained)")
    parser.add_argument("--is-samples", type=int, default=1000)
    args = parser.parse_args()

    data = fashion_mnist_sized()
    torch.manual_seed(0)
    model, objective = zoo.build("mlp-vae", data.image_shape)
    if args.epochs:
        result = train(model, objective, data, TrainConfig(epochs=args.epochs), seed=0)
        print(f"trained {args.epochs} epoch(s) in {result.train_seconds:.0f} s")
    model.eval()
    images = data.test.images[:args.images]

    config = AISConfig(steps=args.steps, chains=args.chains, leapfrog=args.leapfrog,
                       batch_size=args.images)
    started = time.perf_counter()
    ais = ais_log_likelihood(model, images, config, generator=torch.Generator().manual_seed(0))
    seconds = time.perf_counter() - started
    passes = 1 + (args.steps - 1) * args.leapfrog  # batched gradient evaluations
    rows = args.images * args.chains
    # OpenMP threads slow down many times when other processes hold the cores: say how busy.
    print(f"{torch.get_num_threads()} threads (load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} cores); {args.images} images x {args.chains} chains, "
          f"{args.steps} intermediate distributions, {args.leapfrog} leapfrog steps")
    print(f"AIS: {seconds:.1f} s, {args.images / seconds:.2f} images/s, {passes} batched "
          f"gradient evaluations of {rows} rows ({passes / seconds:.0f}/s, "
          f"{passes * rows / seconds:.0f} per-chain gradients/s)")
    print(f"acceptance {ais.acceptance.mean():.3f}, final step size "
          f"{ais.step_sizes.mean():.4f} (mean over images)")

    torch.manual_seed(0)
    started = time.perf_counter()
    importance = importance_sampled_log_likelihood(model, images, args.is_samples)
    is_seconds = time.perf_counter() - started
    ais_nll, ais_se = mean_and_standard_error(-ais.log_px)
    is_nll, is_se = mean_and_standard_error(-importance)
    gap, gap_se = mean_and_standard_error(importance.double() - ais.log_px)
    print(f"test NLL by AIS: {ais_nll:.2f} ± {ais_se:.2f} nats; by IS with K = "
          f"{args.is_samples}: {is_nll:.2f} ± {is_se:.2f} ({is_seconds:.1f} s); "
          f"IS - AIS per image: {gap:.3f} ± {gap_se:.3f}")
    assert math.isfinite(seconds)


if __name__ == "__main__":
    main()
