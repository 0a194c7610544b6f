"""Rate units: bits per image -> bits per pixel (bpp) and bits per dimension.

An image of shape ``(C, H, W)`` has ``H * W`` pixels and ``C * H * W`` dimensions, so

- ``bpp = bits / (H * W)``: the usual unit of image-compression papers (a pixel of an
  RGB image counts once, whatever its channels);
- ``bits/dim = bits / (C * H * W)``: the unit of likelihood models, ``-log2 p(x) / D``.

Rates are reported twice (DESIGN.md section 3): ``estimated`` from the model's
densities and ``actual`` from the bitstream, ``8 * len(bytes)`` with the header.
Every helper accepts a float, a numpy array or a torch tensor of bits (one value per
image) and returns the same kind.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch

Bits = TypeVar("Bits", float, np.ndarray, torch.Tensor)


def bits_of(stream: bytes) -> int:
    """Actual rate of one encoded stream: its whole length in bits, header included."""
    return 8 * len(stream)


def bpp(bits: Bits, height: int, width: int) -> Bits:
    """Bits per pixel: ``bits / (H * W)``; ``bits`` holds bits per image."""
    return bits / (height * width)


def bits_per_dim(bits: Bits, channels: int, height: int, width: int) -> Bits:
    """Bits per dimension: ``bits / (C * H * W)``; ``bits`` holds bits per image."""
    return bits / (channels * height * width)
