"""Convolutional encoder/decoder bodies for the CNN cells (spatial latents ``(B, C, h, w)``).

Each of ``downsample`` stages halves the resolution: 28 -> 14 -> 7 for MNIST, 32 -> 16 -> 8
for CIFAR-10 with the default two stages, and multiplies the channels by ``mult``: stage ``i`` has
``channels * mult^i`` channels, so a network with ``mult = 2`` spends few channels at full
resolution (where a 3x3 conv costs the most per channel) and more at the latent's resolution.
"""

from __future__ import annotations

import torch
from torch import nn


def stage_widths(channels: int, downsample: int, mult: int) -> list[int]:
    """Channels at each resolution, full size first: ``[channels * mult^i for i in 0..downsample]``."""
    return [channels * mult ** i for i in range(downsample + 1)]


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

    def __init__(self, in_channels: int, channels: int, downsample: int, out: int, mult: int = 1):
        super().__init__()
        widths = stage_widths(channels, downsample, mult)
        layers: list[nn.Module] = [nn.Conv2d(in_channels, widths[0], 3, padding=1)]
        for i in range(downsample):
            layers += [ResBlock(widths[i]), nn.Conv2d(widths[i], widths[i + 1], 4, stride=2, padding=1)]
        ch = widths[-1]
        layers += [ResBlock(ch), nn.GroupNorm(min(8, ch), ch), nn.SiLU(), nn.Conv2d(ch, out, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x * 2 - 1)


class CNNDecoder(nn.Module):
    """``(B, latent_channels, h, w)`` latents -> ``(B, C, h 2^k, w 2^k)`` means in [0, 1]."""

    def __init__(self, out_channels: int, channels: int, downsample: int, latent_channels: int, mult: int = 1):
        super().__init__()
        widths = stage_widths(channels, downsample, mult)[::-1]
        layers: list[nn.Module] = [nn.Conv2d(latent_channels, widths[0], 3, padding=1), ResBlock(widths[0])]
        for i in range(downsample):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(widths[i], widths[i + 1], 3, padding=1),
                       ResBlock(widths[i + 1])]
        ch = widths[-1]
        layers += [nn.GroupNorm(min(8, ch), ch), nn.SiLU(), nn.Conv2d(ch, out_channels, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(z))
