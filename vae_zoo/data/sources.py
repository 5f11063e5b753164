"""Where images come from: procedural circles, scikit-learn's digits, and IDX files (MNIST and
Fashion-MNIST) found locally or fetched by torchvision.

Every source returns a `Source`: grey-level images stored as uint8 (0..255) of shape
(n, 1, H, W), for a train and a test part, with labels and true factors where the data has them.
Each source produces the very same bytes on every machine (IDX files are kept as read, the
circles are rendered with correctly rounded float64 operations only), so a dataset's fingerprint
does not depend on the CPU it was loaded on.
"""

from __future__ import annotations

import contextlib
import gzip
import math
import os
import pickle
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from vae_zoo.data.grid import FactorGrid
from vae_zoo.errors import UserError


@dataclass
class Source:
    train_images: Tensor  # (n, 1, H, W) uint8, 0..255
    test_images: Tensor
    train_labels: Tensor | None = None  # (n,) int64
    test_labels: Tensor | None = None
    train_factors: Tensor | None = None  # (n, F) float32
    test_factors: Tensor | None = None
    factor_names: tuple[str, ...] = ()
    num_classes: int = 0
    train_factor_indices: Tensor | None = None  # (n, F) int64, on the factor grid
    test_factor_indices: Tensor | None = None
    grid: FactorGrid | None = None


# --- circles -------------------------------------------------------------------------------------

CIRCLE_FACTORS = ("centre_x", "centre_y", "radius")


CIRCLE_LOW = (0.25, 0.25, 0.08)  # centre x, centre y, radius, as fractions of the side
CIRCLE_HIGH = (0.75, 0.75, 0.22)
# The factor grid the disentanglement metrics draw circles from (the training circles' factors
# are continuous): evenly spaced values over the same ranges, ends included.
CIRCLE_GRID_SIZES = (16, 16, 8)


def circles(train_size: int, test_size: int, side: int, data_seed: int) -> Source:
    """Filled discs with anti-aliased edges on a black square.

    Three independent factors, uniform and given as fractions of the side: centre x and centre y
    in [0.25, 0.75], radius in [0.08, 0.22], so every disc lies inside the image. The same
    arguments give the same bytes on every machine.
    """
    # Bit-identical on every CPU: the factors come from torch's mt19937 stream (portable).
    count = train_size + test_size
    generator = torch.Generator().manual_seed(data_seed)
    uniform = torch.rand(count, 3, generator=generator, dtype=torch.float64).numpy()
    low, high = np.array(CIRCLE_LOW), np.array(CIRCLE_HIGH)
    factors = low + (high - low) * uniform  # (count, 3) float64
    pixels = torch.from_numpy(render_discs(factors, side))  # (count, 1, side, side)
    factors = torch.from_numpy(factors.astype(np.float32))
    return Source(
        train_images=pixels[:train_size],
        test_images=pixels[train_size:],
        train_factors=factors[:train_size],
        test_factors=factors[train_size:],
        factor_names=CIRCLE_FACTORS,
        grid=circles_grid(side),
    )


def render_discs(factors: np.ndarray, side: int) -> np.ndarray:
    """uint8 images `(N, 1, side, side)` of discs with centre x, centre y and radius `(N, 3)`
    float64, as fractions of the side."""
    # The rendering uses only float64 subtraction, multiplication, addition, sqrt and clip, which
    # IEEE 754 rounds correctly everywhere (no float32 kernels, no vectorised transcendentals).
    centre_x, centre_y, radius = (factors[:, i, None, None] * side for i in range(3))
    pixel_centres = np.arange(side, dtype=np.float64) + 0.5
    dx = pixel_centres[None, None, :] - centre_x  # (count, 1, side)
    dy = pixel_centres[None, :, None] - centre_y  # (count, side, 1)
    distance = np.sqrt(dx * dx + dy * dy)  # (count, side, side)
    # A pixel is covered by the disc in proportion to how far inside the edge its centre lies.
    coverage = np.clip(radius - distance + 0.5, 0.0, 1.0, out=distance)
    return np.rint(coverage * 255).astype(np.uint8)[:, None]


def circles_grid(side: int) -> FactorGrid:
    """The grid of circles the disentanglement metrics draw from: `CIRCLE_GRID_SIZES` evenly
    spaced values of each factor over its range (ends included), rendered as `circles` does."""
    values = tuple(np.linspace(low, high, size) for low, high, size
                   in zip(CIRCLE_LOW, CIRCLE_HIGH, CIRCLE_GRID_SIZES))

    def render(indices: np.ndarray) -> np.ndarray:
        factors = np.stack([values[k][indices[:, k]] for k in range(3)], 1)
        return render_discs(factors, side)

    return FactorGrid(CIRCLE_FACTORS, values, render)


# --- digits --------------------------------------------------------------------------------------


