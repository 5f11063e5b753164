import math

import numpy as np
import pytest
import torch

from vae_zoo.metrics.factors import linear_probe_r2, mutual_information_gap

NUM_ROWS = 10_000
BINS = 20
# Plug-in mutual information of two independent variables with `BINS` values each is biased upwards
# by about (BINS - 1)^2 / (2 N) nats; a factor uniform over BINS equal-width bins has entropy
# ln(BINS). Where the second-best latent is independent of a factor, the gap falls short of 1 by
# about this fraction (0.006 here).
INDEPENDENT_MI_OVER_ENTROPY = (BINS - 1) ** 2 / (2 * NUM_ROWS) / math.log(BINS)


def uniform_factors(num_factors: int, seed: int = 0, num_rows: int = NUM_ROWS) -> np.ndarray:
    return np.random.default_rng(seed).uniform(size=(num_rows, num_factors))


def test_mig_is_one_when_each_latent_is_one_factor():
    factors = uniform_factors(3)
    mig = mutual_information_gap(torch.from_numpy(factors), factors, bins=BINS)
    # I(z_k; v_k) = H(v_k) exactly (same values, same bins); the runner-up is an independent latent.
    assert 1 - 3 * INDEPENDENT_MI_OVER_ENTROPY < mig <= 1
    assert isinstance(mig, float)


def test_mig_is_zero_when_an_orthogonal_map_spreads_every_factor_evenly_over_all_latents():
    # z = v H / 2 with H the 4x4 Hadamard matrix. Replacing v_k by 1 - v_k (same uniform law, and
    # the same equal-width bins reversed) turns any latent into z_0 plus a constant, so in the
    # population every latent carries the same information about every factor: each gap is 0.
    # Estimates of those equal informations differ by sampling noise of order 1e-2 nats at
    # N = 10k, against H(v) = ln 20 = 3 nats.
    hadamard = np.array([[1, 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]]) / 2
    factors = uniform_factors(4)
    assert np.allclose(hadamard @ hadamard.T, np.eye(4))
    assert mutual_information_gap(factors @ hadamard, factors, bins=BINS) < 0.05


def test_mig_is_one_third_when_two_of_three_factors_are_rotated_together():
    # A 45-degree rotation of (v_0, v_1) shares each of them equally between two latents (gap 0,
    # by the symmetry above); v_2 stays its own latent (gap about 1). Mean: 1/3.
    factors = uniform_factors(3)
    latents = np.stack(
        [
            (factors[:, 0] + factors[:, 1]) / math.sqrt(2),
            (factors[:, 0] - factors[:, 1]) / math.sqrt(2),
            factors[:, 2],
        ],
        axis=1,
    )
    assert mutual_information_gap(latents, factors, bins=BINS) == pytest.approx(1 / 3, abs=0.03)


def test_mig_does_not_depend_on_the_order_of_latent_dimensions():
    rng = np.random.default_rng(1)
    factors = uniform_factors(3)
    latents = np.concatenate(
        [factors + 0.1 * rng.normal(size=factors.shape), rng.normal(size=(NUM_ROWS, 3))], axis=1
    )
    permutation = rng.permutation(latents.shape[1])
    assert mutual_information_gap(latents[:, permutation], factors) == mutual_information_gap(
        latents, factors
    )


def test_collapsed_latent_dimensions_carry_no_information_and_leave_mig_unchanged():
    factors = uniform_factors(3)
    latents = np.concatenate([factors, np.zeros((NUM_ROWS, 2))], axis=1)
    assert mutual_information_gap(latents, factors) == mutual_information_gap(factors, factors)


def test_mig_with_one_latent_dimension_divides_its_information_by_the_factor_entropy():
    factors = uniform_factors(2)
    # The latent is factor 0: I/H = 1 for it and about 0 for the independent factor 1.
    mig = mutual_information_gap(factors[:, :1], factors, bins=BINS)
    assert mig == pytest.approx(0.5, abs=INDEPENDENT_MI_OVER_ENTROPY)
    assert mutual_information_gap(factors[:, :1], factors[:, :1]) == pytest.approx(1.0, abs=1e-12)


def test_mig_rejects_a_constant_factor():
    factors = uniform_factors(2, num_rows=100)
    factors[:, 1] = 0.5
    with pytest.raises(ValueError, match=r"factors \[1\] are constant"):
        mutual_information_gap(factors, factors)


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


