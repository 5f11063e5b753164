"""Sprites: a procedural dSprites (Matthey et al. 2017), and the original dSprites file.

Five factors, in dSprites' order without its constant colour: shape (square, ellipse, heart),
scale (6 values in [0.5, 1]), orientation (40 values i * 2π/40), and the position of the
sprite's centre, pos_x and pos_y (32 values each in [0, 1]). The grid has one binary image per
combination, 3 * 6 * 40 * 32 * 32 = 737,280 of them, in row-major order of the factors (pos_y
fastest), as dSprites' file stores them.

`render` draws any grid points at any `side` (a multiple of 4 from 16 to 128 pixels; dSprites
has 64). `grid_bits` renders the whole grid once into a cache file of packed bits
(`<data root>/sprites/sprites-{side}px-v{RENDER_VERSION}.npy`: 94 MB at side 32, 377 MB at 64)
and memory-maps it afterwards; `sprite_images`, `sprites_grid` and `sprites_source` read from
it. `dsprites_grid` and `dsprites_source` serve the original dSprites file the same way.

Geometry. A pixel is on when its centre lies inside the sprite. At scale 1 the three shapes have
the same area, 4 % of the image (the square is a fifth of the image wide, as dSprites' squares):
a square, an ellipse with axes in ratio 2:1 (long axis horizontal at orientation 0), and a heart
(point down at orientation 0) made of a square standing on a corner with a disc on each of its
upper edges. Each rotates about its centroid, counter-clockwise on screen as the orientation
grows. A square looks the same every π/2 and an ellipse every π, so their orientation factor is
only visible modulo those (as in dSprites). Sprite centres range over the middle half of the
image, so every sprite keeps at least 1/16 of the image side (a pixel at side 16) off each edge.

Portability. The images are the same bits on every machine: pixel centres and sprite centres are
integers in units of 1 / (62 * side) of the image, rotations use cosines and sines rounded to
multiples of 2**-20 (exact whatever the C library's last bit), so the rotated coordinates are
exact, and each pixel's test is a fixed sequence of elementwise float64 +, -, *, abs and
comparisons, which IEEE 754 rounds the same way on every CPU (no transcendental functions on
arrays, no reductions, no BLAS).
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
import zipfile
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from functools import partial
from numbers import Integral
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from vae_zoo.data.grid import FactorGrid
from vae_zoo.data.sources import Source, data_root
from vae_zoo.errors import UserError

__all__ = [
    "SHAPES", "FACTOR_NAMES", "FACTOR_SIZES", "GRID_POINTS", "RENDER_VERSION", "factor_values",
    "render", "grid_file", "grid_bits", "sprite_images", "sprites_grid", "selected_indices",
    "sprites_source", "DSPRITES_FILE", "dsprites_path", "dsprites_grid", "dsprites_source",
]

SHAPES = ("square", "ellipse", "heart")
FACTOR_NAMES = ("shape", "scale", "orientation", "pos_x", "pos_y")
FACTOR_SIZES = (3, 6, 40, 32, 32)
GRID_POINTS = 737_280  # math.prod(FACTOR_SIZES)
# Part of the cache file's name: raise it whenever a change alters any rendered bit.
RENDER_VERSION = 1

SIDES = (16, 128)  # smallest and largest image side, in pixels
SIDE_MULTIPLE = 4  # makes coordinates integers (see `grid_units`) and packed rows whole bytes

# --- geometry, as fractions of the image side, at scale 1 -----------------------------------------

# The area of every shape at scale 1, as a fraction of the image: a square a fifth of the image
# wide, as dSprites' largest squares. Equal areas keep the shape factor from being read off the
# pixel count alone.
SPRITE_AREA = 0.04
SQUARE_HALF_SIDE = math.sqrt(SPRITE_AREA) / 2  # 0.1
# Axes 2:1, so the ellipse's orientation shows modulo π (a circle's would not show at all).
ELLIPSE_AXIS_RATIO = 2
ELLIPSE_SEMI_MAJOR = ELLIPSE_AXIS_RATIO * math.sqrt(SPRITE_AREA / (math.pi * ELLIPSE_AXIS_RATIO))
# The heart: a square standing on a corner (a diamond |u| + |v - offset| <= d) whose two upper
# edges each carry a disc, centred on the edge's middle with the edge as diameter; the discs'
# outer halves are the lobes. Area (2 + π/2) d**2.
HEART_HALF_DIAGONAL = math.sqrt(SPRITE_AREA / (2 + math.pi / 2))  # d, about 0.106
# How far the diamond's centre lies below the heart's centroid, in units of d, so the heart
# rotates about its centroid: the lobes (half-discs of area π d²/4 each, centroids 4r/3π out of
# their edges) lift the centroid by d (π/4 + 1/3) / (2 + π/2) above the diamond's centre.
HEART_DIAMOND_OFFSET = (math.pi / 4 + 1 / 3) / (2 + math.pi / 2)  # about 0.313
# The farthest any point of a shape lies from its centre at scale 1: the ellipse's semi-major
# axis (0.160) beats the square's half diagonal (0.141) and the heart's point (1.31 d = 0.139).
SPRITE_REACH = max(ELLIPSE_SEMI_MAJOR, SQUARE_HALF_SIDE * math.sqrt(2),
                   (1 + HEART_DIAMOND_OFFSET) * HEART_HALF_DIAGONAL)
# Where the sprite's centre lies for pos = 0 and pos = 1, as a fraction of the image side: the
# middle half, so that 1/4 - SPRITE_REACH >= 1/16 of the image stays free of any sprite at every
# edge (no pixel of the outermost ring is ever on, from side 16 up).
POSITION_RANGE = (0.25, 0.75)
EDGE_MARGIN = 1 / 16
assert POSITION_RANGE[0] - SPRITE_REACH >= EDGE_MARGIN, "sprites must stay inside the image"
assert POSITION_RANGE[0] + POSITION_RANGE[1] == 1, "positions must be symmetric in the image"

# Rotations are exact: cos and sin of the first quadrant's 10 angles r * π/20, rounded to
# multiples of 2**-20 (each lies at least 0.04 of a step from a rounding tie, so any C library
# gives the same numbers), and the other quadrants obtained from them by exact swaps and negations.
ROTATION_BITS = 20


def quadrant_rotations() -> tuple[np.ndarray, np.ndarray]:
    """cos and sin of each orientation i * 2π/40, as float64 multiples of 2**-ROTATION_BITS."""
    steps = FACTOR_SIZES[2] // 4  # orientations per quarter turn
    first = [(round(math.cos(r * math.pi / (2 * steps)) * 2**ROTATION_BITS),
              round(math.sin(r * math.pi / (2 * steps)) * 2**ROTATION_BITS))
             for r in range(steps)]
    # A quarter turn maps (cos, sin) to (-sin, cos).
    turns = [first]
    for _ in range(3):
        turns.append([(-sin, cos) for cos, sin in turns[-1]])
    table = np.array([pair for turn in turns for pair in turn], dtype=np.float64) / 2**ROTATION_BITS
    return table[:, 0].copy(), table[:, 1].copy()


COSINES, SINES = quadrant_rotations()  # (40,) each


def factor_values() -> tuple[np.ndarray, ...]:
    """The value of each index of each factor, float64: shape 1.0, 2.0, 3.0 (as dSprites'
    latents_values), scale in [0.5, 1], orientation in radians i * 2π/40, pos_x and pos_y in
    [0, 1] (0 = left / top)."""
    return (
        np.arange(1.0, FACTOR_SIZES[0] + 1),
        np.linspace(0.5, 1.0, FACTOR_SIZES[1]),
        np.arange(FACTOR_SIZES[2]) * (2 * math.pi / FACTOR_SIZES[2]),
        np.linspace(0.0, 1.0, FACTOR_SIZES[3]),
        np.linspace(0.0, 1.0, FACTOR_SIZES[4]),
    )


SCALES = factor_values()[1]


def check_side(side: int) -> int:
    """`side` as an int, or ValueError when the grid cannot be drawn at it."""
    if isinstance(side, bool) or not isinstance(side, Integral):
        raise ValueError(f"side must be an integer, got {side!r}")
    side = int(side)
    if not SIDES[0] <= side <= SIDES[1] or side % SIDE_MULTIPLE:
        raise ValueError(f"side = {side}; expected a multiple of {SIDE_MULTIPLE} from {SIDES[0]} "
                         f"to {SIDES[1]} (pixels per side of a sprite image)")
    return side


def check_indices(indices: np.ndarray) -> np.ndarray:
    """Factor indices as `(N, 5)` int64, or ValueError when any is off the grid."""
    indices = np.asarray(indices)
    if indices.ndim != 2 or indices.shape[1] != len(FACTOR_SIZES):
        raise ValueError(f"factor indices must be (N, {len(FACTOR_SIZES)}), got {indices.shape}")
    if indices.size and not np.issubdtype(indices.dtype, np.integer):
        raise ValueError(f"factor indices must be integers, got {indices.dtype}")
    indices = indices.astype(np.int64, copy=False)
    if ((indices < 0) | (indices >= np.array(FACTOR_SIZES))).any():
        raise ValueError(f"factor indices outside the grid of sizes {FACTOR_SIZES}")
    return indices


def grid_units(side: int) -> tuple[int, np.ndarray, np.ndarray]:
    """The integer coordinates rendering works in: units of 1 / (62 * side) of the image side.

    Returns the image side in units, the x (or y) of each pixel centre `(side,)` and of each
    sprite position `(32,)`, as float64 holding integers (exact)."""
    steps = FACTOR_SIZES[3] - 1
    per_side = 2 * steps * side
    pixel_centres = np.arange(side) * (2 * steps) + steps  # (i + 1/2) / side of the image
    low, high = (Fraction(end) for end in POSITION_RANGE)
    positions = [(low + (high - low) * j / steps) * per_side for j in range(steps + 1)]
    assert all(position.denominator == 1 for position in positions), side
    return (per_side, pixel_centres.astype(np.float64),
            np.array([int(position) for position in positions], dtype=np.float64))


# --- rendering ------------------------------------------------------------------------------------

# Each shape's test of the pixel centres (u, v): coordinates in the sprite's own frame (u to its
# right, v down it, in grid units), `size` the sprite's scale times the image side in units,
# broadcastable to u. Only +, -, *, abs and comparisons (at most quadratic), each of which
# IEEE 754 rounds the same way on every CPU.


def inside_square(u: np.ndarray, v: np.ndarray, size: np.ndarray) -> np.ndarray:
    half_side = SQUARE_HALF_SIDE * size
    return (np.abs(u) <= half_side) & (np.abs(v) <= half_side)


def inside_ellipse(u: np.ndarray, v: np.ndarray, size: np.ndarray) -> np.ndarray:
    # (u / a)**2 + (v / b)**2 <= 1 with a = ratio * b, times a**2.
    semi_major = ELLIPSE_SEMI_MAJOR * size
    return u * u + ELLIPSE_AXIS_RATIO**2 * (v * v) <= semi_major * semi_major


def inside_heart(u: np.ndarray, v: np.ndarray, size: np.ndarray) -> np.ndarray:
    half_diagonal = HEART_HALF_DIAGONAL * size
    across = np.abs(u)  # the heart is symmetric about its vertical axis
    below_diamond_centre = v - HEART_DIAMOND_OFFSET * half_diagonal
    in_diamond = across + np.abs(below_diamond_centre) <= half_diagonal
    # Each lobe's disc: centred on the middle of an upper edge, the edge (d √2 long) its diameter.
    lobe_x = across - 0.5 * half_diagonal
    lobe_y = below_diamond_centre + 0.5 * half_diagonal
    in_lobe = lobe_x * lobe_x + lobe_y * lobe_y <= 0.5 * (half_diagonal * half_diagonal)
    return in_diamond | in_lobe


SHAPE_TESTS = (inside_square, inside_ellipse, inside_heart)  # in the order of SHAPES
# Pixels tested per block: float64 arrays of 256 KiB stay in the CPU's caches and are reused by
# the allocator (blocks of 2**20 pixels render twice as slowly, mostly faulting in fresh pages).
BLOCK_PIXELS = 2**15


def coverage(indices: np.ndarray, side: int) -> np.ndarray:
    """Which pixel centres lie inside the sprite of each grid point: bool `(N, side, side)`
    (rows top to bottom, columns left to right) for factor indices `(N, 5)`."""
    side = check_side(side)
    indices = check_indices(indices)
    per_side, pixel_centres, positions = grid_units(side)
    covered = np.empty((len(indices), side, side), dtype=bool)
    block = max(1, BLOCK_PIXELS // (side * side))
    for start in range(0, len(indices), block):
        for shape in np.unique(indices[start : start + block, 0]):
            rows = start + np.flatnonzero(indices[start : start + block, 0] == shape)
            points = indices[rows]
            # Offsets of the pixel centres from the sprite's centre, (n, side): exact integers.
            dx = pixel_centres - positions[points[:, 3], None]
            dy = pixel_centres - positions[points[:, 4], None]
            cos, sin = COSINES[points[:, 2], None], SINES[points[:, 2], None]
            # Rotating the offsets back by the orientation gives the sprite's own frame, and
            # each coordinate is a sum of an x part and a y part: (n, side_y, side_x), exact.
            u = (cos * dx)[:, None, :] - (sin * dy)[:, :, None]
            v = (sin * dx)[:, None, :] + (cos * dy)[:, :, None]
            size = (SCALES[points[:, 1]] * per_side)[:, None, None]
            covered[rows] = SHAPE_TESTS[shape](u, v, size)
    return covered


def render(indices: np.ndarray, side: int) -> np.ndarray:
    """The sprites of factor indices `(N, 5)` int64 as uint8 images `(N, side, side)`, 0 or 255,
    the same bits on every machine. `side` is a multiple of 4 from 16 to 128."""
    return coverage(indices, side).view(np.uint8) * np.uint8(255)


# --- the cached grid ------------------------------------------------------------------------------

COMBINATIONS = math.prod(FACTOR_SIZES[:3])  # shape x scale x orientation: 720
POSITIONS = math.prod(FACTOR_SIZES[3:])  # pos_x x pos_y: 1024 grid points per combination


def grid_file(side: int, root: Path | str | None = None) -> Path:
    """Where the packed grid at `side` is cached: `<root>/sprites/sprites-{side}px-v{version}.npy`,
    `root` defaulting to `data_root()`."""
    root = data_root() if root is None else Path(root)
    return root / "sprites" / f"sprites-{check_side(side)}px-v{RENDER_VERSION}.npy"


def packed_combination(combination: int, side: int) -> np.ndarray:
    """The packed images `(1024, side*side/8)` of one shape x scale x orientation combination,
    all its positions in grid order."""
    flat = np.arange(combination * POSITIONS, (combination + 1) * POSITIONS)
    indices = np.stack(np.unravel_index(flat, FACTOR_SIZES), 1)
    return np.packbits(coverage(indices, side).reshape(POSITIONS, side * side), axis=1)


def write_grid(path: Path, side: int, progress: bool) -> None:
    """Render the whole grid into `path` as a .npy of packed bits, atomically: into a temporary
    file beside it, renamed over `path` when complete (a concurrent writer's file is replaced by
    identical bytes; a failure leaves no file)."""
    header = {"descr": "|u1", "fortran_order": False, "shape": (GRID_POINTS, side * side // 8)}
    # numpy releases the GIL in its loops: one thread per core torch may use.
    threads = max(1, torch.get_num_threads())
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                                                 suffix=".tmp")
    except OSError as error:
        raise cache_not_writable(path, side, error) from error
    pool = ThreadPoolExecutor(threads)
    try:
        with (os.fdopen(descriptor, "wb") as file,
              tqdm(total=COMBINATIONS, desc=f"rendering sprites {side}px", unit="combination",
                   disable=not progress) as bar):
            np.lib.format.write_array_header_1_0(file, header)
            # map yields the combinations in grid order, while the threads render ahead.
            for packed in pool.map(partial(packed_combination, side=side), range(COMBINATIONS)):
                file.write(packed.data)
                bar.update()
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o644)  # mkstemp made it private; the cache is for every user
        os.replace(temporary, path)
    except OSError as error:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise cache_not_writable(path, side, error) from error
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    finally:
        # On a failure or an interrupt, the combinations not yet started are dropped.
        pool.shutdown(cancel_futures=True)


def cache_not_writable(path: Path, side: int, error: OSError) -> UserError:
    size = GRID_POINTS * side * side // 8
    return UserError(f"cannot write the sprites cache {path}: {error.strerror or error}; it needs "
                     f"{size / 2**20:,.0f} MiB in a writable folder: set $VAE_ZOO_DATA to one")


def grid_bits(side: int, *, root: Path | str | None = None, progress: bool = True) -> np.ndarray:
    """The whole grid at `side` as packed bits, memory-mapped read-only: `(737280, side*side/8)`
    uint8, row r the `np.packbits` of grid point r's row-major pixels (grid points in row-major
    order of the factors). Rendered into the cache (`grid_file`) on first use, with a progress
    bar on stderr unless `progress` is false: on one 2.6 GHz core about 4 s at side 32, 16 s at
    64 and 50 s at 128. A cache file of the wrong shape or unreadable raises a UserError."""
    path = grid_file(side, root)
    if not path.exists():
        write_grid(path, side, progress)
    expected = (GRID_POINTS, side * side // 8)
    try:
        bits = np.load(path, mmap_mode="r")
    except (OSError, ValueError, EOFError) as error:
        raise bad_cache(path, f"cannot be read ({error})") from error
    if bits.shape != expected or bits.dtype != np.uint8:
        raise bad_cache(path, f"holds a {bits.dtype} array of shape {bits.shape}, expected uint8 "
                              f"{expected}")
    return bits


def bad_cache(path: Path, problem: str) -> UserError:
    return UserError(f"{path}: {problem}; it is a cache of rendered sprites: delete it and run "
                     "again to render it anew")


def unpacked_images(bits: np.ndarray, rows: np.ndarray, side: int) -> np.ndarray:
    """Rows `(N,)` of packed bits as uint8 images `(N, 1, side, side)`, 0 or 255."""
    pixels = np.unpackbits(bits[rows], axis=1, count=side * side)
    return np.multiply(pixels, 255, out=pixels).reshape(len(rows), 1, side, side)


def grid_rows(indices: np.ndarray, sizes: tuple[int, ...] = FACTOR_SIZES) -> np.ndarray:
    """Row-major grid positions `(N,)` of factor indices `(N, F)`."""
    return np.ravel_multi_index(tuple(np.asarray(indices).T), sizes).astype(np.int64)


def sprite_images(indices: np.ndarray, side: int, *, root: Path | str | None = None,
                  progress: bool = True) -> np.ndarray:
    """The sprites of factor indices `(N, 5)` as uint8 images `(N, 1, side, side)`, 0 or 255,
    read from the cached grid (rendered first if missing, see `grid_bits`)."""
    rows = grid_rows(check_indices(indices))
    return unpacked_images(grid_bits(side, root=root, progress=progress), rows, side)


def sprites_grid(side: int, *, root: Path | str | None = None) -> FactorGrid:
    """The sprites' factors and their images at `side`, read from the cached grid (rendered on
    the first images asked for, not before)."""
    check_side(side)
    return FactorGrid(FACTOR_NAMES, factor_values(),
                      partial(sprite_images, side=side, root=root), categorical=("shape",))


# --- datasets drawn from the grid -----------------------------------------------------------------


def draw_grid_points(sizes: tuple[int, ...], subsample: int, test_size: int,
                     data_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`subsample` distinct grid points (0: all) in a random order fixed by `data_seed`, the
    first `test_size` of them the test part: factor indices `(n, F)` of the train and test part."""
    points = math.prod(sizes)
    if not 0 <= subsample <= points:
        raise ValueError(f"subsample = {subsample}; expected 0 (the whole grid) to {points:,} "
                         "(grid points drawn)")
    count = subsample or points
    if not 1 <= test_size < count:
        raise ValueError(f"test_size = {test_size}; expected 1 to {count - 1:,}, leaving "
                         f"training images among the {count:,} drawn")
    # torch's CPU generator (mt19937) draws the same permutation on every machine.
    order = torch.randperm(points, generator=torch.Generator().manual_seed(data_seed))
    chosen = order[:count].numpy()
    indices = np.stack(np.unravel_index(chosen, sizes), 1).astype(np.int64)
    return indices[test_size:], indices[:test_size]


