"""In-memory splits and the batches served from them.

A dataset lives on the training device as tensors. Training batches are slices of a seeded
permutation (no per-sample Python), binarised as the dataset asks:
- `dynamic`: a fresh Bernoulli draw every batch (the IWAE paper's setting),
- `fixed`: one draw made once with a fixed seed,
- `none`: grey levels as they are.
Validation and test images are binarised once with a fixed seed whenever binarisation is on, so
every model is evaluated on the very same images.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

BINARIZE_MODES = ("dynamic", "fixed", "none")
# The seed of every fixed binarisation: it belongs to the dataset, not to the run.
FIXED_BINARIZATION_SEED = 1234


@dataclass
class Split:
    images: Tensor  # (n, C, H, W) float32 in [0, 1]
    labels: Tensor | None = None  # (n,) int64
    factors: Tensor | None = None  # (n, F)

    def __len__(self) -> int:
        return len(self.images)

    def select(self, index: Tensor) -> Split:
        def pick(values: Tensor | None) -> Tensor | None:
            return None if values is None else values[index]

        return Split(self.images[index], pick(self.labels), pick(self.factors))

    def to(self, device: torch.device | str) -> Split:
        def move(values: Tensor | None) -> Tensor | None:
            return None if values is None else values.to(device)

        return Split(self.images.to(device), move(self.labels), move(self.factors))


@dataclass
class ImageData:
    """A dataset's fixed train / validation / test splits, held in memory."""

    name: str
    train: Split
    val: Split
    test: Split
    binarize: str
    factor_names: tuple[str, ...] = ()
    num_classes: int = 0
    options: dict = field(default_factory=dict)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.images.shape[1:])

    @property
    def device(self) -> torch.device:
        return self.train.images.device

    def to(self, device: torch.device | str) -> ImageData:
        return replace(
            self, train=self.train.to(device), val=self.val.to(device), test=self.test.to(device)
        )

    def fingerprint(self) -> str:
        """A short hash of the exact tensors every run sees, to tell datasets apart in run ids."""
        digest = hashlib.sha256(self.name.encode())
        for split in (self.train, self.val, self.test):
            for values in (split.images, split.labels, split.factors):
                if values is not None:
                    digest.update(values.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()[:16]

    def train_batches(self, batch_size: int, generator: torch.Generator) -> Iterator[Tensor]:
        """One epoch of training batches, sliced from a permutation drawn from `generator`."""
        images = self.train.images
        order = torch.randperm(len(images), generator=generator, device=generator.device)
        order = order.to(images.device)
        for start in range(0, len(images), batch_size):
            batch = images[order[start : start + batch_size]]
            if self.binarize == "dynamic":
                batch = torch.bernoulli(batch, generator=generator)
            yield batch


def binarize_fixed(images: Tensor) -> Tensor:
    """One Bernoulli draw of every pixel with the dataset's fixed seed."""
    generator = torch.Generator(device=images.device).manual_seed(FIXED_BINARIZATION_SEED)
    return torch.bernoulli(images, generator=generator)


def make_splits(
    name: str,
    train: Split,
    test: Split,
    *,
    val_size: int,
    binarize: str,
    split_seed: int = 0,
    factor_names: tuple[str, ...] = (),
    num_classes: int = 0,
    options: dict | None = None,
) -> ImageData:
    """Carve a validation split from `train` with a fixed seed and apply the binarisation."""
    if binarize not in BINARIZE_MODES:
        raise ValueError(f"binarize must be one of {BINARIZE_MODES}, not {binarize!r}")
    if not 0 < val_size < len(train):
        raise ValueError(f"val_size must be between 1 and {len(train) - 1}, not {val_size}")
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(split_seed))
    val, train = train.select(order[:val_size]), train.select(order[val_size:])
    if binarize != "none":
        val = replace(val, images=binarize_fixed(val.images))
        test = replace(test, images=binarize_fixed(test.images))
    if binarize == "fixed":
        train = replace(train, images=binarize_fixed(train.images))
    return ImageData(
        name=name,
        train=train,
        val=val,
        test=test,
        binarize=binarize,
        factor_names=factor_names,
        num_classes=num_classes,
        options=dict(options or {}),
    )
