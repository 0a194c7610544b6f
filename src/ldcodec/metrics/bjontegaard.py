"""Bjøntegaard delta rate and delta PSNR between two rate-distortion curves.

The method of G. Bjøntegaard, "Calculation of average PSNR differences between RD-curves",
ITU-T SG16/Q6 VCEG-M33 (2001): fit each curve with a least-squares cubic polynomial, then average
the vertical gap between the two fits over the interval where both curves have data.

- **BD-PSNR** (dB): fit ``PSNR = P(log R)`` to each curve and average ``P_b - P_a`` over the
  overlap of the two log-rate ranges. Positive: the test curve ``b`` has higher PSNR at equal
  rate.
- **BD-rate** (percent): fit ``log R = Q(PSNR)`` and average ``Q_b - Q_a`` over the overlap of
  the two PSNR ranges; the mean log-rate gap ``d`` becomes ``(10^d - 1) x 100``. Negative: the test
  curve needs that much less rate at equal PSNR (``-50`` means half the rate).

The curve ``a`` is the anchor (reference), ``b`` the codec under test. Rates may be in any unit
(bits per image, bpp): only their ratios matter. The logarithm's base does not change either
result (a cubic in ``log10 R`` is a cubic in ``ln R``). Each curve needs at least four points
with four distinct values of the fitted variable (the cubic has four coefficients); with exactly
four the fit interpolates, as in VCEG-M33. This is the original polynomial method, not the
piecewise-cubic variant of later VCEG/JCT-VC spreadsheets.

Each curve is first reduced to its operational rate-distortion hull: the lower convex hull of
``(rate, MSE)`` with ``MSE = 10^(-PSNR/10)`` (time-sharing between two points reaches any point
on their chord, so a point above the chord is not on the codec's curve; a dominated point, with
more rate and less PSNR than another, is above a chord too). The method assumes a smooth
monotone curve, and a cubic forced through such a point is meaningless: the MNIST hyperprior's
lambda 0.0002 and 0.0004 points, 212.7 and 212.9 bits at 19.61 and 21.53 dB, gave a BD-PSNR of
+142 dB before this rule.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import LdcodecError

DEGREE = 3


def _curve(rates: Sequence[float], psnr: Sequence[float], name: str) -> tuple[np.ndarray, np.ndarray]:
    """Validated ``(log10 rates, psnr)`` float64 arrays of one curve's rate-distortion hull, by rate."""
    r = np.asarray(rates, dtype=np.float64).ravel()
    p = np.asarray(psnr, dtype=np.float64).ravel()
    if r.shape != p.shape:
        raise LdcodecError(f"curve {name}: {r.size} rates but {p.size} PSNR values; give one PSNR per rate")
    if not (np.all(np.isfinite(r)) and np.all(np.isfinite(p))):
        raise LdcodecError(f"curve {name}: rates and PSNR values must be finite numbers")
    if np.any(r <= 0):
        raise LdcodecError(f"curve {name}: rates must be positive (the fit is on log-rate), got {r.min()}")
    keep = _hull(r, 10.0 ** (-p / 10.0))
    return np.log10(r[keep]), p[keep]


def _hull(r: np.ndarray, mse: np.ndarray) -> list[int]:
    """Indices, by rate, of the points on the lower convex hull of ``(r, mse)`` that lower MSE."""
    hull: list[int] = []
    for i in np.lexsort((mse, r)):  # by rate, the lowest MSE first among equal rates
        if hull and mse[i] >= mse[hull[-1]]:
            continue  # no better than a point with no more rate
        while len(hull) >= 2:
            (r0, m0), (r1, m1) = (r[hull[-2]], mse[hull[-2]]), (r[hull[-1]], mse[hull[-1]])
            if (m1 - m0) * (r[i] - r0) < (mse[i] - m0) * (r1 - r0):
                break  # the last point lies below the chord from its predecessor to this one
            hull.pop()
        hull.append(int(i))
    return hull


