"""Datasets: uint8 storage, fixed splits, binarisation, batches, fingerprints and clear errors for
missing data."""

from pathlib import Path

import numpy as np
import pytest
import torch
from idx_fixtures import make_idx_dataset

from vae_zoo.data import DATASETS, Split, load_dataset
from vae_zoo.data.batches import binarize_fixed
from vae_zoo.data.sources import circles, find_idx_files, idx_search_dirs, read_idx
from vae_zoo.errors import UserError

SMALL_CIRCLES = {"train_size": 400, "val_size": 100, "test_size": 100, "side": 16}


def fashion_mnist_is_installed() -> bool:
    """The real Fashion-MNIST files are in one of the folders `load_dataset` searches."""
    return any(find_idx_files(folder) is not None for folder in idx_search_dirs("fashion-mnist"))


def test_circles_are_deterministic_uint8_with_factors_in_range():
    first = circles(200, 50, side=16, data_seed=3)
    second = circles(200, 50, side=16, data_seed=3)
    assert torch.equal(first.train_images, second.train_images)
    assert first.train_images.dtype == torch.uint8
    assert first.train_images.shape == (200, 1, 16, 16)
    assert first.train_images.max() == 255  # a disc's interior is fully covered
    assert first.train_factors.shape == (200, 3)
    assert first.train_factors.dtype == torch.float32
    assert first.factor_names == ("centre_x", "centre_y", "radius")
    low, high = torch.tensor([0.25, 0.25, 0.08]), torch.tensor([0.75, 0.75, 0.22])
    assert ((first.train_factors >= low) & (first.train_factors <= high)).all()
    assert not torch.equal(circles(200, 50, 16, data_seed=4).train_images, first.train_images)


def test_circle_area_follows_its_radius_factor():
    source = circles(500, 10, side=32, data_seed=0)
    area_in_pixels = source.train_images.float().sum(dim=(1, 2, 3)) / 255
    radius_in_pixels = source.train_factors[:, 2] * 32
    expected = torch.pi * radius_in_pixels**2
    # Anti-aliasing makes the pixel sum a close estimate of the disc's area.
    assert torch.allclose(area_in_pixels, expected, rtol=0.08)


def test_splits_hold_uint8_pixels_and_give_float_images_in_the_unit_interval():
    data = load_dataset("circles", {**SMALL_CIRCLES, "binarize": "none"})
    for split in (data.train, data.val, data.test):
        assert split.pixels.dtype == torch.uint8
        assert split.images.dtype == torch.float32
        assert split.images.shape == split.pixels.shape
        assert split.images.min() == 0.0 and split.images.max() == 1.0
        assert torch.equal(split.images * 255, split.pixels.float())
    assert data.image_shape == (1, 16, 16)


def test_a_split_refuses_float_pixels():
    with pytest.raises(TypeError, match="uint8"):
        Split(torch.rand(4, 1, 8, 8))


def test_moving_a_split_keeps_its_uint8_pixels():
    data = load_dataset("circles", SMALL_CIRCLES).to("cpu")
    assert data.train.pixels.dtype == torch.uint8
    assert data.device == torch.device("cpu")


def test_splits_are_fixed_and_disjoint():
    data = load_dataset("circles", SMALL_CIRCLES)
    again = load_dataset("circles", SMALL_CIRCLES)
    assert (len(data.train), len(data.val), len(data.test)) == (400, 100, 100)
    assert torch.equal(data.val.pixels, again.val.pixels)
    assert torch.equal(data.test.pixels, again.test.pixels)
    assert data.fingerprint() == again.fingerprint()
    train_factors = {tuple(row.tolist()) for row in data.train.factors}
    assert not train_factors & {tuple(row.tolist()) for row in data.val.factors}


def test_fixed_binarisation_gives_every_run_the_same_test_set():
    data = load_dataset("circles", {**SMALL_CIRCLES, "binarize": "dynamic"})
    again = load_dataset("circles", {**SMALL_CIRCLES, "binarize": "dynamic"})
    assert torch.equal(data.test.pixels, again.test.pixels)
    assert set(data.test.images.unique().tolist()) <= {0.0, 1.0}
    grey = load_dataset("circles", {**SMALL_CIRCLES, "binarize": "none"})
    assert len(grey.test.images.unique()) > 2


