"""IDX files are checked on load: a corrupt, truncated or mismatched file is refused with a
UserError that names it, says what is wrong and how to get a good copy, never loaded wrong."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest
from idx_fixtures import make_idx_dataset, write_idx

from vae_zoo.cli import main
from vae_zoo.data import load_dataset
from vae_zoo.data.sources import (
    download_with_torchvision,
    how_to_replace,
    idx_search_dirs,
    read_idx,
)
from vae_zoo.errors import UserError
from vae_zoo.harness.planner import cached_dataset

TRAIN_IMAGES, TRAIN_LABELS = "train-images-idx3-ubyte", "train-labels-idx1-ubyte"
TEST_IMAGES, TEST_LABELS = "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"
FIX = "delete it and run again to download it again (or copy a good copy there)"


@pytest.fixture
def folder(tmp_path, monkeypatch) -> Path:
    """$VAE_ZOO_DATA/fashion-mnist/ holding four good raw IDX files: 20 train and 10 test
    images of 28x28, so it is found before any installed copy."""
    monkeypatch.setenv("VAE_ZOO_DATA", str(tmp_path))
    make_idx_dataset(tmp_path / "fashion-mnist", train=20, test=10, compress=False)
    return tmp_path / "fashion-mnist"


def load(**options):
    return load_dataset("fashion-mnist", {"download": False, "val_size": 5, **options})


def replace_file(folder: Path, stem: str, content: bytes, suffix: str = "") -> Path:
    """Put `content` in place of the good file `stem`, named `stem + suffix`."""
    (folder / stem).unlink()
    path = folder / f"{stem}{suffix}"
    path.write_bytes(content)
    return path


def assert_refused(path: Path, *words: str) -> None:
    """Loading raises a one-line UserError naming `path`, the problem (`words`) and the fix."""
    with pytest.raises(UserError) as caught:
        load()
    message = str(caught.value)
    assert str(path) in message
    for word in words:
        assert word in message
    assert FIX in message
    assert "\n" not in message


@pytest.mark.parametrize("compress", [False, True])
def test_a_good_set_loads_with_its_shapes_and_values(tmp_path, monkeypatch, compress):
    monkeypatch.setenv("VAE_ZOO_DATA", str(tmp_path))
    arrays = make_idx_dataset(tmp_path / "fashion-mnist", train=20, test=10, compress=compress)
    data = load(binarize="none")
    assert (len(data.train), len(data.val), len(data.test)) == (15, 5, 10)
    assert data.image_shape == (1, 28, 28)
    assert np.array_equal(data.test.pixels.squeeze(1).numpy(), arrays[TEST_IMAGES])
    assert data.test.labels.tolist() == arrays[TEST_LABELS].tolist()


def test_the_data_root_is_searched_before_the_debian_package(folder):
    searched = idx_search_dirs("fashion-mnist")
    assert searched[0] == folder
    assert searched[-1] == Path("/usr/share/datasets/fashion-mnist")
    assert all(path.is_relative_to(folder.parent) for path in searched[:-1])


def test_the_fix_depends_on_where_the_file_lies(folder):
    assert how_to_replace(folder / TRAIN_IMAGES) == FIX
    debian = Path("/usr/share/datasets/fashion-mnist") / f"{TRAIN_IMAGES}.gz"
    assert "apt-get install --reinstall dataset-fashion-mnist" in how_to_replace(debian)


def test_a_truncated_file_is_refused(folder):
    content = (folder / TRAIN_IMAGES).read_bytes()
    path = replace_file(folder, TRAIN_IMAGES, content[:-100])
    assert_refused(path, "truncated", "15680 bytes of data are expected, found 15580")


def test_trailing_bytes_are_refused(folder):
    content = (folder / TRAIN_IMAGES).read_bytes()
    path = replace_file(folder, TRAIN_IMAGES, content + b"junk")
    assert_refused(path, "trailing bytes", "15680 bytes of data are expected, found 15684")


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_an_empty_file_is_refused(folder, suffix):
    path = replace_file(folder, TEST_LABELS, b"", suffix)
    assert_refused(path, "empty")


def test_a_truncated_gzip_stream_is_refused(folder):
    compressed = gzip.compress((folder / TRAIN_IMAGES).read_bytes())
    path = replace_file(folder, TRAIN_IMAGES, compressed[: len(compressed) // 2], ".gz")
    assert_refused(path, "not a valid gzip file", "ended before")


def test_a_corrupt_gzip_stream_is_refused(folder):
    compressed = bytearray(gzip.compress((folder / TRAIN_IMAGES).read_bytes()))
    middle = len(compressed) // 2
    compressed[middle : middle + 16] = bytes(b ^ 0xFF for b in compressed[middle : middle + 16])
    path = replace_file(folder, TRAIN_IMAGES, bytes(compressed), ".gz")
    assert_refused(path, "not a valid gzip file")


def test_a_file_named_gz_that_is_not_gzip_is_refused(folder):
    path = replace_file(folder, TRAIN_LABELS, (folder / TRAIN_LABELS).read_bytes(), ".gz")
    assert_refused(path, "not a valid gzip file", "Not a gzipped file")


def test_a_wrong_magic_number_is_refused(folder):
    content = (folder / TRAIN_IMAGES).read_bytes()
    path = replace_file(folder, TRAIN_IMAGES, b"\x01\x02" + content[2:])
    assert_refused(path, "not an IDX file", "magic number starts with 01 02")


def test_a_type_other_than_unsigned_byte_is_refused(folder):
    content = bytearray((folder / TEST_IMAGES).read_bytes())
    content[2] = 0x0D
    path = replace_file(folder, TEST_IMAGES, bytes(content))
    assert_refused(path, "data type 0x0D (float)", "expected 0x08")


def test_images_of_the_wrong_rank_are_refused(folder):
    (folder / TRAIN_IMAGES).unlink()
    write_idx(folder / TRAIN_IMAGES, np.zeros((20, 28 * 28), np.uint8), compress=False)
    assert_refused(folder / TRAIN_IMAGES, "rank 2, expected 3")


def test_a_label_count_that_differs_from_the_image_count_is_refused(folder):
    (folder / TRAIN_LABELS).unlink()
    write_idx(folder / TRAIN_LABELS, np.zeros(19, np.uint8), compress=False)
    assert_refused(folder / TRAIN_LABELS, "label count", "19 labels",
                   f"20 images in {folder / TRAIN_IMAGES}")


def test_a_label_out_of_range_is_refused(folder):
    labels = np.zeros(10, np.uint8)
    labels[3] = 12
    (folder / TEST_LABELS).unlink()
    write_idx(folder / TEST_LABELS, labels, compress=False)
    assert_refused(folder / TEST_LABELS, "label 12 out of range 0..9")


def test_train_and_test_images_of_different_sizes_are_refused(folder):
    (folder / TEST_IMAGES).unlink()
    write_idx(folder / TEST_IMAGES, np.zeros((10, 32, 32), np.uint8), compress=False)
    assert_refused(folder / TEST_IMAGES, "image size 32x32 differs from the 28x28",
                   str(folder / TRAIN_IMAGES))


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file whatever its permissions")
def test_an_unreadable_file_is_refused(folder):
    (folder / TRAIN_LABELS).chmod(0)
    assert_refused(folder / TRAIN_LABELS, "cannot be read", "Permission denied")


def test_a_directory_in_place_of_a_file_is_refused(folder):
    (folder / TEST_LABELS).unlink()
    (folder / TEST_LABELS).mkdir()
    assert_refused(folder / TEST_LABELS, "cannot be read", "Is a directory")


def test_read_idx_refuses_by_itself_and_still_reads_any_rank(tmp_path):
    write_idx(tmp_path / "vectors", np.arange(12, dtype=np.uint8).reshape(3, 4), compress=False)
    assert read_idx(tmp_path / "vectors").tolist() == np.arange(12).reshape(3, 4).tolist()
    (tmp_path / "empty").write_bytes(b"")
    with pytest.raises(UserError, match="replace it with a good copy"):
        read_idx(tmp_path / "empty")


def test_corrupt_files_that_torchvision_found_already_there_are_refused(tmp_path, monkeypatch):
    # torchvision reads these .pt files of its old versions without downloading anything.
    monkeypatch.setenv("VAE_ZOO_DATA", str(tmp_path))
    processed = tmp_path / "FashionMNIST" / "processed"
    processed.mkdir(parents=True)
    for name in ("training.pt", "test.pt"):
        (processed / name).write_bytes(b"PK\x03\x04 cut short")
    with pytest.raises(UserError) as caught:
        download_with_torchvision("fashion-mnist")
    message = str(caught.value)
    assert str(processed) in message and "cannot read" in message and FIX in message


def test_the_cli_refuses_a_corrupt_file_on_one_line_and_writes_nothing(folder, tmp_path, capsys):
    content = (folder / TRAIN_IMAGES).read_bytes()
    path = replace_file(folder, TRAIN_IMAGES, content[:-1])
    suite = tmp_path / "suite.toml"
    suite.write_text('name = "t"\ndatasets = ["fashion-mnist"]\nmodels = ["mlp-vae"]\n'
                     'seeds = [0]\n[dataset.fashion-mnist]\ndownload = false\nval_size = 5\n')
    cached_dataset.cache_clear()  # a good set loaded earlier in this process must not answer
    status = main(["plan", str(suite), "--results-dir", str(tmp_path / "results"),
                   "--device", "cpu"])
    error = capsys.readouterr().err
    assert status == 2
    assert error.startswith("error: ") and error.count("\n") == 1
    assert str(path) in error and "truncated" in error and FIX in error
    assert "Traceback" not in error
    assert not (tmp_path / "results").exists()
