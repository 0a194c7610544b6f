"""Mode U (DiffC, Theis et al. 2022) of the format 1 codec :class:`ldcodec.codec.Codec`, and its
temporary contract adapter ``diffc`` (:mod:`ldcodec.codecs._diffc_legacy`).

Two tiny trained mode U cells (``conftest.CELLS``) cover both latent kinds (gauss, delta), both
ranks (MLP ``(B, d)``, CNN ``(B, C, h, w)``) and both diffusion families:

- the decoder rebuilds the encoder's chain bit for bit; the mse decode approaches the autoencoder's
  reconstruction as ``t -> 0``;
- rates: the per-chunk PFR index cost against ``KL + log2(KL + 1) + 4`` (Li & El Gamal 2018), rate
  monotone in the stop time ``t``, the ``bits`` budget, progressive decoding of a prefix of the steps;
- bad rate settings are refused. Round trips, bit counting, damaged and foreign files of every codec
  are the contract suite's (``test_codec_contract.py``); mode C is tested in ``test_cdc.py``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ldcodec.checkpoint import load_model
from ldcodec.codec import Codec, coding_times
from ldcodec.codecs import container, get_codec
from ldcodec.coding import bitstream, rcc
from ldcodec.data import load_split, to_tensor
from ldcodec.errors import LdcodecError
from ldcodec.model import LatentCodec

from conftest import REPO, tiny_config

U_CELLS = ["mlp-U", "cnn-U"]
T = 0.5  # stop time of the round trips
N = 4  # images per round trip


def check_images(y: torch.Tensor, n: int) -> None:
    assert y.shape == (n, 1, 28, 28) and not y.requires_grad
    assert torch.isfinite(y).all() and y.min() >= 0 and y.max() <= 1


@pytest.fixture(scope="module")
def codecs(runs) -> dict[str, Codec]:
    return {name: Codec(load_model(runs[name])[0]) for name in U_CELLS}


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return to_tensor(load_split("mnist", "test", limit=8)[0])


@pytest.fixture(scope="module")
def flow_streams(codecs, images) -> dict[str, bytes]:
    """Each cell's format 1 stream of the first ``N`` images with the default decode method."""
    return {name: codec.compress(images[:N], "flow", t=T).stream for name, codec in codecs.items()}


# -- the contract adapter ---------------------------------------------------------------------

@pytest.mark.parametrize("name", U_CELLS)
def test_diffc_adapter_passes_rates_and_decode_options_through(runs, codecs, images, flow_streams, name):
    diffc = get_codec("diffc")(load_model(runs[name])[0])
    c = diffc.compress(images[:N], {"t_stop": T, "decode": "realism"})
    assert c.rate_setting == {"t_stop": T, "coding_steps": codecs[name].cfg.codec.coding_steps}
    assert container.split_parts(c.payload, N) == bitstream.read_stream(flow_streams[name])[1]
    data = diffc.frame(c)
    assert torch.equal(diffc.decompress_file(data), codecs[name].decompress(flow_streams[name], decode="realism"))
    assert torch.equal(diffc.decompress_file(data, decode="mse", max_steps=1),
                       codecs[name].decompress(flow_streams[name], decode="mse", max_steps=1))
    budget = diffc.compress(images[:N], {"bits": 300.0, "coding_steps": 3})
    assert budget.rate_setting["coding_steps"] == 3 and 0 < budget.rate_setting["t_stop"] < 1
    with pytest.raises(LdcodecError, match="not both"):
        diffc.compress(images[:N], {"t_stop": T, "bits": 300.0})


# -- mode U of the format 1 codec -------------------------------------------------------------

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


def test_model_without_diffusion_prior_is_refused():
    model = LatentCodec(tiny_config(REPO / "configs" / "grid" / "mnist-mlp-ddpm-uncond-gauss.yaml",
                                    "model.prior=normal"))
    with pytest.raises(LdcodecError, match="diffusion prior"):
        Codec(model)


@pytest.mark.parametrize("name", U_CELLS)
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