def _fit(x: np.ndarray, y: np.ndarray, name: str, what: str) -> np.ndarray:
    """Least-squares cubic coefficients of ``y(x)`` (highest power first)."""
    if np.unique(x).size <= DEGREE:
        raise LdcodecError(f"curve {name}: a Bjøntegaard cubic fit needs at least {DEGREE + 1} distinct "
                           f"{what} values on its rate-distortion hull, got {np.unique(x).size}")
    return np.polyfit(x, y, DEGREE)


def _mean_gap(xa: np.ndarray, ya: np.ndarray, xb: np.ndarray, yb: np.ndarray, what: str) -> float:
    """Mean of ``fit_b(x) - fit_a(x)`` over the overlap of the two curves' ``x`` ranges."""
    lo, hi = max(xa.min(), xb.min()), min(xa.max(), xb.max())
    if not hi > lo:
        raise LdcodecError(f"the two curves' {what} ranges do not overlap; Bjøntegaard deltas need a shared interval")
    gap = np.polyint(np.polysub(_fit(xb, yb, "b", what), _fit(xa, ya, "a", what)))
    return float((np.polyval(gap, hi) - np.polyval(gap, lo)) / (hi - lo))


def bd_psnr(rates_a: Sequence[float], psnr_a: Sequence[float],
            rates_b: Sequence[float], psnr_b: Sequence[float]) -> float:
    """Average PSNR gain in dB of curve ``b`` over anchor ``a`` at equal rate (VCEG-M33)."""
    la, pa = _curve(rates_a, psnr_a, "a")
    lb, pb = _curve(rates_b, psnr_b, "b")
    return _mean_gap(la, pa, lb, pb, "log-rate")


def bd_rate(rates_a: Sequence[float], psnr_a: Sequence[float],
            rates_b: Sequence[float], psnr_b: Sequence[float]) -> float:
    """Average rate change in percent of curve ``b`` against anchor ``a`` at equal PSNR (VCEG-M33)."""
    la, pa = _curve(rates_a, psnr_a, "a")
    lb, pb = _curve(rates_b, psnr_b, "b")
    return float((10.0 ** _mean_gap(pa, la, pb, lb, "PSNR") - 1.0) * 100.0)


#: The anchors every ldcodec curve is measured against (issue 10): the learned and the classical state.
BD_ANCHORS = ("hyperprior", "webp")
BD_METHOD = "bjontegaard-vceg-m33: least-squares cubic of PSNR on log10(bits_actual) (BD-PSNR) and of log10(bits_actual) on PSNR (BD-rate), averaged over the overlap"


def bd_table(points: Sequence[dict], anchors: Sequence[str] = BD_ANCHORS) -> list[dict]:
    """BD-rate and BD-PSNR of every ldcodec curve against every anchor codec present.

    ``points``: results points (docs/results-schema.md). A curve is one ``(model, decode)`` series
    of ldcodec points; an anchor is the series of one baseline ``codec`` (e.g. every ``hyperprior``
    lambda). Rates are ``bits_actual``: every codec framed the same way. A pair that cannot be
    measured (fewer than four distinct points, no overlap) gets ``null`` deltas and the reason.
    Returns rows ``{"model", "decode", "anchor", "bd_rate_pct", "bd_psnr_db", "points", "anchor_points",
    "method", "note"}``.
    """
    curves: dict[tuple, list[dict]] = {}
    for p in points:
        if p["kind"] == "ldcodec":
            curves.setdefault((p["model"], p.get("decode")), []).append(p)
    rows = []
    for anchor in anchors:
        ref = [p for p in points if p.get("codec") == anchor]
        if not ref:
            continue
        for (model, decode), pts in curves.items():
            row = {"model": model, "decode": decode, "anchor": anchor, "bd_rate_pct": None, "bd_psnr_db": None,
                   "points": len(pts), "anchor_points": len(ref), "method": BD_METHOD, "note": None}
            args = ([p["bits_actual"] for p in ref], [p["psnr"] for p in ref],
                    [p["bits_actual"] for p in pts], [p["psnr"] for p in pts])
            for key, fn in (("bd_psnr_db", bd_psnr), ("bd_rate_pct", bd_rate)):
                try:
                    row[key] = fn(*args)
                except LdcodecError as e:
                    row["note"] = str(e)
            rows.append(row)
    return rows
