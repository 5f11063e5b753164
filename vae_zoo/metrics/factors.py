"""Disentanglement metrics: how well latent codes capture the known factors that generated the data.

The suite of google-research/disentanglement_lib (Locatello et al. 2019, "Challenging Common
Assumptions in the Unsupervised Learning of Disentangled Representations"), written again as numpy
and scikit-learn functions that know nothing about models or images. Codes are `(N, L)` arrays
(usually posterior means) and factors `(N, F)` integer indices of each factor's discrete values
(the cell of the data grid an image was rendered from); either may be a numpy array or a torch
tensor. The defaults below are disentanglement_lib's study settings.

Metric (paper), function: value from worst to best; study settings.
- BetaVAE score (Higgins et al. 2017), `beta_vae_score`: chance 1/F .. 1; batch 64, 10000
  train and 5000 eval points.
- FactorVAE score (Kim & Mnih 2018), `factor_vae_score`: chance 1/F .. 1; batch 64, 10000
  train and 5000 eval points, global variances from 10000 points, scale threshold 0.05.
- Mutual Information Gap (Chen et al. 2018), `mutual_information_gap`: 0 .. 1; 10000 points,
  codes in 20 bins.
- DCI disentanglement, completeness, informativeness (Eastwood & Williams 2018), `dci`: 0 .. 1
  each (informativeness from chance); 10000 train and 5000 test points, gradient boosted trees.
- SAP (Kumar et al. 2018), `sap_score`: 0 .. at most mean(1 - 1/K) over factors of K values;
  10000 train and 5000 test points, discrete factors.
- Modularity, explicitness (Ridgeway & Mozer 2018), `modularity_explicitness`: 0 .. 1 and
  chance 0.5 .. 1; 10000 train and 5000 test points, codes in 20 bins.

BetaVAE and FactorVAE need batches that share one factor's value, so they take an `Encode`
function (factor indices `(N, F)` to codes `(N, L)`; the harness renders and encodes the images)
and the number of values of each factor; the others take codes and factors of points drawn
uniformly from the grid (`sample_factors`). `linear_probe_r2` is this benchmark's own, for
continuous factors.
"""

from collections.abc import Callable, Iterator, Sequence

import numpy as np
from scipy.stats import entropy
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.metrics import mutual_info_score, r2_score, roc_auc_score
from sklearn.svm import LinearSVC

__all__ = [
    "Encode",
    "beta_vae_score",
    "dci",
    "factor_vae_score",
    "linear_probe_r2",
    "modularity_explicitness",
    "mutual_information_gap",
    "normalised_mutual_information",
    "sample_factors",
    "sap_score",
]

Encode = Callable[[np.ndarray], np.ndarray]
"""Factor indices `(N, F)` int64 to codes `(N, L)` (the grid images' posterior means)."""

# Rows given to one `encode` call: large enough to fill a GPU batch, small enough for its memory.
ENCODE_ROWS = 64 * 128


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


def _as_factors(values, name: str) -> np.ndarray:
    """An int64 `(N, F)` copy of discrete factor indices; non-integer values are an error."""
    matrix = _as_matrix(values, name)
    if (matrix != np.round(matrix)).any():
        raise ValueError(f"{name} must be integer indices of discrete factor values")
    return matrix.astype(np.int64)


def _check_rows(codes: np.ndarray, factors: np.ndarray, codes_name: str, factors_name: str):
    if codes.shape[0] != factors.shape[0]:
        raise ValueError(
            f"{codes_name} have {codes.shape[0]} rows but {factors_name} {factors.shape[0]}"
        )


def _check_varying(factors: np.ndarray, name: str):
    """Every factor must take at least two values (a constant one has nothing to predict)."""
    constant = np.flatnonzero((factors == factors[:1]).all(axis=0))
    if constant.size:
        raise ValueError(f"{name} {constant.tolist()} are constant")


