"""Mode U with dithered quantisation (codec diffc-dq): the step's noise law, the rates, the theory
check on the exact Gaussian source, the excess table, damaged and foreign streams."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ldcodec.codecs import container, model_codec, simulator_codec
from ldcodec.codecs.diffc import DiffC, load_or_build_tables
from ldcodec.coding import candidates as cand
from ldcodec.coding import dq, range_coder
from ldcodec.config import Config
from ldcodec.errors import LdcodecError
from ldcodec.metrics.gaussian_model import ExactGaussianModel
from ldcodec.metrics.gaussian_source import GaussianSource, check_diffc_point

D, N = 16, 200


def gaussian_model(dim: int = D, ratio: float = 0.8):
    var = np.array(GaussianSource.geometric(dim, ratio).variances)
    cfg = Config()
    cfg.data.dataset = "gaussian"
    return ExactGaussianModel(var, cfg), var


@pytest.fixture(scope="module")
def gauss():
    model, var = gaussian_model()
    codec = simulator_codec("dq")(model, load_or_build_tables(model), ideal_stride=1)  # as evaluate's theory check
    x = GaussianSource(tuple(var)).sample(N, seed=1).view(N, *codec.image_shape)
    c = codec.compress(x, {"t_stop": 0.1, "decode": "mse"})
    return codec, var, x, c


def test_round_trip_is_bit_exact_and_deterministic(gauss):
    codec, var, x, c = gauss
    data = codec.frame(c)
    assert container.read(data)[0] == 8
    y = codec.decompress_file(data)
    assert torch.equal(y, codec.decompress_file(data))
    again = codec.compress(x, c.rate_setting)
    assert again.payload == c.payload and again.params == c.params
    # the decoded z_t is Delta (k - w) with integer k on the last step's lattice
    from ldcodec.coding.simulator import step_word
    from ldcodec.diffusion.coding_grid import step_densities

    z, level = codec.decode_latents(c.params, c.payload, c.count)
    z = z.flatten(1)
    a, b, _ = codec.plan(*codec._parse_params(c.params, c.payload)[:2])[-1]
    assert b == level
    delta = math.sqrt(12 * step_densities(codec.model.prior.process, codec.tables, a, b)[2])
    k = z / delta + cand.dither(codec.key, step_word(a, b), torch.arange(N), D)
    assert z.shape == (N, D) and (k - k.round()).abs().max() < 1e-9


def test_step_noise_is_uniform_with_the_posterior_variance(gauss):
    """z_s - mu_q over many images and dims: variance var_q (ratio within 3 %), flat on
    [-Delta/2, Delta/2) (a Kolmogorov-Smirnov distance below 0.01), mean 0. A wrong Delta (e.g.
    sqrt(var_q), or a missing dither) fails each of them."""
    codec, var, x, _ = gauss
    n = 2000
    x = GaussianSource(tuple(var)).sample(n, seed=4).view(n, *codec.image_shape)
    z0 = x.flatten(1).double()
    a, b = 0, codec.tables.level_of_time(0.2)
    step = codec._step(codec._z1(range(n)), a, b, None, torch.arange(n))
    w, centre, frac, sigma, delta = codec.sim._model(step)
    mu_q, var_q = step.mu_q(z0), step.var_q
    k, z_s = dq.quantise_step(mu_q, w, delta)
    assert delta == pytest.approx(math.sqrt(12 * var_q))
    err = (z_s - mu_q).flatten()
    assert abs(float(err.var()) / var_q - 1) < 0.03
    assert abs(float(err.mean())) < 0.02 * math.sqrt(var_q)
    u = np.sort((err / delta + 0.5).numpy())
    ks = np.abs(u - (np.arange(len(u)) + 0.5) / len(u)).max()
    assert ks < 0.01 and u.min() >= 0 and u.max() < 1
    # independent of mu_q: its correlation with the error vanishes
    assert abs(float(torch.corrcoef(torch.stack([err, mu_q.flatten()]))[0, 1])) < 0.03
    # without the dither the error is not independent of mu_q (deterministic rounding)
    _, z_plain = dq.quantise_step(mu_q, torch.zeros_like(w), delta)
    assert abs(float((z_plain - mu_q).var()) / var_q - 1) > 0.03 or \
        abs(float(torch.corrcoef(torch.stack([(z_plain - mu_q).flatten(), mu_q.flatten()]))[0, 1])) > 0.03


def test_dither_is_batch_independent_and_uniform():
    images = torch.arange(64)
    w = cand.dither(7, 3, images, 10)
    assert w.shape == (64, 10) and w.dtype == torch.float64
    assert torch.equal(w[5:9], cand.dither(7, 3, images[5:9], 10))
    assert not torch.equal(w, cand.dither(7, 4, images, 10)) and not torch.equal(w, cand.dither(8, 3, images, 10))
    big = cand.dither(1, 0, torch.arange(4096), 16).flatten()
    assert big.min() > -0.5 and big.max() < 0.5 and abs(float(big.var()) - 1 / 12) < 0.002


def test_estimated_is_the_coded_cost_and_gaussian_theory_holds(gauss):
    codec, var, x, c = gauss
    data = codec.frame(c)
    actual = codec.actual_bits(c, data)
    payload_bits = 8 * len(c.payload) / N
    assert c.estimated_bits.mean() <= payload_bits + 32 / N  # estimated <= actual + the coder's flush
    assert payload_bits < c.estimated_bits.mean() + 0.5  # and the coder wastes almost nothing
    # the file of one vector: its own symbols and at most ~32 bits of flush
    assert (c.file_bits <= c.estimated_bits + 8 * 11 + 40).all()
    y = codec.decompress_file(data)
    mse = ((y - x) ** 2).flatten(1).mean(1).numpy()
    check = check_diffc_point(var, codec.tables.snr[c.extra["level"]], c.ideal_bits, c.estimated_bits, actual, mse)
    assert abs(check.mse / check.mmse - 1) < 0.1  # the linear mse decode sees the right variances
    assert abs(c.extra["noise_variance_ratio"] - 1) < 0.05
    # the uniform channel costs its excess: about 0.25 bits per dim per step over the Gaussian KL,
    # somewhat less in dims with little information
    steps = c.extra["chain_steps"]
    assert 0.1 * D * steps < c.extra["excess_bits"] < 0.27 * D * steps
    assert c.extra["gaussian_kl_bits"] == pytest.approx(check.information, rel=0.1)


def test_theory_check_catches_an_undercounting_dq_chain(gauss, monkeypatch):
    codec, var, x, _ = gauss
    true = dq.symbol_bits
    monkeypatch.setattr(dq, "symbol_bits", lambda *a: 0.7 * true(*a))
    c = codec.compress(x, {"t_stop": 0.1, "decode": "mse"})
    y = codec.decompress(c.params, c.payload, c.count)
    mse = ((y - x) ** 2).flatten(1).mean(1).numpy()
    with pytest.raises(LdcodecError, match="theory check failed"):
        check_diffc_point(var, codec.tables.snr[c.extra["level"]], c.ideal_bits, c.estimated_bits,
                          8 * len(c.payload) / N, mse)


def test_symbol_bits_match_the_range_coder():
    """-log2 P(j) of the quantised Gaussian equals what constriction spends (long streams)."""
    g = torch.Generator().manual_seed(0)
    n = 20000
    sigma = dq.quantise(torch.rand(8, generator=g, dtype=torch.float64) * 3, floor=True)
    frac = dq.quantise(torch.rand(n // 8, 8, generator=g, dtype=torch.float64) - 0.5)
    j = torch.round(frac + sigma * torch.randn(n // 8, 8, generator=g, dtype=torch.float64)).to(torch.int64)
    enc = range_coder.new_encoder()
    r = dq.step_range(sigma)
    dq.write_symbols(enc, j.numpy(), frac.numpy(), sigma.numpy(), r)
    coded = 8 * len(range_coder.encoder_bytes(enc))
    bits = float(dq.symbol_bits(j, frac, sigma).sum())
    assert abs(coded - bits) < 0.002 * bits + 64
    dec = range_coder.decoder_from_bytes(range_coder.encoder_bytes(enc))
    assert np.array_equal(dq.read_symbols(dec, frac.numpy(), sigma.numpy(), r), j.numpy())
    with pytest.raises(LdcodecError, match="too far"):
        dq.write_symbols(range_coder.new_encoder(), np.array([[r + 1]]), np.zeros((1, 1)), np.ones(1), r)


def test_excess_table_is_the_uniform_channels_information():
    for jdx in (1, 4, 16, 64, 128):
        b = jdx / dq.EXCESS_STEPS
        r = 2 ** (2 * b) - 1
        assert abs(dq.EXCESS[jdx] - 1024 * (dq.uniform_channel_bits(r) - b)) <= 1
    assert abs(dq.uniform_channel_bits(2.0**20) - 10 - 0.5 * math.log2(2 * math.pi * math.e / 12)) < 1e-3
    assert list(dq.excess_bits(np.array([0, 1024 // 64, 2048, 10**6]))) == [0, dq.EXCESS[1], dq.EXCESS[128],
                                                                            dq.EXCESS[-1]]


def test_fewer_steps_are_predicted_cheaper_on_the_exact_gaussian_source(gauss):
    """No discretisation gap there, only the per-step excess: one step is best, and measured so."""
    codec, var, x, _ = gauss
    stop = codec.tables.level_of_time(0.1)
    assert codec._steps(stop, None) == 1
    one, three = (codec.compress(x, {"t_stop": 0.1, "coding_steps": k}).estimated_bits.mean() for k in (1, 3))
    assert one < three


def test_damaged_streams_are_refused(gauss):
    """A damaged file fails its checksum; behind a valid checksum the canonical-coding check refuses
    a good share of edits (measured 22 of 40 single-byte edits; the PFR stream: 37 of 40) and the
    rest decode to other latents, never to another exception."""
    codec, var, x, c = gauss
    data = codec.frame(c)
    for pos in (12, len(data) // 2, len(data) - 3):
        bad = bytearray(data)
        bad[pos] ^= 0x24
        with pytest.raises(LdcodecError, match="checksum"):
            codec.decompress_file(bytes(bad))
    rng = np.random.default_rng(0)
    refused = 0
    for _ in range(40):
        bad = bytearray(c.payload)
        bad[int(rng.integers(1, len(bad)))] ^= int(rng.integers(1, 256))
        try:
            y = codec.decompress(c.params, bytes(bad), c.count)
            assert torch.isfinite(y).all()
        except LdcodecError:
            refused += 1
    assert refused >= 10
    for bad in (c.payload + b"\x01", c.payload + b"\x00"):
        with pytest.raises(LdcodecError):
            codec.decompress(c.params, bad, c.count)
    # a payload cut behind a valid checksum may be the canonical coding of other, likely symbols (a DQ
    # step's symbols are mostly near-certain): it must raise LdcodecError or decode to finite values
    try:
        assert torch.isfinite(codec.decompress(c.params, c.payload[:-2], c.count)).all()
    except LdcodecError:
        pass


def test_pfr_and_dq_streams_are_refused_by_the_other_codec(gauss):
    codec, var, x, c = gauss
    pfr = DiffC(codec.model, codec.tables)
    assert pfr.model_id() == codec.model_id()  # one model: only the codec id tells them apart
    p = pfr.compress(x[:8], {"t_stop": 0.3})
    with pytest.raises(LdcodecError, match="written by codec diffc, not diffc-dq"):
        codec.decompress_file(pfr.frame(p))
    with pytest.raises(LdcodecError, match="written by codec diffc-dq, not diffc"):
        pfr.decompress_file(codec.frame(c))
    # the other codec's payload (of some hundred bytes) behind this codec's id is not the canonical
    # coding of anything
    p = pfr.compress(x, {"t_stop": 0.1})
    with pytest.raises(LdcodecError):
        codec.decompress(p.params, p.payload, p.count)


def test_progressive_prefix_and_config_selection(gauss, tmp_path):
    codec, var, x, _ = gauss
    c = codec.compress(x, {"t_stop": 0.05, "coding_steps": 3, "decode": "mse"})
    full = ((codec.decompress(c.params, c.payload, c.count) - x) ** 2).mean()
    part = ((codec.decompress(c.params, c.payload, c.count, max_steps=1) - x) ** 2).mean()
    none = ((codec.decompress(c.params, c.payload, c.count, max_steps=0) - x) ** 2).mean()
    assert full < part < none
    model, _ = gaussian_model()
    model.cfg.codec.simulator = "dq"
    codec = model_codec(model)
    assert codec.sim.name == "dq" and codec.name == "diffc-dq" and codec.codec_id == 8
    with pytest.raises(LdcodecError, match="choose one of: pfr, dq"):
        from ldcodec.config import load_config

        load_config(None, ["codec.simulator=vq"])
