import math

import numpy as np
import pytest
import scipy.linalg
import torch
from torchmetrics.image.fid import FrechetInceptionDistance

from vae_zoo.metrics import samples
from vae_zoo.metrics.samples import (
    FeatureNet,
    classifier_accuracy,
    extract_features,
    fid_from_images,
    frechet_distance,
    precision_recall,
    train_feature_net,
)


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_rotation(dim: int, seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=generator(seed), dtype=torch.float64))
    return q


def with_exact_moments(mean: torch.Tensor, cov: torch.Tensor, num_rows: int, seed: int):
    """Rows whose sample mean and unbiased sample covariance are exactly `mean` and `cov`."""
    z = torch.randn(num_rows, mean.numel(), generator=generator(seed), dtype=torch.float64)
    z = z - z.mean(dim=0)
    whitened = z @ torch.linalg.inv(torch.linalg.cholesky(torch.cov(z.T))).T  # sample cov = I
    return whitened @ torch.linalg.cholesky(cov).T + mean


def half_bright_images(num_images: int, seed: int, side: int = 8):
    """Class 0 has a bright left half, class 1 a bright right half, both under uniform noise."""
    labels = torch.randint(0, 2, (num_images,), generator=generator(seed))
    images = 0.5 * torch.rand(num_images, 1, side, side, generator=generator(seed + 1))
    columns = torch.arange(side)
    bright_left = (columns < side // 2).float()  # (side,)
    bright = torch.where(labels[:, None] == 0, bright_left, 1 - bright_left)  # (N, side)
    images = images + 0.5 * bright[:, None, None, :]
    return images.float(), labels


# --- Fréchet distance -------------------------------------------------------------------------


def test_frechet_distance_of_a_set_with_itself_is_zero_and_of_a_tiny_shift_its_square():
    features = torch.randn(2_000, 16, generator=generator(0)) @ torch.randn(16, 16)
    assert frechet_distance(features, features) == pytest.approx(0.0, abs=1e-6)
    # The clamp at 0 only absorbs rounding: a copy shifted by δ, |δ|² = 16 · 2.5e-3² = 1e-4,
    # is at |δ|² (equal covariances), however small.
    shift = torch.full((16,), 2.5e-3, dtype=torch.float64)
    assert frechet_distance(features.double(), features.double() + shift) == pytest.approx(
        1e-4, rel=1e-4)


def test_frechet_distance_grows_with_the_scale_of_added_noise():
    features = torch.randn(2_000, 16, generator=generator(0), dtype=torch.float64)
    noise = torch.randn(2_000, 16, generator=generator(1), dtype=torch.float64)
    distances = [frechet_distance(features, features + scale * noise) for scale in (0.1, 0.3, 1, 3)]
    assert 0 < distances[0]
    assert all(smaller < larger for smaller, larger in zip(distances, distances[1:], strict=False))


def test_frechet_distance_equals_the_closed_form_for_non_commuting_2d_covariances():
    # For 2x2 S1, S2: the eigenvalues l1, l2 of S1 S2 are >= 0 and Tr sqrt(S1 S2) = sqrt(l1) +
    # sqrt(l2) = sqrt(Tr(S1 S2) + 2 sqrt(det S1 det S2)).
    mean_real, mean_fake = torch.tensor([0.0, 1.0]), torch.tensor([2.0, -1.0])
    cov_real = torch.tensor([[2.0, 0.9], [0.9, 1.0]], dtype=torch.float64)
    cov_fake = torch.tensor([[0.5, -0.2], [-0.2, 3.0]], dtype=torch.float64)
    trace_sqrt = math.sqrt(
        float(torch.trace(cov_real @ cov_fake))
        + 2 * math.sqrt(float(torch.det(cov_real) * torch.det(cov_fake)))
    )
    expected = 8.0 + float(cov_real.trace() + cov_fake.trace()) - 2 * trace_sqrt
    real = with_exact_moments(mean_real.double(), cov_real, 500, seed=0)
    fake = with_exact_moments(mean_fake.double(), cov_fake, 700, seed=1)
    assert frechet_distance(real, fake) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_equals_the_closed_form_for_covariances_sharing_eigenvectors():
    # S1 = Q diag(a) Q^T, S2 = Q diag(b) Q^T: d^2 = ||m1 - m2||^2 + sum (sqrt(a) - sqrt(b))^2.
    rotation = random_rotation(8, seed=2)
    a = torch.linspace(0.5, 4.0, 8, dtype=torch.float64)
    b = torch.linspace(3.0, 0.2, 8, dtype=torch.float64)
    shift = torch.full((8,), 0.5, dtype=torch.float64)
    real = with_exact_moments(
        torch.zeros(8, dtype=torch.float64), rotation @ a.diag() @ rotation.T, 1_000, seed=3
    )
    fake = with_exact_moments(shift, rotation @ b.diag() @ rotation.T, 1_000, seed=4)
    expected = float(shift.square().sum() + (a.sqrt() - b.sqrt()).square().sum())
    assert frechet_distance(real, fake) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_of_gaussian_samples_with_equal_covariance_is_the_squared_mean_shift():
    # Population value ||d||^2 = 4. With n = 20k per set, the mean term has standard deviation
    # 2 sqrt(2 d^T S d / n) <= 0.06 (eigenvalues of S <= 2) and bias 2 Tr S / n ~ 0.001; the
    # covariance term is O(dim^2 / n) ~ 0.003. A tolerance of 0.25 is over four standard deviations.
    dim, num_rows = 8, 20_000
    rotation = random_rotation(dim, seed=5)
    cov_sqrt = rotation @ torch.linspace(0.5, 2.0, dim, dtype=torch.float64).sqrt().diag()
    shift = torch.zeros(dim, dtype=torch.float64)
    shift[:4] = 1.0
    real = torch.randn(num_rows, dim, generator=generator(6), dtype=torch.float64) @ cov_sqrt.T
    fake = torch.randn(num_rows, dim, generator=generator(7), dtype=torch.float64) @ cov_sqrt.T
    assert frechet_distance(real, fake + shift) == pytest.approx(4.0, abs=0.25)


def test_fid_from_images_agrees_with_torchmetrics_frechet_inception_distance():
    torch.manual_seed(0)
    net = FeatureNet(in_channels=1, num_classes=3).eval()
    real = torch.rand(300, 1, 12, 12, generator=generator(8))
    fake = 0.6 * torch.rand(300, 1, 12, 12, generator=generator(9))
    reference = FrechetInceptionDistance(feature=net)
    reference.update(real, real=True)
    reference.update(fake, real=False)
    expected = float(reference.compute())
    assert expected > 0
    assert fid_from_images(net, real, fake) == pytest.approx(expected, rel=1e-4)


# --- precision and recall ---------------------------------------------------------------------


def gaussian_modes(num_per_mode: int, centres: torch.Tensor, seed: int) -> torch.Tensor:
    noise = torch.randn(len(centres), num_per_mode, centres.shape[1], generator=generator(seed))
    return (centres[:, None, :] + noise).reshape(-1, centres.shape[1])  # (modes * n, dim)


# Four unit-variance 2-D modes 100 apart: k-NN radii (a fraction of a unit) never reach across.
MODE_CENTRES = torch.tensor([[0.0, 0.0], [100.0, 0.0], [0.0, 100.0], [100.0, 100.0]])


def test_precision_and_recall_of_a_set_against_itself_are_one():
    features = torch.randn(1_000, 8, generator=generator(0))
    assert precision_recall(features, features) == (1.0, 1.0)


def test_a_fake_set_far_from_the_real_one_has_zero_precision_and_recall():
    real = torch.randn(500, 8, generator=generator(0))
    fake = torch.randn(500, 8, generator=generator(1)) + 1_000.0
    assert precision_recall(real, fake) == (0.0, 0.0)


def test_copying_half_of_the_real_modes_gives_precision_one_and_recall_one_half():
    real = gaussian_modes(250, MODE_CENTRES, seed=0)
    fake = real[:500]  # exactly the points of the first two modes
    assert precision_recall(real, fake) == (1.0, 0.5)


def test_sampling_half_of_the_real_modes_gives_precision_near_one_and_recall_near_one_half():
    # A fresh point from the same law lies, in expectation, in exactly k of the k-NN balls (Mecke's
    # formula). In two dimensions that count is close to Poisson(k = 3), which is 0 with probability
    # e^-3 = 0.05 (in high dimensions it is more dispersed and the miss rate far higher). So
    # precision ~ 0.95 and recall ~ 0.5 * 0.95; recall cannot exceed 0.5, as no ball around a fake
    # point reaches the two uncovered modes.
    real = gaussian_modes(500, MODE_CENTRES, seed=0)
    fake = gaussian_modes(500, MODE_CENTRES[:2], seed=1)
    precision, recall = precision_recall(real, fake, k=3)
    assert precision > 0.85
    assert 0.4 < recall <= 0.5


def test_precision_recall_in_blocks_matches_the_definition_point_by_point(monkeypatch):
    monkeypatch.setattr(samples, "DISTANCE_BLOCK_ENTRIES", 100)  # blocks of one or two rows
    real = np.random.default_rng(0).normal(size=(60, 5))
    fake = np.random.default_rng(1).normal(size=(50, 5)) + 0.5
    k = 4

    def inside_fraction(queries, centres):
        distances = np.linalg.norm(centres[:, None] - centres[None], axis=-1)
        radii = np.sort(distances, axis=1)[:, k]  # column 0 is each point itself
        return np.mean(
            [
                any(np.linalg.norm(q - c) <= r for c, r in zip(centres, radii, strict=True))
                for q in queries
            ]
        )

    expected = (inside_fraction(fake, real), inside_fraction(real, fake))
    assert 0 < expected[0] < 1 and 0 < expected[1] < 1
    assert precision_recall(torch.from_numpy(real), torch.from_numpy(fake), k=k) == pytest.approx(
        expected, abs=1e-12
    )


# --- feature network and its cache ------------------------------------------------------------


@pytest.mark.parametrize("side", [8, 16, 28])
def test_feature_net_gives_num_features_features_and_class_logits_for_any_side(side):
    net = FeatureNet(in_channels=1, num_classes=10, num_features=32).eval()
    images = torch.rand(5, 1, side, side)
    assert net.num_features == 32
    assert net(images).shape == (5, 32)
    assert net.logits(images).shape == (5, 10)
    assert extract_features(net, images, batch_size=2).shape == (5, 32)


def test_feature_net_learns_a_two_class_image_problem_well_above_chance():
    train_images, train_labels = half_bright_images(512, seed=0)
    test_images, test_labels = half_bright_images(256, seed=10)
    net = train_feature_net(train_images, train_labels, 2, epochs=5)
    # Chance is 0.5; the halves differ by 0.5 in mean brightness, so the task is separable.
    assert not net.training
    assert classifier_accuracy(net, test_images, test_labels) > 0.9


def test_feature_net_training_is_deterministic_given_the_seed():
    images, labels = half_bright_images(256, seed=0)
    first = train_feature_net(images, labels, 2, epochs=2, seed=3).state_dict()
    second = train_feature_net(images, labels, 2, epochs=2, seed=3).state_dict()
    other = train_feature_net(images, labels, 2, epochs=2, seed=4).state_dict()
    assert all(torch.equal(first[name], second[name]) for name in first)
    assert not all(torch.equal(first[name], other[name]) for name in first)


@pytest.mark.parametrize("images, batch, epochs", [
    (1000, 128, 188),  # 8 steps per epoch (the last one partial): ⌈1500 / 8⌉ epochs
    (1024, 128, 188),  # exactly 8 steps
    (60000, 128, 4),  # 469 steps per epoch: ⌈1500 / 469⌉ = 4
    (600000, 128, 3),  # at least MIN_EPOCHS
])
def test_feature_net_trains_for_at_least_1500_steps_and_3_epochs(images, batch, epochs):
    from vae_zoo.metrics.samples import default_epochs

    assert default_epochs(images, batch) == epochs


def test_frechet_distance_of_float32_features_is_computed_in_float64():
    """Feature nets return float32; the distance of those values is computed in float64, so it
    equals the closed form of the float32 values to 1e-9 even far from the origin (in float32
    the covariances of features near 100 lose about four digits)."""
    generator = torch.Generator().manual_seed(0)
    real = (100 + torch.randn(400, 3, generator=generator)).float()
    fake = (100.5 + 1.1 * torch.randn(400, 3, generator=generator)).float()
    a, b = real.double().numpy(), fake.double().numpy()
    covariance_a, covariance_b = np.cov(a.T), np.cov(b.T)
    root = scipy.linalg.sqrtm(covariance_a @ covariance_b).real
    expected = (((a.mean(0) - b.mean(0)) ** 2).sum()
                + np.trace(covariance_a + covariance_b - 2 * root))
    assert frechet_distance(real, fake) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_needs_two_rows_of_features_per_set():
    two_rows = torch.tensor([[0.0], [1.0]])
    assert frechet_distance(two_rows, two_rows + 3) == pytest.approx(9.0)
    for bad in (torch.tensor([[0.0, 1.0]]), torch.tensor([0.0, 1.0, 2.0])):
        with pytest.raises(ValueError, match="need \\(N >= 2, F\\) features"):
            frechet_distance(bad, two_rows)
        with pytest.raises(ValueError, match="need \\(N >= 2, F\\) features"):
            frechet_distance(two_rows, bad)


def test_a_point_exactly_at_a_radius_is_inside_the_manifold():
    """Kynkäänniemi et al.: inside when within the k-th neighbour distance, boundary included.
    Real points 0, 1, 2, 3 on a line with k = 1 have radius 1; the fake point 4 is exactly 1
    from 3 (inside), 10 is outside: precision 1/2."""
    real = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
    fake = torch.tensor([[4.0], [10.0]])
    precision, _ = precision_recall(real, fake, k=1)
    assert precision == 0.5


def test_precision_and_recall_need_more_than_k_points_per_set():
    """With k + 1 points each point has a k-th neighbour: a set against itself scores 1, 1;
    with k points there is none, which is refused."""
    points = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])
    assert precision_recall(points, points, k=3) == (1.0, 1.0)
    with pytest.raises(ValueError, match="more than k=3"):
        precision_recall(points[:3], points, k=3)
    with pytest.raises(ValueError, match="more than k=3"):
        precision_recall(points, points[:3], k=3)


