"""Training throughput of the project's loop against a bare PyTorch loop, in one process.

Both train the IWAE paper's MLP VAE (784-200-200-50, tanh, Bernoulli) with Adam, batch 100, on
Fashion-MNIST-sized data with dynamic binarisation. The project's loop is `vae_zoo.train.train`
(its validation pass is not counted: `train_seconds` covers the training batches only). The bare
loop is the pytorch/examples VAE written inline. They alternate, so machine drift hits both.

    .venv/bin/python benchmarks/perf/throughput.py [--epochs 1] [--repeats 3] [--threads N]

Prints images/s of each and their ratio (the target: project / bare >= 0.8).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from vae_zoo import zoo
from vae_zoo.data import ImageData, Split, load_dataset
from vae_zoo.data.batches import make_splits
from vae_zoo.errors import UserError
from vae_zoo.train import TrainConfig, train


def fashion_mnist_sized() -> ImageData:
    """Fashion-MNIST when it is available offline, else random images of the same size."""
    try:
        return load_dataset("fashion-mnist", {"download": False})
    except UserError:
        print("Fashion-MNIST not found: using random 28x28 images of the same count")
        generator = torch.Generator().manual_seed(0)
        train_images = torch.randint(0, 256, (60000, 1, 28, 28), generator=generator,
                                     dtype=torch.uint8)
        test_images = torch.randint(0, 256, (10000, 1, 28, 28), generator=generator,
                                    dtype=torch.uint8)
        return make_splits("random", Split(train_images), Split(test_images), val_size=10000,
                           binarize="dynamic")


def project_loop(data: ImageData, epochs: int, seed: int) -> float:
    torch.manual_seed(seed)
    model, objective = zoo.build("mlp-vae", data.image_shape)
    result = train(model, objective, data, TrainConfig(epochs=epochs, batch_size=100), seed=seed)
    return result.images_per_second


def bare_loop(data: ImageData, epochs: int, seed: int) -> float:
    torch.manual_seed(seed)
    encoder = nn.Sequential(nn.Linear(784, 200), nn.Tanh(), nn.Linear(200, 200), nn.Tanh(),
                            nn.Linear(200, 100))
    decoder = nn.Sequential(nn.Linear(50, 200), nn.Tanh(), nn.Linear(200, 200), nn.Tanh(),
                            nn.Linear(200, 784))
    optimizer = torch.optim.Adam([*encoder.parameters(), *decoder.parameters()], lr=1e-3)
    images = data.train.images.flatten(1)
    generator = torch.Generator().manual_seed(seed)
    started = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=generator)
        for start in range(0, len(images), 100):
            x = torch.bernoulli(images[order[start:start + 100]], generator=generator)
            mean, log_var = encoder(x).chunk(2, dim=-1)
            z = mean + torch.randn_like(mean) * torch.exp(0.5 * log_var)
            recon = F.binary_cross_entropy_with_logits(decoder(z), x, reduction="sum")
            kl = -0.5 * torch.sum(1 + log_var - mean.pow(2) - log_var.exp())
            loss = (recon + kl) / len(x)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return epochs * len(images) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = fashion_mnist_sized()
    print(f"{len(data.train)} training images, batch 100, {args.epochs} epoch(s) per measurement, "
          f"{torch.get_num_threads()} threads")
    project, bare = [], []
    for repeat in range(args.repeats):
        project.append(project_loop(data, args.epochs, repeat))
        bare.append(bare_loop(data, args.epochs, repeat))
        print(f"  repeat {repeat + 1}: project {project[-1]:8.0f} images/s   "
              f"bare {bare[-1]:8.0f} images/s")
    project_median, bare_median = statistics.median(project), statistics.median(bare)
    print(f"project loop: {project_median:.0f} images/s (median)")
    print(f"bare loop:    {bare_median:.0f} images/s (median)")
    print(f"ratio project/bare: {project_median / bare_median:.2f} (target >= 0.80)")


if __name__ == "__main__":
    main()
