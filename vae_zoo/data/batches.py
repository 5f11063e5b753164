"""In-memory splits and the batches served from them.

A dataset lives on the training device as uint8 pixels (0..255), a quarter of the memory of
float32, and is converted to float32 in [0, 1] only where it is used: per training batch, or on
access to `Split.images`. Training batches are slices of a seeded permutation (no per-sample
Python), binarised as the dataset asks:
- `dynamic`: a fresh Bernoulli draw every batch (the IWAE paper's setting),
- `fixed`: one draw made once with a fixed seed,
- `none`: grey levels as they are.
Validation and test images are binarised once with a fixed seed whenever binarisation is on, so
every model is evaluated on the very same images. Each split has its own seed: image i of the
training, validation and test splits gets independent noise (one shared seed would give them
identical noise patterns and make held-out images look closer to training ones than they are).
A binarised split stores 0 or 255 per pixel, so its float images are exactly 0.0 or 1.0.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from vae_zoo.data.grid import FactorGrid

BINARIZE_MODES = ("dynamic", "fixed", "none")
# Options that say how to obtain the data, not what it is: left out of the fingerprint (and of
# run identities), so that e.g. `download = false` on an offline cluster finds the same cells.
LOADING_OPTIONS = ("download",)


def result_options(options: dict) -> dict:
    """The options that determine the data (all but `LOADING_OPTIONS`)."""
    return {key: value for key, value in options.items() if key not in LOADING_OPTIONS}
# The seed of each split's fixed binarisation: it belongs to the dataset, not to the run.
FIXED_BINARIZATION_SEEDS = {"train": 1234, "val": 1235, "test": 1236}


@dataclass
class Split:
    pixels: Tensor  # (n, C, H, W) uint8, 0..255
    labels: Tensor | None = None  # (n,) int64
    factors: Tensor | None = None  # (n, F) float32, the factors' values
    factor_indices: Tensor | None = None  # (n, F) int64, their indices on the grid (sprites)

    def __post_init__(self) -> None:
        if self.pixels.dtype != torch.uint8:
            raise TypeError(
                f"Split pixels must be uint8 (0..255), not {self.pixels.dtype}; quantise float "
                "images in [0, 1] with (images * 255).round().to(torch.uint8)"
            )

    @property
    def images(self) -> Tensor:
        """The pixels as float32 in [0, 1], (n, C, H, W), converted anew on every access on the
        pixels' device: keep the result rather than reading it inside a loop."""
        return self.pixels.float().div_(255)

    def first_images(self, count: int) -> Tensor:
        """`images[:count]`, converting only those."""
        return self.pixels[:count].float().div_(255)

    def __len__(self) -> int:
        return len(self.pixels)

    def select(self, index: Tensor) -> Split:
        def pick(values: Tensor | None) -> Tensor | None:
            return None if values is None else values[index]

        return Split(self.pixels[index], pick(self.labels), pick(self.factors),
                     pick(self.factor_indices))

    def to(self, device: torch.device | str) -> Split:
        def move(values: Tensor | None) -> Tensor | None:
            return None if values is None else values.to(device)

        return Split(self.pixels.to(device), move(self.labels), move(self.factors),
                     move(self.factor_indices))


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
    # The factors as a full grid any image can be drawn from (datasets with factors; the
    # disentanglement metrics draw from it). Determined by the name and options.
    grid: FactorGrid | None = None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.pixels.shape[1:])

    @property
    def device(self) -> torch.device:
        return self.train.pixels.device

    def to(self, device: torch.device | str) -> ImageData:
        return replace(
            self, train=self.train.to(device), val=self.val.to(device), test=self.test.to(device)
        )

    def fingerprint(self) -> str:
        """A short hash of the exact data every run sees, to tell datasets apart in run ids.

        It covers the name, the options (canonical JSON, without `LOADING_OPTIONS`) and, for
        each split, the shape and bytes of the uint8 pixels, the labels as little-endian int64,
        the factors as little-endian float32 and their grid indices as little-endian int64
        (where present): the bytes as stored, with no float conversion, so equal data hashes
        equally on every machine."""
        digest = hashlib.sha256(self.name.encode())
        options = result_options(self.options)
        digest.update(json.dumps(options, sort_keys=True, separators=(",", ":")).encode())
        for split_name, split in (("train", self.train), ("val", self.val), ("test", self.test)):
            fields = (("pixels", split.pixels, "u1"), ("labels", split.labels, "<i8"),
                      ("factors", split.factors, "<f4"),
                      ("factor_indices", split.factor_indices, "<i8"))
            for field_name, values, byte_order in fields:
                if values is None:
                    continue
                array = values.detach().cpu().contiguous().numpy().astype(byte_order, copy=False)
                # The field's name and shape delimit its bytes from the next field's.
                digest.update(f"{split_name}.{field_name}{list(array.shape)}".encode())
                digest.update(array)
        return digest.hexdigest()[:16]

    def train_batches(self, batch_size: int, generator: torch.Generator) -> Iterator[Tensor]:
        """One epoch of float32 training batches (batch, C, H, W) in [0, 1], sliced from a
        permutation drawn from `generator` and converted from the uint8 pixels per batch."""
        pixels = self.train.pixels
        order = torch.randperm(len(pixels), generator=generator, device=generator.device)
        order = order.to(pixels.device)
        for start in range(0, len(pixels), batch_size):
            batch = pixels[order[start : start + batch_size]].float().div_(255)
            if self.binarize == "dynamic":
                batch = bernoulli(batch, generator)
            yield batch