def test_precision_recall_default_neighbourhood_is_the_evaluation_default():
    import inspect

    from vae_zoo.evaluate import EvalConfig

    default = inspect.signature(precision_recall).parameters["k"].default
    assert default == EvalConfig().pr_neighbours == 3


def test_the_feature_net_is_trained_as_documented(monkeypatch):
    """The classifier behind FID, precision and recall: 64 features, Adam at 2e-3 (the
    settings docs/results-format.md records with the feature net)."""
    rates = []
    adam = torch.optim.Adam

    def recording_adam(parameters, lr):
        rates.append(lr)
        return adam(parameters, lr=lr)

    monkeypatch.setattr(torch.optim, "Adam", recording_adam)
    images = torch.rand(40, 1, 8, 8)
    net = train_feature_net(images, torch.arange(40) % 2, 2, seed=0, epochs=1)
    assert net.num_features == 64 and rates == [2e-3]
    assert extract_features(net, images).shape == (40, 64)


def test_the_feature_net_architecture_is_the_documented_one():
    """Conv 3×3 stride 2 → BN → ReLU → conv 3×3 → BN → ReLU → pool 4×4 → linear → ELU, a
    linear head: its parameter count worked out by hand, and its feature map sizes."""
    net = FeatureNet(in_channels=1, num_classes=10, num_features=64)
    by_hand = ((1 * 9 * 16 + 16) + 2 * 16  # conv 1→16 and its batch norm
               + (16 * 9 * 32 + 32) + 2 * 32  # conv 16→32 and its batch norm
               + (32 * 16 * 64 + 64)  # 32·4·4 pooled values → 64 features
               + (64 * 10 + 10))  # class head
    assert sum(p.numel() for p in net.parameters()) == by_hand
    kinds = [type(layer).__name__ for layer in net.trunk]
    assert kinds == ["Conv2d", "BatchNorm2d", "ReLU", "Conv2d", "BatchNorm2d", "ReLU",
                     "AdaptiveAvgPool2d", "Flatten", "Linear", "ELU"]
    first, second = net.trunk[0], net.trunk[3]
    assert (first.stride, first.padding, second.stride, second.padding) == (
        (2, 2), (1, 1), (1, 1), (1, 1))
    net.eval()
    x = torch.rand(2, 1, 28, 28)
    assert net.trunk[:3](x).shape == (2, 16, 14, 14)  # stride 2 halves 28
    assert net.trunk[:6](x).shape == (2, 32, 14, 14)
    assert net(x).min() > -1.0  # ELU's floor


