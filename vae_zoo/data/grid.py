"""A dataset's generative factors as a full grid, from which any image can be drawn.

The disentanglement metrics (`vae_zoo.metrics.factors`) need images of chosen factor
combinations: a batch with one factor held fixed and the others random (BetaVAE and FactorVAE
scores), or random grid points (MIG, DCI, SAP, modularity), as disentanglement_lib draws them.
A `FactorGrid` names each factor, lists the value of each of its indices, and renders the images
of any factor indices; datasets with factors (`circles`, `sprites`, `dsprites`) carry one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["FactorGrid"]


@dataclass(frozen=True)
class FactorGrid:
    """Factors `names`, the value of each index of each factor (`values`), and `render`, which
    maps factor indices `(N, F)` int64 to uint8 images `(N, C, H, W)` (0..255, grey levels as
    the dataset's own images before binarisation)."""

    names: tuple[str, ...]
    values: tuple[np.ndarray, ...]  # per factor, (size,) float64
    render: Callable[[np.ndarray], np.ndarray]
    categorical: tuple[str, ...] = ()  # factors whose indices name classes (shape), not amounts

    def __post_init__(self) -> None:
        if len(self.names) != len(self.values):
            raise ValueError(f"{len(self.names)} factor names but {len(self.values)} value lists")

    @property
    def sizes(self) -> tuple[int, ...]:
        """The number of values of each factor."""
        return tuple(len(values) for values in self.values)

    def __len__(self) -> int:
        """Grid points (images) in the whole grid."""
        return int(np.prod(self.sizes))

    def sample(self, count: int, rng: np.random.Generator) -> np.ndarray:
        """`count` grid points drawn uniformly (each factor independently): `(count, F)` int64."""
        return np.stack([rng.integers(0, size, count) for size in self.sizes], 1).astype(np.int64)

    def check(self, indices: np.ndarray) -> np.ndarray:
        """`indices` as `(N, F)` int64, or ValueError when any is off the grid."""
        indices = np.asarray(indices, dtype=np.int64)
        if indices.ndim != 2 or indices.shape[1] != len(self.sizes):
            raise ValueError(f"factor indices must be (N, {len(self.sizes)}), got {indices.shape}")
        if ((indices < 0) | (indices >= np.array(self.sizes))).any():
            raise ValueError(f"factor indices outside the grid of sizes {self.sizes}")
        return indices

    def images(self, indices: np.ndarray) -> np.ndarray:
        """The uint8 images `(N, C, H, W)` of factor indices `(N, F)`."""
        return self.render(self.check(indices))

    def factor_values(self, indices: np.ndarray) -> np.ndarray:
        """The factor values `(N, F)` float64 of factor indices `(N, F)`."""
        indices = self.check(indices)
        return np.stack([values[indices[:, k]] for k, values in enumerate(self.values)], 1)

    def flat(self, indices: np.ndarray) -> np.ndarray:
        """The position `(N,)` of each grid point in the grid's row-major order (the last factor
        fastest), as dSprites orders its images."""
        return np.ravel_multi_index(tuple(self.check(indices).T), self.sizes).astype(np.int64)
