"""Known answers for the disentanglement metrics (disentanglement_lib's suite) and the linear probe.

Three codes run through every metric: the factors themselves up to scaling and permutation of the
columns (the metric's maximum), a rotation that mixes the first two factors in a pair (clearly
lower), and noise independent of the factors (the metric's minimum, or chance). Many tests use
the full grid of factor values, repeated: there the factors are exactly independent, so a code
that follows one factor carries exactly nothing about another and the scores are exact.
"""

import math

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import MultiLabelBinarizer
from sklearn.svm import LinearSVC

from vae_zoo.metrics.factors import (
    ENCODE_ROWS,
    beta_vae_score,
    dci,
    factor_vae_score,
    linear_probe_r2,
    modularity_explicitness,
    mutual_information_gap,
    normalised_mutual_information,
    sample_factors,
    sap_score,
)

SIZES = (3, 3, 2)  # the first two of equal size, so that the rotation treats them alike
CHANCE = 1 / len(SIZES)
NUM_TRAIN, NUM_TEST = 1_000, 500
# The aligned code: code 0 is factor 2, code 1 factor 0, code 2 factor 1, each scaled and shifted.
PERMUTATION = [2, 0, 1]
SCALES = np.array([1.5, -2.0, 3.0])
OFFSETS = np.array([1.0, -4.0, 0.5])
# Points for the two metrics that encode factor-conditioned batches (batch 64 as in the study).
FEW_POINTS = {"num_train": 300, "num_eval": 600}


def full_grid(sizes, repeats: int) -> np.ndarray:
    """`(repeats * prod(sizes), F)` int64: every combination of factor values, `repeats` times."""
    axes = np.meshgrid(*[np.arange(size) for size in sizes], indexing="ij")
    cells = np.stack(axes, axis=-1).reshape(-1, len(sizes))
    return np.tile(cells, (repeats, 1)).astype(np.int64)


def aligned_code(factors: np.ndarray) -> np.ndarray:
    """Each code dimension is one factor, scaled and shifted, in another order."""
    return factors[:, PERMUTATION] * SCALES[: factors.shape[1]] + OFFSETS[: factors.shape[1]]


def standardised(factors: np.ndarray, sizes) -> np.ndarray:
    """Factors minus their mean over the grid, over their standard deviation (uniform values)."""
    sizes = np.asarray(sizes)
    return (factors - (sizes - 1) / 2) / np.sqrt((sizes**2 - 1) / 12)


def rotated_code(factors: np.ndarray, sizes=SIZES) -> np.ndarray:
    """(v0 + v1, v0 - v1, v2) of standardised factors: v0 and v1 each spread over two codes."""
    values = standardised(factors, sizes)
    return np.column_stack([values[:, 0] + values[:, 1], values[:, 0] - values[:, 1], values[:, 2]])


def noise_encoder(seed: int):
    generator = np.random.default_rng(seed)
    return lambda factors: generator.normal(size=(len(factors), 3))


def train_test_sample(seed: int, code=aligned_code):
    """Codes and factors of NUM_TRAIN and NUM_TEST uniform grid points."""
    rng = np.random.default_rng(seed)
    factors_train = sample_factors(SIZES, NUM_TRAIN, rng)
    factors_test = sample_factors(SIZES, NUM_TEST, rng)
    return code(factors_train), factors_train, code(factors_test), factors_test


def noise_sample(seed: int):
    rng = np.random.default_rng(seed)
    factors_train = sample_factors(SIZES, NUM_TRAIN, rng)
    factors_test = sample_factors(SIZES, NUM_TEST, rng)
    return (rng.normal(size=(NUM_TRAIN, 3)), factors_train,
            rng.normal(size=(NUM_TEST, 3)), factors_test)


def on_grid(code, sizes=SIZES, repeats: int = 50):
    """The same grid points for training and testing."""
    factors = full_grid(sizes, repeats)
    return code(factors), factors, code(factors), factors


# --- sample_factors ---------------------------------------------------------------------------


def test_sample_factors_draws_int64_indices_uniform_over_each_factor_and_the_grid():
    factors = sample_factors((3, 5), 30_000, np.random.default_rng(0))
    assert factors.shape == (30_000, 2) and factors.dtype == np.int64
    assert factors.min(axis=0).tolist() == [0, 0] and factors.max(axis=0).tolist() == [2, 4]
    # Frequencies of 1/3 and 1/5 have standard errors below 0.003 at 30k draws.
    for column, size in enumerate((3, 5)):
        shares = np.bincount(factors[:, column], minlength=size) / len(factors)
        assert np.abs(shares - 1 / size).max() < 0.012
    cells = np.bincount(factors[:, 0] * 5 + factors[:, 1], minlength=15) / len(factors)
    assert np.abs(cells - 1 / 15).max() < 0.01  # independent: every cell 1/15


def test_sample_factors_repeats_with_the_same_generator_seed():
    first = sample_factors(SIZES, 100, np.random.default_rng(7))
    assert np.array_equal(first, sample_factors(SIZES, 100, np.random.default_rng(7)))
    assert not np.array_equal(first, sample_factors(SIZES, 100, np.random.default_rng(8)))


@pytest.mark.parametrize("sizes", [(), (3, 0), (2.5, 3)])
def test_sample_factors_refuses_sizes_that_are_not_positive_integers(sizes):
    with pytest.raises(ValueError, match="sizes must be one positive integer per factor"):
        sample_factors(sizes, 10, np.random.default_rng(0))


# --- BetaVAE score ----------------------------------------------------------------------------


def test_beta_vae_score_is_exactly_one_when_each_code_dimension_is_one_factor():
    """The fixed factor's own code dimension has |z1 - z2| = 0 exactly and every other one a
    positive mean difference, so the classes are separable and the classifier is always right."""
    scores = beta_vae_score(aligned_code, SIZES, np.random.default_rng(0), **FEW_POINTS)
    assert scores == {"beta_vae": 1.0, "beta_vae_train": 1.0}


def test_beta_vae_score_of_a_rotated_pair_is_two_thirds():
    """Fixing v0 or v1 of (v0 + v1, v0 - v1, v2) leaves the same distribution of differences
    (both codes move by the other factor), so no classifier tells those two labels apart: they
    are right half of the time, v2 always. Expected 1/3 + 2/3 * 1/2 = 2/3; 600 eval points give
    a standard error of 0.017 and the bound is 4 of them."""
    scores = beta_vae_score(rotated_code, SIZES, np.random.default_rng(0), **FEW_POINTS)
    assert scores["beta_vae"] == pytest.approx(2 / 3, abs=0.07)


