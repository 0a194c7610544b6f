"""JPEG / WebP / AVIF baselines: bits are real file sizes, files are real, reconstructions are right."""

import numpy as np
import pytest
import torch
from PIL import Image

from ldcodec.baselines import classical
from ldcodec.baselines.classical import CODECS, available, encode_image, quality_sweep, run_classical
from ldcodec.data import load_split, to_tensor
from ldcodec.errors import LdcodecError
from ldcodec.metrics.distortion import psnr
from ldcodec.metrics.rate import bits_per_dim, bpp

MAGIC = {"jpeg": (0, b"\xff\xd8\xff"), "webp": (8, b"WEBP"), "avif": (4, b"ftypavif")}


def _mnist(n=4):
    return load_split("mnist", "test", limit=n)[0]


def _rgb(n=4):
    # smooth synthetic colour images, so that the test needs no CIFAR-10 shards
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.interpolate(torch.rand(n, 3, 8, 8, generator=g), size=(32, 32), mode="bicubic")
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def _needs(codec):
    if not available(codec):
        pytest.skip(f"this Pillow build has no {codec} support")


@pytest.mark.parametrize("codec", sorted(CODECS))
@pytest.mark.parametrize("images", [_mnist(), _rgb()], ids=["gray", "rgb"])
def test_bits_are_real_file_sizes(codec, images, tmp_path):
    _needs(codec)
    recon, bits = run_classical(images, codec, quality=50)
    assert recon.shape == images.shape and recon.dtype == np.uint8
    assert bits.shape == (len(images),) and bits.dtype == np.int64
    for i, image in enumerate(images):
        path = tmp_path / f"{i}.{codec}"
        path.write_bytes(encode_image(image, codec, 50))
        assert bits[i] == 8 * path.stat().st_size
        offset, magic = MAGIC[codec]
        assert path.read_bytes()[offset : offset + len(magic)] == magic
        with Image.open(path) as decoded:  # any image reader gets the same reconstruction from the file
            array = np.asarray(decoded.convert("L" if images.shape[-1] == 1 else "RGB"))
        assert np.array_equal(array.reshape(recon[i].shape), recon[i])


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_quality_trades_bits_for_distortion(codec):
    _needs(codec)
    images = _mnist(8)
    low_recon, low_bits = run_classical(images, codec, quality=10)
    high_recon, high_bits = run_classical(images, codec, quality=90)
    x = to_tensor(images)
    assert high_bits.sum() > low_bits.sum()
    assert psnr(x, to_tensor(high_recon)).mean() > psnr(x, to_tensor(low_recon)).mean() + 3


def test_sweep_skips_missing_codecs_with_a_warning(monkeypatch):
    monkeypatch.setattr(classical.pil_features, "check", lambda feature: feature != "avif")
    with pytest.warns(UserWarning, match="skipping avif"):
        points = list(quality_sweep(_mnist(2), codecs=("jpeg", "avif"), qualities={"jpeg": (20, 80)}))
    assert [(p.codec, p.quality) for p in points] == [("jpeg", 20), ("jpeg", 80)]
    with pytest.raises(LdcodecError, match="no AVIF support"):
        run_classical(_mnist(1), "avif", 50)


def test_bad_inputs():
    with pytest.raises(LdcodecError, match="choose one of"):
        run_classical(_mnist(1), "jpeg2000", 50)
    with pytest.raises(LdcodecError, match="uint8"):
        run_classical(_mnist(1).astype(np.float32), "jpeg", 50)


def test_rate_units_from_real_file_sizes():
    images = _rgb(3)
    _, bits = run_classical(images, "jpeg", 50)
    n, h, w, c = images.shape
    assert np.allclose(bpp(bits, h, w), bits / (32 * 32))
    assert np.allclose(bits_per_dim(bits, c, h, w), bpp(bits, h, w) / 3)
    as_tensor = bpp(torch.from_numpy(bits).double(), h, w)
    assert torch.is_tensor(as_tensor) and torch.allclose(as_tensor, torch.from_numpy(bits / 1024.0))