def test_factor_metrics_take_tensors_and_one_dimensional_columns_as_numpy_matrices():
    """A torch tensor and a 1-D array are read as the same (N, D) matrix as the numpy one."""
    rng = np.random.default_rng(0)
    factor = rng.uniform(size=200)
    latents = np.stack([factor * 2 + 1, rng.normal(size=200)], axis=1)
    assert mutual_information_gap(torch.tensor(latents), factor) == pytest.approx(
        mutual_information_gap(latents, factor[:, None]))
    assert linear_probe_r2(torch.tensor(latents), torch.tensor(factor), seed=1) == pytest.approx(
        linear_probe_r2(latents, factor[:, None], seed=1))


@pytest.mark.parametrize("metric", [mutual_information_gap, linear_probe_r2])
def test_factor_metrics_refuse_mismatched_rows_bad_shapes_and_non_finite_values(metric):
    good = np.random.default_rng(0).uniform(size=(50, 2))
    with pytest.raises(ValueError, match="50 rows but factors 49"):
        metric(good, good[:49])
    with pytest.raises(ValueError, match=r"latents must be \(N, D\)"):
        metric(good[:, :, None], good)
    bad = good.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="factors contains non-finite values"):
        metric(good, bad)


def test_linear_probe_refuses_a_split_that_leaves_fewer_than_two_rows_on_a_side():
    rows = np.random.default_rng(0).uniform(size=(10, 2))
    with pytest.raises(ValueError, match="leaves a split empty"):
        linear_probe_r2(rows, rows, train_fraction=0.9)  # 9 to fit, 1 to score
    assert len(linear_probe_r2(rows, rows, train_fraction=0.8)) == 2  # 8 and 2 are enough
    assert len(linear_probe_r2(rows, rows, train_fraction=0.2)) == 2  # 2 and 8 too
    with pytest.raises(ValueError, match="leaves a split empty"):
        linear_probe_r2(rows, rows, train_fraction=0.1)  # 1 to fit


def test_mig_discretises_into_the_given_number_of_bins():
    """A factor of 20 evenly spaced values, a latent equal to it and one that merges its values
    in pairs: with 20 bins the first latent holds H(v) = ln 20 and the second ln 10, so MIG is
    (ln 20 - ln 10) / ln 20; with 10 bins both are the same code and MIG is 0."""
    factor = np.repeat(np.arange(20.0), 50)
    latents = np.stack([factor, factor // 2], axis=1)
    assert mutual_information_gap(latents, factor, bins=20) == pytest.approx(
        math.log(2) / math.log(20))
    assert mutual_information_gap(latents, factor, bins=10) == pytest.approx(0.0, abs=1e-12)


def test_mig_of_two_latents_sharing_a_factor_is_zero_and_a_binary_factor_counts():
    """With exactly two latents the runner-up is the second one: two copies of a factor give 0.
    A binary factor (entropy ln 2, below one nat) is a factor like any other: captured by one
    latent alone, MIG 1."""
    factor = np.repeat([0.0, 1.0], 100)
    noise = np.random.default_rng(0).uniform(size=200)
    assert mutual_information_gap(np.stack([factor, factor], 1), factor) == pytest.approx(0.0)
    assert mutual_information_gap(np.stack([factor, noise], 1), factor) == pytest.approx(
        1.0, abs=0.05)


def test_mig_names_only_the_constant_factors():
    factors = np.stack([np.zeros(100), np.repeat([0.0, 1.0], 50)], axis=1)
    with pytest.raises(ValueError, match=r"factors \[0\] are constant"):
        mutual_information_gap(np.random.default_rng(0).uniform(size=(100, 2)), factors)


def test_factor_metrics_take_latents_that_still_require_gradients():
    latents = torch.rand(50, 2, requires_grad=True)
    factors = latents.detach().numpy() * 2
    assert linear_probe_r2(latents, factors, seed=0) == pytest.approx([1.0, 1.0])


def test_factor_metrics_defaults_are_twenty_bins_and_seed_zero():
    """What evaluate uses: MIG with 20 bins and the probe's split from seed 0."""
    factor = np.repeat(np.arange(21.0), 50)  # 21 levels: 20 bins merge two of them
    latents = np.stack([factor, factor // 2], axis=1)
    twenty = mutual_information_gap(latents, factor, bins=20)
    assert twenty != pytest.approx(mutual_information_gap(latents, factor, bins=21))
    assert mutual_information_gap(latents, factor) == twenty
    noisy = latents + np.random.default_rng(1).normal(size=latents.shape)
    assert linear_probe_r2(noisy, factor) == linear_probe_r2(noisy, factor, seed=0)
    assert linear_probe_r2(noisy, factor) != linear_probe_r2(noisy, factor, seed=1)
