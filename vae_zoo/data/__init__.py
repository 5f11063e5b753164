"""Datasets by name: each loads into memory as uint8 pixels with fixed train / validation / test
splits (see `vae_zoo.data.batches` for how they become float32 batches).

`DATASETS` maps a name to its options and their defaults; a suite may override any of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from vae_zoo.data import sources
from vae_zoo.data.batches import BINARIZE_MODES, ImageData, Split, make_splits, result_options

__all__ = ["DATASETS", "BINARIZE_MODES", "ImageData", "Split", "load_dataset", "result_options"]


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    description: str
    defaults: dict
    load_source: Callable[..., sources.Source]


COMMON_DEFAULTS = {"binarize": "dynamic"}

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
        ),
        DatasetSpec(
            "digits",
            "scikit-learn's bundled 8x8 handwritten digits (offline)",
            {"test_size": 297, "val_size": 200, "data_seed": 0},
            lambda test_size, data_seed, **_: sources.digits(test_size, data_seed),
        ),
        DatasetSpec(
            "mnist",
            "MNIST 28x28 (local IDX files or torchvision download)",
            {"val_size": 10000, "download": True},
            lambda download, **_: sources.idx_dataset("mnist", download),
        ),
        DatasetSpec(
            "fashion-mnist",
            "Fashion-MNIST 28x28 (local IDX files, Debian package, or torchvision download)",
            {"val_size": 10000, "download": True},
            lambda download, **_: sources.idx_dataset("fashion-mnist", download),
        ),
    ]
}


def dataset_options(name: str, overrides: dict | None = None) -> dict:
    """The full options of dataset `name`: its defaults updated with `overrides`."""
    return {**COMMON_DEFAULTS, **DATASETS[name].defaults, **(overrides or {})}


def load_dataset(name: str, options: dict | None = None) -> ImageData:
    """Load dataset `name` (see `DATASETS`) into memory with its splits, on the CPU."""
    resolved = dataset_options(name, options)
    source = DATASETS[name].load_source(**resolved)
    return make_splits(
        name,
        Split(source.train_images, source.train_labels, source.train_factors),
        Split(source.test_images, source.test_labels, source.test_factors),
        val_size=resolved["val_size"],
        binarize=resolved["binarize"],
        split_seed=resolved.get("data_seed", 0),
        factor_names=source.factor_names,
        num_classes=source.num_classes,
        options=resolved,
    )
