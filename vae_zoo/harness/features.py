"""The per-dataset feature network behind the sample-quality metrics, trained once and cached.

Each dataset gets a small classifier (`vae_zoo.metrics.samples.FeatureNet`) trained with a fixed
seed on its training images, in the same space as its test images (binarised once with the
dataset's fixed seed when the dataset is binarised), and cached under
`<results>/_cache/features/<dataset>-<fingerprint>.{pt,json}` with its test accuracy. Datasets
without class labels but with true factors (circles) are classified into a 3 × 3 grid of
(centre x, radius) bins.
"""

from __future__ import annotations

import fcntl
import io
import json
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch import Tensor

from vae_zoo.data import ImageData
from vae_zoo.data.batches import binarize_fixed
from vae_zoo.harness.identity import device_class
from vae_zoo.harness.store import write_atomic
from vae_zoo.metrics import samples
from vae_zoo.metrics.samples import TRAIN_BATCH_SIZE, FeatureNet, classifier_accuracy

FEATURE_SEED = 0
FACTOR_BINS = 3


def factor_classes(factors: Tensor, reference: Tensor) -> Tensor:
    """Classes from the first and last factor (circles: centre x and radius), each cut into
    FACTOR_BINS equal-width bins over the range of `reference`."""
    classes = torch.zeros(len(factors), dtype=torch.long)
    for column in (0, factors.shape[1] - 1):
        low, high = reference[:, column].min(), reference[:, column].max()
        bins = ((factors[:, column] - low) / (high - low) * FACTOR_BINS).long()
        classes = classes * FACTOR_BINS + bins.clamp(0, FACTOR_BINS - 1).cpu()
    return classes


def feature_net_for(data: ImageData, fingerprint: str, cache_root: Path,
                    device: str) -> tuple[FeatureNet, dict]:
    """The dataset's cached feature network (trained on a miss; one process trains at a time).

    `fingerprint` is `data.fingerprint()`, which the caller already has."""
    train, test = data.train, data.test
    if train.labels is not None:
        train_labels, test_labels, classes = train.labels, test.labels, data.num_classes
    else:
        train_labels = factor_classes(train.factors, train.factors)
        test_labels = factor_classes(test.factors, train.factors)
        classes = FACTOR_BINS**2
    if data.binarize == "dynamic":
        # Trained on one fixed draw, in the same space as the test images.
        train = replace(train, pixels=binarize_fixed(train.pixels, "train"))
    cache_dir = Path(cache_root) / "features"
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Trained on the device the cells evaluate on: the device class is part of their evaluation
    # identity, and FID depends on the network.
    key = f"{data.name}-{fingerprint}-{device_class(device)}"
    with open(cache_dir / f".{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return load_or_train_feature_net(
            cache_dir, key, train.images.to(device), train_labels.to(device),
            test.images.to(device), test_labels.to(device), classes,
            seed=FEATURE_SEED, device=device)


def load_or_train_feature_net(
    cache_dir: Path,
    key: str,
    train_images: Tensor,
    train_labels: Tensor,
    test_images: Tensor,
    test_labels: Tensor,
    num_classes: int,
    *,
    seed: int = 0,
    epochs: int | None = None,
    device: str | torch.device = "cpu",
) -> tuple[FeatureNet, dict]:
    """The cached feature net `cache_dir/<key>.pt`, or a newly trained one that is then cached.

    `key` must identify the training data (the caller builds it from the dataset name and a data
    fingerprint): a cached net is reused without looking at the images. On a miss the net is
    trained with `train_feature_net`, its accuracy on the test images is measured, and
    `<key>.json` (the info, for people) then `<key>.pt` (state dict, constructor args and info)
    are each written atomically. Returns the net in eval mode on `device` and the info dict, with
    `loaded_from_cache` added (not stored) saying which path was taken. `epochs=None` trains for
    the default of `train_feature_net`; `seed` and `epochs` are ignored on a hit.
    """
    cache_dir = Path(cache_dir)
    weights_path = cache_dir / f"{key}.pt"
    if weights_path.exists():
        checkpoint = torch.load(weights_path, map_location=device, weights_only=True)
        net = FeatureNet(**checkpoint["constructor_args"])
        asked = {"num_classes": num_classes, "in_channels": train_images.shape[1]}
        for name, value in asked.items():
            if getattr(net, name) != value:
                raise ValueError(
                    f"cached feature net {weights_path} has {name}={getattr(net, name)}, "
                    f"but the data has {value}"
                )
        net.load_state_dict(checkpoint["state_dict"])
        return net.to(device).eval(), {**checkpoint["info"], "loaded_from_cache": True}

    if epochs is None:
        epochs = samples.default_epochs(train_images.shape[0], TRAIN_BATCH_SIZE)
    started = time.perf_counter()
    net = samples.train_feature_net(train_images, train_labels, num_classes, seed=seed,
                                    epochs=epochs, batch_size=TRAIN_BATCH_SIZE, device=device)
    info = {
        "key": key,
        "num_classes": num_classes,
        "num_features": net.num_features,
        "seed": seed,
        "test_accuracy": classifier_accuracy(net, test_images, test_labels),
        "train_accuracy": classifier_accuracy(net, train_images, train_labels),
        "train_images": int(train_images.shape[0]),
        "test_images": int(test_images.shape[0]),
        "image_shape": list(train_images.shape[1:]),
        "epochs": epochs,
        "batch_size": TRAIN_BATCH_SIZE,
        "train_seconds": round(time.perf_counter() - started, 3),
        "torch": str(torch.__version__),
    }
    checkpoint = {
        "constructor_args": net.constructor_args(),
        "state_dict": {name: value.cpu() for name, value in net.state_dict().items()},
        "info": info,
    }
    weights = io.BytesIO()
    torch.save(checkpoint, weights)
    # The .pt is written last: its presence means the entry is complete.
    write_atomic(cache_dir / f"{key}.json", json.dumps(info, indent=2) + "\n")
    write_atomic(weights_path, weights.getvalue())
    return net, {**info, "loaded_from_cache": False}
