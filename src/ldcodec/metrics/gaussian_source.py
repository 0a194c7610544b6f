"""A synthetic Gaussian source and its Shannon rate-distortion function, the bound no codec may beat.

For ``X ~ N(0, diag(s_1, ..., s_d))`` under squared error, reverse water-filling
(Cover & Thomas, *Elements of Information Theory*, 2nd ed., Thm 10.3.3) gives

    R(D) = sum_i 1/2 log2(s_i / D_i),   D_i = min(theta, s_i),   sum_i D_i = d * D,

bits per source vector. Units throughout this module, chosen to match what a codec
measures: ``D`` is the **per-dimension MSE** (``mean_i (x_i - x_hat_i)^2``, as in
:func:`ldcodec.metrics.distortion.mse`) and rates are **bits per dimension**
(``R / d``) unless a name says ``per_sample``. For equal variances ``s`` this is the
familiar ``R(D) = 1/2 log2(s / D)`` bits per dimension.

:func:`check_point` is the theory check of ``docs/design.md`` §7: a measured operational
point (real bits, measured MSE) below ``R(D)`` means bits are missing from the count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ldcodec.errors import LdcodecError
from ldcodec.seeds import cpu_generator


def _as_variances(variances) -> np.ndarray:
    v = np.asarray(variances, dtype=np.float64).reshape(-1)
    if v.size == 0 or not np.all(v > 0):
        raise ValueError(f"variances must be a non-empty list of positive numbers, got {variances!r}")
    return v


def water_level(variances, mse: float) -> float:
    """Reverse water-filling level ``theta`` with ``mean_i min(theta, s_i) = mse`` (for ``0 < mse < mean s``).

    Exact: with ``s`` sorted ascending and the ``k`` smallest components fully
    "under water" (``D_i = s_i``), ``theta_k = (d * mse - sum_{i<k} s_i) / (d - k)``;
    the answer is the first ``k`` with ``theta_k <= s_k``.
    """
    s = np.sort(_as_variances(variances))
    d = s.size
    if not 0 < mse < s.mean():
        raise ValueError(f"water_level needs 0 < mse < mean variance ({s.mean():g}), got {mse:g}")
    covered = np.concatenate([[0.0], np.cumsum(s)[:-1]])
    theta = (d * mse - covered) / (d - np.arange(d))
    return float(theta[np.argmax(theta <= s)])


def rate_distortion(variances, mse: float) -> float:
    """Shannon ``R(D)`` in bits per dimension at per-dimension MSE ``mse`` (Cover & Thomas Thm 10.3.3)."""
    s = _as_variances(variances)
    if mse <= 0:
        raise ValueError(f"R(D) is infinite for mse <= 0, got {mse:g}")
    if mse >= s.mean():
        return 0.0
    theta = water_level(s, mse)
    return float(np.sum(0.5 * np.log2(s / np.minimum(theta, s))) / s.size)


def distortion_rate(variances, rate: float) -> float:
    """Inverse of :func:`rate_distortion`: the least per-dimension MSE at ``rate`` bits per dimension.

    With ``s`` sorted descending and the ``m`` largest components coded,
    ``log2 theta_m = (sum_{i<m} log2 s_i - 2 d R) / m``; the answer uses the ``m`` with
    ``s_m <= theta_m <= s_{m-1}``, and ``D = mean_i min(theta, s_i)``.
    """
    s = np.sort(_as_variances(variances))[::-1]
    if rate < 0:
        raise ValueError(f"rate must be >= 0, got {rate:g}")
    if rate == 0:
        return float(s.mean())
    m = np.arange(1, s.size + 1)
    theta = np.exp2((np.cumsum(np.log2(s)) - 2 * s.size * rate) / m)
    slack = 1 + 1e-9  # at a breakpoint theta_m = s_m both neighbours are exact; rounding must not lose both
    valid = (theta <= s * slack) & (np.append(s[1:], 0.0) <= theta * slack)
    return float(np.mean(np.minimum(theta[np.argmax(valid)], s)))


def rd_curve(variances, mse_grid) -> np.ndarray:
    """``R(D)`` in bits per dimension for each per-dimension MSE of ``mse_grid`` (any shape)."""
    grid = np.asarray(mse_grid, dtype=np.float64)
    return np.vectorize(lambda d: rate_distortion(variances, d))(grid)


def check_point(bits_per_sample: float, mse: float, variances, tol_bits: float = 0.01) -> float:
    """Check a measured operational point against the Shannon bound; return its gap above ``R(D)``.

    ``bits_per_sample`` is the real (or estimated) rate per source vector, ``mse`` the
    measured per-dimension MSE. Raises :class:`LdcodecError` when the point lies more
    than ``tol_bits`` bits per dimension below ``R(D)``: no code can do that, so bits
    are missing from the accounting. Returns ``rate - R(D)`` in bits per dimension.
    """
    s = _as_variances(variances)
    rate = bits_per_sample / s.size
    gap = rate - rate_distortion(s, mse)
    if gap < -tol_bits:
        raise LdcodecError(
            f"operational point ({rate:.4f} bits/dim at MSE {mse:.4g}) beats the Shannon bound "
            f"R(D) = {rate - gap:.4f} bits/dim by {-gap:.4f}: this is a rate-accounting bug, "
            "bits are missing from the count (check headers, side information and the entropy coder)"
        )
    return gap


@dataclass(frozen=True)
class GaussianSource:
    """``X ~ N(0, diag(variances))``, a ``d``-dimensional source with independent components."""

    variances: tuple[float, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "variances", tuple(float(v) for v in _as_variances(self.variances)))

    @classmethod
    def iid(cls, dim: int, variance: float = 1.0) -> "GaussianSource":
        """``dim`` components of equal variance."""
        return cls((variance,) * dim)

    @classmethod
    def geometric(cls, dim: int, ratio: float = 0.5, variance: float = 1.0) -> "GaussianSource":
        """Variances ``variance * ratio^i`` for ``i < dim``: a decaying spectrum, as in a transform code."""
        return cls(tuple(variance * ratio**i for i in range(dim)))

    @property
    def dim(self) -> int:
        return len(self.variances)

    def sample(self, n: int, seed: int = 0) -> torch.Tensor:
        """``(n, d)`` float32 samples, reproducible from ``seed``."""
        g = cpu_generator(seed)
        std = torch.tensor(self.variances, dtype=torch.float64).sqrt()
        return (torch.randn(n, self.dim, generator=g, dtype=torch.float64) * std).float()

    def rate_distortion(self, mse: float) -> float:
        """``R(D)`` in bits per dimension."""
        return rate_distortion(self.variances, mse)

    def distortion_rate(self, rate: float) -> float:
        """``D(R)``: the least per-dimension MSE at ``rate`` bits per dimension."""
        return distortion_rate(self.variances, rate)


@dataclass(frozen=True)
class TheoryCheck:
    """The mode U theory check of one operating point on the exact Gaussian source (bits per vector).

    ``information`` is ``I(X; Z_t)`` at the coded stop time, ``mmse`` the closed-form per-dim MMSE
    there, ``information_at_mse`` the ``I(X; Z_t')`` of the ``t'`` whose MMSE equals the measured
    MSE (the information an ideal DiffC needs for that distortion), ``rd_bits`` Shannon's ``R(D)``
    at the measured MSE, per vector like the rates.
    """

    information: float
    information_at_mse: float
    mmse: float
    rd_bits: float
    ideal: float
    estimated: float
    actual: float
    mse: float

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def check_diffc_point(variances, snr: float, ideal: np.ndarray, estimated: np.ndarray, actual: float,
                      mse_per_vector: np.ndarray, z: float = 4.0, atol_bits: float = 0.1) -> TheoryCheck:
    """Check ``actual >= estimated >= ideal`` and ``MSE >= MMSE`` within ``z`` standard errors.

    ``ideal`` and ``estimated`` are per-vector bits ``(N,)``, ``actual`` the stream's bits per
    vector, ``mse_per_vector`` ``(N,)`` each vector's per-dim MSE of the mse decode. Each
    comparison allows ``z`` standard errors of the Monte-Carlo mean (paired differences where both
    sides are per vector) plus ``atol_bits`` (the trapezoid and rounding error of near-zero rates). Raises :class:`LdcodecError` naming the broken inequality: below a
    bound is an accounting or a coding bug, never a result. Rates are in bits per source vector
    throughout, ``R(D)`` included.
    """
    from ldcodec.diffusion.coding_grid import gaussian_information_bits, gaussian_mmse, snr_of_mmse

    v = _as_variances(variances)
    ideal, estimated, mse = (np.asarray(a, np.float64) for a in (ideal, estimated, mse_per_vector))
    n = len(mse)
    se = lambda a: float(np.std(a, ddof=1) / math.sqrt(len(a))) if len(a) > 1 else 0.0  # noqa: E731
    mean_mse = float(mse.mean())
    out = TheoryCheck(gaussian_information_bits(v, snr), gaussian_information_bits(v, snr_of_mmse(v, mean_mse)),
                      gaussian_mmse(v, snr), rate_distortion(v, mean_mse) * v.size, float(ideal.mean()),
                      float(estimated.mean()), float(actual), mean_mse)
    problems = []
    if out.actual < out.estimated - z * se(estimated) - atol_bits:
        problems.append(f"actual {out.actual:.2f} < estimated {out.estimated:.2f} bits per vector")
    if out.estimated < out.ideal - z * se(estimated - ideal) - atol_bits:
        problems.append(f"estimated {out.estimated:.2f} < ideal {out.ideal:.2f} bits per vector")
    if out.mse < out.mmse - z * se(mse) - 1e-12:
        problems.append(f"mse decode's MSE {out.mse:.5g} < the MMSE {out.mmse:.5g} at this t")
    if out.actual < out.rd_bits - 1e-9:
        problems.append(f"actual {out.actual:.2f} < R(D) {out.rd_bits:.2f} bits per vector")
    if problems:
        raise LdcodecError(f"Gaussian theory check failed on {n} vectors: " + "; ".join(problems)
                           + ": bits are missing from the count or the chain is wrong")
    return out
