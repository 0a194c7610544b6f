"""The real-bit codec (DESIGN.md §3): mode U (DiffC, Theis et al. 2022) and mode C (CDC, Yang & Mandt 2023).

Four tiny grid cells, trained once for the module, cover both modes, both latent kinds (gauss,
delta), both ranks (MLP ``(B, d)``, CNN ``(B, C, h, w)``) and both diffusion families:

- round trips for every decode method (shape, range, repeatability, accounting);
- rates: mode C's actual bits against the factorised density's estimate, mode U's per-chunk
  PFR index cost against ``KL + log2(KL + 1) + 4`` (Li & El Gamal 2018), rate monotone in the
  stop time ``t``, the ``bits`` budget, progressive decoding of a prefix of the steps;
- bad input: damaged, truncated, foreign and mutated streams (hypothesis) raise ``LdcodecError``
  only, with a one-line message; bad rate settings and images are refused.

The command line (``ldcodec compress`` / ``decompress``) is tested in ``test_codec_cli.py``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ldcodec.checkpoint import load_model
from ldcodec.codec import DECODES, Codec, coding_times
from ldcodec.coding import bitstream, rcc
from ldcodec.data import load_split, to_tensor
from ldcodec.errors import LdcodecError
from ldcodec.model import LatentCodec
from ldcodec.train import train

from conftest import REPO, tiny_config

# name -> (grid cell, overrides). The mode C codes are large enough for >= 100 bits per image.
CELLS = {
    "mlp-U": ("mnist-mlp-ddpm-uncond-gauss", ()),
    "cnn-U": ("mnist-cnn-sde-uncond-delta", ()),
    "mlp-C": ("mnist-mlp-sde-cond-delta", ("cond.code_dim=64",)),
    "cnn-C": ("mnist-cnn-ddpm-cond-gauss", ("cond.code_channels=4",)),
}
TRAIN_STEPS = 20
T = 0.5  # mode U stop time of the round trips
N = 4  # images per round trip


def train_cells(root: Path, names=tuple(CELLS)) -> dict[str, Path]:
    """Train the named cells into ``root/<name>`` -> run folders."""
    runs = {}
    for name in names:
        cell, extra = CELLS[name]
        runs[name] = root / name
        cfg = tiny_config(REPO / "configs" / "grid" / f"{cell}.yaml", f"train.steps={TRAIN_STEPS}", *extra)
        train(cfg, runs[name], progress=False)
    return runs


def rate(codec: Codec, t: float = T) -> dict:
    """The rate keyword of ``compress``: mode U needs ``t``, mode C takes none."""
    return {"t": t} if codec.mode == "U" else {}


def flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def reseal(stream: bytes, payload: bytes, image: int = 0) -> bytes:
    """``stream`` with one image's payload replaced, behind freshly computed checksums."""
    header, payloads = bitstream.read_stream(stream)
    payloads[image] = payload
    return bitstream.write_stream(header, payloads)


def _random(n: int) -> bytes:
    return np.random.default_rng(0).bytes(n)


def _version(stream: bytes) -> bytes:
    return stream[:4] + bytes([bitstream.FORMAT_VERSION + 1]) + stream[5:]


# Damaged variants of a real ``stream`` (and ``foreign``, a stream of another model), by kind.
BAD_STREAMS = {
    "empty": lambda stream, foreign: b"",
    "truncated magic": lambda stream, foreign: stream[:3],
    "truncated header": lambda stream, foreign: stream[:20],
    "truncated before header crc": lambda stream, foreign: stream[: bitstream.HEADER_BYTES - 1],
    "header only": lambda stream, foreign: stream[: bitstream.HEADER_BYTES],
    "truncated payload": lambda stream, foreign: stream[:-1],
    "trailing byte": lambda stream, foreign: stream + b"\0",
    "flipped header bit": lambda stream, foreign: flip(stream, 8 * 30 + 3),
    "flipped payload bit": lambda stream, foreign: flip(stream, 8 * len(stream) - 5),
    "random bytes": lambda stream, foreign: _random(len(stream)),
    "random after magic": lambda stream, foreign: bitstream.MAGIC + bytes([bitstream.FORMAT_VERSION])
    + _random(len(stream) - 5),
    "format version": lambda stream, foreign: _version(stream),
    "other model": lambda stream, foreign: foreign,
    # Valid checksums around data no encoder writes: the range decoder itself must object
    # (constriction raises AssertionError on all-ones words for the factorised density).
    "ones payload with valid crc": lambda stream, foreign: reseal(stream, b"\xff" * 16),
    "odd payload length with valid crc": lambda stream, foreign: reseal(stream, b"\x00" * 5),
}