def test_beta_vae_score_of_noise_is_chance():
    """Codes independent of the factors: the label is unpredictable, 1/3 +- 0.02 at 600 points."""
    scores = beta_vae_score(noise_encoder(1), SIZES, np.random.default_rng(0), **FEW_POINTS)
    assert scores["beta_vae"] == pytest.approx(CHANCE, abs=0.08)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_beta_vae_train_accuracy_is_measured_on_the_training_points():
    """30 training points in 20 noise dimensions: the classifier fits them (lbfgs stops at its
    100 iterations on such separable points), while fresh points stay near chance."""
    generator = np.random.default_rng(100)

    def noise(factors):
        return 5 * generator.normal(size=(len(factors), 20))

    scores = beta_vae_score(noise, SIZES, np.random.default_rng(0), num_train=30, num_eval=300)
    assert scores["beta_vae_train"] > 0.6 and scores["beta_vae"] < 0.45


def test_beta_vae_score_does_not_depend_on_the_order_of_code_dimensions():
    def reordered(factors):
        return aligned_code(factors)[:, ::-1]

    for code in (aligned_code, reordered):
        assert beta_vae_score(code, SIZES, np.random.default_rng(0), **FEW_POINTS)["beta_vae"] == 1


def test_beta_vae_score_repeats_with_the_same_generator_seed():
    first = beta_vae_score(rotated_code, SIZES, np.random.default_rng(3), **FEW_POINTS)
    assert beta_vae_score(rotated_code, SIZES, np.random.default_rng(3), **FEW_POINTS) == first
    assert beta_vae_score(rotated_code, SIZES, np.random.default_rng(4), **FEW_POINTS) != first


def test_beta_vae_score_encodes_many_points_per_call_with_in_range_int64_factors():
    calls = []

    def recording(factors):
        calls.append(factors)
        return aligned_code(factors)

    beta_vae_score(recording, SIZES, np.random.default_rng(0), num_train=300, num_eval=200)
    rows = [len(factors) for factors in calls]
    assert sum(rows) == 2 * 64 * (300 + 200)  # two batches of 64 per point
    assert max(rows) <= ENCODE_ROWS and len(calls) <= 9  # 64 points a call: 5 + 4 calls
    for factors in calls:
        assert factors.dtype == np.int64 and factors.shape[1] == 3
        assert (factors >= 0).all() and (factors < np.array(SIZES)).all()


# --- FactorVAE score --------------------------------------------------------------------------

FACTOR_VAE_POINTS = {**FEW_POINTS, "num_variance_estimate": 1_000}


def test_factor_vae_score_is_exactly_one_when_each_code_dimension_is_one_factor():
    """Fixing a factor makes its own code dimension constant: local variance 0, every vote goes
    to it and the majority classifier is always right."""
    scores = factor_vae_score(aligned_code, SIZES, np.random.default_rng(0), **FACTOR_VAE_POINTS)
    assert scores == {"factor_vae": 1.0, "factor_vae_train": 1.0, "factor_vae_active": 3.0}


def test_factor_vae_score_of_a_rotated_pair_is_two_thirds():
    """Fixing v0 or v1 leaves both mixed codes with the same local variance, so both factors
    vote for the same dimension (the one with the smaller global variance) and the classifier
    gives it to one of them; v2 votes for its own code. Expected 1/3 + 1/3 = 2/3, standard error
    0.02 at 600 eval points."""
    scores = factor_vae_score(rotated_code, SIZES, np.random.default_rng(0), **FACTOR_VAE_POINTS)
    assert scores["factor_vae"] == pytest.approx(2 / 3, abs=0.08)
    assert scores["factor_vae_active"] == 3.0


def test_factor_vae_score_of_noise_is_chance():
    scores = factor_vae_score(noise_encoder(1), SIZES, np.random.default_rng(0),
                              **FACTOR_VAE_POINTS)
    assert scores["factor_vae"] == pytest.approx(CHANCE, abs=0.08)


def test_factor_vae_score_counts_only_dimensions_whose_scale_reaches_the_threshold():
    """The threshold 0.05 is on the standard deviation: a noise dimension of deviation 0.1
    (variance 0.01) is active, one of 0.03 and a constant one are pruned. The active noise
    dimension never has the smallest relative variance, so the aligned code still scores 1."""
    generator = np.random.default_rng(2)

    def with_small_dims(factors):
        small = generator.normal(size=(len(factors), 2)) * [0.1, 0.03]
        return np.column_stack([aligned_code(factors), small, np.full(len(factors), 3.0)])

    scores = factor_vae_score(with_small_dims, SIZES, np.random.default_rng(0),
                              **FACTOR_VAE_POINTS)
    assert scores == {"factor_vae": 1.0, "factor_vae_train": 1.0, "factor_vae_active": 4.0}


def test_factor_vae_train_accuracy_is_measured_on_the_training_votes():
    """12 training votes over 20 noise dimensions: most dimensions get one vote or none, so the
    majority classifier gets most training votes right, while fresh votes stay near chance."""
    generator = np.random.default_rng(100)

    def noise(factors):
        return generator.normal(size=(len(factors), 20))

    scores = factor_vae_score(noise, SIZES, np.random.default_rng(0), num_train=12,
                              num_eval=300, num_variance_estimate=1_000)
    assert scores["factor_vae_train"] > 0.6 and scores["factor_vae"] < 0.45


def test_factor_vae_score_is_zero_when_no_dimension_is_active():
    def collapsed(factors):
        return np.full((len(factors), 2), 0.5) + 0.001 * factors[:, :2]  # std 0.001 < 0.05

    scores = factor_vae_score(collapsed, SIZES, np.random.default_rng(0), **FACTOR_VAE_POINTS)
    assert scores == {"factor_vae": 0.0, "factor_vae_train": 0.0, "factor_vae_active": 0.0}


def test_factor_vae_score_does_not_depend_on_the_order_of_code_dimensions():
    def reordered(factors):
        return rotated_code(factors)[:, [2, 1, 0]]

    first = factor_vae_score(rotated_code, SIZES, np.random.default_rng(5), **FACTOR_VAE_POINTS)
    assert factor_vae_score(reordered, SIZES, np.random.default_rng(5),
                            **FACTOR_VAE_POINTS) == first


