"""Seeds and random generators: the one place they are made (``docs/design.md`` §5).

Stream-keyed randomness: every random draw a decoder makes comes from a seed derived from the
stream (the model's identity and the image's index), never from a global or device RNG, so both
ends of a codec draw the same numbers on any machine. Every constructor here is part of a format
or a recorded result: changing one changes decoded images (``tests/golden/``) or measurements.

============================ =====================================================================
:func:`derive_seed`          64-bit seed of item ``index`` under a byte key (mode C: model digest
                             and image index)
:func:`sub_seed`             seed ``k`` derived from a seed (mode C's ``mse`` decode: its samples)
:func:`image_key`            mode U's decode key of image ``index`` under the stream key
:func:`image_generator`      CPU generator of an integer decode key (the realism and ``eta=``
                             decodes' noise, one generator per image)
:func:`content_generator`    CPU generator keyed by a model id and the content being coded (an
                             encoder's own draws: the same input gives the same stream)
:func:`cpu_generator`        CPU generator of a plain seed (``z_1`` per image, metrics, training)
:func:`prior_noise`          ``z_1`` per image from the noise prior, one generator per seed
:func:`global_seed`          a block in which torch's global CPU RNG starts at a seed (network
                             initialisation), restored after it
:func:`batch_seed`           seed of training step ``step``'s batch draw (:mod:`ldcodec.data`)
:func:`noise_seed`           seed of a training process's noise draws at a step (:mod:`ldcodec.train`)
============================ =====================================================================
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator

import torch


def derive_seed(key: bytes, index: int) -> int:
    """A 64-bit seed for item ``index`` under ``key``: the first 8 bytes of SHA-256(key | index), little-endian."""
    return int.from_bytes(hashlib.sha256(key + index.to_bytes(8, "little")).digest()[:8], "little")


def sub_seed(seed: int, k: int) -> int:
    """The ``k``-th seed derived from a 64-bit ``seed``: :func:`derive_seed` keyed by its 8 bytes."""
    return derive_seed(seed.to_bytes(8, "little"), k)


def image_key(stream_key: int, index: int) -> int:
    """Mode U's decode key of image ``index`` of a file under the stream key (the model id's integer,
    :func:`ldcodec.coding.candidates.stream_key`), for :func:`image_generator`."""
    return stream_key * 1_000_003 + index


def cpu_generator(seed: int) -> torch.Generator:
    """A CPU torch generator for ``seed`` (reduced below 2^63, as ``manual_seed`` needs)."""
    return torch.Generator().manual_seed(seed % (2 ** 63))


def image_generator(key: int) -> torch.Generator:
    """A CPU generator keyed by a non-negative integer below 2^128: seeded by the first 8 bytes of
    SHA-256(``b"decode"`` | key as 16 bytes little-endian), little-endian, shifted right by one."""
    seed = int.from_bytes(hashlib.sha256(b"decode" + int(key).to_bytes(16, "little", signed=False)).digest()[:8],
                          "little")
    return torch.Generator().manual_seed(seed >> 1)


def content_generator(key: bytes, content: bytes | torch.Tensor) -> torch.Generator:
    """A CPU generator keyed by ``key`` (a model id) and the data being coded (bytes, or a tensor's
    raw CPU bytes): seeded by the first 8 bytes of SHA-256(key | content), little-endian, shifted
    right by one. An encoder's private draws, so compressing the same input twice gives one stream."""
    if isinstance(content, torch.Tensor):
        content = content.detach().cpu().contiguous().numpy().tobytes()
    return torch.Generator().manual_seed(int.from_bytes(hashlib.sha256(bytes(key) + bytes(content)).digest()[:8],
                                                        "little") >> 1)


def prior_noise(process, shape: tuple[int, ...], seeds: list[int], device) -> torch.Tensor:
    """``z_1`` ``(len(seeds), *shape)`` from ``process``'s noise prior, one CPU generator per image."""
    return torch.cat([process.prior_sample((1, *shape), generator=cpu_generator(s)) for s in seeds]).to(device)


@contextlib.contextmanager
def global_seed(seed: int) -> Iterator[None]:
    """A block in which torch's global CPU generator starts at ``seed`` (e.g. a network's
    initialisation), leaving the caller's global state as it was after the block."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def batch_seed(seed: int, step: int) -> int:
    """Seed of training step ``step``'s batch draw (indices and flips; the same in every process)."""
    return seed * 1_000_003 + step


def noise_seed(seed: int, step: int, rank: int) -> int:
    """Seed of process ``rank``'s noise generator at ``step`` (rank 0: ``seed * 7919 + step``)."""
    return seed * 7919 + step + (rank << 40)
