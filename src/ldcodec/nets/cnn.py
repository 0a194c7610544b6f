"""Convolutional encoder/decoder bodies for the CNN cells (spatial latents ``(B, C, h, w)``).

Each of ``downsample`` stages halves the resolution: 28 -> 14 -> 7 for MNIST, 32 -> 16 -> 8
for CIFAR-10 with the default two stages.
"""

from __future__ import annotations

import torch
from torch import nn


class ResBlock(nn.Module):
    """Pre-activation residual block: GroupNorm, SiLU, 3x3 conv, twice."""

    def __init__(self, ch: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.GroupNorm(min(8, ch), ch), nn.SiLU(), nn.Conv2d(ch, ch, 3, padding=1),
            nn.GroupNorm(min(8, ch), ch), nn.SiLU(), nn.Conv2d(ch, ch, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class CNNEncoder(nn.Module):
    """``(B, C, H, W)`` images -> ``(B, out, H / 2^k, W / 2^k)``."""

    def __init__(self, in_channels: int, channels: int, downsample: int, out: int):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, channels, 3, padding=1)]
        for _ in range(downsample):
            layers += [ResBlock(channels), nn.Conv2d(channels, channels, 4, stride=2, padding=1)]
        layers += [ResBlock(channels), nn.GroupNorm(min(8, channels), channels), nn.SiLU(),
                   nn.Conv2d(channels, out, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x * 2 - 1)


class CNNDecoder(nn.Module):
    """``(B, latent_channels, h, w)`` latents -> ``(B, C, h 2^k, w 2^k)`` means in [0, 1]."""

    def __init__(self, out_channels: int, channels: int, downsample: int, latent_channels: int):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(latent_channels, channels, 3, padding=1), ResBlock(channels)]
        for _ in range(downsample):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(channels, channels, 3, padding=1),
                       ResBlock(channels)]
        layers += [nn.GroupNorm(min(8, channels), channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(z))
