"""Datasets: fixed splits, binarisation, batches and clear errors for missing data."""

from pathlib import Path

import pytest
import torch
from idx_fixtures import make_idx_dataset

from vae_zoo.data import DATASETS, load_dataset
from vae_zoo.data.sources import circles, read_idx
from vae_zoo.errors import UserError

SMALL_CIRCLES = {"train_size": 400, "val_size": 100, "test_size": 100, "side": 16}


def test_circles_are_deterministic_with_factors_in_range():
    first = circles(200, 50, side=16, data_seed=3)
    second = circles(200, 50, side=16, data_seed=3)
    assert torch.equal(first.train_images, second.train_images)
    assert first.train_images.shape == (200, 1, 16, 16)
    assert first.train_factors.shape == (200, 3)
    assert first.factor_names == ("centre_x", "centre_y", "radius")
    assert first.train_images.min() >= 0 and first.train_images.max() <= 1
    assert not torch.equal(circles(200, 50, 16, data_seed=4).train_images, first.train_images)


def test_circle_area_follows_its_radius_factor():
    source = circles(500, 10, side=32, data_seed=0)
    area_in_pixels = source.train_images.sum(dim=(1, 2, 3))
    radius_in_pixels = source.train_factors[:, 2] * 32
    expected = torch.pi * radius_in_pixels**2
    # Anti-aliasing makes the pixel sum a close estimate of the disc's area.
    assert torch.allclose(area_in_pixels, expected, rtol=0.08)


def test_splits_are_fixed_and_disjoint():
    data = load_dataset("circles", SMALL_CIRCLES)
    again = load_dataset("circles", SMALL_CIRCLES)
    assert (len(data.train), len(data.val), len(data.test)) == (400, 100, 100)
    assert torch.equal(data.val.images, again.val.images)
    assert torch.equal(data.test.images, again.test.images)
    assert data.fingerprint() == again.fingerprint()
    train_factors = {tuple(row.tolist()) for row in data.train.factors}
    assert not train_factors & {tuple(row.tolist()) for row in data.val.factors}


def test_fixed_binarisation_gives_every_run_the_same_test_set():
    data = load_dataset("circles", {**SMALL_CIRCLES, "binarize": "dynamic"})
    assert set(data.test.images.unique().tolist()) <= {0.0, 1.0}
    grey = load_dataset("circles", {**SMALL_CIRCLES, "binarize": "none"})
    assert len(grey.test.images.unique()) > 2


def test_dynamic_binarisation_resamples_every_batch():
    data = load_dataset("circles", {**SMALL_CIRCLES, "binarize": "dynamic"})
    generator = torch.Generator().manual_seed(0)
    batches = list(data.train_batches(len(data.train), generator))
    again = list(data.train_batches(len(data.train), generator))
    assert set(batches[0].unique().tolist()) <= {0.0, 1.0}
    assert not torch.equal(batches[0], again[0])


def test_fixed_binarisation_keeps_training_images():
    data = load_dataset("circles", {**SMALL_CIRCLES, "binarize": "fixed"})
    assert set(data.train.images.unique().tolist()) <= {0.0, 1.0}
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
    assert data.num_classes == 10 and data.test.labels is not None


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
        assert data.train.images.max() <= 1.0


def test_missing_dataset_names_where_it_looked_and_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("VAE_ZOO_DATA", str(tmp_path / "empty"))
    with pytest.raises(UserError) as caught:
        load_dataset("mnist", {"download": False})
    message = str(caught.value)
    assert str(tmp_path / "empty" / "mnist") in message
    assert "VAE_ZOO_DATA" in message and "internet" in message


@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").is_dir(),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_real_fashion_mnist_from_the_debian_package(tmp_path, monkeypatch):
    monkeypatch.setenv("VAE_ZOO_DATA", str(tmp_path))
    data = load_dataset("fashion-mnist")
    assert (len(data.train), len(data.val), len(data.test)) == (50000, 10000, 10000)
    assert data.test.labels.bincount().tolist() == [1000] * 10


def test_every_dataset_is_registered_with_binarisation():
    assert set(DATASETS) == {"circles", "digits", "mnist", "fashion-mnist"}
