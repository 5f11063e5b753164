"""Architectures: encoders and decoders, independent of likelihood, prior and objective.

An architecture builds `Networks` for an image shape from its declared settings:
- `encoders`, bottom-up: the first maps images (B, C, H, W) to the mean and log-variance of
  q(z₁|x), each (B, d₁); each next one maps z_l (..., d_l) to those of q(z_{l+1}|z_l);
- `top_down`: top_down[l] maps z_{l+2} to the mean and log-variance of p(z_{l+1}|z_{l+2})
  (empty for one stochastic layer, whose z has the prior alone);
- `decoder`: z₁ (..., d₁) to likelihood parameters (..., C, H, W).
Leading dimensions (such as importance samples) pass through everywhere but the first encoder.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from vae_zoo.settings import setting

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU}


def channels_last(images: Tensor) -> Tensor:
    """The convolutional nets' inputs, laid out channels-last (NHWC): this PyTorch's CPU
    convolutions (oneDNN) run 1.3x (training) to 1.8x (importance sampling's decoding) faster
    on them, with the same values up to float rounding. Shapes and indexing do not change."""
    return images.contiguous(memory_format=torch.channels_last)


def mlp(sizes: list[int], activation: str) -> nn.Sequential:
    """Linear layers of the given sizes with `activation` between them (none after the last)."""
    layers: list[nn.Module] = []
    for index, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(fan_in, fan_out))
        if index < len(sizes) - 2:
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


class MLPEncoder(nn.Module):
    def __init__(self, image_shape, latent_dim: int, hidden: list[int], activation: str):
        super().__init__()
        self.net = mlp([math.prod(image_shape), *hidden, 2 * latent_dim], activation)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mean, log_var = self.net(x.flatten(1)).chunk(2, dim=-1)
        return mean, log_var


class GaussianMLP(nn.Module):
    """A stochastic layer between latents: (..., fan_in) → mean and log-variance (..., fan_out)."""

    def __init__(self, fan_in: int, hidden: list[int], fan_out: int, activation: str):
        super().__init__()
        self.net = mlp([fan_in, *hidden, 2 * fan_out], activation)

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        mean, log_var = self.net(z).chunk(2, dim=-1)
        return mean, log_var


class MLPDecoder(nn.Module):
    def __init__(self, image_shape, latent_dim: int, hidden: list[int], activation: str):
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.net = mlp([latent_dim, *reversed(hidden), math.prod(image_shape)], activation)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z).unflatten(-1, self.image_shape)


def conv_stack(channels: list[int], activation: str, transpose: bool) -> nn.Sequential:
    """Stride-2 4x4 convolutions, each halving (or, transposed, doubling) the side."""
    conv = nn.ConvTranspose2d if transpose else nn.Conv2d
    layers: list[nn.Module] = []
    for index, (fan_in, fan_out) in enumerate(zip(channels[:-1], channels[1:], strict=True)):
        layers.append(conv(fan_in, fan_out, kernel_size=4, stride=2, padding=1))
        if not transpose or index < len(channels) - 2:
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


def conv_feature_side(side: int, layers: int) -> int:
    """Side after `layers` stride-2 convolutions (kernel 4, padding 1): ceil-halving each time."""
    for _ in range(layers):
        side = (side + 2 - 4) // 2 + 1
    return side


class ConvEncoder(nn.Module):
    def __init__(self, image_shape, latent_dim: int, channels: list[int], hidden: int,
                 activation: str):
        super().__init__()
        colours, height, width = image_shape
        self.features = conv_stack([colours, *channels], activation, transpose=False)
        flat = channels[-1] * conv_feature_side(height, len(channels)) * conv_feature_side(
            width, len(channels)
        )
        self.head = mlp([flat, hidden, 2 * latent_dim], activation)
        self.head.insert(0, nn.Flatten())

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mean, log_var = self.head(self.features(channels_last(x))).chunk(2, dim=-1)
        return mean, log_var


class FeatureMapDecoder(nn.Module):
    """A decoder that maps z (..., latent) through `head` to a small feature map of shape
    `start`, grows it with `features` and crops it to the image size."""

    image_shape: tuple
    start: tuple
    head: nn.Module
    features: nn.Module

    def forward(self, z: Tensor) -> Tensor:
        leading = z.shape[:-1]
        feature_map = channels_last(self.head(z.reshape(-1, z.shape[-1])).unflatten(-1, self.start))
        colours, height, width = self.image_shape
        images = self.features(feature_map)[..., :height, :width]
        return images.reshape(*leading, colours, height, width)


class ConvDecoder(FeatureMapDecoder):
    """Mirror of `ConvEncoder`: grows a small feature map by transposed convolutions, then crops
    to the image size (sides that are not a multiple of 2**layers are rounded up first)."""

    def __init__(self, image_shape, latent_dim: int, channels: list[int], hidden: int,
                 activation: str):
        super().__init__()
        self.image_shape = tuple(image_shape)
        colours, height, width = image_shape
        scale = 2 ** len(channels)
        self.start = (channels[-1], -(-height // scale), -(-width // scale))
        self.head = nn.Sequential(
            mlp([latent_dim, hidden, math.prod(self.start)], activation),
            ACTIVATIONS[activation](),
        )
        self.features = conv_stack([*reversed(channels), colours], activation, transpose=True)


def residual_stage(channels: int, blocks: int, activation: str) -> nn.Sequential:
    return nn.Sequential(*(ResidualBlock(channels, activation) for _ in range(blocks)))


class ResidualBlock(nn.Module):
    """x + conv(act(conv(act(x)))), 3x3 convolutions keeping the size (He et al. 2016, the
    pre-activation form)."""

    def __init__(self, channels: int, activation: str):
        super().__init__()
        self.branch = nn.Sequential(
            ACTIVATIONS[activation](), nn.Conv2d(channels, channels, 3, padding=1),
            ACTIVATIONS[activation](), nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.branch(x)


class ResNetEncoder(nn.Module):
    """A 3x3 stem, then per stage residual blocks and a stride-2 convolution to the next width."""

    def __init__(self, image_shape, latent_dim: int, channels: list[int], blocks: int,
                 hidden: int, activation: str):
        super().__init__()
        colours, height, width = image_shape
        layers: list[nn.Module] = [nn.Conv2d(colours, channels[0], 3, padding=1)]
        for index, width_in in enumerate(channels):
            width_out = channels[min(index + 1, len(channels) - 1)]
            layers += [residual_stage(width_in, blocks, activation),
                       nn.Conv2d(width_in, width_out, 4, stride=2, padding=1)]
        self.features = nn.Sequential(*layers, ACTIVATIONS[activation](), nn.Flatten())
        flat = channels[-1] * conv_feature_side(height, len(channels)) * conv_feature_side(
            width, len(channels))
        self.head = mlp([flat, hidden, 2 * latent_dim], activation)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mean, log_var = self.head(self.features(channels_last(x))).chunk(2, dim=-1)
        return mean, log_var


class ResNetDecoder(FeatureMapDecoder):
    """Mirror of `ResNetEncoder`: a small feature map grown by residual stages and stride-2
    transposed convolutions, a 3x3 convolution to the image's channels, cropped to its size."""

    def __init__(self, image_shape, latent_dim: int, channels: list[int], blocks: int,
                 hidden: int, activation: str):
        super().__init__()
        self.image_shape = tuple(image_shape)
        colours, height, width = image_shape
        scale = 2 ** len(channels)
        self.start = (channels[-1], -(-height // scale), -(-width // scale))
        self.head = nn.Sequential(mlp([latent_dim, hidden, math.prod(self.start)], activation),
                                  ACTIVATIONS[activation]())
        widths = list(reversed(channels))
        layers: list[nn.Module] = []
        for index, width_in in enumerate(widths):
            width_out = widths[min(index + 1, len(widths) - 1)]
            layers += [residual_stage(width_in, blocks, activation),
                       nn.ConvTranspose2d(width_in, width_out, 4, stride=2, padding=1)]
        layers += [ACTIVATIONS[activation](), nn.Conv2d(widths[-1], colours, 3, padding=1)]
        self.features = nn.Sequential(*layers)


@dataclass
class Networks:
    """What an architecture builds (see the module docstring)."""

    encoders: list[nn.Module]
    top_down: list[nn.Module]
    decoder: nn.Module
    latent_dims: list[int]  # d_1 (nearest the data) ... d_L (the top, under the prior)


# Each architecture: its settings, declared with their defaults, and how it builds `Networks`.
@dataclass(frozen=True)
class MLPSettings:
    latent_dim: int = setting(50, positive=True, maximum=10_000, doc="latent dimensions")
    hidden: list[int] = setting([200, 200], maximum=100_000,
                                doc="widths of the hidden layers (encoder order)")
    activation: str = setting("tanh", choices=tuple(ACTIVATIONS))


def build_mlp(image_shape, s: MLPSettings) -> Networks:
    """The IWAE paper's one-stochastic-layer MLP (784-200-200 tanh → 50, mirrored)."""
    return Networks([MLPEncoder(image_shape, s.latent_dim, s.hidden, s.activation)], [],
                    MLPDecoder(image_shape, s.latent_dim, s.hidden, s.activation),
                    [s.latent_dim])


@dataclass(frozen=True)
class MLP2LayerSettings:
    latent_dim: int = setting(100, positive=True, maximum=10_000,
                              doc="dimensions of z1, nearest the data")
    hidden: list[int] = setting([100, 100], maximum=100_000, doc="hidden widths between x and z1")
    top_latent_dim: int = setting(50, positive=True, maximum=10_000,
                                  doc="dimensions of z2, under the prior")
    top_hidden: list[int] = setting([50, 50], maximum=100_000,
                                   doc="hidden widths between z1 and z2")
    activation: str = setting("tanh", choices=tuple(ACTIVATIONS))


def build_mlp_2layer(image_shape, s: MLP2LayerSettings) -> Networks:
    """Two stochastic layers (Burda et al. 2015): x → 100-100 → z1 (100) → 50-50 → z2 (50), and
    the mirrored generative path z2 → 50-50 → z1 → 100-100 → x."""
    return Networks(
        encoders=[MLPEncoder(image_shape, s.latent_dim, s.hidden, s.activation),
                  GaussianMLP(s.latent_dim, s.top_hidden, s.top_latent_dim, s.activation)],
        top_down=[GaussianMLP(s.top_latent_dim, list(reversed(s.top_hidden)), s.latent_dim,
                              s.activation)],
        decoder=MLPDecoder(image_shape, s.latent_dim, s.hidden, s.activation),
        latent_dims=[s.latent_dim, s.top_latent_dim],
    )


@dataclass(frozen=True)
class ConvSettings:
    # Small on purpose: importance sampling decodes K samples per test image, and a conv decoder
    # costs ~20x the MLP's per sample on a CPU.
    latent_dim: int = setting(32, positive=True, maximum=10_000, doc="latent dimensions")
    channels: list[int] = setting([16, 32], maximum=10_000,
                                  doc="channels of the stride-2 convolutions")
    hidden: int = setting(128, positive=True, maximum=100_000,
                          doc="width of the fully connected layer")
    activation: str = setting("relu", choices=tuple(ACTIVATIONS))


def build_conv(image_shape, s: ConvSettings) -> Networks:
    arch = {"channels": s.channels, "hidden": s.hidden, "activation": s.activation}
    return Networks([ConvEncoder(image_shape, s.latent_dim, **arch)], [],
                    ConvDecoder(image_shape, s.latent_dim, **arch), [s.latent_dim])


@dataclass(frozen=True)
class ResNetSettings:
    latent_dim: int = setting(32, positive=True, maximum=10_000, doc="latent dimensions")
    channels: list[int] = setting([16, 32], maximum=10_000, doc="channels of each resolution stage")
    blocks: int = setting(1, positive=True, maximum=100, doc="residual blocks per stage")
    hidden: int = setting(128, positive=True, maximum=100_000,
                          doc="width of the fully connected layer")
    activation: str = setting("relu", choices=tuple(ACTIVATIONS))


def build_resnet(image_shape, s: ResNetSettings) -> Networks:
    arch = {"channels": s.channels, "blocks": s.blocks, "hidden": s.hidden,
            "activation": s.activation}
    return Networks([ResNetEncoder(image_shape, s.latent_dim, **arch)], [],
                    ResNetDecoder(image_shape, s.latent_dim, **arch), [s.latent_dim])
