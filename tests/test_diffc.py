"""Mode U format 2 (DiffC): the exact Gaussian source, where every rate is known in closed form,
and a tiny trained cell. Properties: round trips, the three rates' order, the theory check
failing on an injected undercount and on a wrong chain, the lean stream's overhead, progressive
decoding, damaged payloads, and a committed reference stream that must keep decoding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ldcodec.codecs import container
from ldcodec.codecs.diffc import DiffC, load_or_build_tables
from ldcodec.config import Config
from ldcodec.diffusion.coding_grid import CodingTables
from ldcodec.errors import LdcodecError
from ldcodec.metrics.gaussian_source import GaussianSource, check_diffc_point

GOLDEN = Path(__file__).parent / "golden"
D, N = 16, 200


def gaussian_codec(dim: int = D, ratio: float = 0.8) -> tuple[DiffC, np.ndarray]:
    from ldcodec.metrics.gaussian_model import ExactGaussianModel as _ExactGaussianModel

    var = np.array(GaussianSource.geometric(dim, ratio).variances)
    cfg = Config()
    cfg.data.dataset = "gaussian"
    model = _ExactGaussianModel(var, cfg)
    model.variances = var
    return DiffC(model, load_or_build_tables(model), ideal_stride=1), var  # as evaluate's theory check


@pytest.fixture(scope="module")
def gauss():
    codec, var = gaussian_codec()
    x = GaussianSource(tuple(var)).sample(N, seed=1).view(N, *codec.image_shape)
    c = codec.compress(x, {"t_stop": 0.1, "decode": "mse"})
    return codec, var, x, c


def _framed(codec, c) -> bytes:
    return container.write(codec.codec_id, codec.model_id(), c.params, c.payload, c.count)


def test_gaussian_round_trip_and_rates(gauss):
    codec, var, x, c = gauss
    stream = _framed(codec, c)
    _, mid, params, payload, count = container.read(stream)
    assert mid == codec.model_id() and count == N
    y = codec.decompress(params, payload, count)
    assert torch.equal(y, codec.decompress(params, payload, count))  # deterministic
    snr = codec.tables.snr[c.extra["level"]]
    mse = ((y - x) ** 2).flatten(1).mean(1).numpy()
    check = check_diffc_point(var, snr, c.ideal_bits, c.estimated_bits, 8 * len(stream) / N, mse)
    assert abs(check.ideal - check.information) < 0.1 * check.information + 1
    assert check.mse < 1.3 * check.mmse  # the sample is (nearly) exact: the MSE is the MMSE
    assert (c.file_bits >= 8 * len(stream) / N).all()


def test_theory_check_fails_on_undercounts_and_on_an_mse_below_the_mmse(gauss):
    codec, var, x, c = gauss
    stream = _framed(codec, c)
    y = codec.decompress(*container.read(stream)[2:])
    snr = codec.tables.snr[c.extra["level"]]
    mse = ((y - x) ** 2).flatten(1).mean(1).numpy()
    actual = 8 * len(stream) / N
    with pytest.raises(LdcodecError, match="actual"):
        check_diffc_point(var, snr, c.ideal_bits, c.estimated_bits, 0.9 * c.estimated_bits.mean(), mse)
    with pytest.raises(LdcodecError, match="estimated"):
        check_diffc_point(var, snr, c.ideal_bits, 0.9 * c.ideal_bits, actual, mse)
    with pytest.raises(LdcodecError, match="MMSE"):  # a decoder that knows more than the stream says
        check_diffc_point(var, snr, c.ideal_bits, c.estimated_bits, actual, 0.5 * mse)


def test_theory_check_fails_on_a_chain_that_underreports(gauss, monkeypatch):
    """A chain whose step KLs are computed wrongly (here 20% low) is caught against the ideal."""
    from ldcodec.coding import pfr

    codec, var, x, _ = gauss
    true_kl = pfr.kl_bits
    monkeypatch.setattr(pfr, "kl_bits", lambda *a: 0.8 * true_kl(*a))
    c = codec.compress(x, {"t_stop": 0.1, "decode": "mse"})
    y = codec.decompress(c.params, c.payload, c.count)
    mse = ((y - x) ** 2).flatten(1).mean(1).numpy()
    with pytest.raises(LdcodecError, match="estimated"):
        check_diffc_point(var, codec.tables.snr[c.extra["level"]], c.ideal_bits, c.estimated_bits,
                          8 * len(_framed(codec, c)) / N, mse)


def test_rate_grows_as_t_falls_and_progressive_prefix(gauss):
    codec, var, x, _ = gauss
    bits = [codec.compress(x, {"t_stop": t}).estimated_bits.mean() for t in (0.5, 0.2, 0.05)]
    assert bits[0] < bits[1] < bits[2]
    c = codec.compress(x, {"t_stop": 0.05, "coding_steps": 3, "decode": "mse"})
    assert c.extra["chain_steps"] >= 3 and c.rate_setting["coding_steps"] == 3
    again = codec.compress(x, c.rate_setting)  # the rate setting reproduces the stream
    assert again.params == c.params and again.payload == c.payload
    full = ((codec.decompress(c.params, c.payload, c.count) - x) ** 2).mean()
    part = ((codec.decompress(c.params, c.payload, c.count, max_steps=1) - x) ** 2).mean()
    none = ((codec.decompress(c.params, c.payload, c.count, max_steps=0) - x) ** 2).mean()
    assert full < part < none


def test_lean_stream_single_vector():
    codec, var = gaussian_codec()
    x = GaussianSource(tuple(var)).sample(1, seed=3).view(1, *codec.image_shape)
    c = codec.compress(x, {"t_stop": 0.2})
    stream = _framed(codec, c)
    assert 8 * len(stream) == pytest.approx(c.file_bits[0])
    assert len(stream) - len(c.payload) == 11  # container overhead, bytes


def test_damaged_payloads_raise_only_ldcodec_error(gauss):
    codec, var, x, c = gauss
    stream = bytearray(_framed(codec, c))
    for pos in (0, 3, 5, 9, len(stream) // 2, len(stream) - 1):
        bad = bytearray(stream)
        bad[pos] ^= 0x10
        with pytest.raises(LdcodecError):
            codec.decompress(*container.read(bytes(bad))[2:])
    with pytest.raises(LdcodecError):
        container.read(bytes(stream[:-3]))
    with pytest.raises(LdcodecError, match="format 1"):
        container.read(b"LDC1" + bytes(60))
    with pytest.raises(LdcodecError):
        codec.decompress(b"\xff\xff", c.payload, c.count)
    with pytest.raises(LdcodecError):
        codec.decompress(b"\xff", b"\xff" + c.payload, c.count)  # decode index 3 does not exist


def test_golden_stream_keeps_decoding():
    """A committed stream (exact Gaussian source, no weights) must decode to committed values:
    catches any change of the candidate generator, the tables, the plan or the index code."""
    codec, var = gaussian_codec()
    stream = (GOLDEN / "diffc-gauss16.ldc").read_bytes()
    _, mid, params, payload, count = container.read(stream)
    assert mid == codec.model_id()
    y = codec.decompress(params, payload, count)
    want = np.load(GOLDEN / "diffc-gauss16.npy")
    np.testing.assert_allclose(y.numpy(), want, atol=1e-5)


# -- trained cells: both latent ranks ----------------------------------------------------------

@pytest.fixture(scope="module", params=["mnist-mlp-ddpm-uncond-gauss", "mnist-cnn-sde-uncond-delta"])
def trained(request, tmp_path_factory):
    from conftest import REPO, tiny_config

    from ldcodec.checkpoint import load_model
    from ldcodec.data import load_split, to_tensor
    from ldcodec.train import train

    run = tmp_path_factory.mktemp(request.param)
    train(tiny_config(REPO / "configs" / "grid" / f"{request.param}.yaml", "train.steps=20"), run, progress=False)
    model, _, _ = load_model(run)
    codec = DiffC(model, load_or_build_tables(model, run))
    assert (run / (run / "latest").read_text().strip() / "coding-tables.safetensors").is_file()
    x = to_tensor(load_split("mnist", "test", None, limit=6)[0])
    return run, codec, x


def test_trained_round_trip_every_decode(trained):
    run, codec, x = trained
    c = codec.compress(x, {"t_stop": 0.5})
    assert c.ideal_bits.shape == c.estimated_bits.shape == (len(x),)
    for decode in codec.decodes:
        y = codec.decompress(c.params, c.payload, c.count, decode=decode)
        assert y.shape == x.shape and float(y.min()) >= 0 and float(y.max()) <= 1
        assert torch.equal(y, codec.decompress(c.params, c.payload, c.count, decode=decode))
    # the tables file is reused: a fresh codec has the same model id and decodes the same
    from ldcodec.checkpoint import load_model

    model, _, _ = load_model(run)
    again = DiffC(model, load_or_build_tables(model, run))
    assert again.model_id() == codec.model_id()
    assert torch.equal(again.decompress(c.params, c.payload, c.count), codec.decompress(c.params, c.payload, c.count))


def test_a_second_decode_of_one_file_reuses_its_chain_and_equals_a_fresh_decode(trained, monkeypatch):
    """decompress keeps the last file's decoded chain: another decode of the same bytes does not
    decode the chain again and gives what a fresh codec gives; other bytes are decoded anew."""
    run, codec, x = trained
    c = codec.compress(x, {"t_stop": 0.5})
    other = codec.compress(x[:3], {"t_stop": 0.5})
    codec.decompress(c.params, c.payload, c.count, decode="flow")
    calls = []
    real = codec.decode_latents
    monkeypatch.setattr(codec, "decode_latents", lambda *a, **k: calls.append(a) or real(*a, **k))
    y = codec.decompress(c.params, c.payload, c.count, decode="mse")
    assert calls == []
    fresh = DiffC(codec.model, codec.tables)
    assert torch.equal(y, fresh.decompress(c.params, c.payload, c.count, decode="mse"))
    codec.decompress(other.params, other.payload, other.count, decode="mse")
    assert len(calls) == 1


def test_trained_bits_budget_and_default_rate(trained):
    _, codec, x = trained
    low, high = (codec.compress(x, {"bits": b}) for b in (20, 200))
    assert low.estimated_bits.mean() < high.estimated_bits.mean()
    default = codec.compress(x)  # a documented default stop time, not an error
    assert default.rate_setting["t_stop"] == pytest.approx(0.3, rel=0.1)
    with pytest.raises(LdcodecError):
        codec.compress(x, {"t_stop": 1.5})
    with pytest.raises(LdcodecError):
        codec.compress(x[:, :, :20])


def test_plans_are_integer_functions_of_the_tables(trained):
    _, codec, _ = trained
    for stop in (10, 64, 128):
        plan = codec.plan(stop, None)
        flat = lambda p: [(a, b, [(d.tolist(), e) for d, e in ch]) for a, b, ch in p]  # noqa: E731
        assert flat(plan) == flat(codec.plan(stop, None))
        levels = [a for a, _, _ in plan] + [plan[-1][1]]
        assert levels[0] == 0 and levels[-1] == stop and levels == sorted(set(levels))
        for a, b, chunks in plan:
            dims = np.sort(np.concatenate([d for d, _ in chunks]))
            assert np.array_equal(dims, np.arange(codec.dims))  # every dim in exactly one chunk
            for d, e in chunks:
                assert len(d) == 1 or e <= codec.sim.budget << 10  # a chunk over budget is a single dim


@pytest.mark.parametrize("name", ["tiny-u", "tiny-c"])
def test_committed_reference_streams_decode_to_their_images(name):
    """Committed tiny models (mode U with its coding tables, mode C) and their streams must keep
    decoding to the committed images: a change of numpy, torch, constriction, the generator or the
    format shows here. Pixels may move by one level where a float rounds differently."""
    from ldcodec.checkpoint import load_model
    from ldcodec.codecs import model_codec
    from ldcodec.data import to_uint8

    run = GOLDEN / name
    model, _, _ = load_model(run, ema=False)
    codec = model_codec(model, run)
    got = to_uint8(codec.decompress_file((GOLDEN / f"{name}.ldc").read_bytes())).astype(int)
    want = np.load(GOLDEN / f"{name}.npy").astype(int)
    assert got.shape == want.shape and np.abs(got - want).max() <= 1


def test_low_rate_samples_are_exact_not_pulled_toward_the_image():
    """At a few bits per vector the decoded MSE matches the MMSE (regression: arrival times shared
    by a file's images made the selection overshoot, MSE 12-20 % below the MMSE)."""
    from ldcodec.diffusion.coding_grid import gaussian_mmse

    codec, var = gaussian_codec(8, 0.8)
    x = GaussianSource(tuple(var)).sample(400, seed=0).view(400, *codec.image_shape)
    c = codec.compress(x, {"t_stop": 0.2, "coding_steps": 1, "decode": "mse"})
    mse = float(((codec.decompress(c.params, c.payload, c.count) - x) ** 2).mean())
    assert abs(mse / gaussian_mmse(var, codec.tables.snr[c.extra["level"]]) - 1) < 0.08


def test_the_coding_grid_is_the_cheapest_chain():
    """The grid of K steps is the least predicted cost over every chain of K steps (brute force for
    K = 2, 3 on the committed learned tables), and the automatic K is the best over K; an
    equal-information grid (the placement before) costs more on a learned prior."""
    from itertools import combinations

    from ldcodec.checkpoint import read_tensors
    from ldcodec.coding.pfr import step_cost
    from ldcodec.diffusion.coding_grid import FORBIDDEN

    t = read_tensors(GOLDEN / "tiny-u" / "coding-tables.safetensors")
    tables = CodingTables.from_tensors(t, t["mse"].shape[1])
    stop, budget = 40, step_cost(12)
    cost = tables.step_costs(budget)
    for k in (2, 3):
        chains = [[0, *inner, stop] for inner in combinations(range(1, stop), k - 1)]
        brute = min(sum(int(cost[a, b]) for a, b in zip(c[:-1], c[1:])) for c in chains)
        grid = tables.grid(stop, k, budget)
        assert len(grid) == k + 1 and tables.predicted_cost(grid, budget) == brute < FORBIDDEN
    best = tables.best_steps(stop, 64, budget)
    auto = tables.predicted_cost(tables.grid(stop, best, budget), budget)
    assert all(auto <= tables.predicted_cost(tables.grid(stop, k, budget), budget) for k in range(1, 20))
    total = tables.bits.sum(1)
    gains = []
    for k in (2, 3, 4, 6):
        equal = sorted({int(np.searchsorted(total[:stop + 1], int(total[stop]) * j // k)) for j in range(1, k)}
                       - {0, stop})
        dp = tables.predicted_cost(tables.grid(stop, k, budget), budget)
        gains.append(tables.predicted_cost([0, *equal, stop], budget) - dp)
    assert min(gains) >= 0 and max(gains) > 0


@pytest.mark.parametrize("stride", [1, 16])
def test_ideal_rate_is_the_information_at_any_quadrature_stride(stride):
    """The ideal (truncated ELBO by the log-SNR trapezoid) of the exact Gaussian source is I(X; Z_t)
    within Monte-Carlo error, on every level and on every 16th; a stride below 1 is refused."""
    from ldcodec.diffusion.coding_grid import gaussian_information_bits

    codec, var = gaussian_codec()
    codec.ideal_stride = stride
    x = GaussianSource(tuple(var)).sample(400, seed=3).view(400, *codec.image_shape)
    level = codec.tables.level_of_time(0.1)
    ideal = codec.ideal_bits(x.flatten(1).double(), level, torch.Generator().manual_seed(0))
    info = gaussian_information_bits(var, codec.tables.snr[level])
    se = ideal.std() / np.sqrt(len(ideal))
    assert abs(ideal.mean() - info) < 4 * se + 0.01 * info, (ideal.mean(), info, se)
    with pytest.raises(LdcodecError, match="ideal_stride"):
        DiffC(codec.model, codec.tables, ideal_stride=0)
