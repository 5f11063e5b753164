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
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

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


# --- circles -------------------------------------------------------------------------------------

CIRCLE_FACTORS = ("centre_x", "centre_y", "radius")


def circles(train_size: int, test_size: int, side: int, data_seed: int) -> Source:
    """Filled discs with anti-aliased edges on a black square.

    Three independent factors, uniform and given as fractions of the side: centre x and centre y
    in [0.25, 0.75], radius in [0.08, 0.22], so every disc lies inside the image. The same
    arguments give the same bytes on every machine.
    """
    # Bit-identical on every CPU: the factors come from torch's mt19937 stream (portable), and the
    # rendering uses only float64 subtraction, multiplication, addition, sqrt and clip, which
    # IEEE 754 rounds correctly everywhere (no float32 kernels, no vectorised transcendentals).
    count = train_size + test_size
    generator = torch.Generator().manual_seed(data_seed)
    uniform = torch.rand(count, 3, generator=generator, dtype=torch.float64).numpy()
    low = np.array([0.25, 0.25, 0.08])
    high = np.array([0.75, 0.75, 0.22])
    factors = low + (high - low) * uniform  # (count, 3) float64
    centre_x, centre_y, radius = (factors[:, i, None, None] * side for i in range(3))
    pixel_centres = np.arange(side, dtype=np.float64) + 0.5
    dx = pixel_centres[None, None, :] - centre_x  # (count, 1, side)
    dy = pixel_centres[None, :, None] - centre_y  # (count, side, 1)
    distance = np.sqrt(dx * dx + dy * dy)  # (count, side, side)
    # A pixel is covered by the disc in proportion to how far inside the edge its centre lies.
    coverage = np.clip(radius - distance + 0.5, 0.0, 1.0, out=distance)
    pixels = np.rint(coverage * 255).astype(np.uint8)
    pixels = torch.from_numpy(pixels).unsqueeze(1)  # (count, 1, side, side)
    factors = torch.from_numpy(factors.astype(np.float32))
    return Source(
        train_images=pixels[:train_size],
        test_images=pixels[train_size:],
        train_factors=factors[:train_size],
        test_factors=factors[train_size:],
        factor_names=CIRCLE_FACTORS,
    )


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


def read_idx(path: Path) -> np.ndarray:
    """Parse one IDX file (raw or gzip): a magic number giving the rank, the sizes, then uint8."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as stream:
        content = stream.read()
    rank = content[3]
    shape = tuple(int.from_bytes(content[4 + 4 * i : 8 + 4 * i], "big") for i in range(rank))
    return np.frombuffer(content, dtype=np.uint8, offset=4 + 4 * rank).reshape(shape)


def find_idx_files(folder: Path) -> dict[str, Path] | None:
    found = {}
    for key, stem in IDX_FILES.items():
        candidates = [folder / stem, folder / f"{stem}.gz"]
        existing = [path for path in candidates if path.is_file()]
        if not existing:
            return None
        found[key] = existing[0]
    return found


def idx_dataset(name: str, download: bool) -> Source:
    """MNIST or Fashion-MNIST from local IDX files, else through torchvision's downloader."""
    arrays = None
    for folder in idx_search_dirs(name):
        files = find_idx_files(folder)
        if files is not None:
            arrays = {key: read_idx(path) for key, path in files.items()}
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
        num_classes=10,
    )


def download_with_torchvision(name: str) -> dict[str, np.ndarray]:
    """Let torchvision fetch the files into `data_root()`; raises OSError or RuntimeError when
    that fails (e.g. offline). torchvision's own progress lines go to stderr, so a failure
    leaves one message (the caller's)."""
    import torchvision

    dataset_class = getattr(torchvision.datasets, TORCHVISION_CLASS[name])
    with contextlib.redirect_stdout(sys.stderr):
        train = dataset_class(str(data_root()), train=True, download=True)
        test = dataset_class(str(data_root()), train=False, download=True)
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
