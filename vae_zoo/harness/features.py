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
from pathlib import Path

import torch
from torch import Tensor

from vae_zoo.data import ImageData
from vae_zoo.data.batches import binarize_fixed
from vae_zoo.metrics.samples import FeatureNet, load_or_train_feature_net

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


def feature_net_for(data: ImageData, cache_root: Path, device: str) -> tuple[FeatureNet, dict]:
    """The dataset's cached feature network (trained on a miss; one process trains at a time)."""
    train, test = data.train, data.test
    if train.labels is not None:
        train_labels, test_labels, classes = train.labels, test.labels, data.num_classes
    else:
        train_labels = factor_classes(train.factors, train.factors)
        test_labels = factor_classes(test.factors, train.factors)
        classes = FACTOR_BINS**2
    train_images = train.images if data.binarize != "dynamic" else binarize_fixed(train.images)
    cache_dir = Path(cache_root) / "features"
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = f"{data.name}-{data.fingerprint()}"
    with open(cache_dir / f".{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return load_or_train_feature_net(
            cache_dir, key, train_images.to(device), train_labels.to(device),
            test.images.to(device), test_labels.to(device), classes,
            seed=FEATURE_SEED, device=device)