def _train_test(codes_train, factors_train, codes_test, factors_test):
    """The four validated matrices of a metric fitted on one sample and scored on another."""
    codes_train = _as_matrix(codes_train, "codes_train")  # (N, L)
    factors_train = _as_factors(factors_train, "factors_train")  # (N, F)
    codes_test = _as_matrix(codes_test, "codes_test")  # (M, L)
    factors_test = _as_factors(factors_test, "factors_test")  # (M, F)
    _check_rows(codes_train, factors_train, "codes_train", "factors_train")
    _check_rows(codes_test, factors_test, "codes_test", "factors_test")
    if codes_test.shape[1] != codes_train.shape[1]:
        raise ValueError(
            f"codes_test have {codes_test.shape[1]} columns but codes_train {codes_train.shape[1]}"
        )
    if factors_test.shape[1] != factors_train.shape[1]:
        raise ValueError(
            f"factors_test have {factors_test.shape[1]} columns "
            f"but factors_train {factors_train.shape[1]}"
        )
    _check_varying(factors_train, "factors_train")
    return codes_train, factors_train, codes_test, factors_test


def _histogram_discretize(values: np.ndarray, bins: int) -> np.ndarray:
    """Each column of `(N, D)` mapped to its index among `bins` equal-width bins over its range.

    The same rule as disentanglement_lib's `_histogram_discretize` (the maximum falls in the last
    bin; a constant column falls in one bin).
    """
    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    codes = np.empty(values.shape, dtype=np.int64)
    for column in range(values.shape[1]):
        edges = np.histogram_bin_edges(values[:, column], bins=bins)
        codes[:, column] = np.digitize(values[:, column], edges[:-1])
    return codes


