import inspect
import math

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from vae_zoo.data import ImageData, Split
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
    (logits,) = net.logits(images)
    assert logits.shape == (5, 10)
    assert extract_features(net, images, batch_size=2).shape == (5, 32)


def test_feature_net_learns_a_two_class_image_problem_well_above_chance():
    train_images, train_labels = half_bright_images(512, seed=0)
    test_images, test_labels = half_bright_images(256, seed=10)
    net = train_feature_net(train_images, train_labels, 2, epochs=5)
    # Chance is 0.5; the halves differ by 0.5 in mean brightness, so the task is separable.
    assert not net.training
    (accuracy,) = classifier_accuracy(net, test_images, test_labels)
    assert accuracy > 0.9


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
    (20000, 128, 10),  # 157 steps per epoch: ⌈1500 / 157⌉ = 10
    (60000, 128, 10),  # 469 steps per epoch, ⌈1500 / 469⌉ = 4: at least MIN_EPOCHS
])
def test_feature_net_trains_for_at_least_1500_steps_and_10_epochs(images, batch, epochs):
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
    """The classifier behind FID, KID, precision and recall: 64 features, Adam under a one-cycle
    schedule peaking at 2e-3 over every step of training (the settings docs/results-format.md
    records with the feature net)."""
    schedules = []
    one_cycle = torch.optim.lr_scheduler.OneCycleLR

    def recording_one_cycle(optimiser, **settings):
        schedules.append((type(optimiser).__name__, settings))
        return one_cycle(optimiser, **settings)

    monkeypatch.setattr(torch.optim.lr_scheduler, "OneCycleLR", recording_one_cycle)
    images = torch.rand(40, 1, 8, 8)
    net = train_feature_net(images, torch.arange(40) % 2, 2, seed=0, epochs=3, batch_size=16)
    assert net.num_features == 64
    assert schedules == [("Adam", {"max_lr": 2e-3, "epochs": 3, "steps_per_epoch": 3})]
    assert extract_features(net, images).shape == (40, 64)


def test_the_feature_net_architecture_is_the_documented_one():
    """Three blocks of conv 3×3 → BN → ReLU (32, 64, 64 channels; strides 2, 2, 1) → pool 7×7
    → linear → BN → ELU, a linear head: its parameter count worked out by hand, and its feature
    map sizes."""
    net = FeatureNet(in_channels=1, num_classes=10, num_features=64)
    by_hand = ((1 * 9 * 32 + 32) + 2 * 32  # conv 1→32 and its batch norm
               + (32 * 9 * 64 + 64) + 2 * 64  # conv 32→64 and its batch norm
               + (64 * 9 * 64 + 64) + 2 * 64  # conv 64→64 and its batch norm
               + (64 * 49 * 64 + 64) + 2 * 64  # 64·7·7 pooled values → 64 features, BN
               + (64 * 10 + 10))  # class head
    assert sum(p.numel() for p in net.parameters()) == by_hand
    kinds = [type(layer).__name__ for layer in net.trunk]
    assert kinds == ["Conv2d", "BatchNorm2d", "ReLU"] * 3 + [
        "AdaptiveAvgPool2d", "Flatten", "Linear", "BatchNorm1d", "ELU"]
    convolutions = [net.trunk[index] for index in (0, 3, 6)]
    assert [(conv.stride, conv.padding) for conv in convolutions] == [
        ((2, 2), (1, 1)), ((2, 2), (1, 1)), ((1, 1), (1, 1))]
    net.eval()
    x = torch.rand(2, 1, 28, 28)
    assert net.trunk[:3](x).shape == (2, 32, 14, 14)  # stride 2 halves 28
    assert net.trunk[:6](x).shape == (2, 64, 7, 7)
    assert net.trunk[:9](x).shape == (2, 64, 7, 7)
    assert torch.equal(net.trunk[:10](x), net.trunk[:9](x))  # no pooling at 28×28
    assert net(x).min() > -1.0  # ELU's floor