def test_factor_vae_score_repeats_with_the_same_generator_seed():
    first = factor_vae_score(rotated_code, SIZES, np.random.default_rng(3), **FACTOR_VAE_POINTS)
    again = factor_vae_score(rotated_code, SIZES, np.random.default_rng(3), **FACTOR_VAE_POINTS)
    other = factor_vae_score(rotated_code, SIZES, np.random.default_rng(4), **FACTOR_VAE_POINTS)
    assert again == first and other != first


def test_factor_vae_score_encodes_many_points_per_call():
    rows = []

    def recording(factors):
        rows.append(len(factors))
        return aligned_code(factors)

    factor_vae_score(recording, SIZES, np.random.default_rng(0), num_train=300, num_eval=200,
                     num_variance_estimate=1_000)
    assert sum(rows) == 1_000 + 64 * (300 + 200)
    assert max(rows) <= ENCODE_ROWS and len(rows) <= 6  # 1 + 128 points a call: 3 + 2 calls


def test_factor_conditioned_metrics_refuse_bad_encoders_and_settings():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="codes have 1 rows but factors"):
        beta_vae_score(lambda factors: aligned_code(factors)[:1], SIZES, rng, **FEW_POINTS)
    with pytest.raises(ValueError, match="codes contains non-finite values"):
        factor_vae_score(lambda factors: np.full((len(factors), 3), np.nan), SIZES, rng,
                         **FACTOR_VAE_POINTS)
    with pytest.raises(ValueError, match="sizes must be one positive integer"):
        beta_vae_score(aligned_code, (3, 0), rng)
    with pytest.raises(ValueError, match="at least 2"):
        factor_vae_score(aligned_code, SIZES, rng, batch_size=1)


# --- Mutual information gap -------------------------------------------------------------------


def test_mig_by_hand_on_eight_points_split_into_two_bins():
    """bins=2 cuts each code at the middle of its range. Code 0 falls in bins 0 0 0 1 1 1 1 1:
    factor 0 (0 0 0 0 1 1 1 1) except for point 3. Code 1 falls in 0 0 1 1 0 0 1 1: whether
    factor 1 (0 1 2 3 0 1 2 3) is at least 2, and carries nothing about factor 0."""
    factors = np.array([[0, 0], [0, 1], [0, 2], [0, 3], [1, 0], [1, 1], [1, 2], [1, 3]])
    codes = np.array([[0.0, 0.0], [0.1, 0.2], [0.2, 0.8], [0.9, 1.0],
                      [0.8, 0.1], [1.0, 0.3], [0.7, 0.9], [0.9, 0.7]])
    # I(b0; v0) from the joint counts (b0, v0): (0, 0) 3, (1, 0) 1, (1, 1) 4 of 8, with
    # p(b0) = 3/8, 5/8 and p(v0) = 1/2, 1/2.
    mi_code0_factor0 = (3 / 8 * math.log((3 / 8) / (3 / 8 * 1 / 2))
                        + 1 / 8 * math.log((1 / 8) / (5 / 8 * 1 / 2))
                        + 4 / 8 * math.log((4 / 8) / (5 / 8 * 1 / 2)))
    # I(b0; v1): (0, v1) once for v1 = 0, 1, 2; (1, v1) once for v1 = 0, 1, 2 and twice for 3.
    mi_code0_factor1 = (3 * 1 / 8 * math.log((1 / 8) / (3 / 8 * 1 / 4))
                        + 3 * 1 / 8 * math.log((1 / 8) / (5 / 8 * 1 / 4))
                        + 2 / 8 * math.log((2 / 8) / (5 / 8 * 1 / 4)))
    mi_code1_factor1 = math.log(2)  # b1 is a function of v1 with two equally likely values
    # Factor 0: code 0 first, code 1 (I = 0) second. Factor 1: code 1 first, code 0 second.
    gap_factor0 = (mi_code0_factor0 - 0) / math.log(2)
    gap_factor1 = (mi_code1_factor1 - mi_code0_factor1) / math.log(4)
    assert 0 < mi_code0_factor1 < mi_code1_factor1
    expected = (gap_factor0 + gap_factor1) / 2
    assert mutual_information_gap(codes, factors, bins=2) == pytest.approx(expected, abs=1e-12)


def test_mig_is_exactly_one_on_the_grid_when_each_code_dimension_is_one_factor():
    """Three or two evenly spaced values fall in distinct bins of 20, so I(z; v) = H(v) for the
    matching code; on the full grid every other code is exactly independent (I = 0)."""
    codes, factors, _, _ = on_grid(aligned_code)
    assert mutual_information_gap(codes, factors) == pytest.approx(1.0, abs=1e-12)


def test_mig_of_aligned_codes_on_random_points_falls_short_of_one_by_the_plug_in_bias():
    """On random points the runner-up's plug-in MI with a factor is biased upwards by about
    (K_code - 1)(K_factor - 1) / (2N) nats: at most 4 / 2000 here, against H(v) >= ln 2."""
    codes, factors, _, _ = train_test_sample(0)
    mig = mutual_information_gap(codes, factors)
    assert 1 - 3 * 4 / 2_000 / math.log(2) < mig < 1


def test_normalised_mutual_information_is_the_share_of_each_factors_entropy_per_code():
    """On the grid, the aligned code's matrix is the permutation that maps codes to factors:
    code 0 holds all of factor 2, code 1 of factor 0, code 2 of factor 1, nothing else."""
    codes, factors, _, _ = on_grid(aligned_code)
    shares = normalised_mutual_information(codes, factors)
    expected = np.zeros((3, 3))
    expected[[0, 1, 2], PERMUTATION] = 1.0
    assert shares.shape == (3, 3)
    assert shares == pytest.approx(expected, abs=1e-12)


def test_mig_of_a_rotated_pair_is_exactly_one_third_on_the_grid():
    """v0 + v1 and v0 - v1 hold the same information about v0 (and about v1): replacing v1 by
    its mirror image turns one into the other. Their gaps are 0; v2 keeps its own code, gap 1."""
    codes, factors, _, _ = on_grid(rotated_code)
    assert mutual_information_gap(codes, factors) == pytest.approx(1 / 3, abs=1e-12)


