"""Sprites: the procedural dSprites grid renders the same bits everywhere (golden digests), has
dSprites' geometry (inside the image, area by scale, centre at the position, the symmetries
of each shape), is cached once and read back safely, and the original dSprites file is read
with the same interface or refused with a reason."""

from __future__ import annotations

import hashlib
import math
import time
import zipfile
from fractions import Fraction

import numpy as np
import pytest
import torch

from vae_zoo.data import sprites
from vae_zoo.data.sprites import (
    DSPRITES_FILE,
    FACTOR_NAMES,
    FACTOR_SIZES,
    GRID_POINTS,
    dsprites_grid,
    dsprites_path,
    dsprites_source,
    factor_values,
    grid_bits,
    grid_file,
    render,
    selected_indices,
    sprite_images,
    sprites_grid,
    sprites_source,
)
from vae_zoo.errors import UserError

# SHA-256 of the whole grid's packed bits (`grid_bits`), and of `render` of every 367th grid
# point at side 64 (2,009 images, uint8 0/255). They change only with RENDER_VERSION.
GOLDEN_GRID_16 = "fe63aa1af9f6fe92e27bf28d3f7edbdfb11217ff644c4248bf6e7b3c46d05b0f"
GOLDEN_GRID_32 = "3f30895c72480bc828e7552138efc1d01b4d44c5d5fac9e81e1f34247e196db8"
GOLDEN_SAMPLE_64 = "91a5d337c599e080e1ee46a51a24691e2d60f3e9971400b404f13d473674e7a1"
GOLDEN_SAMPLE_STRIDE = 367
# cos and sin of r * π/20 for r = 0..9, in units of 2**-20: pinned, so that a C library whose
# math.cos rounds differently could not change a single bit unnoticed.
FIRST_QUADRANT = [(1048576, 0), (1035666, 164033), (997255, 324028), (934288, 476044),
                  (848316, 616338), (741455, 741455), (616338, 848316), (476044, 934288),
                  (324028, 997255), (164033, 1035666)]
# Count of on bits in each byte value.
BITS_IN_BYTE = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).sum(1)


@pytest.fixture(scope="module")
def grid_root(tmp_path_factory):
    """A data root holding the whole grid at sides 16 and 32, rendered once for this module:
    about 1.5 s and 4 s."""
    root = tmp_path_factory.mktemp("sprites-data")
    for side in (16, 32):
        start = time.perf_counter()
        grid_bits(side, root=root, progress=False)
        print(f"rendered the sprites grid at side {side} in {time.perf_counter() - start:.1f} s")
    return root


@pytest.fixture(scope="module")
def bits32(grid_root) -> np.ndarray:
    """The side-32 grid's packed bits, (3, 6, 40, 1024, 128) in memory (94 MB)."""
    return np.asarray(grid_bits(32, root=grid_root)).reshape(*FACTOR_SIZES[:3], 1024, 128)


@pytest.fixture(scope="module")
def counts32(bits32) -> np.ndarray:
    """Pixels on in each side-32 image, (3, 6, 40, 1024)."""
    return BITS_IN_BYTE[bits32].sum(-1)


def grid_points(**fixed) -> np.ndarray:
    """Every grid point with the named factors fixed to the given indices: (N, 5) int64."""
    ranges = [np.atleast_1d(fixed.get(name, np.arange(size)))
              for name, size in zip(FACTOR_NAMES, FACTOR_SIZES)]
    return np.stack(np.meshgrid(*ranges, indexing="ij"), -1).reshape(-1, 5).astype(np.int64)


def random_points(count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(0, size, count) for size in FACTOR_SIZES], 1)