def test_a_feature_net_has_one_head_per_class_count():
    """`num_classes` a sequence: one head per entry, each with its own logits; the constructor
    arguments rebuild the same heads."""
    net = FeatureNet(in_channels=1, num_classes=(5, 5, 3), num_features=16).eval()
    assert net.class_counts == (5, 5, 3)
    assert [logits.shape for logits in net.logits(torch.rand(4, 1, 8, 8))] == [
        (4, 5), (4, 5), (4, 3)]
    assert net.constructor_args() == {"in_channels": 1, "num_classes": [5, 5, 3],
                                      "num_features": 16}
    assert FeatureNet(**net.constructor_args()).class_counts == (5, 5, 3)
    assert FeatureNet(in_channels=1, num_classes=4).class_counts == (4,)


def test_the_loss_of_several_heads_is_the_sum_of_their_cross_entropies(monkeypatch):
    """Labels (N, heads): each head is trained on its own column, and the loss is the sum of
    the heads' cross-entropies (checked on the first step, recomputed from the same logits)."""
    losses = []
    cross_entropy = F.cross_entropy

    def recording_cross_entropy(logits, targets):
        loss = cross_entropy(logits, targets)
        losses.append((logits.shape[1], targets.clone(), loss.item()))
        return loss

    monkeypatch.setattr(F, "cross_entropy", recording_cross_entropy)
    images = torch.rand(6, 1, 8, 8)
    labels = torch.tensor([[0, 1], [1, 2], [2, 0], [0, 1], [1, 2], [2, 0]])
    train_feature_net(images, labels, (3, 4), epochs=1, batch_size=6)
    (classes_a, targets_a, _), (classes_b, targets_b, _) = losses
    assert (classes_a, classes_b) == (3, 4)
    shuffled = torch.randperm(6, generator=generator(0))
    assert torch.equal(targets_a, labels[shuffled, 0])
    assert torch.equal(targets_b, labels[shuffled, 1])


def test_several_heads_learn_their_own_targets_and_are_scored_one_by_one():
    """Head 0 learns which half is bright, head 1 the opposite: each is accurate on its own
    column; a head scored against the other's labels is wrong everywhere."""
    train_images, train_halves = half_bright_images(512, seed=0)
    test_images, test_halves = half_bright_images(256, seed=10)
    train_labels = torch.stack([train_halves, 1 - train_halves], dim=1)  # (N, 2)
    net = train_feature_net(train_images, train_labels, (2, 2), epochs=5)
    first, second = classifier_accuracy(net, test_images,
                                        torch.stack([test_halves, 1 - test_halves], dim=1))
    assert first > 0.9 and second > 0.9
    swapped = classifier_accuracy(net, test_images,
                                  torch.stack([1 - test_halves, test_halves], dim=1))
    assert swapped == pytest.approx((1 - first, 1 - second))


def test_labels_must_give_one_target_per_head():
    with pytest.raises(ValueError, match="labels give 1 targets per image for 2 heads"):
        train_feature_net(torch.rand(8, 1, 8, 8), torch.arange(8) % 2, (2, 2), epochs=1)


def test_a_binarising_feature_net_sees_a_fresh_bernoulli_draw_of_every_batch(monkeypatch):
    """`binarize=True`: every training batch is binary, on where the grey level says on average
    (grey 0 never, 1 always), and one image gets different draws in different epochs; the
    draws repeat with the seed. Without it the grey levels are seen as they are."""
    seen = []
    forward = FeatureNet.logits

    def recording_logits(self, x):
        if self.training:
            seen.append(x.detach().clone())
        return forward(self, x)

    monkeypatch.setattr(FeatureNet, "logits", recording_logits)
    images = torch.full((20, 1, 8, 8), 0.5)
    images[0], images[1] = 0.0, 1.0
    labels = torch.arange(20) % 2

    def draws(binarize: bool, seed: int) -> torch.Tensor:
        seen.clear()
        train_feature_net(images, labels, 2, seed=seed, epochs=2, batch_size=20,
                          binarize=binarize)
        return torch.stack(seen)  # (epochs, 20, 1, 8, 8)

    binary = draws(True, seed=0)
    assert set(binary.unique().tolist()) == {0.0, 1.0}
    assert 0.4 < binary.mean() < 0.6
    assert not torch.equal(binary[0], binary[1])
    assert torch.equal(binary, draws(True, seed=0))
    assert not torch.equal(binary, draws(True, seed=1))
    grey = draws(False, seed=0)
    assert torch.equal(grey.sort(dim=1).values, images.expand(2, -1, -1, -1, -1).sort(
        dim=1).values)
    for epoch in binary:  # images 0 and 1, wherever the shuffle put them
        ones = epoch.flatten(1).sum(1)
        assert (ones == 0).sum() >= 1 and (ones == 64).sum() >= 1


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


