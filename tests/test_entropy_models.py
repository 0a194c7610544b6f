"""Learned entropy models: normalised likelihoods, training, exact compress/decompress, real vs estimated bits."""

import io
import math
from contextlib import contextmanager

import pytest
import torch

from ldcodec.coding.entropy_models import FactorizedDensity, GaussianConditional, quantize
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


def test_training_on_laplacian_samples_lowers_bits_toward_the_entropy():
    torch.manual_seed(2)
    scale = 3.0
    model = FactorizedDensity(2)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    data = torch.distributions.Laplace(0.0, scale).sample((4096, 2))
    before = model.bits(torch.round(data)).mean().item()
    with _one_thread():
        for _ in range(300):
            batch = data[torch.randint(0, len(data), (256,))]
            loss = model.bits(quantize(batch, "noise")).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    after = model.bits(torch.round(data)).mean().item()
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
