"""JPEG / WebP / AVIF through Pillow: real files, shared bytes stored once, reconstructions are right."""

import numpy as np
import pytest
import torch
from PIL import Image

from ldcodec.codecs import get_codec
from ldcodec.codecs import container
from ldcodec.codecs.pillow import PillowCodec, pack_files, unpack_files
from ldcodec.data import load_split, to_tensor
from ldcodec.errors import LdcodecError
from ldcodec.evaluate import Settings
from ldcodec.metrics.distortion import psnr
from ldcodec.metrics.rate import rate_fields

NAMES = ("jpeg", "webp", "avif")
MAGIC = {"jpeg": (0, b"\xff\xd8\xff"), "webp": (8, b"WEBP"), "avif": (4, b"ftypavif")}


def _mnist(n=4):
    return to_tensor(load_split("mnist", "test", limit=n)[0])


def _rgb(n=4):
    # smooth synthetic colour images, so that the test needs no CIFAR-10 shards
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.interpolate(torch.rand(n, 3, 8, 8, generator=g), size=(32, 32), mode="bicubic")
    return (x.clamp(0, 1) * 255).round() / 255


def _codec(name, shape):
    cls = get_codec(name)
    if not cls.available():
        pytest.skip(f"this Pillow build has no {name} support")
    return cls(shape)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("x", [_mnist(), _rgb()], ids=["gray", "rgb"])
def test_each_image_is_a_real_file_and_alone_costs_its_file(name, x, tmp_path):
    codec = _codec(name, tuple(x.shape[1:]))
    c = codec.compress(x, {"quality": 50})
    files = unpack_files(c.payload, c.count)
    y = codec.decompress_file(codec.frame(c))
    for i, data in enumerate(files):
        path = tmp_path / f"{i}.{name}"
        path.write_bytes(data)
        offset, magic = MAGIC[name]
        assert data[offset:offset + len(magic)] == magic
        with Image.open(path) as decoded:  # any image reader gets the same reconstruction from the file
            array = np.asarray(decoded.convert("L" if x.shape[1] == 1 else "RGB"))
        assert np.array_equal(array.reshape(y.shape[2], y.shape[3], -1),
                              (y[i] * 255).round().byte().permute(1, 2, 0).numpy())
        # alone, the image costs its file, three varints (its length, empty suffix, empty middle) and
        # the container with its quality byte
        payload = len(container.varint(len(data))) + len(data) + 2
        assert c.file_bits[i] == 8 * container.file_bytes(payload, 1, 1) == 8 * (payload + 11)


def test_common_bytes_are_stored_once():
    files = [b"HEADER-abc-END", b"HEADER-de-END", b"HEADER-f-END"]
    payload = pack_files(files)
    assert unpack_files(payload, 3) == files
    assert payload.count(b"HEADER-") == 1 and payload.count(b"-END") == 1
    assert unpack_files(pack_files([b"only"]), 1) == [b"only"]
    assert unpack_files(pack_files([b"same", b"same"]), 2) == [b"same", b"same"]
    for bad in (payload[:-1], payload + b"x", b"\x7f" + payload[1:]):
        with pytest.raises(LdcodecError):
            unpack_files(bad, 3)


@pytest.mark.parametrize("name", NAMES)
def test_quality_trades_bits_for_distortion(name):
    x = _mnist(8)
    codec = _codec(name, (1, 28, 28))
    low, high = codec.compress(x, {"quality": 10}), codec.compress(x, {"quality": 90})
    assert high.file_bits.sum() > low.file_bits.sum() and len(high.payload) > len(low.payload)
    y_low, y_high = (codec.decompress_file(codec.frame(c)) for c in (low, high))
    assert psnr(x, y_high).mean() > psnr(x, y_low).mean() + 3


def test_sweep_skips_missing_formats_with_a_warning(monkeypatch):
    from ldcodec.codecs import pillow

    monkeypatch.setattr(pillow.pil_features, "check", lambda feature: feature != "avif")
    with pytest.warns(UserWarning, match="skipping avif"):
        assert get_codec("avif").for_sweep((1, 28, 28), None, Settings()) == []
    assert [c.name for c in get_codec("jpeg").for_sweep((1, 28, 28), None, Settings())] == ["jpeg"]
    with pytest.raises(LdcodecError, match="no AVIF support"):
        get_codec("avif")((1, 28, 28))


def test_bad_inputs():
    with pytest.raises(LdcodecError, match="choose one of"):
        get_codec("jpeg2000")
    codec = _codec("jpeg", (1, 28, 28))
    for q in (-1, 101, 50.5, True):
        with pytest.raises(LdcodecError, match="0..100"):
            codec.compress(_mnist(1), {"quality": q})
    with pytest.raises(LdcodecError, match="1- or 3-channel"):
        get_codec("jpeg")((2, 28, 28))
    other = get_codec("jpeg")((1, 14, 14))  # a file of other-sized images is refused before decoding
    with pytest.raises(LdcodecError, match="28x28"):
        other.decompress_file(codec.frame(codec.compress(_mnist(1))))
    assert isinstance(codec, PillowCodec) and codec.model_id() == bytes(4)


def test_rate_units():
    fields = rate_fields({"actual": 3072.0, "file": 4096.0, "estimated": None}, (3, 32, 32))
    assert fields["bpp_actual"] == 3.0 and fields["bits_per_dim_actual"] == 1.0
    assert fields["bpp_file"] == 4.0 and fields["bits_per_dim_file"] == 4 / 3
    assert fields["bits_estimated"] is None and fields["bpp_ideal"] is None and fields["bits_per_dim_ideal"] is None
