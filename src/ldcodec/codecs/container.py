"""One framing for every codec: the ldcodec file, format 2.

Byte layout (integers little-endian)
------------------------------------
======  ======  ===========================================================================
offset  bytes   field
======  ======  ===========================================================================
0       2       magic ``b"Ld"``
2       1       format version (high nibble, = 2) | codec id (low nibble, 1..15:
                :data:`MAX_CODEC_ID`)
3       4       model id: 4 bytes of SHA-256 over the model's weights, config and tables
                (:mod:`ldcodec.codecs.identity`; zero for parameter-free codecs); a foreign
                model is refused by it
7       1-3     image count ``n``, unsigned LEB128, ``1 <= n <= 2^20``
..      P       codec parameters; ``P`` is fixed per codec id (:data:`PARAMS_BYTES`)
..      ...     payload (the codec's own, one for the whole file)
end-2   2       CRC-16-CCITT (``binascii.crc_hqx``, init 0) of every byte before it
======  ======  ===========================================================================

A file holding one image costs ``10 + P`` bytes besides its payload (11 for mode U);
:func:`file_bytes` gives the exact size without writing. Codecs whose payload holds one part per
image use :func:`join_parts` (each part as an unsigned LEB128 length and its bytes). One
checksum covers the file: CRC-16 detects every error burst of up to 16 bits and all but
``2^-16`` of the others; the codecs' payload parsers add structural checks behind it (a range
decoder must consume exactly its payload). Version-1 streams (``b"LDC1"``) are refused with a
message naming the release that reads them. Every field is checked before it is used.
"""

from __future__ import annotations

import binascii
import struct

from ldcodec.errors import LdcodecError

MAGIC = b"Ld"
VERSION = 2
MAX_COUNT = 1 << 20
MODEL_ID_BYTES = 4
MAX_CODEC_ID = 15  # a codec id is the low nibble of byte 2 (0 is never used): the registry's bound
# params bytes by codec id: diffc (mode U: stop level), cdc (mode C: decode), factorized and
# hyperprior (none: the rate is the trained model's), jpeg, webp, avif (quality), diffc-dq (mode U
# with dithered quantisation: stop level, as diffc)
PARAMS_BYTES = {1: 1, 2: 1, 3: 0, 4: 0, 5: 1, 6: 1, 7: 1, 8: 1}
_CRC = struct.Struct("<H")
_FIXED = len(MAGIC) + 1 + 4 + _CRC.size  # 9, plus the count varint and the params


MAX_VARINT_BYTES = 5  # bounds the varints of the codecs' payloads (2^35 > any length they hold)


def varint(n: int) -> bytes:
    """Unsigned LEB128 of ``n >= 0`` (7 bits per byte, low group first)."""
    if n < 0:
        raise LdcodecError(f"cannot write a negative length {n}")
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n >= 0x80 else 0))
        n >>= 7
        if not n:
            return bytes(out)


def read_varint(data: bytes, offset: int, what: str, max_bytes: int = MAX_VARINT_BYTES) -> tuple[int, int]:
    """``(value, offset after it)`` of the varint at ``offset``; truncated, non-minimal or longer than
    ``max_bytes`` varints raise ``LdcodecError`` naming ``what``."""
    value = 0
    for i in range(max_bytes):
        if offset + i >= len(data):
            raise LdcodecError(f"stream is truncated inside the {what}")
        byte = data[offset + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            if i and byte == 0:
                raise LdcodecError(f"the {what} is not minimally encoded: the stream is damaged")
            return value, offset + i + 1
    raise LdcodecError(f"the {what} is malformed (longer than {max_bytes} bytes): the stream is damaged")


def join_parts(parts: list[bytes]) -> bytes:
    """Per-image byte strings -> one payload: each as a varint length and its bytes, back to back."""
    return b"".join(varint(len(p)) + bytes(p) for p in parts)


def split_parts(payload: bytes, count: int, offset: int = 0) -> list[bytes]:
    """Inverse of :func:`join_parts` from ``offset``: exactly ``count`` parts that fill the payload."""
    parts = []
    for i in range(count):
        length, offset = read_varint(payload, offset, f"length of image {i}'s part")
        if length > len(payload) - offset:
            raise LdcodecError(f"image {i}'s part declares {length} bytes but {len(payload) - offset} remain: "
                               "the payload is truncated or damaged")
        parts.append(payload[offset:offset + length])
        offset += length
    if offset != len(payload):
        raise LdcodecError(f"the payload has {len(payload) - offset} unexpected bytes after the last image: "
                           "it is damaged")
    return parts


def file_bytes(payload_bytes: int, params_bytes: int, count: int) -> int:
    """Exact size of a file holding ``count`` images in a payload of ``payload_bytes``."""
    return _FIXED + len(varint(count)) + params_bytes + payload_bytes


def write(codec_id: int, model_id: bytes, params: bytes, payload: bytes, count: int) -> bytes:
    """Frame one codec payload (layout in the module doc)."""
    if (not 1 <= codec_id <= MAX_CODEC_ID or PARAMS_BYTES.get(codec_id) != len(params)
            or len(model_id) != MODEL_ID_BYTES or not 0 < count <= MAX_COUNT):
        raise LdcodecError(f"cannot frame codec {codec_id} with {len(params)} parameter bytes and {count} images")
    body = MAGIC + bytes([VERSION << 4 | codec_id]) + bytes(model_id) + varint(count) + bytes(params) + bytes(payload)
    return body + _CRC.pack(binascii.crc_hqx(body, 0))


def read(data: bytes) -> tuple[int, bytes, bytes, bytes, int]:
    """A file -> ``(codec_id, model_id, params, payload, count)``; bad input raises ``LdcodecError``."""
    data = bytes(data)
    if data[:4] == b"LDC1":
        raise LdcodecError("this is an ldcodec format 1 stream; this release reads format 2: "
                           "decode it with ldcodec 0.1")
    if data[:2] != MAGIC:
        raise LdcodecError(f"not an ldcodec stream: it starts with {data[:2]!r}, expected {MAGIC!r}")
    if len(data) < _FIXED + 1:
        raise LdcodecError(f"stream is truncated: {len(data)} bytes")
    if binascii.crc_hqx(data[:-2], 0) != _CRC.unpack(data[-2:])[0]:
        raise LdcodecError("stream is corrupt or truncated (checksum mismatch)")
    version, codec_id = data[2] >> 4, data[2] & 0x0F
    if version != VERSION:
        raise LdcodecError(f"stream format version {version}; this ldcodec reads version {VERSION}")
    if codec_id not in PARAMS_BYTES:
        raise LdcodecError(f"stream names codec id {codec_id}, which this ldcodec does not know")
    count, pos = read_varint(data[:-2], 7, "image count", max_bytes=3)
    if not 0 < count <= MAX_COUNT:
        raise LdcodecError(f"stream declares {count} images: the stream is damaged")
    end = pos + PARAMS_BYTES[codec_id]
    if end > len(data) - 2:
        raise LdcodecError("stream is truncated inside its parameters")
    return codec_id, data[3:7], data[pos:end], data[end:-2], count
