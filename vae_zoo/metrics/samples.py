"""Offline sample quality: FID, precision and recall in a small per-dataset classifier's features.

Inception-based FID needs downloaded weights and 299x299 RGB inputs, neither of which fits 8x8 to
28x28 grey images offline. Instead each image dataset gets a small CNN (`FeatureNet`) trained once
with a fixed seed and cached with its test accuracy, and distances are measured in its
`num_features`-dimensional feature layer. Such a FID is comparable only within one dataset and one
cached classifier, which is why callers report `fid_ref` (test set vs held-out real images) too.

Fréchet distance: we call torchmetrics' `_compute_fid(mu1, sigma1, mu2, sigma2)` (what
`FrechetInceptionDistance.compute` ends in) on float64 means and covariances from `torch.cov`.
Why not the `FrechetInceptionDistance(feature=net)` class: it accumulates float64 sums too, but
casts its result back to the feature dtype (float32) and accepts only images, whereas callers also
want the distance between feature sets they already hold. Why not scipy's `sqrtm`: `_compute_fid`
uses Tr sqrt(S1 S2) = sum sqrt(eig(S1 S2)), with no matrix square root to turn complex or fail on
singular covariances. `_compute_fid` is private, so a test checks that it still agrees with the
public class (`torchmetrics==1.9.0` is pinned).

Precision and recall (Kynkäänniemi et al. 2019) are hand-written: torchmetrics has none.
"""

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.image.fid import _compute_fid

__all__ = [
    "FeatureNet",
    "classifier_accuracy",
    "extract_features",
    "fid_from_images",
    "frechet_distance",
    "precision_recall",
    "train_feature_net",
]

# Fewer optimiser steps than this under-train on small datasets (1,797 digits are 15 batches an
# epoch); more than MIN_EPOCHS passes are not needed on large ones (Fashion-MNIST is 390 an epoch).
MIN_TRAIN_STEPS = 1500
MIN_EPOCHS = 3
TRAIN_BATCH_SIZE = 128
# Pairwise-distance blocks hold at most this many entries (float64: 128 MiB).
DISTANCE_BLOCK_ENTRIES = 2**24


