import numpy as np
import pytest

from ldcodec.data import Batches, image_shape, load_png, load_png_folder, load_split, save_png
from ldcodec.errors import LdcodecError


def test_builtin_sample_is_real_mnist():
    x, y = load_split("mnist", "train")
    assert x.shape == (4000, 28, 28, 1) and x.dtype == np.uint8 and y.shape == (4000,)
    xt, yt = load_split("mnist", "test", limit=10)
    assert xt.shape == (10, 28, 28, 1) and set(np.unique(y)) == set(range(10))
    assert image_shape("mnist") == (1, 28, 28) and image_shape("cifar10") == (3, 32, 32)  # (C, H, W); arrays NHWC


def test_builtin_sample_matches_shared_shards(data_root):
    x, y = load_split("mnist", "train", data_root, limit=4000)
    bx, by = load_split("mnist", "train")
    np.testing.assert_array_equal(x, bx)
    np.testing.assert_array_equal(y, by)


def test_cifar_split_concatenates_shards(data_root):
    x, y = load_split("cifar10", "test", data_root, limit=6000)
    assert x.shape == (6000, 32, 32, 3) and y.max() <= 9


def test_data_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("LDCODEC_DATA", raising=False)
    with pytest.raises(LdcodecError, match="not a folder"):
        load_split("mnist", "train", tmp_path / "nope")
    with pytest.raises(LdcodecError, match="no mnist shards"):
        load_split("mnist", "train", tmp_path)
    with pytest.raises(LdcodecError, match="not built in"):
        load_split("cifar10", "train")
    (tmp_path / "mnist").mkdir()
    with pytest.raises(LdcodecError, match="split 'train' is empty"):
        load_split("mnist", "train", tmp_path)
    np.savez(tmp_path / "mnist" / "train-00.npz", images=np.zeros((3, 28, 28, 1), np.float32), labels=np.zeros(3))
    with pytest.raises(LdcodecError, match="train-00.npz: images must be uint8"):
        load_split("mnist", "train", tmp_path)
    np.savez(tmp_path / "mnist" / "train-00.npz", images=np.zeros((3, 32, 32, 3), np.uint8), labels=np.zeros(3))
    with pytest.raises(LdcodecError, match="shape"):
        load_split("mnist", "train", tmp_path)
    (tmp_path / "mnist" / "train-00.npz").write_bytes(b"garbage")
    with pytest.raises(LdcodecError, match="not a readable .npz"):
        load_split("mnist", "train", tmp_path)


def test_png_folder_and_shape_checks(tmp_path):
    x, _ = load_split("mnist", "test", limit=3)
    for i, im in enumerate(x):
        save_png(im, tmp_path / f"{i}.png")
    imgs, names = load_png_folder(tmp_path, (1, 28, 28))
    np.testing.assert_array_equal(imgs, x)
    assert names == ["0.png", "1.png", "2.png"]
    rgb = load_png(tmp_path / "0.png", (3, 28, 28))
    assert rgb.shape == (28, 28, 3)
    with pytest.raises(LdcodecError, match="needs 32x32"):
        load_png(tmp_path / "0.png", (3, 32, 32))
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(LdcodecError, match="not a readable image"):
        load_png(tmp_path / "bad.png")


def test_batches_are_a_function_of_the_step():
    x, _ = load_split("mnist", "train", limit=100)
    b = Batches(x, 8, seed=1, flip=True)
    assert b(5).shape == (8, 1, 28, 28)
    assert b(5).equal(b(5)) and not b(5).equal(b(6))
    assert 0 <= b(3).min() and b(3).max() <= 1


def test_labelled_grid_has_a_text_margin(tmp_path):
    """Rows of a grid can carry labels (the demo names each row's decode, t and bits)."""
    import numpy as np
    from PIL import Image

    from ldcodec.viz import save_grid

    rows = [np.zeros((3, 28, 28, 1), np.uint8) + 255 for _ in range(2)]
    plain = np.asarray(Image.open(save_grid(rows, tmp_path / "a.png")))
    labelled = np.asarray(Image.open(save_grid(rows, tmp_path / "b.png", labels=["originals", "t=0.30 flow"])))
    assert labelled.shape[0] == plain.shape[0] and labelled.shape[1] > plain.shape[1]
    margin = labelled[:, : labelled.shape[1] - plain.shape[1]]
    assert (margin < 128).any()  # text was drawn