def check_images(y: torch.Tensor, n: int) -> None:
    assert y.shape == (n, 1, 28, 28) and not y.requires_grad
    assert torch.isfinite(y).all() and y.min() >= 0 and y.max() <= 1


@pytest.fixture(scope="session")
def runs(tmp_path_factory) -> dict[str, Path]:
    """The four tiny trained runs, shared (read-only) with test_codec_cli.py."""
    return train_cells(tmp_path_factory.mktemp("codec-runs"))


@pytest.fixture(scope="session")
def codecs(runs) -> dict[str, Codec]:
    return {name: Codec(load_model(run)[0]) for name, run in runs.items()}


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return to_tensor(load_split("mnist", "test", limit=8)[0])


@pytest.fixture(scope="module")
def flow_streams(codecs, images) -> dict[str, bytes]:
    """Each cell's stream of the first ``N`` images with the default decode method."""
    return {name: codec.compress(images[:N], "flow", **rate(codec)).stream for name, codec in codecs.items()}


@pytest.fixture(scope="module")
def foreign_streams(runs, codecs, images) -> dict[str, bytes]:
    """Per cell, a stream of the same cell whose weights differ in one entry (another model hash)."""
    out = {}
    for name, run in runs.items():
        model = load_model(run)[0]
        with torch.no_grad():
            next(model.ae.parameters()).view(-1)[0] += 1e-3
        other = Codec(model)
        assert other.hash != codecs[name].hash
        out[name] = other.compress(images[:N], **rate(other)).stream
    return out


# -- round trips ------------------------------------------------------------------------------

@pytest.mark.parametrize("decode", DECODES)
@pytest.mark.parametrize("name", CELLS)
def test_round_trip(codecs, images, flow_streams, name, decode):
    codec, x = codecs[name], images[:N]
    r = codec.compress(x, decode=decode, **rate(codec))
    y = codec.decompress(r.stream)
    check_images(y, N)
    assert torch.equal(codec.decompress(r.stream), y)
    header, payloads = bitstream.read_stream(r.stream)
    assert (header.mode, header.decode_method, len(payloads)) == (codec.mode, decode, N)
    assert r.actual_bits.shape == r.estimated_bits.shape == (N,)
    assert r.actual_bits.mean() == pytest.approx(8 * len(r.stream) / N, rel=1e-12)
    assert (r.estimated_bits >= 0).all() and r.seconds > 0
    # The method is one header byte: the payloads are the flow stream's, and overriding the flow
    # stream's method decodes the same images; the methods themselves differ.
    flow = flow_streams[name]
    assert bitstream.read_stream(flow)[1] == payloads
    assert torch.equal(codec.decompress(flow, decode=decode), y)
    if decode != "flow":
        assert not torch.equal(codec.decompress(flow), y)


def test_compress_is_deterministic(codecs, images, flow_streams):
    for name, codec in codecs.items():
        assert codec.compress(images[:N], **rate(codec)).stream == flow_streams[name]


@pytest.mark.parametrize("name", ["mlp-U", "cnn-U"])
def test_mode_u_decoder_rebuilds_the_encoders_chain_bit_for_bit(codecs, images, monkeypatch, name):
    """Every step's sample ``z_{t_j}`` the decoder rebuilds equals the one the encoder sent."""
    encode, decode, sent, rebuilt = rcc.encode_step, rcc.decode_step, {}, {}

    def encoding(mu_q, mu_p, s, seed, step, **kw):
        code, sample = encode(mu_q, mu_p, s, seed, step, **kw)
        sent[seed, step] = sample
        return code, sample

    def decoding(mu_p, s, seed, step, code):
        rebuilt[seed, step] = decode(mu_p, s, seed, step, code)
        return rebuilt[seed, step]

    monkeypatch.setattr(rcc, "encode_step", encoding)
    monkeypatch.setattr(rcc, "decode_step", decoding)
    stream = codecs[name].compress(images[:N], t=0.4).stream
    rebuilt.clear()  # encode_step calls decode_step itself
    codecs[name].decompress(stream)
    assert len(sent) >= 2 * N and sent.keys() == rebuilt.keys()
    assert all(np.array_equal(sent[key], rebuilt[key]) for key in sent)