def test_without_epochs_the_feature_net_trains_for_the_default_epochs(monkeypatch):
    asked, batches = [], []
    monkeypatch.setattr(samples, "default_epochs",
                        lambda images, batch_size: asked.append((images, batch_size)) or 2)
    forward = FeatureNet.logits

    def counting_logits(self, x):
        batches.append(len(x))
        return forward(self, x)

    monkeypatch.setattr(FeatureNet, "logits", counting_logits)
    train_feature_net(torch.rand(10, 1, 8, 8), torch.arange(10) % 2, 2, batch_size=4)
    assert asked == [(10, 4)] and batches == [4, 4, 2] * 2


def test_a_last_batch_of_one_image_is_skipped(monkeypatch):
    """Batch norm cannot train on one image: 9 images in batches of 4 train on 4 + 4 per
    epoch, the odd one out (another image each epoch) seen in other epochs."""
    batches = []
    forward = FeatureNet.logits

    def counting_logits(self, x):
        batches.append(len(x))
        return forward(self, x)

    monkeypatch.setattr(FeatureNet, "logits", counting_logits)
    train_feature_net(torch.rand(9, 1, 8, 8), torch.arange(9) % 2, 2, epochs=2, batch_size=4)
    assert batches == [4, 4, 4, 4]


def test_trained_features_are_near_unit_scale():
    """The batch-normalised feature layer keeps features near unit scale, where KID's kernel
    (x·y / F + 1)³ is meant to work: ELU of standardised values has a per-unit standard
    deviation below 1 and |x·y| / F of order 1, whatever the scale of the images."""
    images, labels = half_bright_images(512, seed=0)
    net = train_feature_net(100 * images, labels, 2, epochs=3)
    features = extract_features(net, 100 * images)
    assert 0.2 < features.std(dim=0).median() < 1.5
    assert (features @ features.T / features.shape[1]).abs().mean() < 2


def test_the_feature_net_has_the_number_of_features_asked_for():
    assert FeatureNet(in_channels=1, num_classes=3).num_features == 64
    net = train_feature_net(torch.rand(20, 1, 8, 8), torch.arange(20) % 2, 2, epochs=1,
                            num_features=8)
    assert net.num_features == 8 and extract_features(net, torch.rand(3, 1, 8, 8)).shape == (3, 8)


# --- KID --------------------------------------------------------------------------------------


def unbiased_mmd_by_hand(real: np.ndarray, fake: np.ndarray) -> float:
    """Unbiased MMD² with k(x, y) = (x·y / d + 1)³, written out pair by pair."""
    d = real.shape[1]

    def k(x, y):
        return (x @ y / d + 1) ** 3

    m, n = len(real), len(fake)
    within_real = sum(k(real[i], real[j]) for i in range(m) for j in range(m) if i != j)
    within_fake = sum(k(fake[i], fake[j]) for i in range(n) for j in range(n) if i != j)
    across = sum(k(x, y) for x in real for y in fake)
    return within_real / (m * (m - 1)) + within_fake / (n * (n - 1)) - 2 * across / (m * n)


def test_kid_of_whole_sets_is_the_unbiased_mmd_with_the_cubic_kernel_by_hand():
    """With subsets as large as the sets, every subset is the whole set (in another order,
    which MMD ignores): KID is the hand-computed MMD² and its spread over subsets is 0."""
    real = np.array([[0.0, 1.0], [1.0, 0.5], [-1.0, 2.0], [0.5, 0.5]])
    fake = real + np.array([1.5, -0.5])
    kid, kid_std = samples.kernel_distance(torch.from_numpy(real), torch.from_numpy(fake),
                                           subset_size=4, subsets=7)
    expected = unbiased_mmd_by_hand(real, fake)
    assert expected > 0
    assert kid == pytest.approx(expected, rel=1e-12)
    assert kid_std == pytest.approx(0.0, abs=1e-12)


