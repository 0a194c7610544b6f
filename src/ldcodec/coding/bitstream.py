"""The ldcodec file format: a versioned header and one length-prefixed, checksummed payload per image.

Byte layout, format version 1 (all integers little-endian)
-----------------------------------------------------------
======  =====  ==============================================================================
offset  bytes  field
======  =====  ==============================================================================
0       4      magic ``b"LDC1"``
4       1      format version, uint8 (= 1)
5       16     model hash: first 16 bytes of SHA-256 over the weights and config
               (:func:`model_hash`); the decoder refuses a stream from another model
21      1      mode, ASCII: ``U`` (unconditional prior, DiffC) or ``C`` (conditional, CDC)
22      4      rate setting, float32: mode U the stopping time t, mode C lambda or step
26      2      steps, uint16: mode U coding steps; mode C diffusion steps (0 if unused)
28      2      image height H, uint16 (>= 1)
30      2      image width W, uint16 (>= 1)
32      1      image channels C, uint8 (>= 1)
33      1      decode method, uint8: 0 none, 1 flow, 2 realism, 3 mse (:data:`DECODE_METHODS`)
34      4      image count n, uint32
38      4      CRC-32 (zlib) of bytes 0..37
42      ...    n records, one per image, back to back:
               length L as an unsigned LEB128 varint (1-4 bytes, L < 2^28) |
               CRC-16-CCITT (``binascii.crc_hqx``, init 0) of (the length bytes + payload), uint16 |
               L payload bytes. A record costs 3 bytes beside its payload for L < 128.
======  =====  ==============================================================================

The stream ends exactly after the last record. Every field is checked before use: a count or
length is compared with the bytes that remain before anything is sliced, so a lying header
cannot make the reader allocate or loop beyond the input. Any malformed input raises
:class:`~ldcodec.errors.LdcodecError` with a one-line message; nothing else escapes.
"""

from __future__ import annotations

import binascii
import struct
import math
import zlib
from dataclasses import dataclass

from ldcodec.codecs.container import read_varint, varint
from ldcodec.codecs.identity import model_hash  # noqa: F401  (moved there; format 1 readers import it here)
from ldcodec.errors import LdcodecError

MAGIC = b"LDC1"
FORMAT_VERSION = 1
HASH_BYTES = 16
MODES = ("U", "C")
DECODE_METHODS = ("none", "flow", "realism", "mse")

_HEADER = struct.Struct("<4sB16scfHHHBBI")  # everything before the header CRC
_CRC = struct.Struct("<I")
_RECORD_CRC = struct.Struct("<H")
MAX_VARINT_BYTES = 4
HEADER_BYTES = _HEADER.size + _CRC.size  # 42


@dataclass(frozen=True)
class StreamHeader:
    """Header fields (the image count is implied by the payloads).

    Attributes:
        model_hash: 16 bytes, see :func:`model_hash`.
        mode: ``"U"`` or ``"C"``.
        rate: the rate setting (stored as float32).
        steps: coding or diffusion steps, 0..65535.
        image_shape: ``(H, W, C)``.
        decode_method: one of :data:`DECODE_METHODS`.
    """

    model_hash: bytes
    mode: str
    rate: float
    steps: int
    image_shape: tuple[int, int, int]
    decode_method: str = "none"


def write_stream(header: StreamHeader, payloads: list[bytes]) -> bytes:
    """Serialise ``header`` and one payload per image into a stream (layout in the module doc)."""
    _check_header(header)
    h, w, c = header.image_shape
    fields = _HEADER.pack(
        MAGIC, FORMAT_VERSION, header.model_hash, header.mode.encode("ascii"), header.rate,
        header.steps, h, w, c, DECODE_METHODS.index(header.decode_method), len(payloads),
    )
    parts = [fields, _CRC.pack(zlib.crc32(fields))]
    for payload in payloads:
        length = _varint(len(payload))
        parts += [length, _RECORD_CRC.pack(binascii.crc_hqx(payload, binascii.crc_hqx(length, 0))), bytes(payload)]
    return b"".join(parts)


def record_bytes(payload_length: int) -> int:
    """Bytes a record of this payload length takes beside the payload (varint + CRC)."""
    return len(_varint(payload_length)) + _RECORD_CRC.size


def _varint(n: int) -> bytes:
    if not 0 <= n < 1 << (7 * MAX_VARINT_BYTES):
        raise LdcodecError(f"cannot write stream: payload of {n} bytes exceeds the format's 2^28 - 1")
    return varint(n)


def _read_varint(data: bytes, offset: int, image: int) -> tuple[int, int]:
    """``(value, offset after it)`` of a record length (:func:`ldcodec.codecs.container.read_varint`)."""
    return read_varint(data, offset, f"record of image {image}", MAX_VARINT_BYTES)


