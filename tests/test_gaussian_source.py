"""Shannon R(D) of a Gaussian source: closed forms, inversion, and the rate-accounting check."""

import math

import numpy as np
import pytest

from ldcodec.errors import LdcodecError
from ldcodec.metrics.gaussian_source import (
    GaussianSource,
    check_point,
    distortion_rate,
    rate_distortion,
    rd_curve,
    water_level,
)


def test_equal_variances_closed_form():
    grid = np.array([0.01, 0.1, 0.5, 1.0, 1.9])
    expected = 0.5 * np.log2(2.0 / grid)
    assert np.allclose(rd_curve([2.0] * 5, grid), expected, atol=1e-12)
    assert rate_distortion([2.0] * 5, 2.0) == 0.0
    assert rate_distortion([2.0] * 5, 5.0) == 0.0


def test_two_components_reverse_water_filling():
    # variances 4 and 1: both coded while theta <= 1 (D <= 1); above, only the first, with theta = 2D - 1
    assert rate_distortion([4.0, 1.0], 0.25) == pytest.approx(0.25 * (math.log2(16) + math.log2(4)))
    d = 1.5
    assert water_level([4.0, 1.0], d) == pytest.approx(2 * d - 1)
    assert rate_distortion([4.0, 1.0], d) == pytest.approx(0.25 * math.log2(4 / (2 * d - 1)))


def test_distortion_rate_inverts_rate_distortion():
    source = GaussianSource.geometric(6, ratio=0.4)
    for mse in (1e-4, 0.01, 0.05, 0.1, 0.2, 0.25):
        rate = source.rate_distortion(mse)
        assert source.distortion_rate(rate) == pytest.approx(mse, rel=1e-9)
    assert distortion_rate(source.variances, 0.0) == pytest.approx(np.mean(source.variances))


def test_sampling_matches_variances():
    source = GaussianSource((4.0, 1.0, 0.25))
    x = source.sample(40_000, seed=1)
    assert x.shape == (40_000, 3)
    assert np.allclose(x.var(dim=0).numpy(), [4.0, 1.0, 0.25], rtol=0.05)
    assert (source.sample(5, seed=2) == source.sample(5, seed=2)).all()


def test_entropy_coded_scalar_quantiser_obeys_the_bound():
    # uniform scalar quantisation + ideal entropy coding of N(0, 1): high-rate gap 1/2 log2(2 pi e / 12) bits
    source = GaussianSource.iid(1)
    x = source.sample(400_000, seed=3).double().numpy()[:, 0]
    step = 0.1
    symbols = np.round(x / step)
    _, counts = np.unique(symbols, return_counts=True)
    p = counts / counts.sum()
    bits = float(-(p * np.log2(p)).sum())
    measured_mse = float(np.mean((x - step * symbols) ** 2))
    gap = check_point(bits, measured_mse, source.variances)
    assert gap == pytest.approx(0.5 * math.log2(2 * math.pi * math.e / 12), abs=0.01)
    with pytest.raises(LdcodecError, match="rate-accounting bug"):
        check_point(bits - 0.5, measured_mse, source.variances)


def test_invalid_inputs():
    with pytest.raises(ValueError):
        GaussianSource((1.0, -1.0))
    with pytest.raises(ValueError):
        rate_distortion([1.0], 0.0)
