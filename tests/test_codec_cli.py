"""``ldcodec compress`` / ``ldcodec decompress``: agreement with the API, decoding in another process
with another thread count (docs/design.md §5, determinism), and user errors (exit 2, one line on
stderr, no output left behind)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ldcodec.cli import main
from ldcodec.data import load_png_folder, load_split, save_png, to_tensor, to_uint8

from ldcodec.checkpoint import load_model
from ldcodec.codecs import model_codec

from test_codec_contract import BAD


@pytest.fixture(scope="module")
def codecs(runs) -> dict:
    """Each tiny run's registered codec (diffc for the mode U cells, cdc for mode C)."""
    return {name: model_codec(load_model(run)[0]) for name, run in runs.items()}


def rate(codec, t: float = 0.3, **extra) -> dict:
    return {"t_stop": t, **extra} if codec.mode == "U" else dict(extra)


def compressed(codec, x, **rate_kw) -> bytes:
    """The file ``ldcodec compress`` writes for images ``x``."""
    return codec.frame(codec.compress(x, rate_kw))


@pytest.fixture(scope="module")
def pixels() -> np.ndarray:
    """Four MNIST test images, uint8 NHWC."""
    return load_split("mnist", "test", limit=4)[0]


@pytest.fixture(scope="module")
def streams(tmp_path_factory, codecs, pixels) -> dict[str, Path]:
    """Per cell, a stream file of the four images (mode U at t = 0.3: a payload of several bytes, so
    that cutting one is damage to detect; decode realism)."""
    folder = tmp_path_factory.mktemp("codec-cli-streams")
    out = {}
    for name, codec in codecs.items():
        out[name] = folder / f"{name}.ldc"
        out[name].write_bytes(compressed(codec, to_tensor(pixels), **rate(codec, decode="realism")))
    return out


def png_folder(folder: Path, pixels: np.ndarray) -> Path:
    folder.mkdir()
    for i, im in enumerate(pixels):
        save_png(im, folder / f"{i:02d}.png")
    return folder


def user_error(argv: list[str], capsys) -> str:
    """Run the CLI, expect exit status 2 with one line on stderr -> the message."""
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ldcodec: error: ") and err.count("\n") == 1 and "Traceback" not in err
    return err


@contextlib.contextmanager
def torch_threads(n: int):
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


# -- agreement with the API ------------------------------------------------------------------

@pytest.mark.parametrize("name, rate", [("mlp-U", ["--t", "0.4"]), ("mlp-U", []), ("cnn-U", ["--bits", "250"]),
                                        ("mlp-C", []), ("cnn-C", [])])
