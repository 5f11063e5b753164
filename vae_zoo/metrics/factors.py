"""Factor recovery: how well latent codes capture known generative factors (e.g. circles' x, y, r).

Both metrics take latent codes `(N, L)` (usually posterior means) and true factors `(N, F)` as torch
tensors or numpy arrays, and know nothing about the model that produced the codes.
"""

import numpy as np
from sklearn.linear_model import LinearRegression
from sklearn.metrics import mutual_info_score, r2_score

__all__ = ["linear_probe_r2", "mutual_information_gap"]


def _as_matrix(values, name: str) -> np.ndarray:
    """A float64 numpy `(N, D)` copy of a tensor or array (a 1-D input is one column)."""
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    matrix = np.asarray(values, dtype=np.float64)
    if matrix.ndim == 1:
        matrix = matrix[:, None]
    if matrix.ndim != 2:
        raise ValueError(f"{name} must be (N, D), got shape {matrix.shape}")
    if not np.isfinite(matrix).all():
        raise ValueError(f"{name} contains non-finite values")
    return matrix


def _histogram_discretize(values: np.ndarray, bins: int) -> np.ndarray:
    """Each column of `(N, D)` mapped to its index among `bins` equal-width bins over its range.

    The same rule as disentanglement_lib's `_histogram_discretize` (the maximum falls in the last
    bin; a constant column falls in one bin).
    """
    codes = np.empty(values.shape, dtype=np.int64)
    for column in range(values.shape[1]):
        edges = np.histogram_bin_edges(values[:, column], bins=bins)
        codes[:, column] = np.digitize(values[:, column], edges[:-1])
    return codes


def mutual_information_gap(latents, factors, bins: int = 20) -> float:
    """Mutual Information Gap (Chen et al. 2018) as computed by disentanglement_lib.

    Every latent dimension and every factor is discretised into `bins` equal-width bins over its
    observed range; I(z_j; v_k) is the plug-in mutual information of the discretised values (nats,
    `sklearn.metrics.mutual_info_score`). For each factor, the gap between the largest and the
    second largest I(z_j; v_k) over latents is divided by the factor's entropy H(v_k), and MIG is
    the mean over factors: 1 when each factor is captured by one latent alone, 0 when the best two
    latents share it equally. With a single latent dimension the second largest is taken as 0, so
    the score is I(z; v_k) / H(v_k) averaged over factors. Unlike disentanglement_lib, factors are
    discretised too, as ours are continuous (a factor with at most `bins` evenly spaced values keeps
    them). Collapsed (constant) latent dimensions have zero information and are fine; a constant
    factor has no entropy and is an error.
    """
    latent_codes = _histogram_discretize(_as_matrix(latents, "latents"), bins)  # (N, L)
    factor_codes = _histogram_discretize(_as_matrix(factors, "factors"), bins)  # (N, F)
    if latent_codes.shape[0] != factor_codes.shape[0]:
        raise ValueError(
            f"latents have {latent_codes.shape[0]} rows but factors {factor_codes.shape[0]}"
        )
    num_latents, num_factors = latent_codes.shape[1], factor_codes.shape[1]
    mutual_information = np.array(
        [
            [mutual_info_score(factor_codes[:, k], latent_codes[:, j]) for k in range(num_factors)]
            for j in range(num_latents)
        ]
    )  # (L, F)
    entropy = np.array([mutual_info_score(codes, codes) for codes in factor_codes.T])  # (F,)
    if (entropy <= 0).any():
        raise ValueError(f"factors {np.flatnonzero(entropy <= 0).tolist()} are constant")
    ranked = np.sort(mutual_information, axis=0)[::-1]  # (L, F), largest first
    second = ranked[1] if num_latents > 1 else np.zeros(num_factors)
    return float(np.mean((ranked[0] - second) / entropy))


def linear_probe_r2(latents, factors, *, train_fraction: float = 0.8, seed: int = 0) -> list[float]:
    """Held-out R^2 of a least-squares linear map (with bias) from latents to each factor.

    Rows are split at random (numpy `default_rng(seed)`) into `train_fraction` for fitting
    (`sklearn.linear_model.LinearRegression`) and the rest for scoring (`sklearn.metrics.r2_score`),
    one value per factor: about 1 when a factor is a linear function of the latents, about 0 (or
    slightly below, as it is out of sample) when the latents carry no information about it.
    """
    latent_matrix = _as_matrix(latents, "latents")  # (N, L)
    factor_matrix = _as_matrix(factors, "factors")  # (N, F)
    num_rows = latent_matrix.shape[0]
    if factor_matrix.shape[0] != num_rows:
        raise ValueError(f"latents have {num_rows} rows but factors {factor_matrix.shape[0]}")
    num_train = int(round(train_fraction * num_rows))
    if not 2 <= num_train <= num_rows - 2:
        raise ValueError(f"train_fraction={train_fraction} of {num_rows} rows leaves a split empty")
    order = np.random.default_rng(seed).permutation(num_rows)
    train, test = order[:num_train], order[num_train:]
    probe = LinearRegression().fit(latent_matrix[train], factor_matrix[train])
    scores = r2_score(
        factor_matrix[test], probe.predict(latent_matrix[test]), multioutput="raw_values"
    )
    return [float(score) for score in np.atleast_1d(scores)]
