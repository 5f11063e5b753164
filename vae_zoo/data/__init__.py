"""Datasets by name: each loads into memory as uint8 pixels with fixed train / validation / test
splits (see `vae_zoo.data.batches` for how they become float32 batches).

`DATASETS` maps a name to its options and their defaults; a suite may override any of them.
Each dataset also knows, without loading anything, the image shape and split sizes its options
give and which options it cannot serve (`check_options`), so a suite is checked before any
data is loaded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from vae_zoo.data import sources, sprites
from vae_zoo.data.batches import BINARIZE_MODES, ImageData, Split, make_splits, result_options
from vae_zoo.settings import machine_memory

__all__ = ["DATASETS", "BINARIZE_MODES", "ImageData", "Split", "load_dataset", "result_options",
           "check_options", "image_shape", "split_sizes"]

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    description: str
    defaults: dict
    load_source: Callable[..., sources.Source]
    # From the options alone: the image shape (C, H, W), the sizes of the train, validation and
    # test splits, and why the options cannot make the data (or None; given the machine's
    # memory in bytes too).
    image_shape: Callable[..., tuple[int, int, int]]
    split_sizes: Callable[..., tuple[int, int, int]]
    problem: Callable[..., str | None]
    has_factors: bool = False  # true factors of variation come with the images


COMMON_DEFAULTS = {"binarize": "dynamic"}

DIGITS_IMAGES = 1797  # scikit-learn's load_digits
IDX_TRAIN_IMAGES, IDX_TEST_IMAGES = 60_000, 10_000  # MNIST's and Fashion-MNIST's files
CIRCLE_SIDES = (8, 256)  # pixels per side, from the digits' 8
# Rendering circles holds three float64 arrays of every pixel at once (see `sources.circles`),
# and they may take at most a quarter of the machine's memory.
CIRCLE_RENDER_BYTES_PER_PIXEL = 3 * 8
CIRCLE_MEMORY_SHARE = 4


def empty_split(**sizes: int) -> str | None:
    """The first split size option below 1, as a problem, or None."""
    for key, size in sizes.items():
        if size < 1:
            return f"{key} = {size}; each split needs at least 1 image"
    return None


def circles_problem(train_size: int, val_size: int, test_size: int, side: int, memory: int,
                    **_) -> str | None:
    """Circles are rendered, any number of them: each split needs an image, the side must be
    sane and the rendering must fit well within the machine's memory."""
    empty = empty_split(train_size=train_size, val_size=val_size, test_size=test_size)
    if empty:
        return empty
    if not CIRCLE_SIDES[0] <= side <= CIRCLE_SIDES[1]:
        return (f"side = {side}; expected an integer from {CIRCLE_SIDES[0]} to "
                f"{CIRCLE_SIDES[1]} (pixels per side of an image)")
    return memory_problem(train_size + val_size + test_size, side,
                          CIRCLE_RENDER_BYTES_PER_PIXEL, CIRCLE_MEMORY_SHARE, memory,
                          " to render", "use fewer images or a smaller side")


def memory_problem(images: int, side: int, bytes_per_pixel: int, share: int, memory: int,
                   purpose: str, fix: str) -> str | None:
    """`images` square images of `side` pixels at `bytes_per_pixel` exceed 1/`share` of
    `memory` (bytes): the problem, with its `purpose` (" to render") and `fix`, or None."""
    needed = images * side * side * bytes_per_pixel
    if needed * share <= memory:
        return None
    return (f"{images:,} images of {side}x{side} pixels need {needed / 2**30:,.1f} GiB"
            f"{purpose}, more than 1/{share} of this machine's memory "
            f"({memory / 2**30:,.1f} GiB); {fix}")


# A sprites image is held as uint8 (one byte per pixel), twice while the splits are made, and
# the whole may take at most half of the machine's memory (the whole grid at 64 px: 5.6 GiB).
SPRITE_COPIES = 2
SPRITE_MEMORY_SHARE = 2


