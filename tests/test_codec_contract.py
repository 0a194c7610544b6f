"""One contract test suite, run on every registered codec (like diffusers' scheduler test base).

Each codec of :data:`ldcodec.codecs.CODECS` is built small (tiny trained LSGM cells for diffc and
cdc, Ballé codecs trained for a few steps, the Pillow formats this build has) and must:

- round-trip real MNIST digits through a framed file, deterministically;
- count its bits the one way: ``bits_actual = 8 len(file) / N >= estimated - tolerance``,
  ``bits_file >= bits_actual``, and ``file_bits[0]`` is the size of image 0's own file;
- refuse damaged, truncated, foreign (other model, other codec) and format 1 files with a one-line
  ``LdcodecError``, and never raise anything else on damage behind a valid checksum;
- decode identically in another process (one thread there, this process's threads here).
"""

from __future__ import annotations

import binascii
import json
import os
import struct
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ldcodec.checkpoint import load_model
from ldcodec.codecs import CODECS, codec_name, get_codec, model_codec
from ldcodec.codecs import container
from ldcodec.codecs.balle import BalleCodec
from ldcodec.codecs.pillow import PillowCodec
from ldcodec.data import load_split, to_tensor, to_uint8
from ldcodec.errors import LdcodecError

N = 4
BALLE = {"lam": 0.01, "steps": 30, "channels": 8, "latent_channels": 4}


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return to_tensor(load_split("mnist", "test", limit=N)[0])


def _build(name: str, runs: dict, train_x: torch.Tensor):
    cls = get_codec(name)
    if issubclass(cls, PillowCodec):
        return cls((1, 28, 28)) if cls.available() else None
    if issubclass(cls, BalleCodec):
        return cls.train(train_x, BALLE["lam"], BALLE["steps"], channels=BALLE["channels"],
                         latent_channels=BALLE["latent_channels"], progress=False)
    run = runs["mlp-C" if name == "cdc" else "mlp-U"]
    model = load_model(run)[0]
    if cls.mode == "U":
        model.cfg.codec.simulator = cls.simulator.name  # diffc or diffc-dq
    return model_codec(model, run)


@pytest.fixture(scope="module")
def codecs(runs) -> dict:
    """Every registered codec, built small (``None`` for a Pillow format this build lacks)."""
    train_x = to_tensor(load_split("mnist", "train", limit=256)[0])
    return {name: _build(name, runs, train_x) for name in CODECS}


@pytest.fixture
def codec(codecs, request):
    c = codecs[request.param]
    if c is None:
        pytest.skip(f"this Pillow build has no {request.param} support")
    return c