def test_kid_of_a_set_with_itself_is_near_zero_and_of_a_shifted_copy_clearly_positive():
    """The unbiased estimate is 0 in expectation for equal laws (and may be slightly
    negative); a copy shifted by one feature standard deviation scores far above its spread."""
    features = torch.randn(2_000, 16, generator=generator(0))
    same, same_std = samples.kernel_distance(features, features)
    shifted, shifted_std = samples.kernel_distance(features, features + 1.0)
    assert abs(same) < 0.01 and same_std < 0.01
    assert shifted > 1.0 and shifted > 20 * shifted_std


def test_kid_of_two_draws_of_one_law_is_within_its_spread_of_zero():
    real = torch.randn(3_000, 8, generator=generator(1))
    fake = torch.randn(3_000, 8, generator=generator(2))
    kid, kid_std = samples.kernel_distance(real, fake, subset_size=500, subsets=50)
    assert abs(kid) < 3 * kid_std


def test_kid_subsets_are_seeded_and_sized_by_the_smaller_set():
    """Subsets of min(subset_size, N, M) rows, drawn with `seed`: the same seed gives the same
    numbers, another seed other ones; below the set sizes the subsets differ (std > 0)."""
    real = torch.randn(300, 8, generator=generator(3))
    fake = torch.randn(200, 8, generator=generator(4)) + 0.3
    first = samples.kernel_distance(real, fake, subset_size=100, subsets=20, seed=5)
    assert first == samples.kernel_distance(real, fake, subset_size=100, subsets=20, seed=5)
    assert first != samples.kernel_distance(real, fake, subset_size=100, subsets=20, seed=6)
    assert first[1] > 0
    # the default subset_size 1000 > 200 rows: subsets of all 200 rows, the whole sets
    whole_fake = samples.kernel_distance(real[:200], fake, subsets=3)
    assert whole_fake[0] == pytest.approx(unbiased_mmd_by_hand(real[:200].double().numpy(),
                                                               fake.double().numpy()), rel=1e-9)


def test_kid_defaults_suit_one_thousand_and_ten_thousand_samples():
    assert (samples.KID_SUBSET_SIZE, samples.KID_SUBSETS) == (1000, 100)
    defaults = inspect.signature(samples.kernel_distance).parameters
    assert defaults["subset_size"].default == 1000 and defaults["subsets"].default == 100


def test_kid_needs_two_points_per_set():
    two = torch.tensor([[0.0], [1.0]])
    with pytest.raises(ValueError, match="at least 2 real and 2 fake points, got 1 and 2"):
        samples.kernel_distance(two[:1], two)
    with pytest.raises(ValueError, match="got 2 and 1"):
        samples.kernel_distance(two, two[:1])


@pytest.mark.filterwarnings("ignore:Metric `Kernel Inception Distance` will save")
def test_kid_agrees_with_torchmetrics_kernel_inception_distance():
    """torchmetrics' class on the images, with one subset of every image, gives the same KID
    as `kernel_distance` on the net's features."""
    torch.manual_seed(0)
    net = FeatureNet(in_channels=1, num_classes=3).eval()
    real = torch.rand(200, 1, 12, 12, generator=generator(8))
    fake = 0.6 * torch.rand(200, 1, 12, 12, generator=generator(9))
    reference = KernelInceptionDistance(feature=net, subsets=1, subset_size=200)
    reference.update(real, real=True)
    reference.update(fake, real=False)
    expected, _ = reference.compute()
    kid, _ = samples.kernel_distance(extract_features(net, real), extract_features(net, fake))
    assert float(expected) > 0
    assert kid == pytest.approx(float(expected), rel=1e-3)


def test_sample_scores_are_fid_kid_precision_and_recall():
    real = torch.randn(300, 4, generator=generator(10))
    fake = torch.randn(300, 4, generator=generator(11)) + 0.5
    scores = samples.sample_scores(real, fake, k=2, seed=3)
    kid, kid_std = samples.kernel_distance(real, fake, seed=3)
    precision, recall = precision_recall(real, fake, k=2)
    assert scores == {"fid": frechet_distance(real, fake), "kid": kid, "kid_std": kid_std,
                      "precision": precision, "recall": recall}


