"""Classical image codecs as baselines: JPEG, WebP and AVIF through Pillow, with real file sizes.

Each image is encoded on its own to a complete file in memory, decoded back, and its
rate is the whole file, headers included: ``bits = 8 * len(file)`` (DESIGN.md section
4, "real file sizes"). For 28x28 MNIST digits the container headers are a large part of
that, which is the honest cost of sending one small image with these formats.

Encoder settings, chosen to give each format its best size at a given quality:
JPEG with optimised Huffman tables (``optimize=True``, baseline 4:2:0 for RGB), WebP
lossy with ``method=6`` (slowest, smallest), AVIF (libavif, Pillow >= 11.3) with
``speed=4``. Grayscale images are encoded as grayscale where the format supports it
(JPEG, AVIF); WebP stores them as RGB, and the decoded image is converted back to
luma (exact for R = G = B).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np
from PIL import Image
from PIL import features as pil_features

from ldcodec.errors import LdcodecError
from ldcodec.metrics.rate import bits_of


@dataclass(frozen=True)
class ClassicalCodec:
    """A Pillow format: its save name, its ``PIL.features`` name, encoder options, a default quality sweep."""

    pil_format: str
    feature: str
    options: dict
    qualities: tuple[int, ...]


CODECS: dict[str, ClassicalCodec] = {
    "jpeg": ClassicalCodec("JPEG", "jpg", {"optimize": True}, (5, 10, 20, 30, 50, 70, 90)),
    "webp": ClassicalCodec("WEBP", "webp", {"method": 6}, (0, 5, 10, 20, 40, 60, 80, 95)),
    "avif": ClassicalCodec("AVIF", "avif", {"speed": 4}, (0, 10, 20, 30, 45, 60, 75, 90)),
}


def _codec(name: str) -> ClassicalCodec:
    if name not in CODECS:
        raise LdcodecError(f"unknown classical codec {name!r}: choose one of {', '.join(CODECS)}")
    return CODECS[name]


def available(name: str) -> bool:
    """Whether this Pillow build can write ``name`` (``PIL.features.check``)."""
    return bool(pil_features.check(_codec(name).feature))


def _require(name: str) -> ClassicalCodec:
    codec = _codec(name)
    if not available(name):
        raise LdcodecError(
            f"this Pillow build has no {codec.pil_format} support: install a Pillow wheel with it "
            f"(pip install 'pillow>=11.3') or leave {name} out of the codecs"
        )
    return codec


def encode_image(image: np.ndarray, codec: str, quality: int) -> bytes:
    """One uint8 ``(H, W, C)`` image (``C`` = 1 or 3) -> the bytes of a complete ``codec`` file."""
    spec = _require(codec)
    pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
    buffer = io.BytesIO()
    pil.save(buffer, format=spec.pil_format, quality=int(quality), **spec.options)
    return buffer.getvalue()


def decode_image(data: bytes, channels: int) -> np.ndarray:
    """The bytes of an image file -> uint8 ``(H, W, channels)``."""
    with Image.open(io.BytesIO(data)) as pil:
        array = np.asarray(pil.convert("L" if channels == 1 else "RGB"))
    return array[..., None] if channels == 1 else array


def run_classical(images: np.ndarray, codec: str, quality: int) -> tuple[np.ndarray, np.ndarray]:
    """Encode and decode each image of uint8 ``(N, H, W, C)``; return ``(recon (N, H, W, C) uint8, bits (N,) int64)``.

    ``bits[i] = 8 * len(file_i)``: the real size of image ``i``'s complete file.
    """
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise LdcodecError(
            f"classical codecs take uint8 (N, H, W, C) images with C = 1 or 3, got {images.dtype} {images.shape}"
        )
    _require(codec)
    recon = np.empty_like(images)
    bits = np.empty(len(images), dtype=np.int64)
    for i, image in enumerate(images):
        data = encode_image(image, codec, quality)
        bits[i] = bits_of(data)
        recon[i] = decode_image(data, images.shape[-1])
    return recon, bits


@dataclass(frozen=True)
class ClassicalPoint:
    """One operating point of a sweep: reconstructions ``(N, H, W, C)`` uint8 and real bits ``(N,)``."""

    codec: str
    quality: int
    recon: np.ndarray
    bits: np.ndarray


def quality_sweep(
    images: np.ndarray, codecs: Iterable[str] = tuple(CODECS), qualities: dict[str, Iterable[int]] | None = None
) -> Iterator[ClassicalPoint]:
    """:func:`run_classical` over each codec's quality sweep (``CODECS[..].qualities`` unless given).

    A codec this Pillow build lacks is skipped with a warning that says so.
    """
    for name in codecs:
        if not available(name):
            warnings.warn(f"skipping {name}: this Pillow build has no {_codec(name).pil_format} support", stacklevel=2)
            continue
        for quality in (qualities or {}).get(name, CODECS[name].qualities):
            recon, bits = run_classical(images, name, quality)
            yield ClassicalPoint(name, int(quality), recon, bits)