def selected_indices(subsample: int, test_size: int,
                     data_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The grid points `sprites_source` and `dsprites_source` serve: factor indices `(n, 5)`
    int64 of the train part and of the test part (the first `test_size` of `subsample` distinct
    points drawn with `data_seed`; `subsample` 0 draws the whole grid)."""
    return draw_grid_points(FACTOR_SIZES, subsample, test_size, data_seed)


def grid_source(grid: FactorGrid, train: np.ndarray, test: np.ndarray) -> Source:
    """A Source of `grid`'s images and factor values at factor indices `train` and `test`."""
    def images(indices: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(grid.images(indices))

    def factors(indices: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(grid.factor_values(indices).astype(np.float32))

    return Source(train_images=images(train), test_images=images(test),
                  train_factors=factors(train), test_factors=factors(test),
                  factor_names=grid.names)


def sprites_source(side: int, subsample: int, test_size: int, data_seed: int, *,
                   root: Path | str | None = None, progress: bool = True) -> Source:
    """`subsample` sprites (0: all 737,280) at `side` drawn without replacement with
    `data_seed`, the first `test_size` the test part (see `selected_indices`); factors are the
    factor values, float32 `(n, 5)`. Renders the cached grid first if it is missing."""
    grid = sprites_grid(side, root=root)
    train, test = selected_indices(subsample, test_size, data_seed)
    grid_bits(side, root=root, progress=progress)  # render now, with the caller's progress
    return grid_source(grid, train, test)


# --- the original dSprites file -------------------------------------------------------------------

DSPRITES_FILE = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
DSPRITES_URL = "https://github.com/deepmind/dsprites-dataset"
DSPRITES_SIDE = 64
# The file's grid, colour left out (same as ours; a name of its own so tests can use a small one).
DSPRITES_SIZES = FACTOR_SIZES
DSPRITES_ROWS = 8192  # images decompressed at a time (32 MiB)


def dsprites_path(root: Path | str | None = None) -> Path | None:
    """The dSprites file in `<root>/dsprites/` or `<root>/` (`root` defaulting to `data_root()`),
    or None."""
    root = data_root() if root is None else Path(root)
    for folder in (root / "dsprites", root):
        if (folder / DSPRITES_FILE).exists():
            return folder / DSPRITES_FILE
    return None


def bad_dsprites(path: Path, problem: str) -> UserError:
    return UserError(f"{path}: {problem}; it is not dSprites' {DSPRITES_FILE}: download it again "
                     f"from {DSPRITES_URL}")


def dsprites_latents(path: Path) -> tuple[np.ndarray, ...]:
    """The value of each index of each factor (colour left out), read from the file's
    latents_values, after checking that its latents list the grid in row-major order."""
    sizes = DSPRITES_SIZES
    points = math.prod(sizes)
    try:
        with np.load(path) as archive:
            classes, values = archive["latents_classes"], archive["latents_values"]
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as error:
        raise bad_dsprites(path, f"cannot read latents_classes and latents_values ({error})") \
            from error
    expected = (points, len(sizes) + 1)  # the constant colour first
    for name, array in (("latents_classes", classes), ("latents_values", values)):
        if array.shape != expected:
            raise bad_dsprites(path, f"{name} has shape {array.shape}, expected {expected}")
    grid_order = np.stack(np.unravel_index(np.arange(points), sizes), 1)
    if not np.array_equal(classes[:, 1:], grid_order):
        raise bad_dsprites(path, "latents_classes do not list the grid in row-major order "
                                 "(shape, scale, orientation, pos_x, pos_y; pos_y fastest)")
    factor_values = []
    for factor, size in enumerate(sizes):
        # The rows where only this factor varies, the others at index 0.
        steps = np.zeros((size, len(sizes)), dtype=np.int64)
        steps[:, factor] = np.arange(size)
        factor_values.append(values[grid_rows(steps, sizes), factor + 1].astype(np.float64))
        if not np.array_equal(values[:, factor + 1], factor_values[-1][classes[:, factor + 1]]):
            raise bad_dsprites(path, f"latents_values of {FACTOR_NAMES[factor]} do not follow "
                                     "its latents_classes")
    return tuple(factor_values)


def dsprites_bits(path: Path) -> np.ndarray:
    """The file's images as packed bits `(737280, 512)` uint8 (377 MB), decompressed a block at
    a time: the npz member `imgs` (0/1 uint8, 3 GB unpacked) cannot be memory-mapped, and
    loading it whole would need all of it in memory at once."""
    points = math.prod(DSPRITES_SIZES)
    expected = (points, DSPRITES_SIDE, DSPRITES_SIDE)
    row_pixels = DSPRITES_SIDE * DSPRITES_SIDE
    readers = {(1, 0): np.lib.format.read_array_header_1_0,
               (2, 0): np.lib.format.read_array_header_2_0}
    bits = np.empty((points, row_pixels // 8), dtype=np.uint8)
    try:
        with zipfile.ZipFile(path) as archive, archive.open("imgs.npy") as member:
            version = np.lib.format.read_magic(member)
            if version not in readers:
                raise ValueError(f"unsupported .npy format version {version}")
            shape, fortran_order, dtype = readers[version](member)
            if shape != expected or dtype != np.uint8 or fortran_order:
                raise bad_dsprites(path, f"imgs is a {'Fortran-ordered ' * fortran_order}{dtype} "
                                         f"array of shape {shape}, expected uint8 {expected}")
            for start in range(0, points, DSPRITES_ROWS):
                count = min(DSPRITES_ROWS, points - start)
                block = np.frombuffer(member.read(count * row_pixels), dtype=np.uint8)
                if block.size != count * row_pixels:
                    complete = start + block.size // row_pixels
                    raise bad_dsprites(path, f"imgs is truncated after {complete:,} images")
                if block.max(initial=0) > 1:
                    raise bad_dsprites(path, "imgs holds values other than 0 and 1")
                bits[start : start + count] = np.packbits(block.reshape(count, row_pixels), axis=1)
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as error:
        raise bad_dsprites(path, f"cannot read imgs ({error})") from error
    return bits


class DSpritesImages:
    """Renders factor indices `(N, 5)` as dSprites' images `(N, 1, 64, 64)`, 0 or 255, reading
    the file's images on the first call (about 10 s) and keeping them packed in memory."""

    def __init__(self, path: Path):
        self.path = path
        self.bits: np.ndarray | None = None

    def __call__(self, indices: np.ndarray) -> np.ndarray:
        if self.bits is None:
            self.bits = dsprites_bits(self.path)
        return unpacked_images(self.bits, grid_rows(indices, DSPRITES_SIZES), DSPRITES_SIDE)


def dsprites_grid(root: Path | str | None = None) -> FactorGrid:
    """dSprites' factors and images from its original file (`DSPRITES_FILE`, looked for by
    `dsprites_path`), with the interface of `sprites_grid`. The latents are checked and read
    now; the images on the first images asked for."""
    path = dsprites_path(root)
    if path is None:
        root = data_root() if root is None else Path(root)
        raise UserError(f"dSprites not found: no {DSPRITES_FILE} in {root / 'dsprites'} or "
                        f"{root}.\nTo get it: download it from {DSPRITES_URL} (the file is in "
                        f"the repository's root) and put it in {root / 'dsprites'}/")
    return FactorGrid(FACTOR_NAMES, dsprites_latents(path), DSpritesImages(path),
                      categorical=("shape",))


def dsprites_source(subsample: int, test_size: int, data_seed: int, *,
                    root: Path | str | None = None) -> Source:
    """`subsample` images of the original dSprites (0: all 737,280) drawn as `sprites_source`
    draws them (the same grid points for the same arguments), at 64x64."""
    grid = dsprites_grid(root)
    train, test = draw_grid_points(DSPRITES_SIZES, subsample, test_size, data_seed)
    return grid_source(grid, train, test)