def test_mig_divides_by_the_factors_own_entropy_not_the_log_of_its_number_of_values():
    """A code equal to a factor that takes value 0 three times as often as 1: I(z; v) = H(v) =
    -(3/4 ln 3/4 + 1/4 ln 1/4) < ln 2, and the gap over H(v) is exactly 1."""
    factor = np.repeat([0, 0, 0, 1], 50)
    codes = np.column_stack([factor * 2.0, np.zeros(len(factor))])
    assert mutual_information_gap(codes, factor) == pytest.approx(1.0, abs=1e-12)


def test_mig_of_noise_is_near_zero():
    """Independent codes: every MI is only plug-in bias, of similar size, so gaps are small."""
    codes, factors, _, _ = noise_sample(0)
    assert 0 <= mutual_information_gap(codes, factors) < 0.02


def test_mig_does_not_depend_on_the_order_of_code_dimensions():
    rng = np.random.default_rng(1)
    _, factors, _, _ = train_test_sample(0)
    codes = np.concatenate([factors + 0.3 * rng.normal(size=factors.shape),
                            rng.normal(size=(NUM_TRAIN, 3))], axis=1)
    permutation = rng.permutation(codes.shape[1])
    assert mutual_information_gap(codes[:, permutation], factors) == mutual_information_gap(
        codes, factors)


def test_collapsed_code_dimensions_carry_no_information_and_leave_mig_unchanged():
    codes, factors, _, _ = train_test_sample(0)
    padded = np.concatenate([codes, np.zeros((NUM_TRAIN, 2))], axis=1)
    assert mutual_information_gap(padded, factors) == mutual_information_gap(codes, factors)


def test_mig_with_one_code_dimension_divides_its_information_by_the_factor_entropy():
    """The second largest MI is taken as 0: I/H is 1 for the factor the code follows and, on the
    grid, exactly 0 for the other."""
    factors = full_grid((4, 3), 20)
    assert mutual_information_gap(factors[:, :1] * 0.5, factors) == pytest.approx(0.5, abs=1e-12)


