"""The container format: round trip, model check, and robustness to damaged or hostile input."""

import struct
import zlib

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ldcodec.coding import bitstream
from ldcodec.coding.bitstream import StreamHeader, check_model, model_hash, read_stream, write_stream
from ldcodec.errors import LdcodecError

HASH = bytes(range(16))
HEADER = StreamHeader(HASH, "U", 0.35, 4, (28, 28, 1), "realism")
PAYLOADS = [b"", b"\x00\x01\x02", bytes(range(256)) * 3]
STREAM = write_stream(HEADER, PAYLOADS)


def test_round_trip_and_layout():
    header, payloads = read_stream(STREAM)
    assert payloads == PAYLOADS
    assert header == StreamHeader(HASH, "U", float(np.float32(0.35)), 4, (28, 28, 1), "realism")
    assert STREAM[:4] == b"LDC1" and STREAM[4] == 1 and STREAM[5:21] == HASH and STREAM[21:22] == b"U"
    assert struct.unpack_from("<I", STREAM, 34)[0] == len(PAYLOADS)
    # records: varint length (1 byte below 128, 2 bytes for 768) + CRC-16 + payload
    assert len(STREAM) == bitstream.HEADER_BYTES + (3 + 0) + (3 + 3) + (4 + 768)
    assert [bitstream.record_bytes(n) for n in (0, 127, 128, 2**14, 2**28 - 1)] == [3, 3, 4, 5, 6]
    empty = write_stream(StreamHeader(HASH, "C", 0.01, 0, (32, 32, 3)), [])
    assert read_stream(empty) == (StreamHeader(HASH, "C", float(np.float32(0.01)), 0, (32, 32, 3), "none"), [])


def test_model_hash_and_check():
    weights = {"a": torch.ones(3), "b": torch.zeros(2, 2, dtype=torch.bfloat16)}
    digest = model_hash(weights, {"latent": 16})
    assert len(digest) == 16 and digest == model_hash(dict(reversed(weights.items())), {"latent": 16})
    assert digest != model_hash(weights, {"latent": 17})
    assert digest != model_hash({"a": torch.ones(3) * 1.0001, "b": weights["b"]}, {"latent": 16})
    assert model_hash({"a": np.ones(3, np.float32)}, {}) == model_hash({"a": torch.ones(3)}, {})
    header = StreamHeader(digest, "C", 1.0, 0, (8, 8, 3))
    check_model(header, digest)
    with pytest.raises(LdcodecError, match="checkpoint that encoded it"):
        check_model(header, bytes(16))


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "not an ldcodec stream"),
        (b"PK\x03\x04" + STREAM[4:], "not an ldcodec stream"),
        (STREAM[:4] + b"\x02" + STREAM[5:], "version 2"),
        (STREAM[:30], "truncated"),
        (STREAM[:-1], "truncated"),
        (STREAM + b"\x00", "unexpected bytes"),
    ],
)
def test_specific_damage_gives_a_clear_message(data, message):
    with pytest.raises(LdcodecError, match=message):
        read_stream(data)


def _with_header_fields(**changes):
    """STREAM with header fields replaced and the header CRC recomputed: a lying but valid header."""
    names = ["magic", "version", "hash", "mode", "rate", "steps", "h", "w", "c", "method", "count"]
    values = dict(zip(names, bitstream._HEADER.unpack_from(STREAM)))
    values.update(changes)
    fields = bitstream._HEADER.pack(*(values[n] for n in names))
    return fields + struct.pack("<I", zlib.crc32(fields)) + STREAM[bitstream.HEADER_BYTES :]


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"count": 2**32 - 1}, "declares 4294967295 images"),
        ({"count": 4}, "truncated inside the record"),
        ({"mode": b"X"}, "unknown mode"),
        ({"method": 200}, "decode method"),
        ({"h": 0}, "empty image shape"),
    ],
)
def test_lying_header_with_valid_crc_is_refused(changes, message):
    with pytest.raises(LdcodecError, match=message):
        read_stream(_with_header_fields(**changes))


def test_lying_payload_length_is_refused_without_allocating():
    offset = bitstream.HEADER_BYTES
    data = bytearray(STREAM)
    data[offset : offset + 1] = b"\xff\xff\xff\x7f"  # varint 2^28 - 1
    with pytest.raises(LdcodecError, match="declares 268435455 payload bytes"):
        read_stream(bytes(data))
    data[offset : offset + 4] = b"\xff\xff\xff\xff\x7f"  # a fifth varint byte
    with pytest.raises(LdcodecError, match="malformed"):
        read_stream(bytes(data))


def test_writer_rejects_values_the_format_cannot_hold():
    for bad in [
        StreamHeader(HASH[:8], "U", 1.0, 1, (8, 8, 1)),
        StreamHeader(HASH, "Z", 1.0, 1, (8, 8, 1)),
        StreamHeader(HASH, "U", float("nan"), 1, (8, 8, 1)),
        StreamHeader(HASH, "U", 1.0, 70000, (8, 8, 1)),
        StreamHeader(HASH, "U", 1.0, 1, (8, 70000, 1)),
        StreamHeader(HASH, "U", 1.0, 1, (8, 8, 1), "fast"),
    ]:
        with pytest.raises(LdcodecError, match="cannot write stream"):
            write_stream(bad, [])


def _only_ldcodec_errors(data):
    try:
        header, payloads = read_stream(data)
    except LdcodecError as error:
        assert "\n" not in str(error)
        return None
    return header, payloads


FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(st.integers(0, len(STREAM) - 1))
def test_any_truncation_is_detected(cut):
    assert _only_ldcodec_errors(STREAM[:cut]) is None


@FAST
@given(st.lists(st.integers(0, 8 * len(STREAM) - 1), min_size=1, max_size=3, unique=True))
def test_flipped_bits_are_detected(bits):
    """CRC-32 has Hamming distance 4 at these lengths: every 1- to 3-bit error is caught."""
    data = bytearray(STREAM)
    for bit in bits:
        data[bit // 8] ^= 1 << (bit % 8)
    assert _only_ldcodec_errors(bytes(data)) is None


@FAST
@given(st.integers(0, len(STREAM)), st.binary(min_size=1, max_size=16))
def test_inserted_bytes_are_detected(position, extra):
    assert _only_ldcodec_errors(STREAM[:position] + extra + STREAM[position:]) is None


@FAST
@given(st.binary(max_size=200), st.booleans())
def test_random_bytes_only_raise_ldcodec_errors(noise, with_magic):
    data = (b"LDC1\x01" + noise) if with_magic else noise
    _only_ldcodec_errors(data)
