"""One framing for every codec: the ldcodec file, format 2.

Byte layout (integers little-endian)
------------------------------------
======  ======  ===========================================================================
offset  bytes   field
======  ======  ===========================================================================
0       2       magic ``b"Ld"``
2       1       format version (high nibble, = 2) | codec id (low nibble, 1..15)
3       4       model id: 4 bytes of SHA-256 over the model's weights, config and tables
                (zero for parameter-free codecs); a foreign model is refused by it
7       1-3     image count ``n``, unsigned LEB128, ``1 <= n <= 2^20``
..      P       codec parameters; ``P`` is fixed per codec id (:data:`PARAMS_BYTES`)
..      ...     payload (the codec's own, one for the whole file)
end-2   2       CRC-16-CCITT (``binascii.crc_hqx``, init 0) of every byte before it
======  ======  ===========================================================================

A file holding one image costs ``10 + P`` bytes besides its payload (11 for mode U). One
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
# params bytes by codec id: diffc (mode U), cdc (mode C), factorized, hyperprior, jpeg, webp, avif
PARAMS_BYTES = {1: 1, 2: 1, 3: 0, 4: 0, 5: 1, 6: 1, 7: 1}
_CRC = struct.Struct("<H")
_FIXED = len(MAGIC) + 1 + 4 + _CRC.size  # 9, plus the count varint and the params


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n >= 0x80 else 0))
        n >>= 7
        if not n:
            return bytes(out)


def file_bytes(payload_bytes: int, params_bytes: int, count: int) -> int:
    """Exact size of a file holding ``count`` images in a payload of ``payload_bytes``."""
    return _FIXED + len(_varint(count)) + params_bytes + payload_bytes


def write(codec_id: int, model_id: bytes, params: bytes, payload: bytes, count: int) -> bytes:
    """Frame one codec payload (layout in the module doc)."""
    if PARAMS_BYTES.get(codec_id) != len(params) or len(model_id) != 4 or not 0 < count <= MAX_COUNT:
        raise LdcodecError(f"cannot frame codec {codec_id} with {len(params)} parameter bytes and {count} images")
    body = MAGIC + bytes([VERSION << 4 | codec_id]) + bytes(model_id) + _varint(count) + bytes(params) + bytes(payload)
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
    count, shift, pos = 0, 0, 7
    while True:
        if pos >= len(data) - 2 or shift > 14:
            raise LdcodecError("stream image count is malformed: the stream is damaged")
        count |= (data[pos] & 0x7F) << shift
        pos, shift, more = pos + 1, shift + 7, data[pos] & 0x80
        if not more:
            break
    if not 0 < count <= MAX_COUNT:
        raise LdcodecError(f"stream declares {count} images: the stream is damaged")
    end = pos + PARAMS_BYTES[codec_id]
    if end > len(data) - 2:
        raise LdcodecError("stream is truncated inside its parameters")
    return codec_id, data[3:7], data[pos:end], data[end:-2], count
