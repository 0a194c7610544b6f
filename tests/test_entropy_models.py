"""Learned entropy models: normalised likelihoods, training, exact compress/decompress, real vs estimated bits."""

import io
import math
from contextlib import contextmanager

import numpy as np
import pytest
import torch

from ldcodec.coding import range_coder
from ldcodec.coding.entropy_models import (AutoregressiveDensity, FactorizedDensity, GaussianConditional,
                                            code_density, quantize)
from ldcodec.errors import LdcodecError

SHAPES = [(6, 3), (2, 3, 4, 5)]  # (B, c) and (B, c, h, w)


@contextmanager
def _one_thread():
    """Tiny ops on a loaded 2-core machine are 100x slower with 2 spinning OpenMP threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def test_quantize_modes():
    torch.manual_seed(0)
    y = torch.randn(4, 3, 5, requires_grad=True)
    mean = torch.full_like(y, 0.3)
    noisy = quantize(y, "noise")
    assert ((noisy - y).abs() <= 0.5).all() and not torch.equal(noisy, y)
    rounded = quantize(y, "round", mean)
    assert torch.allclose(rounded - mean, torch.round(rounded - mean)) and ((rounded - y).abs() <= 0.5 + 1e-6).all()
    ste = quantize(y, "ste")
    ste.sum().backward()
    assert torch.equal(ste, torch.round(y)) and torch.equal(y.grad, torch.ones_like(y))
    with pytest.raises(ValueError, match="noise"):
        quantize(y, "floor")


@pytest.mark.parametrize("shape", SHAPES)
def test_factorized_likelihood_sums_to_one_over_integers(shape):
    torch.manual_seed(1)
    model = FactorizedDensity(shape[1], init_scale=5.0)
    with torch.no_grad():
        for b in model.biases:
            b.normal_(0, 2)
    grid = torch.arange(-400, 401, dtype=torch.float32)
    y = grid.reshape(-1, 1, *([1] * (len(shape) - 2))).expand(len(grid), *shape[1:])
    total = model.likelihood(y).sum(dim=0)
    assert torch.allclose(total, torch.ones_like(total), atol=1e-4)
    assert model.bits(torch.zeros(shape)).shape == (shape[0],)


def _fit_density(model, data: torch.Tensor, steps: int = 300) -> float:
    """Train a code density on noisy ``data`` (B, c) with Adam; its mean bits on the rounded data."""
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    with _one_thread():
        for _ in range(steps):
            batch = data[torch.randint(0, len(data), (256,))]
            loss = model.bits(quantize(batch, "noise")).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.bits(torch.round(data)).mean().item()


def test_training_on_laplacian_samples_lowers_bits_toward_the_entropy():
    torch.manual_seed(2)
    scale = 3.0
    model = FactorizedDensity(2)
    data = torch.distributions.Laplace(0.0, scale).sample((4096, 2))
    before = model.bits(torch.round(data)).mean().item()
    after = _fit_density(model, data)
    # entropy of a rounded Laplace(0, 3), closed form per integer: 2 channels x 4.03 bits
    k = torch.arange(-200, 201, dtype=torch.float64).abs()
    tail = 0.5 * (torch.exp(-(k - 0.5) / scale) - torch.exp(-(k + 0.5) / scale))
    p = torch.where(k == 0, 1 - math.exp(-0.5 / scale), tail)
    entropy_bits = 2 * float(-(p * torch.log2(p)).sum())
    assert after < before - 1.0
    assert after < 1.03 * entropy_bits


def _trained_factorized(channels):
    torch.manual_seed(3)
    model = FactorizedDensity(channels)
    with torch.no_grad():
        for b in model.biases:
            b.normal_(0, 1)
    model.update_tables()
    return model


@pytest.mark.parametrize("shape", SHAPES)
def test_factorized_round_trip_is_exact_and_real_bits_match_estimate(shape):
    model = _trained_factorized(shape[1])
    torch.manual_seed(4)
    y = torch.round(torch.randn(shape) * 4)
    y.view(-1)[3] = 1e5  # far outside every support: escape
    strings = model.compress(y)
    assert len(strings) == shape[0]
    decoded = model.decompress(strings, shape[1:])
    assert decoded.shape == y.shape and torch.equal(decoded, y)
    estimated = model.bits(y).sum().item()
    actual = 8 * sum(len(s) for s in strings)
    assert estimated >= 100
    assert abs(actual - estimated) <= 0.1 * estimated + 40 * shape[0]


def test_tables_are_required_and_survive_a_checkpoint():
    with pytest.raises(LdcodecError, match="update_tables"):
        FactorizedDensity(3).compress(torch.zeros(1, 3))
    model = _trained_factorized(3)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    fresh = FactorizedDensity(3)
    fresh.load_state_dict(torch.load(io.BytesIO(buffer.getvalue())))
    y = torch.round(torch.randn(4, 3) * 5)
    assert fresh.compress(y) == model.compress(y)
    assert torch.equal(fresh.decompress(model.compress(y), (3,)), y)


@pytest.mark.parametrize("shape", SHAPES)
def test_gaussian_conditional_likelihood_sums_to_one(shape):
    model = GaussianConditional()
    torch.manual_seed(5)
    scale, mean = torch.rand(shape) * 20 + 0.05, torch.randn(shape) * 3
    grid = torch.arange(-300, 301, dtype=torch.float64).reshape(-1, *([1] * len(shape)))
    total = model.likelihood(grid + mean.round(), scale.double(), mean.double()).sum(dim=0)
    assert torch.allclose(total, torch.ones_like(total), atol=1e-6)


@pytest.mark.parametrize("shape", [(40, 3), (2, 3, 6, 5)])
def test_gaussian_conditional_round_trip_and_real_bits(shape):
    model = GaussianConditional()
    model.update_tables()
    torch.manual_seed(6)
    scale = torch.exp(torch.randn(shape) * 1.5)  # some below the bound, some large
    mean = torch.randn(shape) * 2
    y = mean + scale * torch.randn(shape)
    y.view(-1)[0] = 1e4  # escape
    strings = model.compress(y, scale, mean)
    y_hat = model.decompress(strings, scale, mean)
    assert torch.equal(y_hat, torch.round(y - mean) + mean)
    assert torch.equal(model.scale_index(scale), model.scale_index(scale.clone()))
    estimated = model.bits(y_hat, scale, mean).sum().item()
    actual = 8 * sum(len(s) for s in strings)
    assert estimated >= 100
    # bins round the scale up (a slightly wider table) and the escape costs its own bits
    assert abs(actual - estimated) <= 0.1 * estimated + 40 * shape[0] + 60


def _random_made(shape, seed=7):
    """An autoregressive density with random weights: every conditional depends on its context."""
    torch.manual_seed(seed)
    model = AutoregressiveDensity(shape, hidden=16)
    with torch.no_grad():
        for p in model.net.parameters():
            p.normal_(0, 0.5)
    return model


def test_autoregressive_joint_sums_to_one_over_integers():
    model = _random_made((2,))
    grid = torch.arange(-60, 61, dtype=torch.float32)
    y = torch.cartesian_prod(grid, grid)  # every (y1, y2) pair
    joint = model.likelihood(y).double().prod(dim=1)
    assert joint.sum().item() == pytest.approx(1.0, abs=1e-4)
    # the second entry's conditional really depends on the first
    p2 = model.likelihood(y)[:, 1].reshape(len(grid), len(grid))
    assert not torch.allclose(p2[0], p2[-1])


@pytest.mark.parametrize("shape", [(5,), (2, 2, 2)])
def test_autoregressive_entry_sees_only_the_entries_before_it(shape):
    model = _random_made(shape)
    n = math.prod(shape)
    y = torch.round(torch.randn(1, n) * 3)
    jac = torch.autograd.functional.jacobian(model.net, y)[0, :, 0, :]  # (2n outputs: means, log-scales; n inputs)
    for params in (jac[:n], jac[n:]):
        assert torch.equal(torch.triu(params), torch.zeros(n, n))  # entry i sees no y_j with j >= i
        assert (torch.tril(params, diagonal=-1) != 0).sum() >= n * (n - 1) // 2 - 1  # and does see the rest


@pytest.mark.parametrize("shape", [(6,), (2, 2, 3)])
def test_autoregressive_round_trip_is_exact_and_real_bits_match_the_coded_information(shape):
    model = _random_made(shape)
    model.update_tables()
    torch.manual_seed(8)
    y = torch.round(torch.randn(12, *shape) * 6)
    y.view(-1)[5] = 3e4  # escape
    with _one_thread():
        encoder = range_coder.new_encoder()
        model.write(encoder, y)  # one coder for all 12 codes, entry-major
        data = range_coder.encoder_bytes_trimmed(encoder)
        decoded = model.read(range_coder.decoder_from_trimmed(data), len(y), shape)
        assert torch.equal(decoded, y)
        assert model.decodes_to(range_coder.decoder_from_trimmed(data), y)
        assert not model.decodes_to(range_coder.decoder_from_trimmed(data), y + (torch.arange(y.numel()) == 7).view(y.shape))
        coded = model.coded_bits(y)
    estimated = model.bits(y).sum().item()
    actual = 8 * len(data)
    assert estimated >= 100 and coded.shape == (12,)
    assert coded.sum() <= actual <= coded.sum() + 32  # the coder spends its tables' information plus one flush
    with pytest.raises(LdcodecError, match="shape"):
        model.read(range_coder.decoder_from_trimmed(data), len(y), (3,))


def test_autoregressive_codes_share_a_stream_with_other_data():
    model = _random_made((4,))
    model.update_tables()
    y = torch.round(torch.randn(3, 4) * 4)
    encoder = range_coder.new_encoder()
    model.write(encoder, y)
    range_coder.write_uniform(encoder, np.array([5, 1]), 7)
    decoder = range_coder.decoder_from_bytes(range_coder.encoder_bytes(encoder))
    assert torch.equal(model.read(decoder, 3), y)
    assert range_coder.read_uniform(decoder, 2, 7).tolist() == [5, 1]


def test_autoregressive_density_learns_what_one_entry_says_about_the_next():
    # y2 = y1 + small noise: a factorised density pays for y2 again, the autoregressive one does not
    torch.manual_seed(9)
    y1 = torch.distributions.Laplace(0.0, 6.0).sample((4096, 1))
    data = torch.cat([y1, y1 + torch.randn_like(y1) * 0.3], dim=1)
    bits = {name: _fit_density(code_density(name, (2,)), data) for name in ("factorized", "autoregressive")}
    assert bits["autoregressive"] < bits["factorized"] - 3.0


def test_code_density_registry():
    assert isinstance(code_density("factorized", (3,)), FactorizedDensity)
    assert isinstance(code_density("autoregressive", (2, 4, 4)), AutoregressiveDensity)
    with pytest.raises(LdcodecError, match="factorized, autoregressive"):
        code_density("hyper", (3,))