def centre_of_mass(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x and y of each image's centre of mass in pixels from the top left corner, (N,) each."""
    images = images.astype(np.float64)
    centres = np.arange(images.shape[-1]) + 0.5
    mass = images.sum((1, 2))
    return (images.sum(1) @ centres) / mass, (images.sum(2) @ centres) / mass


def position_in_pixels(indices: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray]:
    low, high = sprites.POSITION_RANGE
    values = factor_values()
    return ((low + (high - low) * values[3][indices[:, 3]]) * side,
            (low + (high - low) * values[4][indices[:, 4]]) * side)


# --- the design -----------------------------------------------------------------------------------


def test_the_factors_are_dsprites_without_its_colour():
    assert FACTOR_NAMES == ("shape", "scale", "orientation", "pos_x", "pos_y")
    assert sprites.SHAPES == ("square", "ellipse", "heart")
    assert math.prod(FACTOR_SIZES) == GRID_POINTS == 737_280
    shape, scale, orientation, pos_x, pos_y = factor_values()
    assert [len(values) for values in factor_values()] == list(FACTOR_SIZES)
    assert all(values.dtype == np.float64 for values in factor_values())
    np.testing.assert_array_equal(shape, [1.0, 2.0, 3.0])
    np.testing.assert_allclose(scale, [0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    np.testing.assert_allclose(orientation, np.arange(40) * 2 * np.pi / 40)
    assert orientation[-1] < 2 * np.pi
    np.testing.assert_allclose(pos_x, np.linspace(0, 1, 32))
    np.testing.assert_array_equal(pos_x, pos_y)
    assert sprites.DSPRITES_SIZES == FACTOR_SIZES


def test_the_shapes_have_equal_areas_and_the_ellipse_axes_two_to_one():
    area = sprites.SPRITE_AREA
    assert (2 * sprites.SQUARE_HALF_SIDE) ** 2 == pytest.approx(area)
    semi_major = sprites.ELLIPSE_SEMI_MAJOR
    assert math.pi * semi_major * semi_major / 2 == pytest.approx(area)
    assert (2 + math.pi / 2) * sprites.HEART_HALF_DIAGONAL**2 == pytest.approx(area)
    assert sprites.POSITION_RANGE[0] - sprites.SPRITE_REACH >= sprites.EDGE_MARGIN


def test_rotations_are_the_pinned_dyadic_cosines_and_sines():
    numerators = np.stack([sprites.COSINES, sprites.SINES], 1) * 2**20
    np.testing.assert_array_equal(numerators[:10], FIRST_QUADRANT)
    # Each quarter turn maps (cos, sin) to (-sin, cos), exactly.
    for start in (10, 20, 30):
        np.testing.assert_array_equal(numerators[start : start + 10, 0],
                                      -numerators[start - 10 : start, 1])
        np.testing.assert_array_equal(numerators[start : start + 10, 1],
                                      numerators[start - 10 : start, 0])
    angles = factor_values()[2]
    np.testing.assert_allclose(sprites.COSINES, np.cos(angles), atol=2**-20)
    np.testing.assert_allclose(sprites.SINES, np.sin(angles), atol=2**-20)


@pytest.mark.parametrize("side", [12, 15, 30, 132, 64.0, True, "32"])
def test_a_side_that_cannot_be_drawn_is_refused(side):
    with pytest.raises(ValueError, match="side"):
        render(np.zeros((1, 5), dtype=np.int64), side)
    with pytest.raises(ValueError, match="side"):
        grid_file(side)


@pytest.mark.parametrize("indices", [np.zeros((2, 4)), np.zeros(5), [[3, 0, 0, 0, 0]],
                                     [[0, 0, 0, 0, -1]], [[0, 0, 40, 0, 0]], [[0.0] * 5]])
def test_factor_indices_off_the_grid_are_refused(indices):
    with pytest.raises(ValueError, match="factor indices"):
        render(np.asarray(indices), 32)


# --- golden digests: the same bits on every machine ---------------------------------------------


@pytest.mark.parametrize("side, digest", [(16, GOLDEN_GRID_16), (32, GOLDEN_GRID_32)])
def test_the_whole_grid_has_its_golden_digest(grid_root, side, digest):
    bits = np.ascontiguousarray(grid_bits(side, root=grid_root))
    assert hashlib.sha256(bits).hexdigest() == digest


def test_a_sample_rendered_at_side_64_has_its_golden_digest():
    indices = np.stack(np.unravel_index(np.arange(0, GRID_POINTS, GOLDEN_SAMPLE_STRIDE),
                                        FACTOR_SIZES), 1)
    images = render(indices, 64)
    assert images.shape == (2009, 64, 64) and images.dtype == np.uint8
    assert set(np.unique(images)) == {0, 255}
    assert hashlib.sha256(images).hexdigest() == GOLDEN_SAMPLE_64


def test_the_cached_grid_holds_what_render_draws(grid_root):
    indices = random_points(500, seed=1)
    cached = sprite_images(indices, 32, root=grid_root)
    assert cached.shape == (500, 1, 32, 32) and cached.dtype == np.uint8
    np.testing.assert_array_equal(cached[:, 0], render(indices, 32))


@pytest.mark.parametrize("side", [20, 64])
def test_a_batch_renders_as_its_points_one_by_one(side, monkeypatch):
    indices = random_points(60, seed=2)
    one_by_one = np.concatenate([render(point[None], side) for point in indices])
    np.testing.assert_array_equal(render(indices, side), one_by_one)
    # Blocks of 7 points, cutting through runs of one shape, draw the same too.
    monkeypatch.setattr(sprites, "BLOCK_PIXELS", 7 * side * side)
    np.testing.assert_array_equal(render(indices[::-1], side), one_by_one[::-1])


# --- geometry -------------------------------------------------------------------------------------


def inside_exactly(point: np.ndarray, side: int) -> np.ndarray:
    """The sprite of one grid point by its definition, one pixel at a time in exact rational
    arithmetic and image coordinates (the constants taken as the floats they are): is the
    pixel's centre inside the shape, scaled, rotated by the orientation's (dyadic) cosine and
    sine, and placed at the position? bool (side, side)."""
    shape, scale_index, orientation, pos_x, pos_y = (int(index) for index in point)
    scale = Fraction(sprites.SCALES[scale_index])
    cos, sin = Fraction(sprites.COSINES[orientation]), Fraction(sprites.SINES[orientation])
    low, high = (Fraction(end) for end in sprites.POSITION_RANGE)
    centre_x, centre_y = (low + (high - low) * Fraction(pos, 31) for pos in (pos_x, pos_y))
    half_side = Fraction(sprites.SQUARE_HALF_SIDE)
    semi_major = Fraction(sprites.ELLIPSE_SEMI_MAJOR)
    half_diagonal = Fraction(sprites.HEART_HALF_DIAGONAL)
    diamond_centre = Fraction(sprites.HEART_DIAMOND_OFFSET) * half_diagonal
    inside = np.zeros((side, side), dtype=bool)
    for row in range(side):
        dy = Fraction(2 * row + 1, 2 * side) - centre_y
        for column in range(side):
            dx = Fraction(2 * column + 1, 2 * side) - centre_x
            # The sprite's own frame: turned back by the orientation, shrunk back by the scale.
            u, v = (cos * dx - sin * dy) / scale, (sin * dx + cos * dy) / scale
            if shape == 0:
                inside[row, column] = abs(u) <= half_side and abs(v) <= half_side
            elif shape == 1:
                inside[row, column] = u * u + 4 * v * v <= semi_major**2
            else:
                w = v - diamond_centre
                in_lobe = (abs(u) - half_diagonal / 2) ** 2 + (w + half_diagonal / 2) ** 2 \
                    <= half_diagonal**2 / 2
                inside[row, column] = abs(u) + abs(w) <= half_diagonal or in_lobe
    return inside


def test_a_pixel_is_on_exactly_when_its_centre_lies_inside_the_sprite():
    """Against exact rational arithmetic: the float64 rendering rounds only the squares and
    the thresholds, and no sampled pixel centre lies close enough to an edge to tell."""
    axis_aligned = grid_points(orientation=[0, 5, 10], pos_x=[0, 31], pos_y=[16])
    points = {32: np.concatenate([random_points(30, seed=10), axis_aligned[::4]]),
              64: random_points(4, seed=11)}
    for side, indices in points.items():
        covered = sprites.coverage(indices, side)
        for point, pixels in zip(indices, covered):
            np.testing.assert_array_equal(pixels, inside_exactly(point, side), err_msg=str(point))


@pytest.mark.parametrize("side", [16, 32])
def test_every_sprite_is_inside_the_image_and_not_empty(grid_root, side):
    """Every image has a pixel on, and no pixel whose centre lies within 1/16 of the image side
    from an edge is on in any image (the outermost ring at side 16, two rings at 32)."""
    bits = np.asarray(grid_bits(side, root=grid_root))
    assert bits.any(axis=1).all()
    ever_on = np.unpackbits(np.bitwise_or.reduce(bits, axis=0)).reshape(side, side)
    centres = (np.arange(side) + 0.5) / side
    near_edge = (centres < sprites.EDGE_MARGIN) | (centres > 1 - sprites.EDGE_MARGIN)
    assert near_edge.sum() == 2 * (side // 16)
    assert not ever_on[near_edge].any() and not ever_on[:, near_edge].any()


def test_a_larger_scale_covers_the_smaller_one(bits32, counts32):
    # Scaling about the centroid nests the shapes (each is star-shaped about it), pixel for
    # pixel, so the pixel count never drops and its mean over the positions rises.
    assert not (bits32[:, :-1] & ~bits32[:, 1:]).any()
    assert (np.diff(counts32.mean(-1), axis=1) > 0).all()


def test_pixel_counts_match_the_area_at_every_position(counts32):
    """Each image's pixel count is within half the shape's perimeter (+ 1) of its area, the
    lattice-point bound of a convex shape, at every position; averaged over the positions it is
    the area within 4 %."""
    side = 32
    scale = sprites.SCALES * side
    area = sprites.SPRITE_AREA * scale**2  # (6,) in pixels
    half_side = sprites.SQUARE_HALF_SIDE * scale
    semi_major = sprites.ELLIPSE_SEMI_MAJOR * scale
    semi_minor = semi_major / sprites.ELLIPSE_AXIS_RATIO
    half_diagonal = sprites.HEART_HALF_DIAGONAL * scale
    perimeter = np.stack([
        8 * half_side,
        # Ramanujan's approximation, within 0.01 % at axes 2:1.
        math.pi * (3 * (semi_major + semi_minor)
                   - np.sqrt((3 * semi_major + semi_minor) * (semi_major + 3 * semi_minor))),
        # Two lower edges of the diamond and two half circles of radius d / √2.
        2 * math.sqrt(2) * half_diagonal + math.sqrt(2) * math.pi * half_diagonal,
    ])  # (3, 6)
    deviation = np.abs(counts32 - area[None, :, None, None]).max(axis=(2, 3))
    assert (deviation <= perimeter / 2 + 1).all()
    mean = counts32.mean(-1)
    np.testing.assert_allclose(mean, np.broadcast_to(area[None, :, None], mean.shape), rtol=0.04)


@pytest.mark.parametrize("side", [32, 64])
def test_the_centre_of_mass_is_the_position(side):
    """Within half a pixel (each shape rotates about its centroid); a step of pos_x moves it
    right, and a step of pos_y down, by the position step (within a pixel)."""
    indices = random_points(600, seed=3)
    indices[:, 3:] = np.minimum(indices[:, 3:], 30)
    x, y = centre_of_mass(render(indices, side))
    expected_x, expected_y = position_in_pixels(indices, side)
    assert np.abs(x - expected_x).max() < 0.5 and np.abs(y - expected_y).max() < 0.5
    step = (sprites.POSITION_RANGE[1] - sprites.POSITION_RANGE[0]) * side / 31
    for factor, along, across in ((3, 0, 1), (4, 1, 0)):
        moved = indices.copy()
        moved[:, factor] += 1
        shift = np.subtract(centre_of_mass(render(moved, side)), (x, y))
        assert np.abs(shift[along] - step).max() < 1 and np.abs(shift[across]).max() < 1


def test_a_quarter_turn_of_the_image_is_a_quarter_turn_of_the_sprite():
    """Turning an image counter-clockwise by π/2 gives the sprite with orientation + π/2 at the
    turned position, bit for bit (the coordinates are exact), for every shape."""
    for side in (32, 64):
        indices = random_points(400, seed=4)
        turned = indices.copy()
        turned[:, 2] = (indices[:, 2] + 10) % 40
        turned[:, 3], turned[:, 4] = indices[:, 4], 31 - indices[:, 3]
        np.testing.assert_array_equal(render(turned, side),
                                      np.rot90(render(indices, side), axes=(1, 2)))


def test_the_ellipse_turned_by_a_right_angle_is_its_transpose():
    for side in (32, 64):
        flat = grid_points(shape=1, orientation=0)
        upright = grid_points(shape=1, orientation=10)  # pos_y fastest: transpose positions
        upright = upright.reshape(6, 32, 32, 5).transpose(0, 2, 1, 3).reshape(-1, 5)
        np.testing.assert_array_equal(render(upright, side),
                                      render(flat, side).transpose(0, 2, 1))


def test_squares_repeat_every_right_angle_and_ellipses_every_half_turn(bits32):
    assert (bits32[:2, :, :20] == bits32[:2, :, 20:]).all()
    assert (bits32[0, :, :10] == bits32[0, :, 10:20]).all()
    # An ellipse is not a circle: a quarter turn changes every one.
    assert (bits32[1, :, :10] != bits32[1, :, 10:20]).any(-1).all()


def test_the_heart_points_down_and_shows_its_orientation_over_a_full_turn(bits32):
    heart = render(grid_points(shape=2, scale=5, orientation=0, pos_x=15, pos_y=15), 64)[0]
    rows = np.flatnonzero(heart.any(1))  # 15 rows: two lobes above, a point below
    widths = heart[rows].sum(1) // 255
    assert np.argmax(widths) < len(rows) // 2 and widths[-1] == 1
    # Upside down differs from upright in every side-32 image from scale 0.6 up (at 0.5 a few
    # hundred tiny hearts alias to the same pixels), and in every side-64 one at scale 0.5.
    differs = (bits32[2, :, :20] != bits32[2, :, 20:]).any(-1)
    assert differs[1:].all() and differs.mean() > 0.99
    upright = grid_points(shape=2, scale=0, pos_x=np.arange(0, 32, 3), pos_y=np.arange(0, 32, 3))
    upright = upright[upright[:, 2] < 20]
    upside_down = upright + [0, 0, 20, 0, 0]
    assert (render(upright, 64) != render(upside_down, 64)).any((1, 2)).all()


def test_the_heart_is_symmetric_about_its_vertical_axis_at_orientation_0():
    """The positions are symmetric in the image, so mirroring pos_x mirrors the image exactly."""
    hearts = grid_points(shape=2, orientation=0, pos_y=7)
    mirrored = hearts.copy()
    mirrored[:, 3] = 31 - hearts[:, 3]
    np.testing.assert_array_equal(render(mirrored, 64), render(hearts, 64)[:, :, ::-1])


def test_the_three_shapes_differ_at_the_same_settings(bits32):
    for first, second in ((0, 1), (0, 2), (1, 2)):
        differs = (bits32[first] != bits32[second]).any(-1)
        # At side 32 the smallest ellipses and hearts can alias to the same few pixels...
        assert differs[2:].all() and differs.mean() > 0.99
    # ... never at side 64 (checked at scale 0.5, every orientation, every third position).
    indices = grid_points(scale=0, pos_x=np.arange(0, 32, 3), pos_y=np.arange(0, 32, 3))
    images = render(indices, 64).reshape(3, -1, 64 * 64)
    for first, second in ((0, 1), (0, 2), (1, 2)):
        assert (images[first] != images[second]).any(-1).all()


# --- the cache ------------------------------------------------------------------------------------


def test_the_grid_file_is_named_by_side_and_render_version(tmp_path, monkeypatch):
    assert grid_file(32, tmp_path) == tmp_path / "sprites" / "sprites-32px-v1.npy"
    monkeypatch.setenv("VAE_ZOO_DATA", str(tmp_path / "elsewhere"))
    assert grid_file(64) == tmp_path / "elsewhere" / "sprites" / "sprites-64px-v1.npy"


def test_a_cached_grid_is_memory_mapped_without_rendering(grid_root, monkeypatch):
    def refuse(*_, **__):
        raise AssertionError("rendered again")

    monkeypatch.setattr(sprites, "coverage", refuse)
    bits = grid_bits(32, root=grid_root)
    assert isinstance(bits, np.memmap) and not bits.flags.writeable
    assert bits.shape == (GRID_POINTS, 128)
    assert sprite_images(random_points(5, seed=5), 32, root=grid_root).shape == (5, 1, 32, 32)


@pytest.mark.parametrize("content", [np.zeros((GRID_POINTS, 31), np.uint8),
                                     np.zeros((GRID_POINTS, 32), np.int16), b"not an array",
                                     "truncated"])
def test_a_bad_cache_file_is_refused_with_its_name(tmp_path, content):
    path = grid_file(16, tmp_path)
    path.parent.mkdir(parents=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, str):
        np.save(path, np.zeros((GRID_POINTS, 32), np.uint8))
        path.write_bytes(path.read_bytes()[:100_000])
    else:
        np.save(path, content)
    with pytest.raises(UserError, match="delete it") as error:
        grid_bits(16, root=tmp_path, progress=False)
    assert str(path) in str(error.value)


def test_a_failed_render_leaves_no_file(tmp_path, monkeypatch):
    rendered = []
    original = sprites.packed_combination

    def fail_on_the_third(combination, side):
        rendered.append(combination)
        if len(rendered) == 3:
            raise RuntimeError("interrupted")
        return original(combination, side)

    monkeypatch.setattr(sprites, "packed_combination", fail_on_the_third)
    with pytest.raises(RuntimeError, match="interrupted"):
        grid_bits(16, root=tmp_path, progress=False)
    assert list((tmp_path / "sprites").iterdir()) == []
    assert len(rendered) < 50  # the combinations not started were dropped


def test_an_unwritable_cache_folder_is_a_user_error(tmp_path):
    (tmp_path / "sprites").write_text("a file where the folder goes")
    with pytest.raises(UserError, match="cannot write the sprites cache"):
        grid_bits(16, root=tmp_path, progress=False)


# --- the grid and the dataset ---------------------------------------------------------------------


def test_the_sprites_grid_serves_the_cached_images(grid_root):
    grid = sprites_grid(32, root=grid_root)
    assert grid.names == FACTOR_NAMES and grid.sizes == FACTOR_SIZES
    assert len(grid) == GRID_POINTS and grid.categorical == ("shape",)
    indices = grid.sample(100, np.random.default_rng(6))
    np.testing.assert_array_equal(grid.images(indices)[:, 0], render(indices, 32))
    assert grid.flat(indices).tolist() == np.ravel_multi_index(indices.T, FACTOR_SIZES).tolist()


def test_selected_indices_draw_distinct_points_and_zero_draws_the_whole_grid():
    train, test = selected_indices(0, 1000, data_seed=0)
    assert len(train) + len(test) == GRID_POINTS and len(test) == 1000
    flat = np.ravel_multi_index(np.concatenate([test, train]).T, FACTOR_SIZES)
    assert np.array_equal(np.sort(flat), np.arange(GRID_POINTS))
    again, _ = selected_indices(0, 1000, data_seed=0)
    np.testing.assert_array_equal(again, train)
    other, _ = selected_indices(0, 1000, data_seed=1)
    assert not np.array_equal(other, train)
    # A subsample is the start of the same draw.
    small_train, small_test = selected_indices(3000, 1000, data_seed=0)
    np.testing.assert_array_equal(small_test, test)
    np.testing.assert_array_equal(small_train, train[:2000])


@pytest.mark.parametrize("subsample, test_size", [(-1, 10), (GRID_POINTS + 1, 10), (100, 0),
                                                  (100, 100), (0, GRID_POINTS)])
def test_a_draw_without_train_or_test_images_is_refused(subsample, test_size):
    with pytest.raises(ValueError, match="subsample|test_size"):
        selected_indices(subsample, test_size, data_seed=0)


def test_the_sprites_source_serves_the_drawn_points(grid_root):
    source = sprites_source(32, 1500, 500, data_seed=7, root=grid_root, progress=False)
    train, test = selected_indices(1500, 500, data_seed=7)
    assert source.train_images.shape == (1000, 1, 32, 32)
    assert source.test_images.shape == (500, 1, 32, 32)
    assert source.train_images.dtype == torch.uint8
    assert source.factor_names == FACTOR_NAMES
    for images, factors, indices in ((source.train_images, source.train_factors, train),
                                     (source.test_images, source.test_factors, test)):
        np.testing.assert_array_equal(images[:, 0].numpy(), render(indices, 32))
        assert factors.dtype == torch.float32 and factors.shape == (len(indices), 5)
        expected = np.stack([values[indices[:, k]] for k, values in enumerate(factor_values())],
                            1)
        np.testing.assert_array_equal(factors.numpy(), expected.astype(np.float32))
    train_flat = set(np.ravel_multi_index(train.T, FACTOR_SIZES).tolist())
    assert len(train_flat) == 1000
    assert train_flat.isdisjoint(np.ravel_multi_index(test.T, FACTOR_SIZES).tolist())
    again = sprites_source(32, 1500, 500, data_seed=7, root=grid_root, progress=False)
    assert torch.equal(again.train_images, source.train_images)
    assert torch.equal(again.test_factors, source.test_factors)


# --- the original dSprites file -------------------------------------------------------------------

SMALL_DSPRITES = (3, 2, 3, 2, 2)  # a grid of 72 images, standing in for dSprites' 737,280


def write_dsprites(path, sizes=SMALL_DSPRITES, **replace) -> np.ndarray:
    """A dSprites-like file over the grid `sizes`, its images drawn by `render` at 64 (the
    latents' values are ours): returns its factor indices (N, 5) in file order."""
    indices = np.stack(np.unravel_index(np.arange(math.prod(sizes)), sizes), 1)
    values = factor_values()
    arrays = {
        "imgs": render(indices, 64) // 255,
        "latents_classes": np.concatenate([np.zeros((len(indices), 1), np.int64), indices], 1),
        "latents_values": np.stack([np.ones(len(indices))]
                                   + [values[k][indices[:, k]] for k in range(5)], 1),
    }
    arrays.update(replace)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    return indices


@pytest.fixture
def small_dsprites(monkeypatch):
    monkeypatch.setattr(sprites, "DSPRITES_SIZES", SMALL_DSPRITES)
    monkeypatch.setattr(sprites, "DSPRITES_ROWS", 10)  # several blocks, the last one short


def test_missing_dsprites_says_where_to_put_it_and_where_it_comes_from(tmp_path):
    assert dsprites_path(tmp_path) is None
    with pytest.raises(UserError) as error:
        dsprites_grid(tmp_path)
    message = str(error.value)
    assert DSPRITES_FILE in message and str(tmp_path / "dsprites") in message
    assert "https://github.com/deepmind/dsprites-dataset" in message
    with pytest.raises(UserError, match="not found"):
        dsprites_source(100, 10, data_seed=0, root=tmp_path)


def test_dsprites_is_found_in_its_folder_or_the_data_root(tmp_path, monkeypatch):
    (tmp_path / DSPRITES_FILE).write_bytes(b"")
    assert dsprites_path(tmp_path) == tmp_path / DSPRITES_FILE
    (tmp_path / "dsprites").mkdir()
    (tmp_path / "dsprites" / DSPRITES_FILE).write_bytes(b"")
    assert dsprites_path(tmp_path) == tmp_path / "dsprites" / DSPRITES_FILE
    monkeypatch.setenv("VAE_ZOO_DATA", str(tmp_path))
    assert dsprites_path() == tmp_path / "dsprites" / DSPRITES_FILE


def test_a_dsprites_file_serves_its_images_and_factor_values(tmp_path, small_dsprites):
    indices = write_dsprites(tmp_path / "dsprites" / DSPRITES_FILE)
    grid = dsprites_grid(tmp_path)
    assert grid.names == FACTOR_NAMES and grid.sizes == SMALL_DSPRITES
    assert grid.categorical == ("shape",)
    for values, ours, size in zip(grid.values, factor_values(), SMALL_DSPRITES):
        np.testing.assert_array_equal(values, ours[:size])
    shuffled = indices[np.random.default_rng(8).permutation(len(indices))]
    images = grid.images(shuffled)
    assert images.shape == (72, 1, 64, 64) and images.dtype == np.uint8
    np.testing.assert_array_equal(images[:, 0], render(shuffled, 64))

    source = dsprites_source(0, 12, data_seed=9, root=tmp_path)
    train, test = sprites.draw_grid_points(SMALL_DSPRITES, 0, 12, data_seed=9)
    assert source.train_images.shape == (60, 1, 64, 64)
    assert source.test_images.shape == (12, 1, 64, 64)
    np.testing.assert_array_equal(source.test_images[:, 0].numpy(), render(test, 64))
    np.testing.assert_array_equal(source.train_factors.numpy(),
                                  grid.factor_values(train).astype(np.float32))
    assert source.factor_names == FACTOR_NAMES


def bad_classes() -> np.ndarray:
    classes = np.concatenate([np.zeros((72, 1), np.int64),
                              np.stack(np.unravel_index(np.arange(72), SMALL_DSPRITES), 1)], 1)
    return classes[::-1].copy()


@pytest.mark.parametrize("replace, problem", [
    ({"imgs": np.zeros((72, 32, 32), np.uint8)}, "imgs is a uint8 array of shape"),
    ({"imgs": np.full((72, 64, 64), 2, np.uint8)}, "other than 0 and 1"),
    ({"latents_classes": np.zeros((72, 5), np.int64)}, "latents_classes has shape"),
    ({"latents_classes": bad_classes()}, "row-major order"),
    ({"latents_values": np.random.default_rng(0).random((72, 6))}, "do not follow"),
])
def test_a_wrong_dsprites_file_is_refused_with_its_name(tmp_path, small_dsprites, replace,
                                                        problem):
    path = tmp_path / DSPRITES_FILE
    write_dsprites(path, **replace)
    with pytest.raises(UserError, match=problem) as error:
        dsprites_grid(tmp_path).images(np.zeros((1, 5), np.int64))
    assert str(path) in str(error.value) and "download it again" in str(error.value)


def test_a_dsprites_file_that_is_no_archive_or_misses_a_member_is_refused(tmp_path,
                                                                           small_dsprites):
    path = tmp_path / DSPRITES_FILE
    path.write_bytes(b"not a zip archive")
    with pytest.raises(UserError, match="cannot read latents"):
        dsprites_grid(tmp_path)
    write_dsprites(path)
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in members.items():
            if name != "imgs.npy":
                archive.writestr(name, content)
    grid = dsprites_grid(tmp_path)
    with pytest.raises(UserError, match="cannot read imgs"):
        grid.images(np.zeros((1, 5), np.int64))