def test_mig_discretises_codes_into_the_given_number_of_bins():
    """A factor of 20 values, a code equal to it and one that merges its values in pairs: with
    20 bins the first holds H(v) = ln 20 and the second ln 10, so MIG is (ln 20 - ln 10) / ln 20;
    with 10 bins both are the same code and MIG is 0."""
    factor = np.repeat(np.arange(20), 50)
    codes = np.stack([factor, factor // 2], axis=1).astype(float)
    assert mutual_information_gap(codes, factor, bins=20) == pytest.approx(
        math.log(2) / math.log(20))
    assert mutual_information_gap(codes, factor, bins=10) == pytest.approx(0.0, abs=1e-12)


def test_mig_default_is_twenty_bins():
    factor = np.repeat(np.arange(21), 50)  # 21 values: 20 bins merge two of them
    codes = np.stack([factor, factor // 2], axis=1).astype(float)
    twenty = mutual_information_gap(codes, factor, bins=20)
    assert twenty != pytest.approx(mutual_information_gap(codes, factor, bins=21))
    assert mutual_information_gap(codes, factor) == twenty


def test_mig_uses_factor_values_as_they_are_rather_than_binning_them():
    """A factor of 40 values (more than 20 bins) and a code equal to it: codes are binned, the
    factor is not, so the code keeps only ln 20 of the factor's ln 40 nats."""
    factor = np.repeat(np.arange(40), 10)
    assert mutual_information_gap(factor[:, None] * 0.1, factor) == pytest.approx(
        math.log(20) / math.log(40))


def test_mig_of_two_codes_sharing_a_factor_is_zero_and_a_binary_factor_counts():
    """With exactly two codes the runner-up is the second one: two copies of a factor give 0.
    A binary factor (entropy ln 2) captured by one code alone gives MIG near 1."""
    factor = np.repeat([0, 1], 100)
    noise = np.random.default_rng(0).uniform(size=200)
    assert mutual_information_gap(np.stack([factor, factor], 1), factor) == pytest.approx(0.0)
    assert mutual_information_gap(np.stack([factor, noise], 1), factor) == pytest.approx(
        1.0, abs=0.05)


def test_mig_takes_tensors_and_one_dimensional_factors_as_numpy_matrices():
    codes, factors, _, _ = train_test_sample(0)
    expected = mutual_information_gap(codes, factors[:, :1])
    assert mutual_information_gap(torch.tensor(codes), torch.tensor(factors[:, 0])) == expected
    assert isinstance(expected, float)


def test_mig_refuses_a_constant_factor_and_names_it():
    factors = np.stack([np.repeat([0, 1], 50), np.zeros(100, dtype=int)], axis=1)
    with pytest.raises(ValueError, match=r"factors \[1\] are constant"):
        mutual_information_gap(np.random.default_rng(0).uniform(size=(100, 2)), factors)


def test_mig_refuses_mismatched_rows_bad_shapes_non_finite_codes_and_non_integer_factors():
    codes, factors, _, _ = train_test_sample(0)
    with pytest.raises(ValueError, match="codes have 1000 rows but factors 999"):
        mutual_information_gap(codes, factors[:999])
    with pytest.raises(ValueError, match=r"codes must be \(N, D\)"):
        mutual_information_gap(codes[:, :, None], factors)
    bad = codes.copy()
    bad[3, 1] = np.inf
    with pytest.raises(ValueError, match="codes contains non-finite values"):
        mutual_information_gap(bad, factors)
    with pytest.raises(ValueError, match="factors must be integer indices"):
        mutual_information_gap(codes, factors + 0.5)


# --- DCI --------------------------------------------------------------------------------------


def test_dci_is_one_when_each_code_dimension_is_one_factor():
    """Each factor's trees split only on its own code: after that split every leaf holds one
    class, so no other code ever gains. The importance matrix is a permutation matrix (up to
    rounding) and the classifiers are always right."""
    scores = dci(*train_test_sample(0))
    assert scores["dci_disentanglement"] == pytest.approx(1.0, abs=1e-9)
    assert scores["dci_completeness"] == pytest.approx(1.0, abs=1e-9)
    assert scores["dci_informativeness"] == scores["dci_informativeness_train"] == 1.0


def test_dci_by_hand_when_one_code_holds_two_binary_factors():
    """Code 0 = v0 + 2 v1 (four values) alone predicts the binary v0 and v1, code 1 = v2 alone
    predicts the three-valued v2, code 2 is constant. Importances (rows codes, columns factors):
    (1, 1, 0), (0, 0, 1), (0, 0, 0). Disentanglement: code 0 weighs 2/3 and spreads over two of
    three factors, 1 - log_3(2); code 1 weighs 1/3 and is pure. Completeness: every factor sits
    in one code, 1."""
    factors = full_grid((2, 2, 3), 40)
    codes = np.column_stack([factors[:, 0] + 2 * factors[:, 1], 1.5 * factors[:, 2],
                             np.full(len(factors), 7.0)])
    scores = dci(codes, factors, codes, factors)
    expected = 2 / 3 * (1 - math.log(2) / math.log(3)) + 1 / 3
    assert scores["dci_disentanglement"] == pytest.approx(expected, abs=1e-9)
    assert scores["dci_completeness"] == pytest.approx(1.0, abs=1e-9)


def test_dci_of_a_rotated_pair_is_clearly_lower_but_as_informative():
    """v0 and v1 each need both mixed codes: the importance of two of the three codes is split
    between two factors (about 0.58 here against 1 aligned). The rotation loses no information."""
    scores = dci(*train_test_sample(0, code=rotated_code))
    assert scores["dci_disentanglement"] < 0.7 and scores["dci_completeness"] < 0.7
    assert scores["dci_informativeness"] == 1.0


def test_dci_of_noise_is_near_zero_with_chance_informativeness():
    """Trees fitted to noise use every code about equally for every factor: entropies near
    their maximum. Test accuracy is chance, the mean of 1/K over factors (about 0.02 noise)."""
    scores = dci(*noise_sample(0))
    assert scores["dci_disentanglement"] < 0.05 and scores["dci_completeness"] < 0.05
    chance = np.mean([1 / size for size in SIZES])
    assert scores["dci_informativeness"] == pytest.approx(chance, abs=0.06)


def test_dci_is_zero_without_nan_when_no_tree_uses_any_code():
    """Constant codes give all-zero importances; the classifier predicts the training set's most
    frequent value of each factor."""
    _, factors_train, _, factors_test = train_test_sample(0)
    codes_train, codes_test = np.ones((NUM_TRAIN, 2)), np.ones((NUM_TEST, 2))
    scores = dci(codes_train, factors_train, codes_test, factors_test)
    assert scores["dci_disentanglement"] == 0.0 and scores["dci_completeness"] == 0.0
    majority_share = [
        np.mean(factors_test[:, k] == np.bincount(factors_train[:, k]).argmax())
        for k in range(len(SIZES))
    ]
    assert scores["dci_informativeness"] == pytest.approx(np.mean(majority_share))


def test_dci_with_one_factor_or_one_code_is_fully_disentangled_or_complete():
    """Entropy over a single factor (or a single code) is 0: disentanglement (completeness) 1."""
    codes_train, factors_train, codes_test, factors_test = train_test_sample(0)
    rng = np.random.default_rng(1)
    noisy_train = codes_train + rng.normal(size=codes_train.shape)
    noisy_test = codes_test + rng.normal(size=codes_test.shape)
    one_factor = dci(noisy_train, factors_train[:, :1], noisy_test, factors_test[:, :1])
    assert one_factor["dci_disentanglement"] == pytest.approx(1.0)
    one_code = dci(noisy_train[:, :1], factors_train, noisy_test[:, :1], factors_test)
    assert one_code["dci_completeness"] == pytest.approx(1.0)


def test_dci_does_not_depend_on_the_order_of_code_dimensions():
    """For aligned codes up to rounding. For a noisy mixed code the trees break ties between
    equally good splits by a random feature order, which changes with the column order: within
    0.01."""
    codes_train, factors_train, codes_test, factors_test = train_test_sample(0)
    order = [1, 2, 0]
    assert dci(codes_train[:, order], factors_train, codes_test[:, order],
               factors_test) == pytest.approx(
        dci(codes_train, factors_train, codes_test, factors_test), abs=1e-12)
    rng = np.random.default_rng(2)
    mixing = rng.normal(size=(3, 4))
    mixed_train = factors_train @ mixing + 0.5 * rng.normal(size=(NUM_TRAIN, 4))
    mixed_test = factors_test @ mixing + 0.5 * rng.normal(size=(NUM_TEST, 4))
    order = [3, 1, 0, 2]
    shuffled = dci(mixed_train[:, order], factors_train, mixed_test[:, order], factors_test)
    original = dci(mixed_train, factors_train, mixed_test, factors_test)
    assert shuffled == pytest.approx(original, abs=0.01)


def test_dci_repeats_with_the_same_seed():
    sample = noise_sample(3)
    assert dci(*sample, seed=1) == dci(*sample, seed=1)


# --- SAP --------------------------------------------------------------------------------------

BINARY = (2, 2, 2)


def test_sap_of_binary_factors_each_held_by_one_code_is_exactly_one_half():
    """The matching code separates a binary factor perfectly (score 1); on the full grid every
    other code is independent of it and any prediction from it is right exactly half the time.
    1 - 1/2 for every factor: SAP's maximum for binary factors is 1/2, not 1."""
    assert sap_score(*on_grid(aligned_code, BINARY)) == pytest.approx(0.5, abs=1e-12)


def test_sap_of_a_rotated_pair_of_binary_factors_is_exactly_one_sixth():
    """Predicting v0 from v0 + v1 is the mirror image of predicting it from v0 - v1 on the grid:
    equal scores, gap 0 for v0 and for v1. v2 keeps its own code: 1/2. Mean 1/6."""
    codes = on_grid(lambda factors: rotated_code(factors, BINARY), BINARY)
    assert sap_score(*codes) == pytest.approx(1 / 6, abs=1e-12)


def test_sap_scores_the_classifiers_on_the_test_points():
    """Binary factors, test codes made from the flipped factors: each matching classifier is
    always wrong on the test points (0) and the others exactly at chance (1/2), so the runner-up
    beats it and the gap is 0. Scored on the training points it would be 1/2."""
    factors = full_grid(BINARY, 100)
    assert sap_score(aligned_code(factors), factors, aligned_code(1 - factors), factors) == 0.0


def test_sap_of_noise_is_near_zero():
    """Every code predicts every factor at about chance; the top two differ by sampling noise."""
    assert 0 <= sap_score(*noise_sample(0)) < 0.06


def test_sap_of_many_valued_factors_is_the_own_code_accuracy_less_chance():
    """With more than two values a factor's best score is what a one-dimensional linear SVC
    (C=0.01, balanced) gets from its own code, which need not be 1: one-vs-rest lines in one
    dimension single out the outer values, the inner ones only if the penalty allows. The
    runner-up is exactly chance on the grid. So SAP = mean over factors of (own accuracy - 1/K)."""
    codes, factors, _, _ = on_grid(aligned_code)
    own_accuracy = []
    for factor, size in enumerate(SIZES):
        column = codes[:, [PERMUTATION.index(factor)]]
        svc = LinearSVC(C=0.01, class_weight="balanced").fit(column, factors[:, factor])
        own_accuracy.append(svc.score(column, factors[:, factor]))
        assert own_accuracy[-1] * size == pytest.approx(round(own_accuracy[-1] * size))
        assert own_accuracy[-1] >= 2 / size - 1e-12  # at least the two outer values
    expected = np.mean([accuracy - 1 / size for accuracy, size in zip(own_accuracy, SIZES)])
    assert sap_score(codes, factors, codes, factors) == pytest.approx(expected, abs=1e-12)


def test_sap_of_discrete_factors_depends_on_the_code_scale():
    """LinearSVC's penalty (C=0.01) is not scale free: spaced 5 apart, the three-valued factors
    are fully recognised and SAP reaches its ceiling mean(1 - 1/K) = 11/18; spaced 0.5 apart,
    only their outer values are, and SAP is lower."""
    factors = full_grid(SIZES, 50)
    wide = sap_score(factors * 5.0, factors, factors * 5.0, factors)
    narrow = sap_score(factors * 0.5, factors, factors * 0.5, factors)
    assert wide == pytest.approx(np.mean([1 - 1 / size for size in SIZES]), abs=1e-12)
    assert narrow < wide - 0.1


def test_sap_gives_a_constant_code_score_zero_and_with_one_code_the_top_score_alone():
    """A binary factor held by code 0, code 1 constant: scores 1 and 0, SAP 1. With code 0
    alone there is no runner-up (taken as 0): SAP 1 as well."""
    factors = full_grid((2,), 200)
    codes = np.column_stack([2.0 * factors[:, 0], np.full(len(factors), 4.0)])
    assert sap_score(codes, factors, codes, factors) == 1.0
    assert sap_score(codes[:, :1], factors, codes[:, :1], factors) == 1.0


def test_sap_does_not_depend_on_the_order_of_code_dimensions():
    codes_train, factors_train, codes_test, factors_test = noise_sample(1)
    codes_train[:, 0] += factors_train[:, 2]
    codes_test[:, 0] += factors_test[:, 2]
    order = [2, 0, 1]
    assert sap_score(codes_train[:, order], factors_train, codes_test[:, order],
                     factors_test) == sap_score(codes_train, factors_train, codes_test,
                                                factors_test)


# --- Modularity and explicitness --------------------------------------------------------------


def test_modularity_is_exactly_one_and_explicitness_one_when_each_code_is_one_factor():
    """On the grid each code has MI only with its own factor. Each factor's values are ordered
    along one code, which a multinomial logistic regression ranks perfectly."""
    scores = modularity_explicitness(*on_grid(aligned_code))
    assert scores["modularity"] == pytest.approx(1.0, abs=1e-12)
    assert scores["explicitness"] > 0.999 and scores["explicitness_train"] > 0.999


def test_modularity_of_aligned_codes_on_random_points_is_one_up_to_plug_in_bias():
    """Off-factor MI is plug-in bias, about 1e-3 nats against H >= ln 2: squared, 1e-5."""
    scores = modularity_explicitness(*train_test_sample(0))
    assert 1 - 1e-4 < scores["modularity"] <= 1
    assert scores["explicitness"] > 0.999


def test_modularity_of_a_rotated_pair_is_exactly_two_thirds_and_explicitness_stays_one():
    """v0 + v1 and v0 - v1 each hold equal MI with v0 and v1: 1 - m^2 / (m^2 (3 - 1)) = 1/2;
    the code of v2 scores 1. Mean 2/3. The rotation is linear, so each factor is still explicit
    (logistic regression on both mixed codes recovers it)."""
    scores = modularity_explicitness(*on_grid(rotated_code))
    assert scores["modularity"] == pytest.approx(2 / 3, abs=1e-12)
    assert scores["explicitness"] > 0.999


def test_modularity_is_zero_for_a_code_that_informs_equally_about_two_factors():
    """z = v0 + 2 v1 of two binary factors: four values, I(z; v0) = I(z; v1) = ln 2."""
    factors = full_grid((2, 2), 50)
    code = (factors[:, 0] + 2 * factors[:, 1])[:, None].astype(float)
    scores = modularity_explicitness(code, factors, code, factors)
    assert scores["modularity"] == pytest.approx(0.0, abs=1e-12)


def test_modularity_of_noise_is_not_low_but_explicitness_is_chance():
    """Modularity measures how concentrated a code's MI is, not how much there is: for noise the
    plug-in MI is bias of about (bins - 1)(K - 1) / (2N), larger for the factors of more values,
    so it is concentrated well above 0 (about 0.4 to 0.6 over seeds here). Explicitness is the
    ROC-AUC of an uninformed classifier: 0.5 within sampling noise (about 0.01)."""
    scores = modularity_explicitness(*noise_sample(0))
    assert 0.3 < scores["modularity"] < 0.8
    assert scores["explicitness"] == pytest.approx(0.5, abs=0.05)


def test_explicitness_is_zero_on_test_points_that_reverse_the_training_relation():
    """Binary factors, test codes made from the flipped factors: every classifier ranks the test
    points exactly backwards (ROC-AUC 0) while ranking its training points perfectly (1)."""
    factors = full_grid(BINARY, 100)
    scores = modularity_explicitness(aligned_code(factors), factors, aligned_code(1 - factors),
                                     factors)
    assert scores["explicitness"] == pytest.approx(0.0, abs=1e-12)
    assert scores["explicitness_train"] == pytest.approx(1.0, abs=1e-12)


def test_modularity_and_explicitness_of_a_constant_code_are_zero_and_one_half():
    """No information: modularity 0 by definition; every probability the same, AUC 0.5."""
    _, factors_train, _, factors_test = train_test_sample(0)
    scores = modularity_explicitness(np.zeros((NUM_TRAIN, 2)), factors_train,
                                     np.zeros((NUM_TEST, 2)), factors_test)
    assert scores == {"modularity": 0.0, "explicitness": 0.5, "explicitness_train": 0.5}


def test_explicitness_of_binary_factors_is_the_roc_auc_of_the_class_probability():
    """For two classes the macro average of the two one-hot columns' AUCs is the AUC of p(1):
    checked against scikit-learn on codes standardised with the training mean and deviation."""
    rng = np.random.default_rng(4)
    factors_train, factors_test = full_grid(BINARY, 100), full_grid(BINARY, 50)
    codes_train = factors_train + rng.normal(size=factors_train.shape)
    codes_test = factors_test + rng.normal(size=factors_test.shape)
    scores = modularity_explicitness(codes_train, factors_train, codes_test, factors_test)
    mean, scale = codes_train.mean(0), codes_train.std(0)
    expected = []
    for factor in range(3):
        classifier = LogisticRegression().fit((codes_train - mean) / scale,
                                              factors_train[:, factor])
        probability = classifier.predict_proba((codes_test - mean) / scale)[:, 1]
        expected.append(roc_auc_score(factors_test[:, factor], probability))
    assert scores["explicitness"] == pytest.approx(np.mean(expected), abs=1e-12)
    assert 0.6 < scores["explicitness"] < 0.9  # noisy codes: neither perfect nor chance


def test_explicitness_is_disentanglement_libs_macro_roc_auc_on_training_standardised_codes():
    """Reference: disentanglement_lib's own formula, `roc_auc_score` of the one-hot labels from
    `MultiLabelBinarizer` against `predict_proba`, with codes standardised by the training
    points' mean and deviation. The test points are unevenly spread over the grid (their mean
    differs from the training mean), and the factors have three values, so standardising with
    the test points' own statistics would change the probabilities' ranking."""
    rng = np.random.default_rng(6)
    factors_train = full_grid(SIZES, 40)
    factors_test = np.concatenate([full_grid(SIZES, 10), full_grid((1, 3, 2), 30) + [2, 0, 0]])
    codes_train = aligned_code(factors_train) + rng.normal(size=factors_train.shape)
    codes_test = aligned_code(factors_test) + rng.normal(size=factors_test.shape)
    scores = modularity_explicitness(codes_train, factors_train, codes_test, factors_test)
    mean, scale = codes_train.mean(0), codes_train.std(0)
    expected = []
    for factor in range(len(SIZES)):
        classifier = LogisticRegression().fit((codes_train - mean) / scale,
                                              factors_train[:, factor])
        probabilities = classifier.predict_proba((codes_test - mean) / scale)
        one_hot = MultiLabelBinarizer().fit_transform(factors_test[:, [factor]])
        expected.append(roc_auc_score(one_hot, probabilities))
    assert scores["explicitness"] == pytest.approx(np.mean(expected), abs=1e-12)
    assert 0.6 < scores["explicitness"] < 0.99  # noisy codes: neither chance nor perfect


def test_modularity_and_explicitness_do_not_depend_on_the_order_of_code_dimensions():
    codes_train, factors_train, codes_test, factors_test = noise_sample(1)
    codes_train[:, 0] += factors_train[:, 2]
    codes_test[:, 0] += factors_test[:, 2]
    order = [2, 0, 1]
    shuffled = modularity_explicitness(codes_train[:, order], factors_train,
                                       codes_test[:, order], factors_test)
    original = modularity_explicitness(codes_train, factors_train, codes_test, factors_test)
    assert shuffled["modularity"] == pytest.approx(original["modularity"], abs=1e-12)
    assert shuffled == pytest.approx(original, abs=1e-6)  # lbfgs stops at its tolerance


# --- Shared validation of the train/test metrics ----------------------------------------------

TRAIN_TEST_METRICS = [dci, sap_score, modularity_explicitness]


@pytest.mark.parametrize("metric", TRAIN_TEST_METRICS)
def test_train_test_metrics_refuse_mismatched_inputs(metric):
    codes_train, factors_train, codes_test, factors_test = train_test_sample(0)
    with pytest.raises(ValueError, match="codes_train have 1000 rows but factors_train 999"):
        metric(codes_train, factors_train[:999], codes_test, factors_test)
    with pytest.raises(ValueError, match="codes_test have 2 columns but codes_train 3"):
        metric(codes_train, factors_train, codes_test[:, :2], factors_test)
    with pytest.raises(ValueError, match="factors_test have 2 columns but factors_train 3"):
        metric(codes_train, factors_train, codes_test, factors_test[:, :2])


@pytest.mark.parametrize("metric", TRAIN_TEST_METRICS)
def test_train_test_metrics_refuse_non_finite_codes_non_integer_and_constant_factors(metric):
    codes_train, factors_train, codes_test, factors_test = train_test_sample(0)
    bad = codes_test.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="codes_test contains non-finite values"):
        metric(codes_train, factors_train, bad, factors_test)
    with pytest.raises(ValueError, match="factors_train must be integer indices"):
        metric(codes_train, factors_train * 0.5, codes_test, factors_test)
    constant = factors_train.copy()
    constant[:, 1] = 2
    with pytest.raises(ValueError, match=r"factors_train \[1\] are constant"):
        metric(codes_train, constant, codes_test, factors_test)


# --- Linear probe -----------------------------------------------------------------------------


def uniform_factors(num_factors: int, seed: int = 0, num_rows: int = 10_000) -> np.ndarray:
    return np.random.default_rng(seed).uniform(size=(num_rows, num_factors))


def test_linear_probe_recovers_factors_from_an_invertible_linear_map():
    rng = np.random.default_rng(2)
    factors = uniform_factors(3, num_rows=2_000)
    mixing = rng.normal(size=(3, 3)) + 3 * np.eye(3)  # well conditioned, hence invertible
    latents = torch.from_numpy(factors @ mixing + rng.normal(size=3))
    scores = linear_probe_r2(latents, factors)
    assert len(scores) == 3 and all(isinstance(score, float) for score in scores)
    assert min(scores) > 1 - 1e-9  # exact up to rounding


def test_linear_probe_scores_about_zero_for_latents_independent_of_the_factors():
    rng = np.random.default_rng(3)
    factors = uniform_factors(3, num_rows=5_000)
    latents = rng.normal(size=(5_000, 4))
    # Out of sample R^2 ~ -(L + 1) / n_train - 1 / n_test +- 2 sqrt(L / n_train) / sqrt(n_test),
    # about -0.002 +- 0.002 for L = 4, n_train = 4000, n_test = 1000.
    scores = linear_probe_r2(latents, factors)
    assert all(abs(score) < 0.02 for score in scores)


def test_linear_probe_scores_each_factor_separately_and_is_reproducible():
    rng = np.random.default_rng(4)
    factors = uniform_factors(2, num_rows=5_000)
    latents = np.stack([2 * factors[:, 0] - 1, rng.normal(size=5_000)], axis=1)
    scores = linear_probe_r2(latents, factors, seed=7)
    assert scores[0] == pytest.approx(1.0, abs=1e-9)
    assert abs(scores[1]) < 0.02
    assert linear_probe_r2(latents, factors, seed=7) == scores


def probe_r2_by_hand(latents, factors, seed, train_fraction=0.8):
    """(held-out R^2, in-sample R^2) per factor of an ordinary least-squares fit with bias, on
    the split the probe documents: the first round(train_fraction * N) rows of
    `default_rng(seed).permutation(N)` fit, the rest score (R^2 against their own mean)."""
    num_rows = len(latents)
    order = np.random.default_rng(seed).permutation(num_rows)
    num_train = int(round(train_fraction * num_rows))
    train, test = order[:num_train], order[num_train:]
    design = np.column_stack([latents, np.ones(num_rows)])
    coefficients, *_ = np.linalg.lstsq(design[train], factors[train], rcond=None)

    def r2(rows):
        residual = factors[rows] - design[rows] @ coefficients
        centred = factors[rows] - factors[rows].mean(0)
        return 1 - (residual**2).sum(0) / (centred**2).sum(0)

    return r2(test), r2(train)


def overfitting_probe_problem(num_rows=60, num_latents=40):
    """Many noise latents for few rows: factor 0 is pure noise, factor 1 is latent 0 plus as
    much noise. A least-squares fit on 48 rows with 41 coefficients fits its own rows well and
    the held-out rows badly."""
    rng = np.random.default_rng(5)
    latents = rng.normal(size=(num_rows, num_latents))
    factors = np.column_stack([rng.normal(size=num_rows),
                               latents[:, 0] + rng.normal(size=num_rows)])
    return latents, factors


def test_linear_probe_scores_the_held_out_rows_not_the_rows_it_was_fitted_on():
    """Known answer: the held-out R^2 of a numpy least-squares fit on the documented seeded split,
    which here is far below the in-sample R^2 (so scoring the training rows cannot pass)."""
    latents, factors = overfitting_probe_problem()
    held_out, in_sample = probe_r2_by_hand(latents, factors, seed=3)
    assert (in_sample > 0.7).all() and (held_out < in_sample - 0.5).all()  # the problem overfits
    scores = linear_probe_r2(latents, factors, seed=3)
    assert scores == pytest.approx(held_out.tolist(), abs=1e-8)


def test_linear_probe_seed_chooses_the_split_and_repeats_with_the_same_seed():
    """Known answer: for each seed the score is the held-out R^2 on `default_rng(seed)`'s split,
    computed by hand; different seeds give clearly different scores, the same seed the same."""
    latents, factors = overfitting_probe_problem()
    by_seed = {}
    for seed in (0, 1, 2, 3):
        held_out, _ = probe_r2_by_hand(latents, factors, seed=seed)
        by_seed[seed] = linear_probe_r2(latents, factors, seed=seed)
        assert by_seed[seed] == pytest.approx(held_out.tolist(), abs=1e-8), seed
    for seed in (1, 2, 3):
        assert abs(by_seed[seed][0] - by_seed[0][0]) > 0.01, seed
    assert linear_probe_r2(latents, factors, seed=2) == by_seed[2]


def test_linear_probe_train_fraction_sets_the_size_of_the_fitting_split():
    """Known answer: with train_fraction = 0.9 the first 54 of 60 permuted rows fit the probe and
    the last 6 score it (by hand, as above)."""
    latents, factors = overfitting_probe_problem()
    held_out, _ = probe_r2_by_hand(latents, factors, seed=4, train_fraction=0.9)
    scores = linear_probe_r2(latents, factors, seed=4, train_fraction=0.9)
    assert scores == pytest.approx(held_out.tolist(), abs=1e-8)


def test_linear_probe_takes_tensors_and_one_dimensional_columns_as_numpy_matrices():
    """A torch tensor and a 1-D array are read as the same (N, D) matrix as the numpy one."""
    rng = np.random.default_rng(0)
    factor = rng.uniform(size=200)
    latents = np.stack([factor * 2 + 1, rng.normal(size=200)], axis=1)
    assert linear_probe_r2(torch.tensor(latents), torch.tensor(factor), seed=1) == pytest.approx(
        linear_probe_r2(latents, factor[:, None], seed=1))


def test_linear_probe_refuses_mismatched_rows_bad_shapes_and_non_finite_values():
    good = np.random.default_rng(0).uniform(size=(50, 2))
    with pytest.raises(ValueError, match="50 rows but factors 49"):
        linear_probe_r2(good, good[:49])
    with pytest.raises(ValueError, match=r"latents must be \(N, D\)"):
        linear_probe_r2(good[:, :, None], good)
    bad = good.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="factors contains non-finite values"):
        linear_probe_r2(good, bad)


def test_linear_probe_refuses_a_split_that_leaves_fewer_than_two_rows_on_a_side():
    rows = np.random.default_rng(0).uniform(size=(10, 2))
    with pytest.raises(ValueError, match="leaves a split empty"):
        linear_probe_r2(rows, rows, train_fraction=0.9)  # 9 to fit, 1 to score
    assert len(linear_probe_r2(rows, rows, train_fraction=0.8)) == 2  # 8 and 2 are enough
    assert len(linear_probe_r2(rows, rows, train_fraction=0.2)) == 2  # 2 and 8 too
    with pytest.raises(ValueError, match="leaves a split empty"):
        linear_probe_r2(rows, rows, train_fraction=0.1)  # 1 to fit


def test_linear_probe_takes_latents_that_still_require_gradients():
    latents = torch.rand(50, 2, requires_grad=True)
    factors = latents.detach().numpy() * 2
    assert linear_probe_r2(latents, factors, seed=0) == pytest.approx([1.0, 1.0])


def test_linear_probe_default_split_is_seed_zero():
    """What evaluate uses: the probe's split from seed 0."""
    rng = np.random.default_rng(1)
    factor = np.repeat(np.arange(21.0), 50)
    latents = np.stack([factor, factor // 2], axis=1) + rng.normal(size=(len(factor), 2))
    assert linear_probe_r2(latents, factor) == linear_probe_r2(latents, factor, seed=0)
    assert linear_probe_r2(latents, factor) != linear_probe_r2(latents, factor, seed=1)
