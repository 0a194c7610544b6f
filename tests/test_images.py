"""Image inputs (``ldcodec.data.load_images``): every kind is converted as documented, with a
warning line, or refused with a clear error naming the file. Small images are generated here."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from ldcodec.data import load_images, load_npz_images, load_png, load_png_folder
from ldcodec.errors import LdcodecError

GRAY, RGB = (1, 6, 5), (3, 6, 5)  # model image shapes (C, H, W): not square, so that transposes show
# the arrays read are uint8 NHWC: one image (6, 5, C)


def ramp(h: int = 6, w: int = 5, c: int = 1, scale: int = 7) -> np.ndarray:
    """uint8 ``(h, w, c)`` with distinct values, so any reordering or clipping shows."""
    return (np.arange(h * w * c).reshape(h, w, c) * scale % 256).astype(np.uint8)


def write_png16(path, samples: np.ndarray, color_type: int) -> None:
    """A 16-bit PNG from uint16 ``(H, W, C)`` (Pillow cannot write 16-bit colour PNGs itself)."""
    h, w = samples.shape[:2]
    raw = b"".join(b"\0" + samples[i].astype(">u2").tobytes() for i in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))


def warnings_of(capsys) -> list[str]:
    lines = capsys.readouterr().err.splitlines()
    assert all(line.startswith("ldcodec: warning: ") for line in lines)
    return lines


def test_plain_gray_and_rgb_load_exactly_without_warnings(tmp_path, capsys):
    for shape in (GRAY, RGB):
        x = ramp(c=shape[0])
        Image.fromarray(x[..., 0] if shape[0] == 1 else x).save(tmp_path / "x.png")
        np.testing.assert_array_equal(load_png(tmp_path / "x.png", shape), x)
    assert warnings_of(capsys) == []


def test_16_bit_gray_is_scaled_not_clipped(tmp_path, capsys):
    x = ramp(scale=11)
    Image.fromarray(x[..., 0].astype(np.uint16) * 257).save(tmp_path / "g16.png")  # 8-bit k stored as 257 k
    assert Image.open(tmp_path / "g16.png").mode == "I;16"
    np.testing.assert_array_equal(load_png(tmp_path / "g16.png", GRAY), x)
    arbitrary = np.array([[0, 255, 256, 40000, 65535]], np.uint16).repeat(6, 0)
    Image.fromarray(arbitrary).save(tmp_path / "v.png")
    np.testing.assert_array_equal(load_png(tmp_path / "v.png", GRAY)[0, :, 0], [0, 0, 1, 156, 255])
    assert all("16-bit" in line and "not clipped" in line for line in warnings_of(capsys))


def test_16_bit_colour_is_scaled_with_a_warning(tmp_path, capsys):
    x = ramp(c=3)
    samples = x.astype(np.uint16) * 257
    samples[0, 0] = (0x12FF, 0xFFFF, 0x0100)
    write_png16(tmp_path / "c16.png", samples, color_type=2)
    x[0, 0] = (0x12, 0xFF, 0x01)
    np.testing.assert_array_equal(load_png(tmp_path / "c16.png", RGB), x)
    assert "16-bit" in warnings_of(capsys)[0]


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_opaque_alpha_is_dropped_silently(tmp_path, capsys, mode):
    x = ramp(c=3 if mode == "RGBA" else 1)
    Image.fromarray(np.concatenate([x, np.full_like(x[..., :1], 255)], -1), mode).save(tmp_path / "a.png")
    np.testing.assert_array_equal(load_png(tmp_path / "a.png", (x.shape[2], *x.shape[:2])), x)
    assert warnings_of(capsys) == []


def test_transparency_is_composited_on_black_with_a_warning(tmp_path, capsys):
    x = np.full((6, 5, 3), 200, np.uint8)
    alpha = np.full((6, 5, 1), 255, np.uint8)
    alpha[0, 0], alpha[0, 1] = 0, 128
    Image.fromarray(np.concatenate([x, alpha], -1), "RGBA").save(tmp_path / "a.png")
    y = load_png(tmp_path / "a.png", RGB)
    assert (y[0, 0] == 0).all() and (y[0, 1] == 100).all() and (y[1:] == 200).all()  # 200 * 128 / 255 = 100.4
    assert "composited on black" in warnings_of(capsys)[0]


def test_palette_images_are_looked_up_exactly(tmp_path, capsys):
    x = ramp(c=3, scale=40)
    Image.fromarray(x).convert("P", palette=Image.Palette.ADAPTIVE, colors=256).save(tmp_path / "p.png")
    assert Image.open(tmp_path / "p.png").mode == "P"
    expected = np.asarray(Image.open(tmp_path / "p.png").convert("RGB"))
    np.testing.assert_array_equal(load_png(tmp_path / "p.png", RGB), expected)
    assert warnings_of(capsys) == []
    gray = Image.fromarray(ramp()[..., 0]).convert("P")  # a palette of grays: exact to a gray model
    gray.save(tmp_path / "pg.png")
    np.testing.assert_array_equal(load_png(tmp_path / "pg.png", GRAY), ramp())
    assert warnings_of(capsys) == []


def test_palette_transparency_goes_through_the_alpha_rule(tmp_path, capsys):
    im = Image.fromarray(ramp(scale=1)[..., 0] + 10).convert("P")
    im.info["transparency"] = 10  # palette entry of pixel (0, 0)
    im.save(tmp_path / "pt.png", transparency=10)
    y = load_png(tmp_path / "pt.png", GRAY)
    assert y[0, 0, 0] == 0 and y[0, 1, 0] == 11
    assert "composited on black" in warnings_of(capsys)[0]


def test_gray_to_an_rgb_model_copies_the_channel(tmp_path, capsys):
    x = ramp()
    Image.fromarray(x[..., 0]).save(tmp_path / "g.png")
    np.testing.assert_array_equal(load_png(tmp_path / "g.png", RGB), np.repeat(x, 3, -1))
    assert "copied to R, G and B" in warnings_of(capsys)[0]


def test_rgb_to_a_gray_model_is_bt601_luma(tmp_path, capsys):
    x = np.zeros((6, 5, 3), np.uint8)
    x[0, 0], x[0, 1], x[0, 2], x[0, 3] = (255, 0, 0), (0, 255, 0), (0, 0, 255), (10, 20, 30)
    Image.fromarray(x).save(tmp_path / "c.png")
    y = load_png(tmp_path / "c.png", GRAY)
    assert y[0, :4, 0].tolist() == [76, 150, 29, 18]  # 0.299*255, 0.587*255, 0.114*255, 18.15 rounded
    assert "BT.601" in warnings_of(capsys)[0]
    Image.fromarray(np.repeat(ramp(), 3, -1)).save(tmp_path / "gray-as-rgb.png")
    np.testing.assert_array_equal(load_png(tmp_path / "gray-as-rgb.png", GRAY), ramp())
    assert warnings_of(capsys) == []


def test_exif_orientation_is_applied(tmp_path, capsys):
    x = ramp(h=5, w=6)  # stored 6 wide, 5 high; orientation 6 = rotate 90 degrees clockwise to view
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(x[..., 0]).save(tmp_path / "o.png", exif=exif)
    y = load_png(tmp_path / "o.png", GRAY)
    np.testing.assert_array_equal(y, np.rot90(x, k=-1))
    assert "EXIF orientation 6" in warnings_of(capsys)[0]
    with pytest.raises(LdcodecError, match=r"o\.png: image is 5x6, the model needs 6x5"):
        load_png(tmp_path / "o.png", (1, 5, 6))  # the stored size fits, the viewed one does not


def test_wrong_size_names_the_file_and_the_size(tmp_path):
    Image.fromarray(ramp(h=7)[..., 0]).save(tmp_path / "big.png")
    with pytest.raises(LdcodecError, match=r"big\.png: image is 5x7, the model needs 5x6"):
        load_png(tmp_path / "big.png", GRAY)


@pytest.mark.parametrize("mode", ["CMYK", "F"])
def test_unsupported_modes_are_refused(tmp_path, mode):
    Image.new(mode, (5, 6)).save(tmp_path / "x.tiff")
    with pytest.raises(LdcodecError, match=f"unsupported image mode {mode}"):
        load_png(tmp_path / "x.tiff", GRAY)


def test_unreadable_and_truncated_files(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not a png")
    Image.fromarray(ramp(h=60, w=50)[..., 0]).save(tmp_path / "full.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "full.png").read_bytes()[:-40])
    for name in ("bad.png", "cut.png"):
        with pytest.raises(LdcodecError, match=f"{name}: not a readable image"):
            load_png(tmp_path / name, (1, 60, 50))


def test_folder_any_case_sorted_with_one_warning_per_kind(tmp_path, capsys):
    x = ramp()
    for name in ("b.PNG", "a.png", "c.png"):
        Image.fromarray(x[..., 0]).save(tmp_path / name, format="PNG")
    (tmp_path / "notes.txt").write_text("ignored")
    images, names = load_png_folder(tmp_path, RGB)
    assert names == ["a.png", "b.PNG", "c.png"] and images.shape == (3, 6, 5, 3)
    assert warnings_of(capsys) == [f"ldcodec: warning: {tmp_path}: 3 of 3 images (a.png, b.PNG, c.png): "
                                   "grayscale image given to an RGB model: the gray channel is copied to R, G and B"]


def test_empty_folders_and_mixed_sizes(tmp_path):
    with pytest.raises(LdcodecError, match="no .png images found .it is empty"):
        load_png_folder(tmp_path, GRAY)
    (tmp_path / "x.jpg").write_bytes(b"")
    with pytest.raises(LdcodecError, match="1 other files, e.g. x.jpg"):
        load_png_folder(tmp_path, GRAY)
    Image.fromarray(ramp()[..., 0]).save(tmp_path / "a.png")
    Image.fromarray(ramp(h=8)[..., 0]).save(tmp_path / "b.png")
    with pytest.raises(LdcodecError, match=r"b\.png: image is 5x8, the model needs 5x6"):
        load_png_folder(tmp_path, GRAY)
    with pytest.raises(LdcodecError, match=r"differ in size.*a\.png is 5x6 .*b\.png is 5x8"):
        load_png_folder(tmp_path)
    with pytest.raises(LdcodecError, match="not a folder"):
        load_png_folder(tmp_path / "a.png")


def test_npz_integer_arrays_are_cast_exactly_and_channels_converted(tmp_path, capsys):
    x = ramp()[None].repeat(2, 0)
    np.savez(tmp_path / "i.npz", images=x.astype(np.int64))
    np.testing.assert_array_equal(load_npz_images(tmp_path / "i.npz", GRAY), x)
    np.savez(tmp_path / "nhw.npz", images=x[..., 0])
    np.testing.assert_array_equal(load_npz_images(tmp_path / "nhw.npz", GRAY), x)
    assert warnings_of(capsys) == []
    np.testing.assert_array_equal(load_npz_images(tmp_path / "nhw.npz", RGB), x.repeat(3, -1))
    assert "copied to R, G and B" in warnings_of(capsys)[0]


@pytest.mark.parametrize("images, match", [
    (np.full((2, 6, 5, 1), 0.5, np.float32), r"float32, range \[0.5, 0.5\]; ldcodec reads integers 0..255"),
    (np.array([np.nan, 1.0], np.float64).repeat(30).reshape(2, 6, 5, 1), r"range \[1.0, 1.0\], 30 NaN"),
    (np.full((2, 6, 5, 1), 256, np.int32), r"outside 0..255 \(min 256, max 256\)"),
    (np.full((2, 6, 5, 1), -1, np.int16), "outside 0..255"),
    (np.zeros((2, 6, 5, 1), bool), "bool"),
    (np.zeros((2, 1, 6, 5), np.uint8), "looks like NCHW"),
    (np.zeros((2, 6, 6, 1), np.uint8), r"shape \(2, 6, 6, 1\), the model needs \(N, 6, 5, 1\)"),
    (np.zeros((2, 6, 5, 4), np.uint8), "the model needs"),
    (np.zeros((0, 6, 5, 1), np.uint8), "0 images"),
])
def test_bad_npz_arrays_are_refused(tmp_path, images, match):
    np.savez(tmp_path / "x.npz", images=images)
    with pytest.raises(LdcodecError, match=match):
        load_npz_images(tmp_path / "x.npz", GRAY)


def test_bad_npz_files_are_refused(tmp_path):
    np.savez(tmp_path / "other.npz", pixels=np.zeros(3))
    np.save(tmp_path / "plain.npy", np.zeros(3))
    (tmp_path / "plain.npy").rename(tmp_path / "plain.npz")
    np.savez(tmp_path / "objects.npz", images=np.array([{"a": 1}, None], dtype=object))
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 not really a zip")
    for name, match in [("other", "no 'images' array .found pixels"), ("plain", "a .npy array"),
                        ("objects", "not a readable .npz"), ("junk", "not a readable .npz")]:
        with pytest.raises(LdcodecError, match=match):
            load_npz_images(tmp_path / f"{name}.npz", GRAY)


def test_load_images_dispatches_on_the_input_kind(tmp_path):
    x = ramp()
    Image.fromarray(x[..., 0]).save(tmp_path / "one.png")
    with open(tmp_path / "many.NPZ", "wb") as f:  # np.savez would append ".npz" to the name
        np.savez(f, images=x[None].repeat(3, 0))
    assert load_images(tmp_path / "one.png", GRAY)[1] == ["one.png"]
    images, names = load_images(tmp_path / "many.NPZ", GRAY)
    assert images.shape == (3, 6, 5, 1) and names == ["000000.png", "000001.png", "000002.png"]
    assert load_images(tmp_path, GRAY)[0].shape == (1, 6, 5, 1)  # the folder: only one.png
    with pytest.raises(LdcodecError, match="no such file or folder"):
        load_images(tmp_path / "missing.png", GRAY)