@pytest.mark.parametrize("name", ["mlp-C", "cnn-C"])
def test_mode_c_code_round_trips_exactly(codecs, images, flow_streams, name):
    model = codecs[name].model
    with torch.no_grad():
        y = torch.round(model.code(model.ae.encode(images[:N]).mean))
    _, payloads = bitstream.read_stream(flow_streams[name])
    assert torch.equal(model.code_density.decompress(payloads, tuple(y.shape[1:])), y)


def test_mode_u_mse_decode_approaches_the_autoencoder_reconstruction(codecs, images):
    """As t -> 0 the sent ``z_t`` approaches ``z0 = mean``: the decoded image tends to ``decode(mean)``.

    Fails if the decoder's chain differs from the encoder's (a wrong candidate, mean or seed).
    """
    codec, x = codecs["mlp-U"], images[:N]
    with torch.no_grad():
        reconstruction = codec.model.ae.decode(codec.model.ae.encode(x).mean)
    err = [((codec.decompress(codec.compress(x, "mse", t=t).stream) - reconstruction) ** 2).mean().item()
           for t in (0.7, 0.3, 0.05)]
    assert err[0] > err[1] > err[2] and err[2] < 0.02 * err[0]


# -- rates ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["mlp-C", "cnn-C"])
def test_mode_c_actual_bits_match_the_estimate(codecs, images, name):
    """Actual = estimate + header/record share + the range coder's flush (< 10%), at >= 100 bits."""
    r = codecs[name].compress(images)
    _, payloads = bitstream.read_stream(r.stream)
    framing = np.mean([8 * (bitstream.record_bytes(len(p)) + bitstream.HEADER_BYTES / len(payloads))
                       for p in payloads])
    estimate = r.estimated_bits.mean()
    assert estimate >= 100
    excess = r.actual_bits.mean() - (estimate + framing)
    assert -0.01 * estimate <= excess <= 0.1 * (estimate + framing)


def _chunk_costs(args: tuple, code: rcc.StepCode) -> tuple[np.ndarray, np.ndarray]:
    """Per-chunk KL and PFR index cost (bucket + offset bits), both in bits, of one coded step."""
    mu_q, mu_p, s, seed, step = args
    v = (np.asarray(mu_q) - np.asarray(mu_p)) / s
    kl_dims = v * v / (2 * math.log(2))
    perm = rcc._permutation(seed, step, code.dim)
    kl = np.concatenate([np.full(int(r), kl_dims[perm[a:z]].sum() / r)
                         for (a, z), r in zip(rcc._blocks(code.dim, code.groups), code.slices)])
    buckets, _, nbits = rcc._split_indices(code.indices)
    table = rcc._index_table(code.budget, code.log2_candidates).astype(np.float64)
    return kl, rcc.TABLE_PRECISION - np.log2(table[buckets]) + nbits


@pytest.mark.parametrize("name, t, n, min_chunks", [("mlp-U", 0.1, 8, 300), ("cnn-U", 0.3, 4, 50)])
def test_mode_u_index_cost_within_the_pfr_bound(codecs, images, monkeypatch, name, t, n, min_chunks):
    """Per chunk, the index costs at most ``KL + log2(KL + 1) + 4`` bits on average (and at least KL);
    the side information and the coder flush come on top, and nothing else is in the payload."""
    encode, coded = rcc.encode_step, []

    def recording(mu_q, mu_p, s, seed, step, **kw):
        code, sample = encode(mu_q, mu_p, s, seed, step, **kw)
        coded.append(((mu_q, mu_p, s, seed, step), code))
        return code, sample

    monkeypatch.setattr(rcc, "encode_step", recording)
    r = codecs[name].compress(images[:n], t=t)
    kls, costs = [], []
    for args, code in coded:
        kl, cost = _chunk_costs(args, code)
        assert kl.sum() == pytest.approx(code.kl_bits, rel=1e-9)
        assert cost.sum() <= code.num_bits()
        kls.append(kl)
        costs.append(cost)
    kl, cost = np.concatenate(kls), np.concatenate(costs)
    assert len(kl) >= min_chunks
    assert kl.mean() <= cost.mean() <= (kl + np.log2(kl + 1) + 4).mean()
    assert sum(c.kl_bits for _, c in coded) / n == pytest.approx(r.estimated_bits.mean(), rel=1e-9)
    _, payloads = bitstream.read_stream(r.stream)
    seeds = list(dict.fromkeys(args[3] for args, _ in coded))  # encoding order is step-major
    for seed, payload in zip(seeds, payloads):
        info = sum(c.num_bits() for args, c in coded if args[3] == seed)
        assert 0 <= 8 * len(payload) - info <= 64


