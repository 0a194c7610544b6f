"""The one codec contract (in the spirit of CompressAI's ``CompressionModel``).

Every codec, ours and the baselines, turns images ``(N, C, H, W)`` in [0, 1] into one payload
for the batch plus small codec parameters, and back; :mod:`ldcodec.codecs.container` frames
them the same way for all. Rates are reported per image as ``ideal`` (when the codec has one),
``estimated`` (what its densities promise) and, through the container, ``actual`` and ``file``.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch


@dataclass
class Compressed:
    """What :meth:`Codec.compress` returns (shapes per image: ``(N,)``)."""

    codec: str
    params: bytes
    payload: bytes
    count: int
    estimated_bits: np.ndarray
    file_bits: np.ndarray
    rate_setting: dict
    ideal_bits: np.ndarray | None = None
    extra: dict = field(default_factory=dict)


class Codec(abc.ABC):
    """Images ``(N, C, H, W)`` in [0, 1] <-> ``(params, payload)``."""

    name: ClassVar[str]
    codec_id: ClassVar[int]
    decodes: ClassVar[tuple[str, ...]] = ("default",)
    image_shape: tuple[int, int, int]  # (C, H, W)

    @abc.abstractmethod
    def model_id(self) -> bytes:
        """4 bytes naming the model a payload needs (``b"\\0" * 4`` for parameter-free codecs)."""

    @abc.abstractmethod
    def default_rates(self) -> list[dict]:
        """The rate settings an evaluation sweeps by default."""

    @abc.abstractmethod
    def compress(self, x: torch.Tensor, rate: dict | None = None) -> Compressed:
        """Images ``(N, C, H, W)`` -> :class:`Compressed`."""

    @abc.abstractmethod
    def decompress(self, params: bytes, payload: bytes, count: int, **decode_opts) -> torch.Tensor:
        """Inverse of :meth:`compress` -> images ``(N, C, H, W)`` in [0, 1]."""

    def update(self) -> None:
        """Build the integer tables the entropy coder uses (no-op where there are none)."""
