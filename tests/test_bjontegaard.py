"""Bjøntegaard deltas: hand-computable curves, the method's invariances, and bad input."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ldcodec.errors import LdcodecError
from ldcodec.metrics.bjontegaard import bd_psnr, bd_rate

RATES = [40.0, 80.0, 160.0, 320.0, 640.0]
PSNR = [18.0, 22.5, 26.0, 28.5, 30.0]  # concave in log-rate, like a real codec


def test_identical_curves_give_zero():
    assert bd_psnr(RATES, PSNR, RATES, PSNR) == pytest.approx(0.0, abs=1e-9)
    assert bd_rate(RATES, PSNR, RATES, PSNR) == pytest.approx(0.0, abs=1e-9)


def test_constant_psnr_shift_is_the_bd_psnr():
    shifted = [p + 1.25 for p in PSNR]
    assert bd_psnr(RATES, PSNR, RATES, shifted) == pytest.approx(1.25, abs=1e-9)
    assert bd_psnr(RATES, shifted, RATES, PSNR) == pytest.approx(-1.25, abs=1e-9)


def test_half_the_rate_is_minus_fifty_percent():
    half = [r * 0.5 for r in RATES]
    assert bd_rate(RATES, PSNR, half, PSNR) == pytest.approx(-50.0, abs=1e-9)
    assert bd_rate(half, PSNR, RATES, PSNR) == pytest.approx(100.0, abs=1e-9)  # the anchor matters


def test_linear_curve_links_the_two_deltas():
    # PSNR = 10 + 6 log2(R): halving the rate at equal PSNR is worth 6 dB at equal rate
    rates = [2.0 ** k for k in range(4, 10)]
    a = [10 + 6 * math.log2(r) for r in rates]
    half = [r / 2 for r in rates]
    assert bd_psnr(rates, a, half, a) == pytest.approx(6.0, abs=1e-9)
    b = [p + 6.0 for p in a]  # the same curve lifted by 6 dB is half the rate
    assert bd_rate(rates, a, rates, b) == pytest.approx(-50.0, abs=1e-9)


def test_exact_polynomials_integrate_by_hand():
    # a: PSNR = L, b: PSNR = L^2 in L = log10 R over [0, 2]: mean gap = (8/3 - 2) / 2 = 1/3
    L = np.array([0.0, 0.5, 1.0, 1.5, 2.0])
    rates = 10.0 ** L
    assert bd_psnr(rates, L, rates, L ** 2) == pytest.approx(1.0 / 3.0, abs=1e-9)


def test_only_the_overlap_counts():
    # a = 20 + 3L on L in [0, 3]; b = 20 + 4L on [1, 3] only. The gap is L: its mean over the
    # overlap [1, 3] is 2 dB (over a's whole range [0, 3] it would be 1.5)
    La, Lb = np.linspace(0.0, 3.0, 7), np.linspace(1.0, 3.0, 5)
    assert bd_psnr(10 ** La, 20 + 3 * La, 10 ** Lb, 20 + 4 * Lb) == pytest.approx(2.0, abs=1e-9)
    assert bd_psnr(10 ** Lb, 20 + 4 * Lb, 10 ** La, 20 + 3 * La) == pytest.approx(-2.0, abs=1e-9)


def test_point_order_and_rate_unit_do_not_matter():
    rates_b, psnr_b = [r * 0.7 for r in RATES], [p + 0.3 for p in PSNR]
    ref = bd_rate(RATES, PSNR, rates_b, psnr_b), bd_psnr(RATES, PSNR, rates_b, psnr_b)
    order = [3, 0, 4, 1, 2]
    shuffled = [RATES[i] for i in order], [PSNR[i] for i in order]
    bpp = [r / 784 for r in RATES], PSNR, [r / 784 for r in rates_b], psnr_b  # bits/image -> bits/pixel
    assert bd_rate(*shuffled, rates_b, psnr_b) == pytest.approx(ref[0], abs=1e-9)
    assert bd_psnr(*shuffled, rates_b, psnr_b) == pytest.approx(ref[1], abs=1e-9)
    assert bd_rate(*bpp) == pytest.approx(ref[0], abs=1e-9)
    assert bd_psnr(*bpp) == pytest.approx(ref[1], abs=1e-9)
    assert ref[0] < 0 and ref[1] > 0  # less rate and more PSNR: better on both counts


@settings(max_examples=50, deadline=None)
@given(gains=st.lists(st.floats(0.5, 6.0), min_size=4, max_size=8),
       scale=st.floats(0.05, 20.0), shift=st.floats(-10.0, 10.0))
def test_scaling_and_shifting_any_increasing_curve(gains, scale, shift):
    """Any curve whose PSNR gain per doubling of rate shrinks (so that it is its own hull)."""
    rates = 30.0 * 2.0 ** np.arange(len(gains))
    psnr = 15.0 + np.cumsum(sorted(gains, reverse=True))
    assert bd_rate(rates, psnr, rates * scale, psnr) == pytest.approx((scale - 1) * 100, rel=1e-6, abs=1e-6)
    assert bd_psnr(rates, psnr, rates, psnr + shift) == pytest.approx(shift, abs=1e-6)


@pytest.mark.parametrize("args, message", [
    (([1, 2, 3], [1, 2, 3], [1, 2, 3, 4], [1, 2, 3, 4]), "at least 4 distinct"),
    (([1, 2, 3, 4], [1, 2, 3], RATES, PSNR), "one PSNR per rate"),
    (([0, 2, 3, 4], [1, 2, 3, 4], RATES, PSNR), "must be positive"),
    (([1, 2, 3, math.nan], [1, 2, 3, 4], RATES, PSNR), "finite"),
    (([1, 2, 4, 8], [1, 2, 3, 4], [1e3, 2e3, 4e3, 8e3], [1, 2, 3, 4]), "do not overlap"),
])
def test_bad_curves_are_refused(args, message):
    with pytest.raises(LdcodecError, match=message):
        bd_psnr(*args)


def test_bd_rate_needs_distinct_psnr_values_and_a_psnr_overlap():
    with pytest.raises(LdcodecError, match="distinct PSNR"):
        bd_rate(RATES, [20, 20, 20, 21, 21], RATES, PSNR)
    with pytest.raises(LdcodecError, match="PSNR ranges do not overlap"):
        bd_rate(RATES, PSNR, RATES, [p + 20 for p in PSNR])


def _points(model, codec, kind, decode, rates, psnr):
    return [{"model": model, "codec": codec, "kind": kind, "decode": decode, "bits_actual": r, "psnr": p}
            for r, p in zip(rates, psnr)]


def test_bd_table_measures_every_ldcodec_curve_against_each_anchor():
    from ldcodec.metrics.bjontegaard import BD_METHOD, bd_table

    points = (_points("u", "diffc", "ldcodec", "mse", [r / 2 for r in RATES], PSNR)
              + _points("u", "diffc", "ldcodec", "flow", RATES[:3], PSNR[:3])  # too few points for a cubic
              + _points("hyperprior", "hyperprior", "learned", None, RATES, PSNR)
              + _points("jpeg", "jpeg", "classical", None, RATES, PSNR))
    rows = {(r["decode"], r["anchor"]): r for r in bd_table(points)}
    assert set(rows) == {("mse", "hyperprior"), ("flow", "hyperprior")}  # no webp points: no webp rows
    mse = rows["mse", "hyperprior"]
    assert mse["bd_rate_pct"] == pytest.approx(-50.0, abs=1e-9) and mse["bd_psnr_db"] > 0
    assert mse["method"] == BD_METHOD and mse["note"] is None and (mse["points"], mse["anchor_points"]) == (5, 5)
    flow = rows["flow", "hyperprior"]
    assert flow["bd_rate_pct"] is None and flow["bd_psnr_db"] is None and "at least 4" in flow["note"]


def test_a_dominated_point_is_left_out_of_the_fit():
    """A point with more rate and less PSNR than another (a badly trained rung) does not bend the fit."""
    rates, psnr = list(RATES), list(PSNR)
    worse = (rates + [rates[1] * 1.001], psnr + [psnr[1] - 2.0])
    assert bd_psnr(RATES, PSNR, *worse) == pytest.approx(0.0, abs=1e-9)
    assert bd_rate(*worse, RATES, PSNR) == pytest.approx(0.0, abs=1e-9)


def test_a_point_above_the_time_sharing_chord_is_left_out():
    """MNIST's hyperprior: lambda 0.0002 costs 212.7 bits for 19.61 dB where lambda 0.0004 gives 21.53 dB
    at 212.9; time-sharing 163.9 and 212.9 bits beats it, so the fit must not pass through it."""
    hyper = [163.9, 212.7, 212.9, 351.6, 700.0], [18.14, 19.61, 21.53, 24.79, 28.0]
    hull = [163.9, 212.9, 351.6, 700.0], [18.14, 21.53, 24.79, 28.0]
    ours = [60.0, 120.0, 200.0, 400.0], [20.0, 24.0, 28.0, 30.0]
    assert bd_psnr(*hyper, *ours) == pytest.approx(bd_psnr(*hull, *ours), abs=1e-9)