# --- the real-vs-real reference of evaluate.sample_reference ----------------------------------


SPLIT_CODES = {"val": 1, "train": 2, "test": 3}


def coded_split(split: str, count: int) -> Split:
    """Grey 2×2 images that say where they come from: pixel 0 the split's code, pixel 1 the
    image's index in the split, the rest noise."""
    pixels = torch.randint(0, 256, (count, 1, 2, 2), generator=generator(count), dtype=torch.uint8)
    pixels[:, 0, 0, 0] = SPLIT_CODES[split]
    pixels[:, 0, 0, 1] = torch.arange(count, dtype=torch.uint8)
    return Split(pixels)


def coded_data(test: int, val: int, train: int, binarize: str = "none") -> ImageData:
    return ImageData("coded", train=coded_split("train", train), val=coded_split("val", val),
                     test=coded_split("test", test), binarize=binarize)


def identity_net() -> nn.Module:
    """Features = the four pixel values in [0, 1]."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 4))
    with torch.no_grad():
        net[1].weight.copy_(torch.eye(4))
        net[1].bias.zero_()
    return net


def recorded_reference(monkeypatch, data: ImageData, config) -> tuple[object, list]:
    """`sample_reference` of `data`, with the held-out features and seed of each draw's
    `sample_scores` call."""
    import vae_zoo.evaluate as evaluation

    calls = []
    scores = evaluation.sample_scores

    def recording_scores(real, fake, *, k, seed):
        calls.append((fake.clone(), seed))
        return scores(real, fake, k=k, seed=seed)

    monkeypatch.setattr(evaluation, "sample_scores", recording_scores)
    return evaluation.sample_reference(identity_net(), data, config), calls


def origins(features: torch.Tensor) -> list[tuple[str, int]]:
    """(split, index) of each image, read back from its features."""
    names = {code: name for name, code in SPLIT_CODES.items()}
    codes = (features[:, :2] * 255).round().long().tolist()
    return [(names[code], index) for code, index in codes]


def test_reference_draws_are_consecutive_disjoint_runs_of_validation_then_training_images(
        monkeypatch):
    """fid_samples = 25, 40 test, 30 validation and 100 training images: five draws of 25,
    the validation images first, then the training images in order; none is a test image,
    no image is in two draws, and the real features are the first 25 test images'."""
    from vae_zoo.evaluate import EvalConfig

    data = coded_data(test=40, val=30, train=100)
    reference, calls = recorded_reference(monkeypatch, data, EvalConfig(fid_samples=25))
    assert reference.count == 25
    assert origins(reference.real_features) == [("test", index) for index in range(25)]
    held_out = [("val", index) for index in range(30)] + [("train", index) for index in range(95)]
    draws = [origins(fake) for fake, _ in calls]
    assert draws == [held_out[start:start + 25] for start in range(0, 125, 25)]
    assert [seed for _, seed in calls] == [0, 1, 2, 3, 4]
    everything = [origin for draw in draws for origin in draw]
    assert len(set(everything)) == len(everything) == 125
    assert reference.metrics["ref_draws"] == 5


@pytest.mark.parametrize("test, val, train, fid_samples, count, draws", [
    (40, 30, 30, 25, 25, 2),  # 60 held-out images hold two draws of 25
    (40, 10, 20, 100, 15, 2),  # 30 held-out images: count capped at 15 so that two draws fit
    (40, 100, 500, 10, 10, 5),  # room for more: still the default five
    (12, 20, 0, 50, 10, 2),  # no training images: validation images only
])
def test_the_reference_takes_as_many_disjoint_draws_as_the_data_hold(
        monkeypatch, test, val, train, fid_samples, count, draws):
    from vae_zoo.evaluate import EvalConfig

    data = coded_data(test=test, val=val, train=train)
    reference, calls = recorded_reference(monkeypatch, data, EvalConfig(fid_samples=fid_samples,
                                                                        pr_neighbours=1))
    assert reference.count == count and len(calls) == draws
    assert reference.metrics["ref_draws"] == draws
    assert all(len(fake) == count for fake, _ in calls)
    everything = [origin for fake, _ in calls for origin in origins(fake)]
    assert len(set(everything)) == len(everything)
    assert not any(split == "test" for split, _ in everything)