def test_the_feature_net_sees_every_training_image_once_per_epoch(monkeypatch):
    """Each epoch is one pass over a permutation of all the images, in batches of batch_size."""
    seen = []
    forward = FeatureNet.logits

    def recording_logits(self, x):
        if self.training:
            seen.append(x.detach().flatten(1)[:, 0].clone())
        return forward(self, x)

    monkeypatch.setattr(FeatureNet, "logits", recording_logits)
    images = torch.arange(10.0)[:, None, None, None].expand(10, 1, 8, 8).contiguous() / 10
    train_feature_net(images, torch.arange(10) % 2, 2, seed=0, epochs=2, batch_size=4)
    assert [len(batch) for batch in seen] == [4, 4, 2, 4, 4, 2]
    for epoch in (seen[:3], seen[3:]):
        assert sorted(torch.cat(epoch).tolist()) == pytest.approx(torch.arange(10.0) / 10)


def test_precision_recall_uses_three_neighbours_by_default():
    """Real points 0..9 on a line; fake points at 12 and 13. With k = 3 the radius of 9 is 3,
    so 12 is inside and 13 is not (precision ½); with k = 4 both would be inside."""
    real = torch.arange(10.0)[:, None]
    fake = torch.tensor([[12.0], [13.0], [100.0], [101.0]])
    assert precision_recall(real, fake) == precision_recall(real, fake, k=3)
    assert precision_recall(real, fake)[0] == 0.25


def test_the_feature_net_has_the_number_of_features_asked_for():
    assert FeatureNet(in_channels=1, num_classes=3).num_features == 64
    net = train_feature_net(torch.rand(20, 1, 8, 8), torch.arange(20) % 2, 2, epochs=1,
                            num_features=8)
    assert net.num_features == 8 and extract_features(net, torch.rand(3, 1, 8, 8)).shape == (3, 8)