@pytest.mark.parametrize("binarize, binary_splits", [
    ("dynamic", ("val", "test")),
    ("fixed", ("train", "val", "test")),
])
def test_binarised_splits_store_only_0_and_255(binarize, binary_splits):
    data = load_dataset("circles", {**SMALL_CIRCLES, "binarize": binarize})
    for name in binary_splits:
        split = getattr(data, name)
        assert split.pixels.dtype == torch.uint8
        assert set(split.pixels.unique().tolist()) == {0, 255}
        assert set(split.images.unique().tolist()) == {0.0, 1.0}
    if binarize == "dynamic":
        # The training pixels stay grey: every batch draws its own binarisation.
        assert len(data.train.pixels.unique()) > 2


def test_fixed_binarisation_turns_a_pixel_on_with_probability_pixel_over_255():
    pixels = torch.full((20000,), 64, dtype=torch.uint8)
    binary = binarize_fixed(pixels, "test")
    assert binary.dtype == torch.uint8
    assert torch.equal(binary, binarize_fixed(pixels, "test"))  # the seed is fixed
    assert abs((binary == 255).float().mean().item() - 64 / 255) < 0.02


def test_each_split_is_binarised_with_independent_noise():
    """Image i of two splits with the same grey pixels must not get the same draws: agreement
    between independent draws at p = 64/255 is p² + (1-p)² ≈ 0.62, identical noise gives 1."""
    pixels = torch.full((20000,), 64, dtype=torch.uint8)
    train, val, test = (binarize_fixed(pixels, split) for split in ("train", "val", "test"))
    p = 64 / 255
    for a, b in ((train, val), (train, test), (val, test)):
        agreement = (a == b).float().mean().item()
        assert abs(agreement - (p**2 + (1 - p) ** 2)) < 0.02


@pytest.mark.parametrize("binarize", ["dynamic", "fixed", "none"])
def test_train_batches_are_float32_in_the_unit_interval(binarize):
    data = load_dataset("circles", {**SMALL_CIRCLES, "binarize": binarize})
    batches = list(data.train_batches(64, torch.Generator().manual_seed(0)))
    assert [len(batch) for batch in batches] == [64] * 6 + [16]
    for batch in batches:
        assert batch.dtype == torch.float32
        assert batch.shape[1:] == (1, 16, 16)
        assert batch.min() >= 0.0 and batch.max() <= 1.0


def test_grey_batches_are_the_images_in_permuted_order():
    data = load_dataset("circles", {**SMALL_CIRCLES, "binarize": "none"})
    epoch = torch.cat(list(data.train_batches(64, torch.Generator().manual_seed(0))))
    assert len(epoch.unique()) > 2
    # Summed as integers, so the order of the batches cannot change the rounding.
    assert torch.equal((epoch * 255).round().long().sum(0), data.train.pixels.long().sum(0))


def test_dynamic_binarisation_resamples_every_batch():
    data = load_dataset("circles", {**SMALL_CIRCLES, "binarize": "dynamic"})
    generator = torch.Generator().manual_seed(0)
    batches = list(data.train_batches(len(data.train), generator))
    again = list(data.train_batches(len(data.train), generator))
    assert set(batches[0].unique().tolist()) <= {0.0, 1.0}
    assert not torch.equal(batches[0], again[0])


def test_fixed_binarisation_keeps_training_images():
    data = load_dataset("circles", {**SMALL_CIRCLES, "binarize": "fixed"})
    assert set(data.train.pixels.unique().tolist()) <= {0, 255}
    generator = torch.Generator().manual_seed(0)
    epoch = torch.cat(list(data.train_batches(64, generator)))
    # An epoch is a permutation of the training set: each image exactly once.
    assert epoch.shape == data.train.images.shape
    assert torch.equal(epoch.sum(0), data.train.images.sum(0))


def test_batches_follow_the_seed():
    data = load_dataset("circles", SMALL_CIRCLES)
    first = torch.cat(list(data.train_batches(50, torch.Generator().manual_seed(7))))
    second = torch.cat(list(data.train_batches(50, torch.Generator().manual_seed(7))))
    assert torch.equal(first, second)


def test_digits_load_offline():
    data = load_dataset("digits")
    assert data.image_shape == (1, 8, 8)
    assert len(data.train) + len(data.val) + len(data.test) == 1797
    assert data.num_classes == 10
    # Every image keeps its label through the splits: the label counts are scikit-learn's.
    from sklearn.datasets import load_digits

    labels = torch.cat([data.train.labels, data.val.labels, data.test.labels])
    assert labels.bincount().tolist() == np.bincount(load_digits().target).tolist()


def test_digits_grey_levels_0_to_16_are_rounded_onto_0_to_255():
    data = load_dataset("digits", {"binarize": "none"})
    scaled_levels = {round(level * 255 / 16) for level in range(17)}
    assert data.train.pixels.dtype == torch.uint8
    assert set(data.train.pixels.unique().tolist()) <= scaled_levels
    assert data.train.pixels.max() == 255


