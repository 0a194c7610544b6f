"""Classical codecs as baselines: JPEG, WebP and AVIF through Pillow, under the codec contract.

Each image is encoded on its own to a complete file of its format in memory (``docs/design.md`` §7,
"real file sizes"). Encoder settings give each format its best size at a given quality: JPEG
with optimised Huffman tables (``optimize=True``, baseline 4:2:0 for RGB), WebP lossy with
``method=6`` (slowest, smallest), AVIF (libavif, Pillow >= 11.3) with ``speed=4``. Grayscale
images are encoded as grayscale where the format supports it (JPEG, AVIF); WebP stores them as
RGB and the decoded image is converted back to luma (exact for R = G = B).

Counting: bytes identical in every file of a batch (a fixed header, a common trailer) are stored
once per stream, as a user sending the batch would. The payload is

    varint(len(prefix)) | prefix | varint(len(suffix)) | suffix | per image: varint(len(m_i)) | m_i

where ``file_i = prefix + m_i + suffix`` (the longest common prefix of the batch's files, then the
longest common suffix of what remains). So ``bits_actual`` is a real stream's share, and
``bits_file`` the container around one image's complete file (prefix = the file). The rate
setting is ``{"quality": q}``, ``q`` in 0..100 (one params byte); ``estimated_bits`` is ``None``
(the formats have no density model to promise a rate).
"""

from __future__ import annotations

import io
import warnings
from typing import ClassVar

import numpy as np
import torch
from PIL import Image
from PIL import features as pil_features

from ldcodec.codecs import container, register
from ldcodec.codecs.base import Codec, Compressed
from ldcodec.data import to_tensor, to_uint8
from ldcodec.errors import LdcodecError, reraise_damage


def _common_prefix(files: list[bytes]) -> int:
    first, n = files[0], min(map(len, files))
    for i in range(n):
        if any(f[i] != first[i] for f in files):
            return i
    return n


def pack_files(files: list[bytes]) -> bytes:
    """Per-image files -> one payload with their common prefix and suffix stored once (module doc)."""
    p = _common_prefix(files)
    rest = [f[p:] for f in files]
    s = _common_prefix([r[::-1] for r in rest])
    middles = [r[:len(r) - s] for r in rest]
    return container.join_parts([files[0][:p], rest[0][len(rest[0]) - s:]]) + container.join_parts(middles)


def unpack_files(payload: bytes, count: int) -> list[bytes]:
    """Inverse of :func:`pack_files`: ``count`` complete files."""
    prefix_len, offset = container.read_varint(payload, 0, "common prefix length")
    if prefix_len > len(payload) - offset:
        raise LdcodecError("the common prefix runs past the payload: it is truncated or damaged")
    prefix = payload[offset:offset + prefix_len]
    suffix_len, offset = container.read_varint(payload, offset + prefix_len, "common suffix length")
    if suffix_len > len(payload) - offset:
        raise LdcodecError("the common suffix runs past the payload: it is truncated or damaged")
    suffix = payload[offset:offset + suffix_len]
    return [prefix + m + suffix for m in container.split_parts(payload, count, offset + suffix_len)]


class PillowCodec(Codec):
    """A Pillow format for images ``(C, H, W)`` with ``C`` = 1 or 3 (no model: model id 0000)."""

    kind = "classical"
    pil_format: ClassVar[str]
    feature: ClassVar[str]  # its ``PIL.features`` name
    options: ClassVar[dict]
    qualities: ClassVar[tuple[int, ...]]  # the default sweep

    def __init__(self, image_shape: tuple[int, int, int], qualities: tuple[int, ...] | None = None):
        if image_shape[0] not in (1, 3):
            raise LdcodecError(f"{self.name} codes 1- or 3-channel images, not {image_shape[0]} channels")
        if not self.available():
            raise LdcodecError(f"this Pillow build has no {self.pil_format} support: install a Pillow wheel with "
                               f"it (pip install 'pillow>=11.3') or leave {self.name} out of the codecs")
        self.image_shape = tuple(image_shape)
        self._qualities = tuple(qualities or self.qualities)

    @classmethod
    def available(cls) -> bool:
        """Whether this Pillow build can write the format (``PIL.features.check``)."""
        return bool(pil_features.check(cls.feature))

    @classmethod
    def for_sweep(cls, image_shape, train_images, settings):
        """``evaluate``'s instance: none (with a warning) when this Pillow build lacks the format."""
        if not cls.available():
            warnings.warn(f"skipping {cls.name}: this Pillow build has no {cls.pil_format} support", stacklevel=2)
            return []
        return [cls(image_shape)]

    def model_id(self) -> bytes:
        return bytes(container.MODEL_ID_BYTES)

    def default_rates(self) -> list[dict]:
        return [{"quality": q} for q in self._qualities]

    def _quality(self, rate: dict | None) -> int:
        q = self.check_rate(rate, ("quality",)).get("quality", 50)
        if isinstance(q, bool) or not isinstance(q, (int, np.integer)) or not 0 <= q <= 100:
            raise LdcodecError(f"{self.name} quality {q!r} must be an integer in 0..100")
        return int(q)

    def encode_image(self, image: np.ndarray, quality: int) -> bytes:
        """One uint8 ``(H, W, C)`` image -> the bytes of a complete file of the format."""
        pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
        buffer = io.BytesIO()
        pil.save(buffer, format=self.pil_format, quality=quality, **self.options)
        return buffer.getvalue()

    def decode_image(self, data: bytes) -> np.ndarray:
        """A file -> uint8 ``(H, W, C)``; a file that is not one of these images raises ``LdcodecError``."""
        c, h, w = self.image_shape
        with reraise_damage(self.name), Image.open(io.BytesIO(data), formats=[self.pil_format]) as pil:
            if pil.size != (w, h):  # checked before any pixel is decoded
                raise LdcodecError(f"{self.name} file holds a {pil.size[0]}x{pil.size[1]} image, this codec "
                                   f"codes {w}x{h}: the stream is damaged")
            array = np.asarray(pil.convert("L" if c == 1 else "RGB"))
        return array[..., None] if c == 1 else array

    def compress(self, x: torch.Tensor, rate: dict | None = None) -> Compressed:
        quality = self._quality(rate)
        files = [self.encode_image(im, quality) for im in to_uint8(self.check_images(x))]
        file_bits = np.array([8.0 * container.file_bytes(len(pack_files([f])), 1, 1) for f in files])
        return Compressed(self.name, bytes([quality]), pack_files(files), len(files), None, file_bits,
                          {"quality": quality})

    def decompress(self, params: bytes, payload: bytes, count: int) -> torch.Tensor:
        if len(params) != 1 or params[0] > 100:
            raise LdcodecError(f"{self.name} stream parameters {params.hex()} are not one quality byte: damaged")
        return to_tensor(np.stack([self.decode_image(f) for f in unpack_files(payload, count)]))


@register
class JPEGCodec(PillowCodec):
    name, codec_id, pil_format, feature = "jpeg", 5, "JPEG", "jpg"
    options = {"optimize": True}
    qualities = (5, 10, 20, 30, 50, 70, 90)


@register
class WebPCodec(PillowCodec):
    name, codec_id, pil_format, feature = "webp", 6, "WEBP", "webp"
    options = {"method": 6}
    qualities = (0, 5, 10, 20, 40, 60, 80, 95)


@register
class AVIFCodec(PillowCodec):
    name, codec_id, pil_format, feature = "avif", 7, "AVIF", "avif"
    options = {"speed": 4}
    qualities = (0, 10, 20, 30, 45, 60, 75, 90)