def test_fewer_reference_draws_can_be_asked_for(monkeypatch):
    import vae_zoo.evaluate as evaluation

    data = coded_data(test=20, val=100, train=0)
    reference = evaluation.sample_reference(identity_net(), data,
                                            evaluation.EvalConfig(fid_samples=10), draws=3)
    assert reference.metrics["ref_draws"] == 3


def test_reference_metrics_are_means_and_sample_sds_over_the_draws(monkeypatch):
    """Known answer: each `<name>_ref` is the mean over draws of the draw's score against the
    test features, `<name>_ref_sd` their standard deviation with divisor draws − 1, computed
    here with the statistics module from scores recomputed on the recorded draws."""
    import statistics

    from vae_zoo.evaluate import EvalConfig

    data = coded_data(test=60, val=50, train=100)
    reference, calls = recorded_reference(monkeypatch, data,
                                          EvalConfig(fid_samples=30, pr_neighbours=2))
    per_draw = [samples.sample_scores(reference.real_features, fake, k=2, seed=seed)
                for fake, seed in calls]
    assert len(per_draw) == 5
    expected = {"ref_draws": 5.0}
    for name in ("fid", "kid", "precision", "recall"):
        values = [scores[name] for scores in per_draw]
        expected[f"{name}_ref"] = pytest.approx(statistics.fmean(values), rel=1e-12, abs=1e-15)
        expected[f"{name}_ref_sd"] = pytest.approx(statistics.stdev(values), rel=1e-9, abs=1e-15)
    assert reference.metrics == expected
    assert reference.metrics["fid_ref_sd"] > 0


@pytest.mark.parametrize("binarize", ["dynamic", "fixed", "none"])
def test_training_images_in_the_reference_are_in_the_test_images_space(monkeypatch, binarize):
    """Dynamically binarised data keep grey training images: the reference binarises them once
    with the training split's seed (`binarize_fixed(..., "train")`), as the test images are
    binarised with theirs. Fixed and grey data are used as stored."""
    from vae_zoo.data.batches import binarize_fixed
    from vae_zoo.evaluate import EvalConfig

    data = coded_data(test=20, val=10, train=50, binarize=binarize)
    _, calls = recorded_reference(monkeypatch, data, EvalConfig(fid_samples=10))
    from_training = torch.cat([fake for fake, _ in calls])[10:]  # the 40 training images used
    expected = data.train.pixels[:40]
    if binarize == "dynamic":
        expected = binarize_fixed(expected, "train")
        assert set(from_training.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(from_training, expected.float().div(255).flatten(1))


def test_sample_metrics_add_kid_to_fid_precision_and_recall_beside_the_reference(monkeypatch):
    """The model's samples are scored by `sample_scores` against the test features with the
    run's seed (for KID's subsets) and `pr_neighbours`; the reference's metrics come along."""
    import vae_zoo.evaluate as evaluation

    data = coded_data(test=40, val=30, train=30)
    config = evaluation.EvalConfig(fid_samples=20, pr_neighbours=2, batch_size=8)
    reference = evaluation.sample_reference(identity_net(), data, config)

    drawn = []

    def draw(model, data, count, generator):
        drawn.append(torch.rand(count, 1, 2, 2, generator=generator))
        return drawn[-1]

    monkeypatch.setattr(evaluation, "draw_samples", draw)
    metrics = evaluation.sample_metrics(None, data, reference, config, seed=7)
    assert [len(batch) for batch in drawn] == [8, 8, 4]
    fake = torch.cat(drawn).flatten(1)
    assert metrics == {**samples.sample_scores(reference.real_features, fake, k=2, seed=7),
                       **reference.metrics}
    assert set(metrics) == {"fid", "kid", "kid_std", "precision", "recall", "ref_draws",
                            *(f"{name}_ref{suffix}" for name in ("fid", "kid", "precision",
                                                                  "recall")
                              for suffix in ("", "_sd"))}
