"""The ldcodec file format 2: one framing for every codec.

Byte layout (integers are unsigned LEB128 varints: 7 bits per byte, low group first, high bit set
on every byte but the last, minimal length)
-----------------------------------------------------------------------------------------------
=========  =======  ============================================================================
offset     bytes    field
=========  =======  ============================================================================
0          2        magic ``b"Ld"``
2          1        format version in the high nibble (= 2), reserved low nibble (= 0): ``0x20``
3          1        codec id (:data:`ldcodec.codecs.CODECS`: diffc 1, cdc 2, factorized 3,
                    hyperprior 4, jpeg 5, webp 6, avif 7)
4          4        model id: 4 bytes of the model's identity (its weights and config);
                    ``00000000`` for parameter-free codecs (Pillow). A decoder refuses another's.
8          1-3      image count ``n``, varint, ``1 <= n <= 2^20``
.          1-2      params length ``p``, varint, ``p <= 1024``
.          p        params: the codec's header parameters (its rate setting, decode default, ...)
.          ...      payload: the codec's one payload for all ``n`` images (its own layout)
end - 4    4        CRC-32 (``zlib.crc32``) of every byte before it, little-endian
=========  =======  ============================================================================

A file costs ``2 + 1 + 1 + 4 + len(varint(n)) + len(varint(p)) + p + 4`` bytes beside its payload
(14 + p for one image): :func:`file_bits` gives the exact size without writing. Every field is
checked before use (lengths against the bytes that remain, so a lying field cannot make the
reader allocate or loop beyond the input); any malformed input raises
:class:`~ldcodec.errors.LdcodecError` with a one-line message. Format 1 streams (``b"LDC1"``,
ldcodec 0.1) are recognised and refused with a message that says which release reads them.
"""

from __future__ import annotations

import struct
import zlib

from ldcodec.errors import LdcodecError

MAGIC = b"Ld"
FORMAT_VERSION = 2
VERSION_BYTE = FORMAT_VERSION << 4
FORMAT_1_MAGIC = b"LDC1"
MODEL_ID_BYTES = 4
MAX_COUNT = 2 ** 20
MAX_PARAMS = 1024
_FIXED = struct.Struct("<2sBB4s")  # magic, version, codec id, model id
_CRC = struct.Struct("<I")
MAX_VARINT_BYTES = 5  # bounds any varint this format reads (2^35 > every allowed value)


def varint(n: int) -> bytes:
    """Unsigned LEB128 of ``n >= 0``."""
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


def file_bits(payload_len: int, params_len: int, count: int = 1) -> int:
    """The exact size in bits of a file holding ``count`` images in this payload, container included."""
    return 8 * (_FIXED.size + len(varint(count)) + len(varint(params_len)) + params_len + payload_len + _CRC.size)


def write(c, model_id: bytes) -> bytes:
    """Frame a :class:`~ldcodec.codecs.base.Compressed` (its codec's id, params, payload and count)."""
    from ldcodec.codecs import get_codec

    codec_id = get_codec(c.codec).codec_id
    if len(model_id) != MODEL_ID_BYTES:
        raise LdcodecError(f"cannot write stream: the model id must be {MODEL_ID_BYTES} bytes, got {len(model_id)}")
    if not 1 <= c.count <= MAX_COUNT:
        raise LdcodecError(f"cannot write stream: {c.count} images, the format holds 1..{MAX_COUNT} per file")
    if len(c.params) > MAX_PARAMS:
        raise LdcodecError(f"cannot write stream: {len(c.params)} parameter bytes exceed the format's {MAX_PARAMS}")
    body = b"".join([_FIXED.pack(MAGIC, VERSION_BYTE, codec_id, bytes(model_id)), varint(c.count),
                     varint(len(c.params)), bytes(c.params), bytes(c.payload)])
    return body + _CRC.pack(zlib.crc32(body))


def read(data: bytes) -> tuple[int, bytes, bytes, bytes, int]:
    """Parse a file -> ``(codec_id, model_id, params, payload, count)``; malformed input raises ``LdcodecError``."""
    data = bytes(data)
    if data[:4] == FORMAT_1_MAGIC:
        raise LdcodecError("this is a format 1 stream (LDC1, ldcodec 0.1); this ldcodec reads format 2: "
                           "decode it with ldcodec 0.1")
    if data[:2] != MAGIC:
        raise LdcodecError(f"not an ldcodec stream: it starts with {data[:2]!r}, expected {MAGIC!r}")
    if len(data) < 3:
        raise LdcodecError("stream is truncated: it ends after the magic")
    if data[2] != VERSION_BYTE:
        raise LdcodecError(f"stream format version {data[2] >> 4} (reserved bits {data[2] & 15}), this ldcodec "
                           f"reads version {FORMAT_VERSION}: decode it with the ldcodec release that wrote it")
    smallest = _FIXED.size + 2 + _CRC.size
    if len(data) < smallest:
        raise LdcodecError(f"stream is truncated: {len(data)} bytes, a file needs at least {smallest}")
    body = data[:-_CRC.size]
    if zlib.crc32(body) != _CRC.unpack_from(data, len(body))[0]:
        raise LdcodecError("stream is corrupt (CRC mismatch): the file was damaged or truncated")
    _, _, codec_id, model_id = _FIXED.unpack_from(body)
    count, offset = read_varint(body, _FIXED.size, "image count")
    if not 1 <= count <= MAX_COUNT:
        raise LdcodecError(f"stream declares {count} images, the format holds 1..{MAX_COUNT}: it is damaged")
    params_len, offset = read_varint(body, offset, "params length")
    if params_len > min(MAX_PARAMS, len(body) - offset):
        raise LdcodecError(f"stream declares {params_len} parameter bytes but {len(body) - offset} remain: "
                           "it is damaged")
    params = body[offset:offset + params_len]
    return codec_id, model_id, params, body[offset + params_len:], count