def test_cli_matches_the_api(runs, codecs, pixels, tmp_path, capsys, name, rate):
    folder = png_folder(tmp_path / "in", pixels)
    stream = tmp_path / "s.ldc"
    assert main(["compress", str(runs[name]), str(folder), "-o", str(stream), "--decode", "mse", *rate]) == 0
    assert "bits per image: actual" in capsys.readouterr().out
    kw = {"t_stop": 0.4} if "--t" in rate else {"bits": 250.0} if rate else {}
    expected = compressed(codecs[name], to_tensor(pixels), decode="mse", **kw)
    assert stream.read_bytes() == expected
    assert main(["decompress", str(runs[name]), str(stream), "-o", str(tmp_path / "out.npz")]) == 0
    with np.load(tmp_path / "out.npz") as z:
        assert np.array_equal(z["images"], to_uint8(codecs[name].decompress_file(expected)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out.npz", "s.ldc"]


def test_decoding_in_another_process_with_one_thread_gives_identical_pngs(runs, codecs, streams, tmp_path):
    """Subprocesses (OMP_NUM_THREADS=1) and this process (2 threads) decode the same pixels."""
    names = ["cnn-U", "cnn-C", "mlp-U"]
    with torch_threads(2):  # before the subprocesses start: two threads spin-wait badly on a busy machine
        here = {name: to_uint8(codecs[name].decompress_file(streams[name].read_bytes())) for name in names}
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    jobs = {name: subprocess.Popen([sys.executable, "-m", "ldcodec.cli", "decompress", str(runs[name]),
                                    str(streams[name]), "-o", str(tmp_path / name)],
                                   env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for name in names}
    for name, job in jobs.items():
        out, err = job.communicate(timeout=120)
        assert job.returncode == 0, err
        pngs, files = load_png_folder(tmp_path / name, (1, 28, 28))
        assert files == [f"{i:06d}.png" for i in range(4)]
        assert np.array_equal(pngs, here[name])


# -- user errors ------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", [*BAD, "file of another checkpoint"])
def test_bad_streams_exit_2_and_write_nothing(runs, codecs, streams, pixels, tmp_path, capsys, kind):
    bad = tmp_path / "bad.ldc"
    if kind == "file of another checkpoint":
        bad.write_bytes(streams["cnn-U"].read_bytes())
    else:
        bad.write_bytes(BAD[kind](streams["mlp-U"].read_bytes(), codecs["mlp-U"]))
    for output in ("out", "out.npz", "one.png"):
        user_error(["decompress", runs["mlp-U"], bad, "-o", tmp_path / output], capsys)
    assert [p.name for p in tmp_path.iterdir()] == ["bad.ldc"]


def test_images_of_the_wrong_size_exit_2(runs, tmp_path, capsys):
    rgb = tmp_path / "rgb.png"
    save_png(np.zeros((32, 32, 3), np.uint8), rgb)
    np.savez(tmp_path / "rgb.npz", images=np.zeros((2, 32, 32, 3), np.uint8))
    folder = png_folder(tmp_path / "folder", np.zeros((1, 32, 32, 3), np.uint8))
    for source in (rgb, folder):
        assert "28x28" in user_error(["compress", runs["mlp-U"], source, "-o", tmp_path / "s.ldc", "--t", "0.5"],
                                     capsys)
    assert "28, 28, 1" in user_error(["compress", runs["cnn-C"], tmp_path / "rgb.npz", "-o", tmp_path / "s.ldc"],
                                     capsys)
    np.savez(tmp_path / "empty.npz", images=np.zeros((0, 28, 28, 1), np.uint8))
    assert "0 images" in user_error(["compress", runs["mlp-U"], tmp_path / "empty.npz", "-o", tmp_path / "s.ldc",
                                     "--bits", "100"], capsys)
    assert not (tmp_path / "s.ldc").exists()


@pytest.mark.parametrize("name, rate, match", [
    ("mlp-C", ["--t", "0.5"], "mode C"), ("cnn-C", ["--bits", "200"], "mode C"),
    ("cnn-U", ["--t", "1.5"], "outside"), ("mlp-U", ["--t", "1.0"], "outside"),
    ("mlp-U", ["--bits", "nan"], "positive"), ("mlp-U", ["--bits", "-3"], "positive"),
    ("mlp-U", ["--coding-steps", "65"], "coding-steps"),
])
def test_bad_rate_settings_exit_2(runs, pixels, tmp_path, capsys, name, rate, match):
    np.savez(tmp_path / "in.npz", images=pixels)
    assert match in user_error(["compress", runs[name], tmp_path / "in.npz", "-o", tmp_path / "s.ldc", *rate], capsys)
    assert [p.name for p in tmp_path.iterdir()] == ["in.npz"]


def test_unwritable_outputs_exit_2_and_leave_nothing(runs, streams, pixels, tmp_path, capsys):
    np.savez(tmp_path / "in.npz", images=pixels[:1])
    missing = tmp_path / "missing"
    user_error(["compress", runs["mlp-U"], tmp_path / "in.npz", "-o", missing / "s.ldc", "--t", "0.5"], capsys)
    user_error(["compress", runs["mlp-U"], tmp_path / "in.npz", "-o", tmp_path, "--t", "0.5"], capsys)
    assert main(["compress", str(runs["mlp-U"]), str(tmp_path / "in.npz"), "-o", str(tmp_path / "one.ldc"),
                 "--t", "0.5"]) == 0
    for output in (missing / "x.npz", missing / "x.png"):
        user_error(["decompress", runs["mlp-U"], tmp_path / "one.ldc", "-o", output], capsys)
    user_error(["decompress", runs["mlp-U"], streams["mlp-U"], "-o", tmp_path / "four.png"], capsys)
    user_error(["decompress", runs["mlp-U"], streams["mlp-U"], "-o", tmp_path / "f", "--max-steps", "-1"], capsys)
    user_error(["decompress", runs["mlp-U"], tmp_path / "nope.ldc", "-o", tmp_path / "f"], capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.npz", "one.ldc"]
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("x")
    user_error(["decompress", runs["mlp-U"], streams["mlp-U"], "-o", taken], capsys)
    assert [p.name for p in taken.iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.npz", "one.ldc", "taken"]


def test_progressive_decode_from_the_cli(runs, codecs, streams, tmp_path):
    assert main(["decompress", str(runs["cnn-U"]), str(streams["cnn-U"]), "-o", str(tmp_path / "p.npz"),
                 "--max-steps", "1", "--decode", "flow"]) == 0
    with np.load(tmp_path / "p.npz") as z:
        expected = codecs["cnn-U"].decompress_file(streams["cnn-U"].read_bytes(), decode="flow", max_steps=1)
        assert np.array_equal(z["images"], to_uint8(expected))