@pytest.mark.parametrize("name", ["mlp-U", "cnn-U"])
def test_mode_u_estimated_bits_grow_as_t_decreases(codecs, images, name):
    codec = codecs[name]
    estimates = [codec.compress(images[:N], t=t).estimated_bits.mean() for t in (0.7, 0.5, 0.3)]
    assert estimates[0] < estimates[1] < estimates[2]


@pytest.mark.parametrize("name, bits, n", [("mlp-U", 400.0, 8), ("cnn-U", 300.0, 4)])
def test_mode_u_bit_budget_is_met(codecs, images, name, bits, n):
    r = codecs[name].compress(images[:n], bits=bits)
    assert 0 < r.rate < 1
    assert abs(r.actual_bits.mean() - bits) <= 0.15 * bits


@pytest.mark.parametrize("name", ["mlp-U", "cnn-U"])
def test_mode_u_prefix_of_the_steps_decodes(codecs, flow_streams, name):
    """``max_steps = k`` decodes the image of time ``t_k`` (progressive); ``k >= K`` is the full decode."""
    codec, stream = codecs[name], flow_streams[name]
    header, _ = bitstream.read_stream(stream)
    steps = len(coding_times(codec.model.prior.process, header.steps, header.rate)) - 1
    assert steps >= 2
    full = codec.decompress(stream)
    for k in range(steps):
        coarse = codec.decompress(stream, max_steps=k)
        check_images(coarse, N)
        assert not torch.equal(coarse, full)
    assert torch.equal(codec.decompress(stream, max_steps=steps), full)
    assert torch.equal(codec.decompress(stream, max_steps=steps + 3), full)


# -- bad input --------------------------------------------------------------------------------

def _expect_error(codec: Codec, data: bytes) -> str:
    with pytest.raises(LdcodecError) as e:
        codec.decompress(data)
    message = str(e.value)
    assert message and "\n" not in message
    return message


@pytest.mark.parametrize("kind", BAD_STREAMS)
@pytest.mark.parametrize("name", list(CELLS))
def test_bad_streams_raise_a_clear_error(codecs, flow_streams, foreign_streams, name, kind):
    message = _expect_error(codecs[name], BAD_STREAMS[kind](flow_streams[name], foreign_streams[name]))
    expected = {"format version": "version", "other model": "checkpoint", "flipped header bit": "corrupt",
                "flipped payload bit": "corrupt", "ones payload with valid crc": "corrupt"}
    assert expected.get(kind, "") in message


def test_stream_of_the_other_mode_is_refused(codecs, flow_streams):
    assert "checkpoint" in _expect_error(codecs["mlp-U"], flow_streams["mlp-C"])
    assert "checkpoint" in _expect_error(codecs["cnn-C"], flow_streams["cnn-U"])


def _mutate(data: bytes, mutation: tuple) -> bytes:
    kind, position, extra = mutation
    if kind == "truncate":
        return data[: position % len(data)]
    if kind == "flip":
        for bit in extra:
            data = flip(data, bit % (8 * len(data)))
        return data
    position %= len(data) + 1
    return data[:position] + extra + data[position:]