def sprites_problem(subsample: int, val_size: int, test_size: int, side: int, memory: int,
                    **_) -> str | None:
    """The grid has 737,280 images: `subsample` of them (0: all) are drawn, `test_size` of
    those test and `val_size` validate; the rest train."""
    if not 0 <= subsample <= sprites.GRID_POINTS:
        return (f"subsample = {subsample}; expected 0 (the whole grid) or a number of grid "
                f"points from 1 to {sprites.GRID_POINTS:,}")
    empty = empty_split(val_size=val_size, test_size=test_size)
    if empty:
        return empty
    images = subsample or sprites.GRID_POINTS
    if val_size + test_size >= images:
        return (f"test_size = {test_size:,} and val_size = {val_size:,} leave no training "
                f"images of the {images:,} grid points drawn (subsample = {subsample}); "
                f"draw more or hold out fewer")
    return image_side_problem(side, images, memory)


def image_side_problem(side: int, images: int, memory: int) -> str | None:
    """A sprite side out of range or not a multiple of `sprites.SIDE_MULTIPLE`, or more pixels
    than half of `memory` holds."""
    low, high = sprites.SIDES
    if not low <= side <= high or side % sprites.SIDE_MULTIPLE:
        return (f"side = {side}; expected a multiple of {sprites.SIDE_MULTIPLE} from {low} to "
                f"{high} (pixels per side; dSprites has 64, 32 suits a CPU)")
    return memory_problem(images, side, SPRITE_COPIES, SPRITE_MEMORY_SHARE, memory, "",
                          "draw fewer with `subsample` or use a smaller side")


def dsprites_problem(subsample: int, val_size: int, test_size: int, memory: int,
                     **_) -> str | None:
    """As sprites, at dSprites' own 64 pixels."""
    return sprites_problem(subsample, val_size, test_size, sprites.DSPRITES_SIDE, memory)


def sprites_split_sizes(subsample: int, val_size: int, test_size: int,
                        **_) -> tuple[int, int, int]:
    return (subsample or sprites.GRID_POINTS) - val_size - test_size, val_size, test_size


def digits_problem(test_size: int, val_size: int, **_) -> str | None:
    """The test and validation images come out of the 1,797 digits; the rest train."""
    empty = empty_split(val_size=val_size, test_size=test_size)
    if empty:
        return empty
    if test_size + val_size >= DIGITS_IMAGES:
        return (f"test_size = {test_size} and val_size = {val_size} leave no training images: "
                f"digits has {DIGITS_IMAGES:,} images, so test_size + val_size must be at most "
                f"{DIGITS_IMAGES - 1:,}")
    return None


def idx_problem(val_size: int, **_) -> str | None:
    """The validation images come out of the 60,000 training images."""
    if not 1 <= val_size < IDX_TRAIN_IMAGES:
        return (f"val_size = {val_size}; expected an integer from 1 to {IDX_TRAIN_IMAGES - 1:,}: "
                f"the validation images are taken from the {IDX_TRAIN_IMAGES:,} training images, "
                f"and the rest train")
    return None


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in [
        DatasetSpec(
            "circles",
            "procedural filled discs; true factors centre x, centre y, radius",
            {"train_size": 8000, "val_size": 1000, "test_size": 2000, "side": 28, "data_seed": 0},
            lambda train_size, val_size, test_size, side, data_seed, **_: sources.circles(
                train_size + val_size, test_size, side, data_seed
            ),
            image_shape=lambda side, **_: (1, side, side),
            split_sizes=lambda train_size, val_size, test_size, **_: (
                train_size, val_size, test_size),
            problem=circles_problem,
            has_factors=True,
        ),
        DatasetSpec(
            "sprites",
            "procedural dSprites design: 737,280 binary images, one per point of a grid of "
            "shape, scale, orientation, x and y",
            {"side": 64, "subsample": 0, "val_size": 10000, "test_size": 10000, "data_seed": 0},
            lambda side, subsample, test_size, data_seed, **_: with_grid(
                sprites.sprites_source(side, subsample, test_size, data_seed),
                sprites.selected_indices(subsample, test_size, data_seed),
                sprites.sprites_grid(side)),
            image_shape=lambda side, **_: (1, side, side),
            split_sizes=sprites_split_sizes,
            problem=sprites_problem,
            has_factors=True,
        ),
        DatasetSpec(
            "dsprites",
            f"the original dSprites file ({sprites.DSPRITES_FILE}) from the data directory, "
            "as sprites",
            {"subsample": 0, "val_size": 10000, "test_size": 10000, "data_seed": 0},
            lambda subsample, test_size, data_seed, **_: with_grid(
                sprites.dsprites_source(subsample, test_size, data_seed),
                sprites.selected_indices(subsample, test_size, data_seed),
                sprites.dsprites_grid()),
            image_shape=lambda **_: (1, sprites.DSPRITES_SIDE, sprites.DSPRITES_SIDE),
            split_sizes=sprites_split_sizes,
            problem=dsprites_problem,
            has_factors=True,
        ),
        DatasetSpec(
            "digits",
            "scikit-learn's bundled 8x8 handwritten digits (offline)",
            {"test_size": 297, "val_size": 200, "data_seed": 0},
            lambda test_size, data_seed, **_: sources.digits(test_size, data_seed),
            image_shape=lambda **_: (1, 8, 8),
            split_sizes=lambda test_size, val_size, **_: (
                DIGITS_IMAGES - test_size - val_size, val_size, test_size),
            problem=digits_problem,
        ),
        DatasetSpec(
            "mnist",
            "MNIST 28x28 (local IDX files or torchvision download)",
            {"val_size": 10000, "download": True},
            lambda download, **_: sources.idx_dataset("mnist", download),
            image_shape=lambda **_: (1, 28, 28),
            split_sizes=lambda val_size, **_: (IDX_TRAIN_IMAGES - val_size, val_size,
                                               IDX_TEST_IMAGES),
            problem=idx_problem,
        ),
        DatasetSpec(
            "fashion-mnist",
            "Fashion-MNIST 28x28 (local IDX files, Debian package, or torchvision download)",
            {"val_size": 10000, "download": True},
            lambda download, **_: sources.idx_dataset("fashion-mnist", download),
            image_shape=lambda **_: (1, 28, 28),
            split_sizes=lambda val_size, **_: (IDX_TRAIN_IMAGES - val_size, val_size,
                                               IDX_TEST_IMAGES),
            problem=idx_problem,
        ),
    ]
}