@pytest.mark.parametrize("compress", [True, False])
def test_idx_files_are_parsed(tmp_path, compress):
    arrays = make_idx_dataset(tmp_path, train=20, test=5, compress=compress)
    suffix = ".gz" if compress else ""
    images = read_idx(tmp_path / f"train-images-idx3-ubyte{suffix}")
    assert (images == arrays["train-images-idx3-ubyte"]).all()


def test_mnist_and_fashion_mnist_load_from_vae_zoo_data(idx_data_root):
    for name in ("mnist", "fashion-mnist"):
        data = load_dataset(name, {"val_size": 50})
        assert data.image_shape == (1, 28, 28)
        assert (len(data.train), len(data.val), len(data.test)) == (250, 50, 100)
        assert data.train.pixels.dtype == torch.uint8


def test_idx_pixels_are_kept_exactly_as_the_files_store_them(tmp_path, monkeypatch):
    arrays = make_idx_dataset(tmp_path / "mnist", train=60, test=20)
    monkeypatch.setenv("VAE_ZOO_DATA", str(tmp_path))
    data = load_dataset("mnist", {"val_size": 10, "binarize": "none"})
    assert data.test.pixels.dtype == torch.uint8
    assert np.array_equal(data.test.pixels.squeeze(1).numpy(), arrays["t10k-images-idx3-ubyte"])
    assert data.test.labels.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()


def test_missing_dataset_names_where_it_looked_and_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("VAE_ZOO_DATA", str(tmp_path / "empty"))
    with pytest.raises(UserError) as caught:
        load_dataset("mnist", {"download": False})
    message = str(caught.value)
    assert str(tmp_path / "empty" / "mnist") in message
    assert "VAE_ZOO_DATA" in message and "internet" in message


@pytest.mark.skipif(find_idx_files(Path("/usr/share/datasets/fashion-mnist")) is None,
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_real_fashion_mnist_from_the_debian_package(tmp_path, monkeypatch):
    monkeypatch.setenv("VAE_ZOO_DATA", str(tmp_path))
    data = load_dataset("fashion-mnist")
    assert (len(data.train), len(data.val), len(data.test)) == (50000, 10000, 10000)
    assert data.test.labels.bincount().tolist() == [1000] * 10


def test_every_dataset_is_registered_with_binarisation():
    assert set(DATASETS) == {"circles", "sprites", "dsprites", "digits", "mnist", "fashion-mnist"}


@pytest.mark.parametrize("change", [{"binarize": "none"}, {"data_seed": 1}, {"val_size": 99}])
def test_fingerprint_changes_when_an_option_changes(change):
    default = load_dataset("circles", SMALL_CIRCLES).fingerprint()
    assert load_dataset("circles", {**SMALL_CIRCLES, **change}).fingerprint() != default


def test_fingerprint_covers_the_stored_pixels():
    data = load_dataset("circles", SMALL_CIRCLES)
    before = data.fingerprint()
    data.test.pixels[0, 0, 0, 0] ^= 1
    assert data.fingerprint() != before


# The fingerprint names a dataset in every run id, so results shipped from one machine are reused
# on another only when both see the same bytes. These constants pin it: a platform that renders
# or reads a dataset differently (another CPU, another numpy or torch) must fail CI here rather
# than silently get new run ids and retrain every cell.
GOLDEN_FINGERPRINTS = [
    ("circles", {}, "6b9a1c2e2e1a8cbe"),
    ("circles", SMALL_CIRCLES, "734cdd1685c25889"),
    ("digits", {}, "8ce86dd6ea1d2585"),
    pytest.param("fashion-mnist", {}, "ff5e42e668ee0f70", marks=pytest.mark.skipif(
        not fashion_mnist_is_installed(),
        reason="Fashion-MNIST files not found (apt-get install dataset-fashion-mnist, or put "
               "them in $VAE_ZOO_DATA/fashion-mnist/)")),
]


@pytest.mark.parametrize("name, options, expected", GOLDEN_FINGERPRINTS)
def test_dataset_fingerprints_are_pinned(name, options, expected):
    actual = load_dataset(name, options).fingerprint()
    assert actual == expected, (
        f"load_dataset({name!r}, {options}).fingerprint() is {actual}, pinned {expected}: the "
        f"data changed, so every run id on {name} changes and every cell retrains. If this "
        "platform renders or reads the data differently, fix the loader; if the change is "
        "intended, rerun the suites, ship the new results and update the constant."
    )
