"""The format 2 container: layout, exact sizes, and refusal of every damaged or foreign file."""

import binascii
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ldcodec.codecs import container
from ldcodec.errors import LdcodecError

MODEL = bytes.fromhex("a1b2c3d4")
FILE = container.write(2, MODEL, b"\x07", b"payload", 3)  # cdc: one params byte


def _sealed(body: bytes) -> bytes:
    return body + struct.pack("<H", binascii.crc_hqx(body, 0))


def test_layout_and_round_trip():
    assert FILE[:2] == b"Ld" and FILE[2] == 0x22 and FILE[3:7] == MODEL
    assert FILE[7] == 3 and FILE[8:9] == b"\x07" and FILE[9:-2] == b"payload"
    assert struct.unpack("<H", FILE[-2:])[0] == binascii.crc_hqx(FILE[:-2], 0)
    assert container.read(FILE) == (2, MODEL, b"\x07", b"payload", 3)
    assert len(FILE) == container.file_bytes(7, 1, 3)
    assert container.file_bytes(0, 2, 1) == 12  # one mode U image: 12 bytes of container


@given(payload=st.binary(max_size=300), count=st.integers(1, container.MAX_COUNT),
       codec_id=st.sampled_from(sorted(container.PARAMS_BYTES)), model=st.binary(min_size=4, max_size=4),
       data=st.data())
@settings(max_examples=60, deadline=None, derandomize=True)
def test_any_file_round_trips_at_its_predicted_size(payload, count, codec_id, model, data):
    params = data.draw(st.binary(min_size=container.PARAMS_BYTES[codec_id], max_size=container.PARAMS_BYTES[codec_id]))
    framed = container.write(codec_id, model, params, payload, count)
    assert container.read(framed) == (codec_id, model, params, payload, count)
    assert len(framed) == container.file_bytes(len(payload), len(params), count)


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


@pytest.mark.parametrize("data, message", [
    (b"", "not an ldcodec stream"),
    (b"PK\x03\x04" + FILE[4:], "not an ldcodec stream"),
    (b"LDC1\x01" + bytes(60), "format 1.*decode it with ldcodec 0.1"),
    (FILE[:2], "truncated"),
    (_sealed(b"Ld\x12" + FILE[3:-2]), "version 1"),
    (_sealed(b"Ld\x32" + FILE[3:-2]), "version 3"),
    (_sealed(b"Ld\x2f" + FILE[3:-2]), "codec id 15"),
    (FILE[:-1], "corrupt"),
    (FILE + b"\0", "corrupt"),
    (FILE[:5] + bytes([FILE[5] ^ 4]) + FILE[6:], "corrupt"),
    (_sealed(FILE[:7] + b"\x00\x07"), "declares 0 images"),
    (_sealed(FILE[:7] + container.varint(2 ** 20 + 1) + b"\x07"), "declares 1048577 images"),
    (_sealed(FILE[:7] + b"\x81\x00\x07"), "minimally"),
    (_sealed(FILE[:7] + b"\xff\xff\xff\x7f"), "malformed"),
    (_sealed(b"Ld\x22" + MODEL + b"\x01"), "truncated inside its parameters"),  # cdc needs 1 byte
])
def test_specific_damage_gives_a_clear_message(data, message):
    with pytest.raises(LdcodecError, match=message) as e:
        container.read(data)
    assert "\n" not in str(e.value)


def test_unwritable_files_are_refused():
    for args in ((2, MODEL, b"\x07", b"", 0), (2, MODEL, b"", b"", 1), (2, b"abc", b"\x07", b"", 1),
                 (9, MODEL, b"", b"", 1)):
        with pytest.raises(LdcodecError, match="cannot frame"):
            container.write(*args)


MUTATIONS = st.one_of(
    st.tuples(st.just("truncate"), st.integers(0, 10 ** 6), st.just(b"")),
    st.tuples(st.just("flip"), st.integers(0, 10 ** 6), st.integers(0, 7)),
    st.tuples(st.just("insert"), st.integers(0, 10 ** 6), st.binary(min_size=1, max_size=2)),
)


@given(mutation=MUTATIONS)
@settings(max_examples=200, deadline=None, derandomize=True)
def test_any_short_damage_is_refused_with_an_ldcodec_error(mutation):
    kind, position, extra = mutation
    if kind == "truncate":
        data = FILE[: position % len(FILE)]
    elif kind == "flip":
        i = position % len(FILE)
        data = FILE[:i] + bytes([FILE[i] ^ (1 << extra)]) + FILE[i + 1:]
    else:
        i = position % (len(FILE) + 1)
        data = FILE[:i] + extra + FILE[i:]
    with pytest.raises(LdcodecError) as e:  # CRC-16 detects every burst of <= 16 bits
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
@settings(max_examples=200, deadline=None, derandomize=True)
def test_random_bodies_behind_a_valid_checksum_raise_only_ldcodec_errors(data):
    try:
        container.read(_sealed(b"Ld" + data))
    except LdcodecError as e:
        assert "\n" not in str(e)


def test_codec_ids_fit_the_nibble():
    """The container stores a codec id in 4 bits: ids above ``MAX_CODEC_ID`` (or 0) cannot be framed."""
    assert container.MAX_CODEC_ID == 15 and max(container.PARAMS_BYTES) <= container.MAX_CODEC_ID
    for bad in (0, container.MAX_CODEC_ID + 1, 255):
        with pytest.raises(LdcodecError):
            container.write(bad, MODEL, b"", b"", 1)