def bernoulli(probabilities: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """One Bernoulli draw per element, as `torch.bernoulli(probabilities, generator=...)`.

    Drawn as `uniform < p`, which is how torch.bernoulli draws on the CPU too (one uniform of the
    probabilities' dtype per element, in order): the very same values and generator state after
    (pinned by a test), at a third of the cost, because this PyTorch build's tensor-probability
    `bernoulli_` kernel is serial and slow (~6 ns per element). Dynamic binarisation draws one
    per pixel of every training batch.
    """
    uniform = torch.rand(probabilities.shape, generator=generator, dtype=probabilities.dtype,
                         device=probabilities.device)
    return (uniform < probabilities).to(probabilities.dtype)


def binarize_fixed(pixels: Tensor, split: str) -> Tensor:
    """One Bernoulli draw of every uint8 pixel, on with probability pixel / 255, with the fixed
    seed of `split` ("train", "val" or "test"); returns uint8 pixels of 0 or 255."""
    seed = FIXED_BINARIZATION_SEEDS[split]
    generator = torch.Generator(device=pixels.device).manual_seed(seed)
    draws = bernoulli(pixels.float() / 255, generator)
    return (draws * 255).to(torch.uint8)


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
    grid: FactorGrid | None = None,
) -> ImageData:
    """Carve a validation split from `train` with a fixed seed and apply the binarisation."""
    if binarize not in BINARIZE_MODES:
        raise ValueError(f"binarize must be one of {BINARIZE_MODES}, not {binarize!r}")
    if not 0 < val_size < len(train):
        raise ValueError(f"val_size must be between 1 and {len(train) - 1}, not {val_size}")
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(split_seed))
    val, train = train.select(order[:val_size]), train.select(order[val_size:])
    if binarize != "none":
        val = replace(val, pixels=binarize_fixed(val.pixels, "val"))
        test = replace(test, pixels=binarize_fixed(test.pixels, "test"))
    if binarize == "fixed":
        train = replace(train, pixels=binarize_fixed(train.pixels, "train"))
    return ImageData(
        name=name,
        train=train,
        val=val,
        test=test,
        binarize=binarize,
        factor_names=factor_names,
        num_classes=num_classes,
        options=dict(options or {}),
        grid=grid,
    )
