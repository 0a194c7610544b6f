"""Fully connected encoder/decoder bodies for the MLP cells of the grid (vector latents ``(B, d)``)."""

from __future__ import annotations

import math

import torch
from torch import nn


def mlp(sizes: list[int], act: type[nn.Module] = nn.SiLU) -> nn.Sequential:
    """Linear layers of the given sizes with ``act`` between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(act())
    return nn.Sequential(*layers)


class MLPEncoder(nn.Module):
    """``(B, C, H, W)`` images -> ``(B, out)`` features (``out`` = d or 2d for mean and log-variance);
    ``image_shape`` is ``(C, H, W)``."""

    def __init__(self, image_shape: tuple[int, int, int], hidden: int, depth: int, out: int):
        super().__init__()
        self.net = mlp([math.prod(image_shape)] + [hidden] * depth + [out])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1) * 2 - 1)


class MLPDecoder(nn.Module):
    """``(B, d)`` latents -> ``(B, C, H, W)`` decoder means in [0, 1] (sigmoid output); ``image_shape``
    is ``(C, H, W)``."""

    def __init__(self, image_shape: tuple[int, int, int], hidden: int, depth: int, latent_dim: int):
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.net = mlp([latent_dim] + [hidden] * depth + [math.prod(image_shape)])

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(z)).view(-1, *self.image_shape)
