"""Offline sample quality: FID, KID, precision and recall in a small per-dataset classifier's
features.

Inception-based FID needs downloaded weights and 299x299 RGB inputs, neither of which fits 8x8 to
28x28 grey images offline. Instead each image dataset gets a small CNN (`FeatureNet`) trained once
with a fixed seed, in the space the test images live in, and cached with its test accuracy; its
heads classify the images into the dataset's classes, or each true factor into bins, and
distances are measured in its `num_features`-dimensional feature layer. Such scores are
comparable only within one dataset and one cached classifier, which is why callers report them
for held-out real images too (`fid_ref` and the like, over several draws).

Fréchet distance: we call torchmetrics' `_compute_fid(mu1, sigma1, mu2, sigma2)` (what
`FrechetInceptionDistance.compute` ends in) on float64 means and covariances from `torch.cov`.
Why not the `FrechetInceptionDistance(feature=net)` class: it accumulates float64 sums too, but
casts its result back to the feature dtype (float32) and accepts only images, whereas callers also
want the distance between feature sets they already hold. Why not scipy's `sqrtm`: `_compute_fid`
uses Tr sqrt(S1 S2) = sum sqrt(eig(S1 S2)), with no matrix square root to turn complex or fail on
singular covariances. `_compute_fid` is private, so a test checks that it still agrees with the
public class (`torchmetrics==1.9.0` is pinned).

Kernel distance (KID, Bińkowski et al. 2018): torchmetrics' `poly_mmd` on seeded subsets of the
features, for the same reasons (the `KernelInceptionDistance` class takes only images and draws
its subsets from the global random stream); a test checks it against the class.

Precision and recall (Kynkäänniemi et al. 2019) are hand-written: torchmetrics has none.
"""

from collections.abc import Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.image.fid import _compute_fid
from torchmetrics.image.kid import poly_mmd

from vae_zoo.data.batches import bernoulli

__all__ = [
    "FeatureNet",
    "classifier_accuracy",
    "extract_features",
    "fid_from_images",
    "frechet_distance",
    "kernel_distance",
    "precision_recall",
    "sample_scores",
    "train_feature_net",
]

# Bumped whenever the architecture or its training changes: part of the cache key, so an older
# cached net is never loaded as this one.
FEATURE_NET_VERSION = 2
# Fewer optimiser steps than this under-train on small datasets (1,300 training digits are 11
# batches an epoch). Large ones train for MIN_EPOCHS: on binarised Fashion-MNIST (391 batches an
# epoch) 12 epochs gained 0.2 points of test accuracy over 10 (0.876 to 0.878, measured before
# the feature layer had batch norm), and 10 take one to two minutes on 2 CPU cores.
MIN_TRAIN_STEPS = 1500
MIN_EPOCHS = 10
TRAIN_BATCH_SIZE = 128
LEARNING_RATE = 2e-3  # the peak of the one-cycle schedule
POOLED_SIDE = 7  # the feature maps' side before the feature layer (28x28 inputs give 7x7)
# Pairwise-distance blocks hold at most this many entries (float64: 128 MiB).
DISTANCE_BLOCK_ENTRIES = 2**24
# KID's subsets (Bińkowski et al. 2018 and torchmetrics use 1,000 points, 100 subsets): with
# 1,000 samples every subset is the whole set (its std over subsets is then 0); with 10,000 the
# 100 subsets cover each point 10 times on average.
KID_SUBSET_SIZE = 1000
KID_SUBSETS = 100