def digits(test_size: int, data_seed: int) -> Source:
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes), works offline.

    Its grey levels 0..16 are scaled to 0..255 and rounded (v * 255 / 16 is exact in float64)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    pixels = np.rint(bunch.images * 255 / 16).astype(np.uint8)
    images = torch.from_numpy(pixels).unsqueeze(1)
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(data_seed))
    test, train = order[:test_size], order[test_size:]
    return Source(
        train_images=images[train],
        test_images=images[test],
        train_labels=labels[train],
        test_labels=labels[test],
        num_classes=10,
    )


# --- IDX files: MNIST and Fashion-MNIST ----------------------------------------------------------

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
TORCHVISION_CLASS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
IDX_CLASSES = 10  # labels 0..9
# The type byte of an IDX magic number; these datasets store unsigned bytes only.
IDX_TYPES = {0x08: "unsigned byte", 0x09: "signed byte", 0x0B: "short", 0x0C: "int",
             0x0D: "float", 0x0E: "double"}


def data_root() -> Path:
    """Where downloads go and local copies are looked for first: `$VAE_ZOO_DATA`, else a cache."""
    configured = os.environ.get("VAE_ZOO_DATA")
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "vae-zoo" / "data"


def idx_search_dirs(name: str) -> list[Path]:
    """Folders searched, in order, for the four IDX files of `name`."""
    root = data_root()
    return [
        root / name,
        root / TORCHVISION_CLASS[name] / "raw",
        Path("/usr/share/datasets") / name,
    ]


def how_to_replace(path: Path) -> str:
    """How to get a good copy of a bad data file (or folder), from where it lies."""
    if path.is_relative_to(data_root()):
        return "delete it and run again to download it again (or copy a good copy there)"
    if path.is_relative_to("/usr/share/datasets"):
        return "reinstall the package: apt-get install --reinstall dataset-fashion-mnist"
    return "replace it with a good copy"


def read_idx(path: Path, rank: int | None = None) -> np.ndarray:
    """Parse one IDX file of unsigned bytes (gzip-compressed when its name ends in .gz): the magic
    number 00 00 08 <rank>, `rank` big-endian uint32 sizes, then exactly their product in bytes.

    `rank`, when given, is the one the file must have (3 for images, 1 for labels). A file that
    cannot be read, or is not such a file, raises a UserError naming it and how to fix it.
    """

    def refuse(problem: str) -> UserError:
        return UserError(f"{path}: {problem}; {how_to_replace(path)}")

    try:
        content = path.read_bytes()
    except OSError as error:
        raise refuse(f"cannot be read ({error.strerror or error})") from error
    if path.suffix == ".gz":
        try:
            content = gzip.decompress(content)
        except (EOFError, gzip.BadGzipFile, zlib.error) as error:
            raise refuse(f"is not a valid gzip file ({error})") from error
    if not content:
        raise refuse("is empty (0 bytes)")
    if len(content) < 4:
        raise refuse(f"truncated header: {len(content)} bytes, the magic number alone takes 4")
    if content[:2] != b"\0\0":
        raise refuse(f"not an IDX file: its magic number starts with {content[:2].hex(' ')} "
                     "instead of 00 00")
    type_code, found_rank = content[2], content[3]
    if type_code != 0x08:
        found_type = IDX_TYPES.get(type_code, "unknown")
        raise refuse(f"IDX data type 0x{type_code:02X} ({found_type}), expected 0x08 "
                     "(unsigned byte)")
    if rank is not None and found_rank != rank:
        raise refuse(f"IDX rank {found_rank}, expected {rank}")
    header_size = 4 + 4 * found_rank
    if len(content) < header_size:
        raise refuse(f"truncated header: {len(content)} bytes, a rank-{found_rank} header takes "
                     f"{header_size}")
    shape = tuple(int.from_bytes(content[4 + 4 * i : 8 + 4 * i], "big") for i in range(found_rank))
    expected, found = math.prod(shape), len(content) - header_size
    if found != expected:
        problem = "truncated" if found < expected else "trailing bytes after the data"
        raise refuse(f"{problem}: its header gives the shape {shape}, so {expected} bytes of data "
                     f"are expected, found {found}")
    return np.frombuffer(content, dtype=np.uint8, offset=header_size).reshape(shape)


def find_idx_files(folder: Path) -> dict[str, Path] | None:
    found = {}
    for key, stem in IDX_FILES.items():
        candidates = [folder / stem, folder / f"{stem}.gz"]
        # exists(), not is_file(): a directory or unreadable entry under a file's name is found,
        # and refused by `read_idx` with its reason, instead of silently searching on.
        existing = [path for path in candidates if path.exists()]
        if not existing:
            return None
        found[key] = existing[0]
    return found