def _rate(codec) -> dict:
    """The middle default rate: payloads of several bytes, so that cutting one is damage to detect
    (at mode U's lowest default rate a tiny model's stream for N images can be a single byte)."""
    rates = codec.default_rates()
    return rates[len(rates) // 2]


def _decode_options(codec) -> list[dict]:
    return [{}] if codec.decodes == ("default",) else [{"decode": d} for d in codec.decodes]


@pytest.fixture(scope="module")
def files(codecs, images) -> dict:
    """Per codec: its :class:`Compressed` of the test images and the framed file."""
    out = {}
    for name, codec in codecs.items():
        if codec is not None:
            c = codec.compress(images, _rate(codec))
            out[name] = (c, codec.frame(c))
    return out


def reframe(data: bytes, **fields) -> bytes:
    """``data`` with container fields replaced (``version``, ``codec_id``, ``model_id``, ``params``,
    ``payload``) behind a fresh checksum (the layout of :mod:`ldcodec.codecs.container`)."""
    codec_id, model_id, params, payload, count = container.read(data)
    version, codec_id = fields.get("version", 2), fields.get("codec_id", codec_id)
    model_id, params, payload = (fields.get(k, v) for k, v in
                                 (("model_id", model_id), ("params", params), ("payload", payload)))
    body = b"Ld" + bytes([version << 4 | codec_id]) + model_id + container.varint(count) + params + payload
    return body + struct.pack("<H", binascii.crc_hqx(body, 0))


def flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def _other_codec_id(codec) -> int:
    return next(c.codec_id for c in CODECS.values() if c.codec_id != codec.codec_id)


BAD = {
    "empty": lambda d, c: b"",
    "truncated": lambda d, c: d[:-1],
    "header only": lambda d, c: d[:8],
    "trailing byte": lambda d, c: d + b"\0",
    "flipped payload bit": lambda d, c: flip(d, 8 * len(d) - 40),
    "flipped header bit": lambda d, c: flip(d, 8 * 5 + 1),
    "random bytes": lambda d, c: np.random.default_rng(0).bytes(len(d)),
    "other model": lambda d, c: reframe(d, model_id=bytes(b ^ 0x5A for b in c.model_id())),
    "other codec": lambda d, c: reframe(d, codec_id=_other_codec_id(c)),
    "unknown codec": lambda d, c: reframe(d, codec_id=15),
    "format 1": lambda d, c: b"LDC1\x01" + d[5:],
    "format 3": lambda d, c: reframe(d, version=3),
    "flipped version bit": lambda d, c: flip(d, 8 * 2 + 5),
}
# Other damage behind a recomputed checksum (other parameters: most values are valid ones) need not
# be detected by every codec: it must decode or raise LdcodecError, which
# test_damage_behind_a_valid_checksum_raises_only_ldcodec_errors checks. That includes a payload cut
# short: a shorter payload can itself be the canonical coding of other symbols (seen: a tiny model's
# 9-byte mode U payload cut to 8 bytes decoded to other images), and the container has no payload
# length to tell; a file cut short is refused by its checksum ("truncated").
EXPECTED = {"other model": "checkpoint", "other codec": "written by codec", "format 1": "ldcodec 0.1",
            "format 3": "version 3", "flipped payload bit": "corrupt", "flipped header bit": "corrupt",
            "flipped version bit": "corrupt", "unknown codec": "codec id 15"}
ALL = pytest.mark.parametrize("codec", list(CODECS), indirect=True)
RANDOMIZED = {"diffc"}  # codecs whose encoder draws randomness keyed by the whole file (PFR arrival times)


def _refused(codec, data: bytes, **opts) -> str:
    with pytest.raises(LdcodecError) as e:
        codec.decompress_file(data, **opts)
    message = str(e.value)
    assert message and "\n" not in message
    return message


# -- round trips ------------------------------------------------------------------------------

@ALL
def test_round_trips_real_images(codec, files, images):
    c, data = files[codec.name]
    assert c.codec == codec.name and c.count == N and container.read(data)[0] == codec.codec_id
    assert codec.frame(codec.compress(images, _rate(codec))) == data  # deterministic
    assert codec.frame(codec.compress(images, c.rate_setting)) == data  # rate_setting gives the same stream
    decoded = []
    for opts in _decode_options(codec):
        y = codec.decompress_file(data, **opts)
        assert y.shape == images.shape and torch.isfinite(y).all() and y.min() >= 0 and y.max() <= 1
        assert torch.equal(codec.decompress_file(data, **opts), y)
        decoded.append(y)
    if len(decoded) > 1:  # the decodes are different decoders
        assert not torch.equal(decoded[0], decoded[-1])


@ALL
def test_update_rebuilds_the_same_tables(codec, files, images):
    """``update()`` recomputes the integer tables from the weights: a trained codec's are already those."""
    c, data = files[codec.name]
    before = codec.model_id()
    codec.update()
    assert codec.model_id() == before and codec.frame(codec.compress(images, c.rate_setting)) == data


def test_pillow_round_trips_are_the_formats_own_decodes(codecs, files, images):
    """The payload holds each image's complete file: Pillow's own decode of it is what we return."""
    from ldcodec.codecs.pillow import unpack_files

    for name, codec in codecs.items():
        if isinstance(codec, PillowCodec):
            c, data = files[name]
            parts = unpack_files(c.payload, c.count)
            assert parts[0] == codec.encode_image((images[0].permute(1, 2, 0) * 255).round().byte().numpy(),
                                                  c.rate_setting["quality"])
            ref = to_tensor(np.stack([codec.decode_image(p) for p in parts]))
            assert torch.equal(codec.decompress_file(data), ref)
            assert ((ref - images) ** 2).mean() < 0.02


# -- one way to count bits --------------------------------------------------------------------

@ALL
def test_bits_are_counted_the_one_way(codec, files, images):
    c, data = files[codec.name]
    actual = codec.actual_bits(c, data)
    assert actual == 8 * len(data) / N == 8 * container.file_bytes(len(c.payload), len(c.params), N) / N
    assert c.file_bits.shape == (N,) and c.file_bits.mean() >= actual
    alone = codec.frame(codec.compress(images[:1], c.rate_setting))
    if codec.name in RANDOMIZED:
        # image 0's own part of this encoding, framed alone; a lone compress draws other arrival
        # times (the encoder's randomness is keyed by the whole file), so its index lengths differ
        assert abs(c.file_bits[0] - 8 * len(alone)) <= 24
    else:
        assert c.file_bits[0] == 8 * len(alone)  # image 0's own file, really framed
    if c.estimated_bits is not None:
        assert c.estimated_bits.shape == (N,) and (c.estimated_bits >= 0).all()
        assert actual >= c.estimated_bits.mean() * 0.98 - 8
    if c.ideal_bits is not None:
        assert c.ideal_bits.shape == (N,)


def test_pillow_stores_the_bytes_its_files_share_once(codecs, files):
    for name, codec in codecs.items():
        if isinstance(codec, PillowCodec):
            c, data = files[name]
            container_bytes = container.file_bytes(0, len(c.params), 1)
            assert len(data) < c.file_bits.sum() / 8 - (N - 1) * container_bytes  # saves more than N - 1 containers


# -- bad input --------------------------------------------------------------------------------

@ALL
@pytest.mark.parametrize("kind", BAD)
def test_damaged_or_foreign_files_are_refused(codec, files, kind):
    message = _refused(codec, BAD[kind](files[codec.name][1], codec))
    assert EXPECTED.get(kind, "") in message


@ALL
def test_bad_decode_options_and_images_are_refused(codec, files, images):
    _refused(codec, files[codec.name][1], sharpness=3)
    with pytest.raises(LdcodecError, match="1x28x28"):
        codec.compress(torch.rand(2, 3, 32, 32), _rate(codec))
    with pytest.raises(LdcodecError, match="0 images"):
        codec.compress(images[:0], _rate(codec))
    with pytest.raises(LdcodecError, match="no rate setting"):
        codec.compress(images, {"speed": 1})


FUZZ = settings(max_examples=12, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


@ALL
@FUZZ
@given(position=st.integers(0, 2 ** 16), edit=st.sampled_from(["flip", "cut", "insert", "params"]),
       byte=st.integers(0, 255))
def test_damage_behind_a_valid_checksum_raises_only_ldcodec_errors(codec, files, position, edit, byte):
    """The checksum is recomputed, so the damage reaches the codec's own parameter and payload
    parsers and its decoders."""
    c = files[codec.name][0]
    payload, params = c.payload, c.params
    i = position % len(payload)
    if edit == "params":
        params = bytes((b + byte + position) % 256 for b in params)
    else:
        payload = {"flip": payload[:i] + bytes([payload[i] ^ (1 | byte)]) + payload[i + 1:],
                   "cut": payload[:i], "insert": payload[:i] + bytes([byte]) + payload[i:]}[edit]
    try:
        y = codec.decompress_file(reframe(files[codec.name][1], payload=payload, params=params))
    except LdcodecError as e:
        assert "\n" not in str(e)
        return
    assert y.shape == (N, *codec.image_shape) and torch.isfinite(y).all()


# -- determinism across processes -------------------------------------------------------------
# Another process with one thread decodes every file to the same PNG pixels as this one with two.

WORKER = r"""
import json, sys
import numpy as np, torch
from ldcodec.checkpoint import load_model
from ldcodec.codecs import get_codec, model_codec
from ldcodec.baselines.learned import build_learned
spec = json.loads(sys.argv[1])
out = {}
for name, s in spec.items():
    cls = get_codec(name)
    if s["kind"] == "pillow":
        codec = cls(tuple(s["shape"]))
    elif s["kind"] == "balle":
        saved = torch.load(s["path"])
        net = build_learned(**{k: v for k, v in saved["config"].items()})
        net.load_state_dict(saved["state"])
        codec = cls(net, tuple(s["shape"]), saved["lam"])
    else:
        model = load_model(s["path"])[0]
        model.cfg.codec.simulator = s.get("simulator", model.cfg.codec.simulator)
        codec = model_codec(model, s["path"])
    data = open(s["file"], "rb").read()
    for opts in s["opts"]:
        out[name + json.dumps(opts)] = codec.decompress_file(data, **opts).numpy()
np.savez(sys.argv[2], **out)
"""


def test_every_codec_decodes_identically_in_another_process(codecs, files, runs, tmp_path):
    spec, here = {}, {}
    torch.set_num_threads(2)
    try:
        for name, codec in codecs.items():
            if codec is None:
                continue
            (tmp_path / f"{name}.ld").write_bytes(files[name][1])
            entry = {"file": str(tmp_path / f"{name}.ld"), "shape": list(codec.image_shape),
                     "opts": _decode_options(codec)}
            if isinstance(codec, PillowCodec):
                entry["kind"] = "pillow"
            elif isinstance(codec, BalleCodec):
                torch.save({"config": codec.net.config, "state": codec.net.state_dict(), "lam": codec.lam},
                           tmp_path / f"{name}.pt")
                entry.update(kind="balle", path=str(tmp_path / f"{name}.pt"))
            else:
                entry.update(kind="model", path=str(runs["mlp-C" if name == "cdc" else "mlp-U"]))
                if codec.mode == "U":
                    entry["simulator"] = codec.sim.name
            spec[name] = entry
            for opts in entry["opts"]:
                here[name + json.dumps(opts)] = codec.decompress_file(files[name][1], **opts).numpy()
    finally:
        torch.set_num_threads(1)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    job = subprocess.run([sys.executable, "-c", WORKER, json.dumps(spec), str(tmp_path / "there.npz")], env=env,
                         capture_output=True, text=True, timeout=300)
    assert job.returncode == 0, job.stderr
    with np.load(tmp_path / "there.npz") as there:
        assert sorted(there.files) == sorted(here)
        for key, value in here.items():  # the same pixels (floats agree to rounding: threads reorder sums)
            assert np.array_equal(to_uint8(torch.from_numpy(there[key])), to_uint8(torch.from_numpy(value))), key
            assert np.abs(there[key] - value).max() < 1e-5, key


# -- the registry -----------------------------------------------------------------------------

def test_registry_names_and_ids():
    assert list(CODECS) == ["diffc", "cdc", "factorized", "hyperprior", "jpeg", "webp", "avif", "diffc-dq"]
    assert [c.codec_id for c in CODECS.values()] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert all(codec_name(c.codec_id) == n for n, c in CODECS.items())
    with pytest.raises(LdcodecError, match="diffc, cdc, factorized"):
        get_codec("jpeg2000")
    with pytest.raises(LdcodecError, match="codec id 99"):
        codec_name(99)


def test_model_codec_picks_the_checkpoints_mode(runs):
    assert model_codec(load_model(runs["mlp-U"])[0], runs["mlp-U"]).name == "diffc"
    model = load_model(runs["mlp-U"])[0]
    model.cfg.codec.simulator = "dq"  # codec.simulator picks the mode U codec
    assert model_codec(model, runs["mlp-U"]).name == "diffc-dq"
    model.cfg.codec.simulator = "vq"
    with pytest.raises(LdcodecError, match="pfr, dq"):
        model_codec(model, runs["mlp-U"])
    assert model_codec(load_model(runs["cnn-C"])[0], runs["cnn-C"]).name == "cdc"
    with pytest.raises(LdcodecError, match="mode U"):
        get_codec("cdc")(load_model(runs["mlp-U"])[0])


def test_the_readme_example_runs(runs, images):
    """The README's library example, as written, on a tiny run."""
    from conftest import REPO

    text = (REPO / "README.md").read_text()
    block = text[text.index("As a library"):]
    code = block[block.index("```python") + len("```python"):block.index("```", block.index("```python") + 3)]
    scope = {"x": images}
    exec(code.replace('"runs/m1"', repr(str(runs["mlp-U"]))), scope)  # noqa: S102
    assert scope["y"].shape == images.shape and container.read(scope["data"])[0] == get_codec("diffc").codec_id
