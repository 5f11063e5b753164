"""Encoders and decoders: the architectures, independent of likelihood and objective.

An encoder maps images (B, C, H, W) to the mean and log-variance of a diagonal Gaussian,
each (B, latent). A decoder maps latents (..., latent) to likelihood parameters (..., C, H, W);
leading dimensions (such as importance samples) pass through.
"""

from __future__ import annotations

import math

from torch import Tensor, nn

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU}


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
        mean, log_var = self.head(self.features(x)).chunk(2, dim=-1)
        return mean, log_var


class ConvDecoder(nn.Module):
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

    def forward(self, z: Tensor) -> Tensor:
        leading = z.shape[:-1]
        feature_map = self.head(z.reshape(-1, z.shape[-1])).unflatten(-1, self.start)
        colours, height, width = self.image_shape
        images = self.features(feature_map)[..., :height, :width]
        return images.reshape(*leading, colours, height, width)


ARCHITECTURES = {
    "mlp": (MLPEncoder, MLPDecoder),
    "conv": (ConvEncoder, ConvDecoder),
}