MUTATIONS = st.one_of(
    st.tuples(st.just("truncate"), st.integers(0, 2**20), st.just(b"")),
    st.tuples(st.just("flip"), st.just(0), st.lists(st.integers(0, 2**24), min_size=1, max_size=4)),
    st.tuples(st.just("insert"), st.integers(0, 2**20), st.binary(min_size=1, max_size=8)),
)
FUZZ = settings(max_examples=30, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def _decode_or_refuse(codec: Codec, data: bytes) -> None:
    """Decoding either works (harmless damage) or raises ``LdcodecError``; nothing else escapes."""
    try:
        y = codec.decompress(data)
    except LdcodecError as e:
        assert "\n" not in str(e)
        return
    check_images(y, len(y))


@pytest.mark.parametrize("name", ["mlp-U", "cnn-C"])
@FUZZ
@given(mutation=MUTATIONS)
def test_mutated_streams_raise_only_ldcodec_errors(codecs, flow_streams, name, mutation):
    stream = flow_streams[name]
    damaged = _mutate(stream, mutation)
    assume(damaged != stream)
    _decode_or_refuse(codecs[name], damaged)


@pytest.mark.parametrize("name", ["mlp-U", "mlp-C"])
@FUZZ
@given(mutation=MUTATIONS, image=st.integers(0, N - 1))
def test_damaged_payloads_behind_valid_checksums_raise_only_ldcodec_errors(codecs, flow_streams, name,
                                                                          mutation, image):
    """The CRCs are recomputed, so the damage reaches the range decoder and the RCC / density decoders."""
    header, payloads = bitstream.read_stream(flow_streams[name])
    payloads[image] = _mutate(payloads[image], mutation)
    _decode_or_refuse(codecs[name], bitstream.write_stream(header, payloads))


# -- bad settings -----------------------------------------------------------------------------

def test_images_that_do_not_fit_are_refused(codecs, images):
    for codec in codecs.values():
        with pytest.raises(LdcodecError, match="28x28"):
            codec.compress(torch.rand(2, 3, 32, 32), **rate(codec))
        with pytest.raises(LdcodecError, match="0 images"):
            codec.compress(images[:0], **rate(codec))


def test_mode_c_refuses_a_rate_setting(codecs, images):
    for name in ("mlp-C", "cnn-C"):
        for kw in ({"t": 0.5}, {"bits": 200.0}):
            with pytest.raises(LdcodecError, match="mode C"):
                codecs[name].compress(images[:2], **kw)


@pytest.mark.parametrize("kw, match", [
    ({}, "--t T"), ({"t": 0.0}, "outside"), ({"t": 1.0}, "outside"), ({"t": 1.5}, "outside"),
    ({"t": float("nan")}, "outside"), ({"t": 0.99999999}, "float32"), ({"t": 1e-50}, "float32"),
    ({"t": 1e-7}, "smallest time"),
    ({"bits": 0.0}, "positive"), ({"bits": -5.0}, "positive"), ({"bits": float("nan")}, "positive"),
    ({"bits": float("inf")}, "positive"), ({"t": 0.5, "decode": "sharp"}, "decode method"),
])
def test_mode_u_refuses_bad_rate_settings(codecs, images, kw, match):
    with pytest.raises(LdcodecError, match=match):
        codecs["mlp-U"].compress(images[:2], **kw)


def test_negative_max_steps_is_refused(codecs, flow_streams):
    with pytest.raises(LdcodecError, match="max-steps"):
        codecs["mlp-U"].decompress(flow_streams["mlp-U"], max_steps=-1)
    with pytest.raises(LdcodecError, match="mode U streams"):
        codecs["mlp-C"].decompress(flow_streams["mlp-C"], max_steps=2)


def test_decode_method_override_is_checked(codecs, flow_streams):
    with pytest.raises(LdcodecError, match="decode method"):
        codecs["mlp-U"].decompress(flow_streams["mlp-U"], decode="sharp")


def test_model_without_diffusion_prior_is_refused():
    model = LatentCodec(tiny_config(REPO / "configs" / "grid" / "mnist-mlp-ddpm-uncond-gauss.yaml",
                                    "model.prior=normal"))
    with pytest.raises(LdcodecError, match="diffusion prior"):
        Codec(model)


@pytest.mark.parametrize("name", list(CELLS))
def test_realism_decode_does_not_depend_on_the_batching(runs, codecs, images, flow_streams, name):
    """Each image's sampling noise is keyed by its own stream seed, not by its batch."""
    model = codecs[name].model
    whole = Codec(model, batch_size=len(images)).decompress(flow_streams[name], decode="realism")
    pieces = Codec(model, batch_size=1).decompress(flow_streams[name], decode="realism")
    torch.testing.assert_close(whole, pieces, atol=1e-4, rtol=0)


def test_mode_u_coding_steps_per_stream(codecs, images):
    """More coding steps lower the ideal KL (the prior is used more finely); any K decodes."""
    codec = codecs["mlp-U"]
    est = {}
    for k in (1, 3, 8):
        r = codec.compress(images[:N], t=0.3, steps=k)
        assert bitstream.read_stream(r.stream)[0].steps == k
        y = codec.decompress(r.stream, decode="mse")
        assert y.shape == images[:N].shape
        est[k] = r.estimated_bits.mean()
    assert est[8] < est[1]
    with pytest.raises(LdcodecError, match="coding-steps"):
        codec.compress(images[:N], t=0.3, steps=65)