class FeatureNet(nn.Module):
    """A small CNN classifier whose penultimate layer is the feature space for FID, KID and P/R.

    Three 3x3 conv + batch-norm + ReLU blocks (32, 64 and 64 channels; the first two of stride
    2, so 28x28 becomes 7x7), an adaptive average pool to 7x7 (a no-op at 28x28; any side >= 8
    works), then a `num_features`-unit batch-normalised ELU feature layer and linear heads: one
    over the classes for `num_classes` an int, one per entry for a sequence (e.g. one per
    factor of the data).
    `forward(x)` returns the features `(B, num_features)`, as torchmetrics' `feature=` expects.
    Batch norm makes the mode matter: the functions here evaluate in eval mode.
    """

    def __init__(self, in_channels: int, num_classes: int | Sequence[int],
                 num_features: int = 64):
        super().__init__()
        self.in_channels = in_channels
        self.class_counts = self.as_class_counts(num_classes)
        self.num_features = num_features  # torchmetrics reads this attribute

        def block(channels_in: int, channels_out: int, stride: int) -> list[nn.Module]:
            return [nn.Conv2d(channels_in, channels_out, kernel_size=3, stride=stride,
                              padding=1),
                    nn.BatchNorm2d(channels_out), nn.ReLU()]

        self.trunk = nn.Sequential(
            # Strided convolutions rather than conv + max-pool: on the CPU, max-pooling the
            # full-size maps took a fifth of the training time (measured on an earlier, smaller
            # net), at the same accuracy.
            *block(in_channels, 32, stride=2),
            *block(32, 64, stride=2),
            *block(64, 64, stride=1),
            nn.AdaptiveAvgPool2d(POOLED_SIDE),
            nn.Flatten(),
            nn.Linear(64 * POOLED_SIDE**2, num_features),
            # Batch norm keeps the features near unit scale, the scale KID's kernel
            # (x·y / F + 1)³ is made for: without it they were ~5 per unit on circles, x·y / F
            # ~20, and the kernel's cube made KID swing by hundreds between draws.
            nn.BatchNorm1d(num_features),
            # ELU, not ReLU: with ReLU 16-26 of 64 feature units were dead (always 0) after
            # training on Fashion-MNIST, wasting dimensions of the space FID and P/R live in.
            nn.ELU(),
        )
        self.head = nn.Linear(num_features, sum(self.class_counts))  # every head's logits

    @staticmethod
    def as_class_counts(num_classes: int | Sequence[int]) -> tuple[int, ...]:
        """The class count of each head: `(num_classes,)` for an int."""
        if isinstance(num_classes, int):
            return (num_classes,)
        return tuple(int(count) for count in num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Features `(B, num_features)` of images `(B, C, H, W)` in [0, 1]."""
        return self.trunk(x)

    def logits(self, x: Tensor) -> tuple[Tensor, ...]:
        """Each head's class logits `(B, classes of the head)`."""
        return self.head(self.trunk(x)).split(self.class_counts, dim=1)

    def constructor_args(self) -> dict:
        """The arguments that rebuild this architecture (stored beside the weights)."""
        return {
            "in_channels": self.in_channels,
            "num_classes": list(self.class_counts),
            "num_features": self.num_features,
        }


def default_epochs(num_images: int, batch_size: int) -> int:
    steps_per_epoch = -(-num_images // batch_size)
    return max(MIN_EPOCHS, -(-MIN_TRAIN_STEPS // steps_per_epoch))


def train_feature_net(
    images: Tensor,
    labels: Tensor,
    num_classes: int | Sequence[int],
    *,
    seed: int = 0,
    epochs: int | None = None,
    batch_size: int = TRAIN_BATCH_SIZE,
    learning_rate: float = LEARNING_RATE,
    num_features: int = 64,
    binarize: bool = False,
    device: str | torch.device = "cpu",
) -> FeatureNet:
    """Train a `FeatureNet` classifier; returned in eval mode.

    `labels` are `(N,)` classes for one head (`num_classes` an int) or `(N, heads)` for one
    head per entry of `num_classes`; the loss is the sum of the heads' cross-entropies. Adam
    under a one-cycle learning-rate schedule peaking at `learning_rate` (torch's `OneCycleLR`:
    in a budget of a few epochs it reaches a higher accuracy than a constant rate).
    `binarize`: images are grey levels in [0, 1] and every batch is a fresh Bernoulli draw of
    them, as dynamically binarised data are; the test images of such data are one draw, so
    the net learns the very space it is evaluated in, and never memorises one draw's noise.

    Deterministic given `seed`: weights are initialised after `torch.manual_seed(seed)` inside
    `torch.random.fork_rng` (the caller's global RNG is left as it was), batches are slices of a
    permutation drawn from a seeded `torch.Generator` (and binarised with another), and
    deterministic algorithms are switched on for the duration. `epochs=None` picks
    `default_epochs`.
    """
    images = images.to(device=device, dtype=torch.float32)  # (N, C, H, W)
    labels = labels.to(device=device, dtype=torch.long).reshape(len(labels), -1)  # (N, heads)
    num_images = images.shape[0]
    if epochs is None:
        epochs = default_epochs(num_images, batch_size)
    shuffle = torch.Generator().manual_seed(seed)
    binarisation = torch.Generator(device=images.device).manual_seed(seed)

    was_deterministic = torch.are_deterministic_algorithms_enabled()
    was_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = FeatureNet(images.shape[1], num_classes, num_features)
        if labels.shape[1] != len(net.class_counts):
            raise ValueError(f"labels give {labels.shape[1]} targets per image for "
                             f"{len(net.class_counts)} heads")
        net.to(device).train()
        optimiser = torch.optim.Adam(net.parameters(), lr=learning_rate)
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimiser, max_lr=learning_rate, epochs=epochs,
            steps_per_epoch=-(-num_images // batch_size))
        for _ in range(epochs):
            order = torch.randperm(num_images, generator=shuffle).to(device)
            for start in range(0, num_images, batch_size):
                batch = order[start : start + batch_size]
                if len(batch) == 1:  # batch norm needs two; the image is seen in other epochs
                    continue
                inputs = images[batch]
                if binarize:
                    inputs = bernoulli(inputs, binarisation)
                loss = sum(F.cross_entropy(logits, targets)
                           for logits, targets in zip(net.logits(inputs), labels[batch].T,
                                                      strict=True))
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                schedule.step()
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
) -> tuple[float, ...]:
    """Each head's accuracy: the fraction of `images` `(N, C, H, W)` whose arg-max logit (in
    eval mode) equals `labels` (`(N,)` for one head, `(N, heads)`)."""
    device = next(net.parameters()).device
    with _evaluating(net):
        logits = _batched(lambda x: net.head(net(x)), images, device, batch_size)
    labels = labels.cpu().reshape(len(labels), -1)  # (N, heads)
    return tuple(
        float((head.argmax(dim=1) == targets).double().mean())
        for head, targets in zip(logits.split(net.class_counts, dim=1), labels.T, strict=True))


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


def kernel_distance(
    real_features: Tensor,
    fake_features: Tensor,
    *,
    subset_size: int = KID_SUBSET_SIZE,
    subsets: int = KID_SUBSETS,
    seed: int = 0,
) -> tuple[float, float]:
    """Kernel (Inception) distance of Bińkowski et al. (2018) between two feature sets, and its
    standard deviation over subsets: `(kid, kid_std)`.

    Each of `subsets` times, `min(subset_size, N, M)` rows of each set are drawn without
    replacement (a seeded generator: the same `seed` gives the same subsets) and scored with the
    unbiased MMD² under the kernel k(x, y) = (x·y / F + 1)³ (torchmetrics' `poly_mmd`, in
    float64); `kid` is the mean over subsets and `kid_std` their population standard deviation,
    as torchmetrics' `KernelInceptionDistance` reports. Unbiased, so equal laws score 0 on
    average and a single estimate can be slightly negative; it is not clamped.
    """
    real = torch.as_tensor(real_features, dtype=torch.float64)
    fake = torch.as_tensor(fake_features, dtype=torch.float64)
    size = min(subset_size, real.shape[0], fake.shape[0])
    if size < 2:
        raise ValueError(f"need at least 2 real and 2 fake points, got {real.shape[0]} and "
                         f"{fake.shape[0]}")
    generator = torch.Generator().manual_seed(seed)
    scores = torch.stack([
        poly_mmd(real[torch.randperm(real.shape[0], generator=generator)[:size]],
                 fake[torch.randperm(fake.shape[0], generator=generator)[:size]])
        for _ in range(subsets)])
    return float(scores.mean()), float(scores.std(unbiased=False))


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


def sample_scores(real_features: Tensor, fake_features: Tensor, *, k: int = 3,
                  seed: int = 0) -> dict[str, float]:
    """Every sample metric of `fake_features` against `real_features`: `fid`
    (`frechet_distance`), `kid` and `kid_std` (`kernel_distance` with its default subsets,
    drawn with `seed`), `precision` and `recall` (`precision_recall` with `k` neighbours)."""
    kid, kid_std = kernel_distance(real_features, fake_features, seed=seed)
    precision, recall = precision_recall(real_features, fake_features, k=k)
    return {"fid": frechet_distance(real_features, fake_features), "kid": kid,
            "kid_std": kid_std, "precision": precision, "recall": recall}
