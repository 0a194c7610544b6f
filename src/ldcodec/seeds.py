"""Stream-keyed randomness: every random draw a decoder makes comes from a seed derived from the
stream (the model's identity and the image's index), never from a global or device RNG, so both
ends of a codec draw the same numbers on any machine.
"""

from __future__ import annotations

import hashlib

import torch


def derive_seed(key: bytes, index: int) -> int:
    """A 64-bit seed for item ``index`` under ``key``: the first 8 bytes of SHA-256(key | index), little-endian."""
    return int.from_bytes(hashlib.sha256(key + index.to_bytes(8, "little")).digest()[:8], "little")


def cpu_generator(seed: int) -> torch.Generator:
    """A CPU torch generator for ``seed`` (reduced below 2^63, as ``manual_seed`` needs)."""
    return torch.Generator().manual_seed(seed % (2 ** 63))


def prior_noise(process, shape: tuple[int, ...], seeds: list[int], device) -> torch.Tensor:
    """``z_1`` ``(len(seeds), *shape)`` from ``process``'s noise prior, one CPU generator per image."""
    return torch.cat([process.prior_sample((1, *shape), generator=cpu_generator(s)) for s in seeds]).to(device)