def read_stream(data: bytes) -> tuple[StreamHeader, list[bytes]]:
    """Parse a stream -> ``(header, payloads)``; any malformed input raises ``LdcodecError``."""
    data = bytes(data)
    if data[:4] != MAGIC:
        raise LdcodecError(f"not an ldcodec stream: it starts with {data[:4]!r}, expected {MAGIC!r}")
    if len(data) < 5 or data[4] != FORMAT_VERSION:
        version = data[4] if len(data) > 4 else "missing"
        raise LdcodecError(
            f"stream format version {version}, this ldcodec reads version {FORMAT_VERSION}: "
            "decode it with the ldcodec release that wrote it"
        )
    if len(data) < HEADER_BYTES:
        raise LdcodecError(f"stream is truncated: {len(data)} bytes, the header alone needs {HEADER_BYTES}")
    fields = data[: _HEADER.size]
    if zlib.crc32(fields) != _CRC.unpack_from(data, _HEADER.size)[0]:
        raise LdcodecError("stream header is corrupt (CRC mismatch): the file was damaged")
    _, _, digest, mode, rate, steps, h, w, c, method, count = _HEADER.unpack(fields)
    header = _parse_header(digest, mode, rate, steps, (h, w, c), method)
    return header, _read_records(data, HEADER_BYTES, count)


def check_model(header: StreamHeader, expected_hash: bytes) -> None:
    """Raise ``LdcodecError`` unless the stream was made by the model whose hash is ``expected_hash``."""
    if header.model_hash != bytes(expected_hash)[:HASH_BYTES]:
        raise LdcodecError(
            f"stream was encoded by model {header.model_hash.hex()} but the loaded checkpoint is "
            f"{bytes(expected_hash)[:HASH_BYTES].hex()}: decode with the checkpoint that encoded it"
        )


def _check_header(header: StreamHeader) -> None:
    h, w, c = header.image_shape
    problems = [
        (len(header.model_hash) != HASH_BYTES, f"model hash must be {HASH_BYTES} bytes"),
        (header.mode not in MODES, f"mode must be one of {MODES}, got {header.mode!r}"),
        (header.decode_method not in DECODE_METHODS, f"decode method must be one of {DECODE_METHODS}"),
        (not 0 <= header.steps < 2**16, f"steps {header.steps} outside 0..65535"),
        (not (math.isfinite(header.rate) and abs(header.rate) < 3e38), f"rate {header.rate} is not a finite float32"),
        (not (0 < h < 2**16 and 0 < w < 2**16 and 0 < c < 2**8), f"image shape {header.image_shape} "
         "outside the format's range (H, W in 1..65535, C in 1..255)"),
    ]
    for bad, message in problems:
        if bad:
            raise LdcodecError(f"cannot write stream: {message}")


def _parse_header(digest: bytes, mode: bytes, rate: float, steps: int, shape: tuple, method: int) -> StreamHeader:
    mode_str = mode.decode("latin-1")
    if mode_str not in MODES:
        raise LdcodecError(f"stream has unknown mode {mode_str!r} (expected one of {MODES}): the file is damaged")
    if method >= len(DECODE_METHODS):
        raise LdcodecError(f"stream has unknown decode method code {method}: the file is damaged")
    if min(shape) == 0:
        raise LdcodecError(f"stream declares an empty image shape {shape}: the file is damaged")
    return StreamHeader(digest, mode_str, float(rate), steps, shape, DECODE_METHODS[method])


def _read_records(data: bytes, offset: int, count: int) -> list[bytes]:
    """``count`` records from ``offset``; every length is bounded by the bytes that remain."""
    if count > (len(data) - offset) // (1 + _RECORD_CRC.size):
        raise LdcodecError(
            f"stream declares {count} images but only {len(data) - offset} bytes follow the header: "
            "it is truncated or damaged"
        )
    payloads = []
    for i in range(count):
        length, after = _read_varint(data, offset, i)
        if len(data) - after < _RECORD_CRC.size:
            raise LdcodecError(f"stream is truncated inside the record of image {i}")
        (crc,) = _RECORD_CRC.unpack_from(data, after)
        start = after + _RECORD_CRC.size
        if length > len(data) - start:
            raise LdcodecError(
                f"image {i} declares {length} payload bytes but only {len(data) - start} remain: "
                "the stream is truncated or damaged"
            )
        payload = data[start : start + length]
        if binascii.crc_hqx(payload, binascii.crc_hqx(data[offset:after], 0)) != crc:
            raise LdcodecError(f"payload of image {i} is corrupt (CRC mismatch): the file was damaged")
        payloads.append(payload)
        offset = start + length
    if offset != len(data):
        raise LdcodecError(f"stream has {len(data) - offset} unexpected bytes after the last image: it is damaged")
    return payloads
