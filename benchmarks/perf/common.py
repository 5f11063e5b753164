"""What the performance scripts share: the data they measure on.

The scripts import it as `from common import ...` (a script's own folder is first on sys.path:
run them as paths, `.venv/bin/python benchmarks/perf/NAME.py`).
"""

from __future__ import annotations

from dataclasses import replace

import torch

from vae_zoo.data import ImageData, Split, load_dataset
from vae_zoo.data.batches import make_splits
from vae_zoo.errors import UserError


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


def first_training_images(data: ImageData, count: int | None) -> ImageData:
    """`data` with only its first `count` training images (all of them for None or 0)."""
    if not count or count >= len(data.train):
        return data
    return replace(data, train=data.train.select(torch.arange(count, device=data.device)))
