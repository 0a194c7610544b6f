"""The format 2 container: layout, exact sizes, and refusal of every damaged or foreign file."""

import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ldcodec.codecs import container
from ldcodec.codecs.base import Compressed
from ldcodec.errors import LdcodecError

MODEL = bytes.fromhex("a1b2c3d4")


def compressed(payload: bytes = b"payload", params: bytes = b"\x07", count: int = 3, codec: str = "cdc"):
    return Compressed(codec, params, payload, count, None, np.zeros(count), {})


FILE = container.write(compressed(), MODEL)


def test_layout_and_round_trip():
    assert FILE[:2] == b"Ld" and FILE[2] == 0x20 and FILE[3] == 2 and FILE[4:8] == MODEL
    assert FILE[8] == 3 and FILE[9] == 1 and FILE[10:11] == b"\x07" and FILE[11:-4] == b"payload"
    assert struct.unpack("<I", FILE[-4:])[0] == zlib.crc32(FILE[:-4])
    assert container.read(FILE) == (2, MODEL, b"\x07", b"payload", 3)
    assert len(FILE) * 8 == container.file_bits(7, 1, 3)
    assert container.file_bits(0, 0) == 8 * 14  # one image, no params: 14 bytes of container


@given(payload=st.binary(max_size=300), params=st.binary(max_size=200), count=st.integers(1, container.MAX_COUNT),
       codec=st.sampled_from(["diffc", "cdc", "factorized", "hyperprior", "jpeg", "webp", "avif"]),
       model=st.binary(min_size=4, max_size=4))
@settings(max_examples=60, deadline=None, derandomize=True)
def test_any_file_round_trips_at_its_predicted_size(payload, params, count, codec, model):
    from ldcodec.codecs import get_codec

    data = container.write(compressed(payload, params, count, codec), model)
    assert container.read(data) == (get_codec(codec).codec_id, model, params, payload, count)
    assert 8 * len(data) == container.file_bits(len(payload), len(params), count)


def test_varints_and_parts():
    for n in (0, 1, 127, 128, 300, 2 ** 20, 2 ** 34):
        encoded = container.varint(n)
        assert container.read_varint(encoded + b"rest", 0, "x") == (n, len(encoded))
    assert [len(container.varint(n)) for n in (0, 127, 128, 2 ** 14 - 1, 2 ** 14, 2 ** 20)] == [1, 1, 2, 2, 3, 3]
    for bad, message in ((b"\x80", "truncated"), (b"\x80\x00", "minimally"), (b"\xff" * 6, "malformed")):
        with pytest.raises(LdcodecError, match=message):
            container.read_varint(bad, 0, "x")
    parts = [b"", b"a", bytes(200)]
    assert container.split_parts(container.join_parts(parts), 3) == parts
    for bad in (container.join_parts(parts)[:-1], container.join_parts(parts) + b"\0"):
        with pytest.raises(LdcodecError):
            container.split_parts(bad, 3)


def _sealed(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


@pytest.mark.parametrize("data, message", [
    (b"", "not an ldcodec stream"),
    (b"PK\x03\x04" + FILE[4:], "not an ldcodec stream"),
    (b"LDC1\x01" + bytes(60), "format 1 .*decode it with ldcodec 0.1"),
    (FILE[:2], "truncated"),
    (b"Ld\x10" + FILE[3:], "version 1"),
    (b"Ld\x30" + FILE[3:], "version 3"),
    (b"Ld\x21" + FILE[3:], "reserved bits 1"),
    (FILE[:12], "truncated|corrupt"),
    (FILE[:-1], "corrupt"),
    (FILE + b"\0", "corrupt"),
    (FILE[:5] + bytes([FILE[5] ^ 4]) + FILE[6:], "corrupt"),
    (_sealed(FILE[:8] + b"\x00\x00"), "declares 0 images"),
    (_sealed(FILE[:8] + container.varint(2 ** 20 + 1) + b"\x00"), "1..1048576"),
    (_sealed(FILE[:8] + b"\x01\x09abc"), "9 parameter bytes"),
    (_sealed(FILE[:8] + b"\x01" + container.varint(2000) + bytes(2000)), "2000 parameter bytes"),
    (_sealed(FILE[:8] + b"\x81\x00\x00"), "minimally"),
])
def test_specific_damage_gives_a_clear_message(data, message):
    with pytest.raises(LdcodecError, match=message) as e:
        container.read(data)
    assert "\n" not in str(e.value)


def test_unwritable_files_are_refused():
    for bad, message in ((compressed(count=0), "1..1048576"), (compressed(params=bytes(1025)), "1024")):
        with pytest.raises(LdcodecError, match=message):
            container.write(bad, MODEL)
    with pytest.raises(LdcodecError, match="4 bytes"):
        container.write(compressed(), b"abc")
    with pytest.raises(LdcodecError, match="unknown codec"):
        container.write(compressed(codec="png"), MODEL)


MUTATIONS = st.one_of(
    st.tuples(st.just("truncate"), st.integers(0, 10 ** 6), st.just(b"")),
    st.tuples(st.just("flip"), st.integers(0, 10 ** 6), st.integers(0, 7)),
    st.tuples(st.just("insert"), st.integers(0, 10 ** 6), st.binary(min_size=1, max_size=8)),
)


@given(mutation=MUTATIONS)
@settings(max_examples=200, deadline=None, derandomize=True)
def test_any_damage_is_refused_with_an_ldcodec_error(mutation):
    kind, position, extra = mutation
    if kind == "truncate":
        data = FILE[: position % len(FILE)]
    elif kind == "flip":
        i = position % len(FILE)
        data = FILE[:i] + bytes([FILE[i] ^ (1 << extra)]) + FILE[i + 1:]
    else:
        i = position % (len(FILE) + 1)
        data = FILE[:i] + extra + FILE[i:]
    with pytest.raises(LdcodecError) as e:  # CRC-32 detects every burst of <= 32 bits
        container.read(data)
    assert "\n" not in str(e.value)


@given(data=st.binary(max_size=64))
@settings(max_examples=200, deadline=None, derandomize=True)
def test_random_bytes_raise_only_ldcodec_errors(data):
    try:
        codec_id, model_id, params, payload, count = container.read(data)
    except LdcodecError as e:
        assert "\n" not in str(e)
        return
    assert 1 <= count <= container.MAX_COUNT and len(model_id) == 4  # a valid file by chance


@given(data=st.binary(max_size=64))
@settings(max_examples=100, deadline=None, derandomize=True)
def test_random_bodies_behind_a_valid_checksum_raise_only_ldcodec_errors(data):
    try:
        container.read(_sealed(b"Ld\x20" + data))
    except LdcodecError as e:
        assert "\n" not in str(e)