def check_idx_set(arrays: dict[str, np.ndarray], files: dict[str, Path]) -> None:
    """Refuse four IDX files (`IDX_FILES` keys) that do not belong together: each labels file
    has one label in 0..9 per image, and train and test images have the same height and width."""
    for part in ("train", "test"):
        images, labels = arrays[f"{part}_images"], arrays[f"{part}_labels"]
        images_file, labels_file = files[f"{part}_images"], files[f"{part}_labels"]
        if len(labels) != len(images):
            raise UserError(
                f"{labels_file}: label count does not match the image count: {len(labels)} labels "
                f"in it, {len(images)} images in {images_file}; {how_to_replace(labels_file)}")
        if len(labels) and labels.max() >= IDX_CLASSES:
            raise UserError(
                f"{labels_file}: label {labels.max()} out of range 0..{IDX_CLASSES - 1} "
                f"({IDX_CLASSES} classes); {how_to_replace(labels_file)}")
    train_size, test_size = arrays["train_images"].shape[1:], arrays["test_images"].shape[1:]
    if train_size != test_size:
        raise UserError(
            f"{files['test_images']}: image size {test_size[0]}x{test_size[1]} differs from the "
            f"{train_size[0]}x{train_size[1]} of {files['train_images']}; train and test images "
            f"must have one size; {how_to_replace(files['test_images'])}")


def idx_dataset(name: str, download: bool) -> Source:
    """MNIST or Fashion-MNIST from local IDX files, else through torchvision's downloader."""
    arrays = None
    for folder in idx_search_dirs(name):
        files = find_idx_files(folder)
        if files is not None:
            # (n, height, width) images, (n,) labels
            arrays = {key: read_idx(path, rank=3 if key.endswith("images") else 1)
                      for key, path in files.items()}
            check_idx_set(arrays, files)
            break
    if arrays is None and not download:
        raise dataset_not_found(name, "downloading is off (download = false)")
    if arrays is None:
        try:
            arrays = download_with_torchvision(name)
        except (OSError, RuntimeError) as error:  # URLError is an OSError
            raise dataset_not_found(name, f"the download failed: {download_cause(error)}") \
                from error

    def images(key: str) -> Tensor:
        # Kept as the files store them; torch.tensor copies the read-only buffer of `read_idx`.
        return torch.tensor(arrays[key], dtype=torch.uint8).unsqueeze(1)

    def labels(key: str) -> Tensor:
        return torch.from_numpy(arrays[key].astype(np.int64))

    return Source(
        train_images=images("train_images"),
        test_images=images("test_images"),
        train_labels=labels("train_labels"),
        test_labels=labels("test_labels"),
        num_classes=IDX_CLASSES,
    )


def download_with_torchvision(name: str) -> dict[str, np.ndarray]:
    """Let torchvision fetch the files into `data_root()`; raises OSError or RuntimeError when
    that fails (e.g. offline), UserError when the files it found already there are corrupt.
    torchvision's own progress lines go to stderr, so a failure leaves one message (the caller's).
    """
    import torchvision

    dataset_class = getattr(torchvision.datasets, TORCHVISION_CLASS[name])
    # torchvision reads without downloading the .pt files its versions before 0.9 saved, when both
    # are there (its raw IDX files, when all four are there, went through `read_idx` already).
    processed = data_root() / TORCHVISION_CLASS[name] / "processed"
    found = all((processed / file).is_file() for file in ("training.pt", "test.pt"))
    try:
        with contextlib.redirect_stdout(sys.stderr):
            train = dataset_class(str(data_root()), train=True, download=True)
            test = dataset_class(str(data_root()), train=False, download=True)
    except (ValueError, RuntimeError, EOFError, pickle.UnpicklingError) as error:
        if not found:
            raise
        # Named by its type only: torch.load's own message is advice about weights_only.
        raise UserError(f"{processed}: torchvision cannot read training.pt and test.pt found "
                        f"there ({type(error).__name__}); {how_to_replace(processed)}") from error
    return {
        "train_images": train.data.numpy(),
        "train_labels": train.targets.numpy(),
        "test_images": test.data.numpy(),
        "test_labels": test.targets.numpy(),
    }


def download_cause(error: BaseException) -> str:
    """The innermost reason of a failed download, on one line (torchvision wraps the URLError
    of its last mirror in a multi-line RuntimeError)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def dataset_not_found(name: str, attempted: str) -> UserError:
    looked = "\n".join(f"  {folder}" for folder in idx_search_dirs(name))
    debian = (
        "\n  - on Debian/Ubuntu: apt-get install dataset-fashion-mnist"
        if name == "fashion-mnist"
        else ""
    )
    files = ", ".join(f"{stem}[.gz]" for stem in IDX_FILES.values())
    return UserError(
        f"dataset '{name}' not found: no IDX files ({files}) in\n{looked}\nand {attempted}.\n"
        f"To get it:\n  - run once with internet access (torchvision downloads it into "
        f"{data_root()}),\n  - or put the four files in $VAE_ZOO_DATA/{name}/{debian}"
    )