class FeatureNet(nn.Module):
    """A small CNN classifier whose penultimate layer is the feature space for FID and P/R.

    Two 3x3 conv + batch-norm blocks (the first of stride 2), an adaptive average pool to 4x4,
    so any side >= 8 works, then a `num_features`-unit ELU feature layer and a linear class head.
    `forward(x)` returns the features `(B, num_features)`, as torchmetrics' `feature=` expects.
    Batch norm makes the mode matter: the functions here evaluate in eval mode.
    """

    def __init__(self, in_channels: int, num_classes: int, num_features: int = 64):
        super().__init__()
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.num_features = num_features  # torchmetrics reads this attribute
        self.trunk = nn.Sequential(
            # A strided convolution rather than conv + max-pool: 2.5x faster to train on the CPU
            # (max-pooling the full-size maps took a fifth of the time) at the same accuracy.
            nn.Conv2d(in_channels, 16, kernel_size=3, stride=2, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.Conv2d(16, 32, kernel_size=3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
            nn.Linear(32 * 4 * 4, num_features),
            # ELU, not ReLU: with ReLU 16-26 of 64 feature units were dead (always 0) after
            # training on Fashion-MNIST, wasting dimensions of the space FID and P/R live in.
            nn.ELU(),
        )
        self.head = nn.Linear(num_features, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Features `(B, num_features)` of images `(B, C, H, W)` in [0, 1]."""
        return self.trunk(x)

    def logits(self, x: Tensor) -> Tensor:
        """Class logits `(B, num_classes)`."""
        return self.head(self.trunk(x))

    def constructor_args(self) -> dict:
        """The arguments that rebuild this architecture (stored beside the weights)."""
        return {
            "in_channels": self.in_channels,
            "num_classes": self.num_classes,
            "num_features": self.num_features,
        }


def default_epochs(num_images: int, batch_size: int) -> int:
    steps_per_epoch = -(-num_images // batch_size)
    return max(MIN_EPOCHS, -(-MIN_TRAIN_STEPS // steps_per_epoch))


def train_feature_net(
    images: Tensor,
    labels: Tensor,
    num_classes: int,
    *,
    seed: int = 0,
    epochs: int | None = None,
    batch_size: int = TRAIN_BATCH_SIZE,
    learning_rate: float = 2e-3,
    num_features: int = 64,
    device: str | torch.device = "cpu",
) -> FeatureNet:
    """Train a `FeatureNet` classifier with Adam and cross-entropy; returned in eval mode.

    Deterministic given `seed`: weights are initialised after `torch.manual_seed(seed)` inside
    `torch.random.fork_rng` (the caller's global RNG is left as it was), batches are slices of a
    permutation drawn from a seeded `torch.Generator`, and deterministic algorithms are switched on
    for the duration. `epochs=None` picks max(3, enough epochs for 1,500 optimiser steps).
    """
    images = images.to(device=device, dtype=torch.float32)  # (N, C, H, W)
    labels = labels.to(device=device, dtype=torch.long)  # (N,)
    num_images = images.shape[0]
    if epochs is None:
        epochs = default_epochs(num_images, batch_size)
    shuffle = torch.Generator().manual_seed(seed)

    was_deterministic = torch.are_deterministic_algorithms_enabled()
    was_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = FeatureNet(images.shape[1], num_classes, num_features)
        net.to(device).train()
        optimiser = torch.optim.Adam(net.parameters(), lr=learning_rate)
        for _ in range(epochs):
            order = torch.randperm(num_images, generator=shuffle).to(device)
            for start in range(0, num_images, batch_size):
                batch = order[start : start + batch_size]
                loss = F.cross_entropy(net.logits(images[batch]), labels[batch])
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
    finally:
        torch.use_deterministic_algorithms(was_deterministic, warn_only=was_warn_only)
    return net.eval()


@contextmanager
def _evaluating(net: nn.Module):
    """Run `net` in eval mode inside the block, then restore its mode."""
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            yield net
    finally:
        net.train(was_training)


def _batched(net_call, images: Tensor, device: torch.device, batch_size: int) -> Tensor:
    outputs = [
        net_call(images[start : start + batch_size].to(device=device, dtype=torch.float32)).cpu()
        for start in range(0, images.shape[0], batch_size)
    ]
    return torch.cat(outputs)


def classifier_accuracy(
    net: FeatureNet, images: Tensor, labels: Tensor, batch_size: int = 1000
) -> float:
    """Fraction of `images` `(N, C, H, W)` whose arg-max logit (in eval mode) equals `labels`."""
    device = next(net.parameters()).device
    with _evaluating(net):
        predicted = _batched(net.logits, images, device, batch_size).argmax(dim=1)
    return float((predicted == labels.cpu()).double().mean())


def extract_features(net: nn.Module, images: Tensor, batch_size: int = 1000) -> Tensor:
    """Features `(N, F)` (float32, on the CPU) of `images` `(N, C, H, W)`: `net(images)` in eval
    mode and without gradients, in batches of `batch_size`."""
    device = next(net.parameters()).device
    with _evaluating(net):
        return _batched(net, images, device, batch_size)


def frechet_distance(real_features: Tensor, fake_features: Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets `(N, F)` and `(M, F)`.

    ||mu_r - mu_f||^2 + Tr(S_r + S_f - 2 (S_r S_f)^(1/2)), with unbiased covariances, all in float64
    (torchmetrics' `_compute_fid`). Clamped at 0: a set against itself can give -1e-13.
    """
    moments = []
    for features in (real_features, fake_features):
        features = torch.as_tensor(features, dtype=torch.float64)
        if features.ndim != 2 or features.shape[0] < 2:
            raise ValueError(f"need (N >= 2, F) features, got shape {tuple(features.shape)}")
        moments += [features.mean(dim=0), torch.cov(features.T).reshape(features.shape[1], -1)]
    return max(float(_compute_fid(*moments)), 0.0)


def fid_from_images(net: nn.Module, real_images: Tensor, fake_images: Tensor) -> float:
    """Fréchet distance between `real_images` and `fake_images` in `net`'s feature space."""
    return frechet_distance(extract_features(net, real_images), extract_features(net, fake_images))


def _kth_neighbour_radii(features: Tensor, k: int) -> Tensor:
    """Distance `(N,)` from each row to its k-th nearest other row."""
    rows_per_block = max(1, DISTANCE_BLOCK_ENTRIES // features.shape[0])
    radii = []
    for start in range(0, features.shape[0], rows_per_block):
        distances = torch.cdist(features[start : start + rows_per_block], features)  # (b, N)
        # The smallest distance is each row to itself (0), so the k-th other is the (k+1)-th.
        radii.append(distances.topk(k + 1, dim=1, largest=False).values[:, k])
    return torch.cat(radii)


def _fraction_inside_manifold(queries: Tensor, centres: Tensor, radii: Tensor) -> float:
    """Fraction of `queries` within `radii[j]` of some `centres[j]` (a union of balls)."""
    rows_per_block = max(1, DISTANCE_BLOCK_ENTRIES // centres.shape[0])
    inside = 0
    for start in range(0, queries.shape[0], rows_per_block):
        distances = torch.cdist(queries[start : start + rows_per_block], centres)  # (b, N)
        inside += int((distances <= radii).any(dim=1).sum())
    return inside / queries.shape[0]


def precision_recall(
    real_features: Tensor, fake_features: Tensor, k: int = 3
) -> tuple[float, float]:
    """Improved precision and recall of Kynkäänniemi et al. (2019) between two feature sets.

    A set's manifold is the union of balls around each of its points with radius the distance to
    that point's k-th nearest neighbour in the set (itself excluded). Precision is the fraction of
    fake points inside the real manifold (are samples realistic?); recall the fraction of real
    points inside the fake manifold (is the data covered?). Hand-written, because torchmetrics has
    no generative precision/recall; distances are float64 `torch.cdist` in row blocks, so 10k x 10k
    stays within about 128 MiB.
    """
    real = torch.as_tensor(real_features, dtype=torch.float64)
    fake = torch.as_tensor(fake_features, dtype=torch.float64)
    if min(real.shape[0], fake.shape[0]) <= k:
        raise ValueError(f"need more than k={k} real and fake points")
    precision = _fraction_inside_manifold(fake, real, _kth_neighbour_radii(real, k))
    recall = _fraction_inside_manifold(real, fake, _kth_neighbour_radii(fake, k))
    return precision, recall