def _discrete_mutual_information(code_bins: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """`(L, F)` plug-in mutual information (nats) of each discretised code with each factor."""
    return np.array(
        [
            [mutual_info_score(factor, code) for factor in factors.T]
            for code in code_bins.T
        ]
    ).reshape(code_bins.shape[1], factors.shape[1])


def _check_sizes(sizes: Sequence[int]) -> tuple[int, ...]:
    checked = tuple(int(size) for size in sizes)
    if not checked or min(checked) < 1 or checked != tuple(sizes):
        raise ValueError(f"sizes must be one positive integer per factor, got {sizes!r}")
    return checked


def sample_factors(sizes: Sequence[int], count: int, rng: np.random.Generator) -> np.ndarray:
    """`(count, F)` int64 factor indices drawn uniformly from the grid: factor k is uniform over
    `0 .. sizes[k] - 1`, independently of the others (disentanglement_lib's `sample_factors`)."""
    sizes = _check_sizes(sizes)
    return rng.integers(0, sizes, size=(count, len(sizes)), dtype=np.int64)


def _encode(encode: Encode, factors: np.ndarray) -> np.ndarray:
    """`(N, L)` float64 codes of `(N, F)` factors, `encode` called on at most ENCODE_ROWS rows."""
    chunks = []
    for start in range(0, len(factors), ENCODE_ROWS):
        rows = factors[start:start + ENCODE_ROWS]
        codes = _as_matrix(encode(rows), "codes")
        _check_rows(codes, rows, "codes", "factors")
        if chunks and codes.shape[1] != chunks[0].shape[1]:
            raise ValueError(
                f"encode returned {codes.shape[1]} columns, before {chunks[0].shape[1]}"
            )
        chunks.append(codes)
    return np.concatenate(chunks)


def _point_chunks(num_points: int, rows_per_point: int) -> Iterator[int]:
    """Numbers of points, summing to `num_points`, whose rows fill about one `encode` call each."""
    per_chunk = max(1, ENCODE_ROWS // rows_per_point)
    for start in range(0, num_points, per_chunk):
        yield min(per_chunk, num_points - start)


def _beta_vae_points(encode: Encode, sizes: tuple[int, ...], rng: np.random.Generator,
                     batch_size: int, num_points: int) -> tuple[np.ndarray, np.ndarray]:
    """BetaVAE training points: `(num_points, L)` features and `(num_points,)` fixed factors.

    Per point a factor k is drawn uniformly, then two batches of grid points, the second taking
    factor k's values from the first; the feature is the mean over the batch of |z1 - z2|.
    """
    features, labels = [], []
    for count in _point_chunks(num_points, 2 * batch_size):
        fixed = rng.integers(len(sizes), size=count)  # (count,)
        pairs = sample_factors(sizes, 2 * count * batch_size, rng)
        pairs = pairs.reshape(2, count, batch_size, len(sizes))
        first, second = pairs
        points = np.arange(count)
        second[points, :, fixed] = first[points, :, fixed]  # (count, batch) on each side
        codes = _encode(encode, pairs.reshape(-1, len(sizes)))
        codes = codes.reshape(2, count, batch_size, -1)  # (2, count, batch, L)
        features.append(np.abs(codes[0] - codes[1]).mean(axis=1))
        labels.append(fixed)
    return np.concatenate(features), np.concatenate(labels)


def beta_vae_score(encode: Encode, sizes: Sequence[int], rng: np.random.Generator, *,
                   batch_size: int = 64, num_train: int = 10_000,
                   num_eval: int = 5_000) -> dict[str, float]:
    """BetaVAE disentanglement score (Higgins et al. 2017, "beta-VAE: Learning Basic Visual
    Concepts with a Constrained Variational Framework"), as disentanglement_lib's `beta_vae.py`.

    A point is made by drawing a factor k uniformly and two batches of `batch_size` factor
    vectors from the grid (`sample_factors`) with factor k copied from the first batch into the
    second; its feature is the mean over the batch of |z1 - z2| per code dimension and its label
    k. A logistic regression (scikit-learn defaults, `random_state` drawn from `rng`) is fitted
    on `num_train` points and scored on `num_eval` fresh ones. Returns `beta_vae` (the eval
    accuracy) and `beta_vae_train` (the train accuracy): 1 when the fixed factor can be read off
    the code differences (a code dimension that follows only that factor does not change), about
    1/F (chance) for codes unrelated to the factors. Study settings: batch 64, 10000 train and
    5000 eval points.
    """
    sizes = _check_sizes(sizes)
    if batch_size < 1 or num_train < 1 or num_eval < 1:
        raise ValueError("batch_size, num_train and num_eval must be positive")
    random_state = int(rng.integers(2**31 - 1))
    train_points, train_labels = _beta_vae_points(encode, sizes, rng, batch_size, num_train)
    model = LogisticRegression(random_state=random_state).fit(train_points, train_labels)
    eval_points, eval_labels = _beta_vae_points(encode, sizes, rng, batch_size, num_eval)
    return {
        "beta_vae": float(model.score(eval_points, eval_labels)),
        "beta_vae_train": float(model.score(train_points, train_labels)),
    }


def _factor_vae_votes(encode: Encode, sizes: tuple[int, ...], rng: np.random.Generator,
                      batch_size: int, num_points: int, global_variances: np.ndarray,
                      active: np.ndarray) -> np.ndarray:
    """`(F, active dims)` counts: how often a batch with factor k fixed had its least varying
    (relative to the global variance) active code dimension at each active dimension."""
    num_factors = len(sizes)
    votes = np.zeros((num_factors, int(active.sum())), dtype=np.int64)
    for count in _point_chunks(num_points, batch_size):
        fixed = rng.integers(num_factors, size=count)  # (count,)
        factors = sample_factors(sizes, count * batch_size, rng)
        factors = factors.reshape(count, batch_size, num_factors)
        points = np.arange(count)
        factors[points, :, fixed] = factors[points, 0, fixed][:, None]  # the first row's value
        codes = _encode(encode, factors.reshape(-1, num_factors))
        codes = codes.reshape(count, batch_size, -1)  # (count, batch, L)
        local_variances = codes.var(axis=1, ddof=1)  # (count, L)
        relative = local_variances[:, active] / global_variances[active]  # (count, active dims)
        np.add.at(votes, (fixed, relative.argmin(axis=1)), 1)
    return votes


def factor_vae_score(encode: Encode, sizes: Sequence[int], rng: np.random.Generator, *,
                     batch_size: int = 64, num_train: int = 10_000, num_eval: int = 5_000,
                     num_variance_estimate: int = 10_000,
                     threshold: float = 0.05) -> dict[str, float]:
    """FactorVAE disentanglement score (Kim & Mnih 2018, "Disentangling by Factorising"), as
    disentanglement_lib's `factor_vae.py`.

    Global variances (ddof=1) of the codes of `num_variance_estimate` grid points; a code
    dimension is active when its standard deviation is at least `threshold` (and its variance
    positive, so that the ratio below is defined). Per point a factor k is drawn uniformly and a
    batch of `batch_size` grid points with factor k fixed to one value; its vote goes to the
    active dimension with the smallest local variance (ddof=1) over global variance. The majority
    vote classifier maps each active dimension to the factor that voted for it most on
    `num_train` points: `factor_vae_train` is the share of training votes it gets right (the
    largest count per dimension over all votes), `factor_vae` the share of `num_eval` fresh votes
    that go to each dimension's factor. 1 when fixing any factor silences its own code
    dimension, about 1/F (chance) for codes unrelated to the factors; `factor_vae_active` is the
    number of active dimensions, and with none active both scores are 0. Study settings: batch
    64, 10000 train, 5000 eval and 10000 variance points, threshold 0.05.
    """
    sizes = _check_sizes(sizes)
    if batch_size < 2 or num_variance_estimate < 2:
        raise ValueError("batch_size and num_variance_estimate must be at least 2 (ddof=1)")
    if num_train < 1 or num_eval < 1:
        raise ValueError("num_train and num_eval must be positive")
    codes = _encode(encode, sample_factors(sizes, num_variance_estimate, rng))
    global_variances = codes.var(axis=0, ddof=1)  # (L,)
    active = (np.sqrt(global_variances) >= threshold) & (global_variances > 0)
    if not active.any():
        return {"factor_vae": 0.0, "factor_vae_train": 0.0, "factor_vae_active": 0.0}
    train_votes = _factor_vae_votes(
        encode, sizes, rng, batch_size, num_train, global_variances, active
    )
    classifier = train_votes.argmax(axis=0)  # (active dims,) a factor per dimension
    dimensions = np.arange(len(classifier))
    eval_votes = _factor_vae_votes(
        encode, sizes, rng, batch_size, num_eval, global_variances, active
    )
    return {
        "factor_vae": float(eval_votes[classifier, dimensions].sum() / eval_votes.sum()),
        "factor_vae_train": float(train_votes[classifier, dimensions].sum() / train_votes.sum()),
        "factor_vae_active": float(active.sum()),
    }


def normalised_mutual_information(codes, factors, bins: int = 20) -> np.ndarray:
    """`(L, F)` I(z_j; v_k) / H(v_k): the share of each factor's entropy held by each code.

    Codes are discretised into `bins` equal-width bins over each column's range (as
    disentanglement_lib's `_histogram_discretize`), factors are discrete indices used as they
    are; I is the plug-in mutual information (nats, `sklearn.metrics.mutual_info_score`) and
    H(v_k) = I(v_k; v_k). 0 for a code unrelated to the factor (up to plug-in bias) or a
    constant code, 1 for a code whose bins determine the factor. A constant factor has no
    entropy and is an error. These are the numbers MIG ranks.
    """
    code_bins = _histogram_discretize(_as_matrix(codes, "codes"), bins)  # (N, L)
    factor_values = _as_factors(factors, "factors")  # (N, F)
    _check_rows(code_bins, factor_values, "codes", "factors")
    _check_varying(factor_values, "factors")
    mutual_information = _discrete_mutual_information(code_bins, factor_values)  # (L, F)
    factor_entropy = np.array([mutual_info_score(values, values) for values in factor_values.T])
    return mutual_information / factor_entropy


def mutual_information_gap(codes, factors, bins: int = 20) -> float:
    """Mutual Information Gap (Chen et al. 2018, "Isolating Sources of Disentanglement in
    Variational Autoencoders"), as disentanglement_lib's `mig.py`.

    Each code dimension is discretised into `bins` equal-width bins over its observed range;
    factors are discrete indices used as they are. I(z_j; v_k) is the plug-in mutual information
    (nats, `sklearn.metrics.mutual_info_score`) and H(v_k) = I(v_k; v_k). For each factor the gap
    between the largest and the second largest I(z_j; v_k) over codes is divided by H(v_k); MIG
    is the mean over factors: 1 when each factor is captured by one code dimension alone, 0 when
    its best two dimensions share it equally (or none holds it). With a single code dimension the
    second largest is 0. A constant code dimension carries no information; a constant factor has
    no entropy and is an error. Study settings: 10000 points, 20 bins.
    """
    shares = normalised_mutual_information(codes, factors, bins)  # (L, F)
    ranked = np.sort(shares, axis=0)[::-1]  # (L, F), largest first
    second = ranked[1] if len(ranked) > 1 else np.zeros(shares.shape[1])
    return float(np.mean(ranked[0] - second))


def _weighted_concentration(importance: np.ndarray) -> float:
    """Sum over rows of (1 - entropy of the row's normalised importances, in base = number of
    columns) times the row's share of the total importance; 0 for an all-zero matrix.

    Rows without importance weigh nothing (disentanglement_lib adds 1e-11 to every entry for
    the same effect); with one column every row is fully concentrated.
    """
    total = importance.sum()
    if total == 0:
        return 0.0
    row_totals = importance.sum(axis=1)
    rows = row_totals > 0
    if importance.shape[1] == 1:
        concentration = np.ones(rows.sum())
    else:
        concentration = 1 - entropy(importance[rows], base=importance.shape[1], axis=1)
    return float(np.sum(concentration * row_totals[rows] / total))


def dci(codes_train, factors_train, codes_test, factors_test, *, seed: int = 0,
        trees: int = 100) -> dict[str, float]:
    """Disentanglement, completeness and informativeness (Eastwood & Williams 2018, "A Framework
    for the Quantitative Evaluation of Disentangled Representations"), as disentanglement_lib's
    `dci.py`.

    Per factor a `GradientBoostingClassifier` (scikit-learn defaults, `random_state=seed`;
    `trees` boosting stages, scikit-learn's default 100: fewer are faster and coarser) predicts
    the factor from all codes; its `feature_importances_` are that factor's column of the
    `(L, F)` importance matrix. `dci_disentanglement`: per code, 1 - the entropy (base F) of
    its normalised importances over factors, weighted by the code's share of all importance;
    `dci_completeness`: per factor, 1 - the entropy (base L) of its normalised importances over
    codes, weighted by the factor's share. Both are 1 when each code predicts one factor and
    each factor is predicted by one code, near 0 when importance is spread evenly, and 0 when no
    tree uses any code (all importances zero). `dci_informativeness` is the mean test accuracy
    of the classifiers over factors (`dci_informativeness_train` on the training points): 1 for
    a code that holds every factor, about chance for a code that holds none. Study settings:
    10000 train and 5000 test points.
    """
    codes_train, factors_train, codes_test, factors_test = _train_test(
        codes_train, factors_train, codes_test, factors_test
    )
    num_codes, num_factors = codes_train.shape[1], factors_train.shape[1]
    importance = np.zeros((num_codes, num_factors))
    train_accuracy, test_accuracy = [], []
    for factor in range(num_factors):
        model = GradientBoostingClassifier(n_estimators=trees, random_state=seed)
        model.fit(codes_train, factors_train[:, factor])
        importance[:, factor] = np.abs(model.feature_importances_)
        train_accuracy.append(model.score(codes_train, factors_train[:, factor]))
        test_accuracy.append(model.score(codes_test, factors_test[:, factor]))
    return {
        "dci_disentanglement": _weighted_concentration(importance),
        "dci_completeness": _weighted_concentration(importance.T),
        "dci_informativeness": float(np.mean(test_accuracy)),
        "dci_informativeness_train": float(np.mean(train_accuracy)),
    }


def sap_score(codes_train, factors_train, codes_test, factors_test) -> float:
    """Separated Attribute Predictability (Kumar et al. 2018, "Variational Inference of
    Disentangled Latent Concepts from Unlabeled Observations"), as disentanglement_lib's
    `sap_score.py` with discrete factors (`continuous_factors=False`).

    Score matrix `(L, F)`: the test accuracy of `LinearSVC(C=0.01, class_weight="balanced")`
    fitted on one code column (train points) to predict one factor; a constant code column
    carries nothing and scores 0 (it is not a runner-up). SAP is the mean over factors of the
    gap between the best and second best code's score (with one code, the best score alone).
    0 when two codes predict each factor equally well. Its maximum is below 1: another code
    predicts a factor of K values at chance, 1/K, so a code equal to the factor gains at most
    1 - 1/K (1/2 for a binary factor). It reaches that only if the one-vs-rest linear SVC on one
    column singles out every value: the outer two always, the inner ones only as far as the
    penalty C=0.01 allows, which depends on the code's scale and the number of points (not
    scale free). Study settings: 10000 train, 5000 test points.
    """
    codes_train, factors_train, codes_test, factors_test = _train_test(
        codes_train, factors_train, codes_test, factors_test
    )
    num_codes, num_factors = codes_train.shape[1], factors_train.shape[1]
    scores = np.zeros((num_codes, num_factors))
    for code in range(num_codes):
        column_train = codes_train[:, [code]]  # (N, 1)
        if np.ptp(column_train) == 0:
            continue
        for factor in range(num_factors):
            classifier = LinearSVC(C=0.01, class_weight="balanced", random_state=0)
            classifier.fit(column_train, factors_train[:, factor])
            scores[code, factor] = classifier.score(codes_test[:, [code]], factors_test[:, factor])
    ranked = np.sort(scores, axis=0)[::-1]  # (L, F), best first
    second = ranked[1] if num_codes > 1 else np.zeros(num_factors)
    return float(np.mean(ranked[0] - second))


def _modularity(mutual_information: np.ndarray) -> float:
    """Mean over codes of 1 - (sum of squared MI - max) / (max * (F - 1)), 0 for a code whose MI
    is 0 with every factor; with one factor every informative code is modular (1)."""
    squared = mutual_information**2  # (L, F)
    largest = squared.max(axis=1)  # (L,)
    others = squared.sum(axis=1) - largest
    denominator = largest * (squared.shape[1] - 1)
    deviation = np.divide(others, denominator, out=np.zeros_like(others), where=denominator > 0)
    return float(np.mean(np.where(largest > 0, 1 - deviation, 0.0)))


def _macro_roc_auc(classifier: LogisticRegression, codes: np.ndarray, labels: np.ndarray) -> float:
    """Mean over the classifier's classes of the ROC-AUC of its probability for the class against
    membership of the class (disentanglement_lib's one-hot `roc_auc_score`, macro average).

    Built on `classifier.classes_` rather than `label_binarize`, which gives one column for two
    classes; a class absent from `labels` (or the only one present) has no AUC and is skipped.
    """
    probabilities = classifier.predict_proba(codes)  # (N, classes)
    members = labels[:, None] == classifier.classes_[None, :]  # (N, classes)
    aucs = [
        roc_auc_score(members[:, k], probabilities[:, k])
        for k in range(members.shape[1])
        if 0 < members[:, k].sum() < len(labels)
    ]
    if not aucs:
        raise ValueError("explicitness needs points of at least two of the factor's classes")
    return float(np.mean(aucs))


def modularity_explicitness(codes_train, factors_train, codes_test, factors_test, *,
                            bins: int = 20) -> dict[str, float]:
    """Modularity and explicitness (Ridgeway & Mozer 2018, "Learning Deep Disentangled
    Embeddings With the F-Statistic Loss"), as disentanglement_lib's
    `modularity_explicitness.py`.

    `modularity`: the mutual information matrix `(L, F)` of the training codes (discretised into
    `bins` equal-width bins, as for MIG) against the factors; per code, 1 - (sum of squared MI
    but the largest) / (largest squared MI * (F - 1)), 0 for a code with no information, averaged
    over codes. 1 when each code informs about one factor only; 0 when it informs about all
    equally. It measures how concentrated the information is, not how much there is: codes of
    pure noise have small but unequal plug-in MI and score well above 0.
    `explicitness`: per factor a `LogisticRegression()` (scikit-learn defaults) on all codes,
    standardised with the training mean and standard deviation (a constant code is only
    centred), scored by the macro ROC-AUC of its class probabilities on the test points
    (`explicitness_train` on the training points), averaged over factors: 1 when every factor's
    values are linearly separable in the code, 0.5 for a code unrelated to the factors (below
    0.5 only when the test points contradict the training points). Study settings: 10000
    train, 5000 test points, 20 bins.
    """
    codes_train, factors_train, codes_test, factors_test = _train_test(
        codes_train, factors_train, codes_test, factors_test
    )
    mutual_information = _discrete_mutual_information(
        _histogram_discretize(codes_train, bins), factors_train
    )  # (L, F)
    mean, scale = codes_train.mean(axis=0), codes_train.std(axis=0)
    scale[scale == 0] = 1.0
    standard_train, standard_test = (codes_train - mean) / scale, (codes_test - mean) / scale
    explicitness_train, explicitness_test = [], []
    for factor in range(factors_train.shape[1]):
        classifier = LogisticRegression().fit(standard_train, factors_train[:, factor])
        explicitness_train.append(
            _macro_roc_auc(classifier, standard_train, factors_train[:, factor])
        )
        explicitness_test.append(_macro_roc_auc(classifier, standard_test, factors_test[:, factor]))
    return {
        "modularity": _modularity(mutual_information),
        "explicitness": float(np.mean(explicitness_test)),
        "explicitness_train": float(np.mean(explicitness_train)),
    }


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