def with_grid(source: sources.Source, indices: tuple, grid) -> sources.Source:
    """`source` with the grid indices of its train and test images, and its factor grid."""
    train, test = (torch.from_numpy(part) for part in indices)
    return replace(source, train_factor_indices=train, test_factor_indices=test, grid=grid)


def dataset_options(name: str, overrides: dict | None = None) -> dict:
    """The full options of dataset `name`: its defaults updated with `overrides`."""
    return {**COMMON_DEFAULTS, **DATASETS[name].defaults, **(overrides or {})}


def check_options(name: str, options: dict, memory: int | None = None) -> str | None:
    """Why dataset `name` cannot be made with `options` (values of the right types), or None:
    a split left without images, a size beyond what the dataset has, an image side out of
    range, or more pixels to render than `memory` (bytes; default this machine's) allows."""
    resolved = dataset_options(name, options)
    memory = machine_memory() if memory is None else memory
    problem = DATASETS[name].problem(**resolved, memory=memory)
    if problem:
        return problem
    for split, size in zip(SPLITS, split_sizes(name, options)):
        if size < 1:
            return f"these options leave the {split} split with {size} images; it needs 1"
    return None


def image_shape(name: str, options: dict | None = None) -> tuple[int, int, int]:
    """(C, H, W) of dataset `name`'s images with `options`, without loading them."""
    return DATASETS[name].image_shape(**dataset_options(name, options))


def split_sizes(name: str, options: dict | None = None) -> tuple[int, int, int]:
    """Images in the train, validation and test splits of dataset `name` with `options`,
    without loading them."""
    return DATASETS[name].split_sizes(**dataset_options(name, options))


def load_dataset(name: str, options: dict | None = None) -> ImageData:
    """Load dataset `name` (see `DATASETS`) into memory with its splits, on the CPU."""
    resolved = dataset_options(name, options)
    source = DATASETS[name].load_source(**resolved)
    return make_splits(
        name,
        Split(source.train_images, source.train_labels, source.train_factors,
              source.train_factor_indices),
        Split(source.test_images, source.test_labels, source.test_factors,
              source.test_factor_indices),
        val_size=resolved["val_size"],
        binarize=resolved["binarize"],
        split_seed=resolved.get("data_seed", 0),
        factor_names=source.factor_names,
        num_classes=source.num_classes,
        options=resolved,
        grid=source.grid,
    )
