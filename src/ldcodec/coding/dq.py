"""Dithered quantisation (universal quantisation) as a Gaussian-step channel simulator.

Mode U's second channel simulator (:class:`DQSimulator`, codec ``diffc-dq``): one coding step
``z_u -> z_s`` of DiffC sends, for every image ``b`` and latent dim ``i`` at once (no chunks), a
sample whose error is uniform instead of Gaussian (Ziv 1985; Zamir & Feder 1992, "On universal
quantization by randomized uniform/lattice quantizers"; as a channel simulator for learned
compression: Kobus, Theis & Gündüz 2024, "Gaussian channel simulation with rotated dithered
quantization"; as a diffusion codec: UQDM, Yang, Will & Mandt, ICLR 2025).

Symbols (tensors are ``(B, d)`` unless said otherwise; ``B`` images, ``d`` latent dims):

=====================  ===========================================================================
``mu_q``               forward posterior mean ``cu z_u + c0 z0``; ``q = N(mu_q, var_q)`` (scalar)
``mu_p``, ``var_p``    the model ``cu z_u + c0 z0_hat``, ``(d,)`` variances ``var_q + c0^2 v_i``
                       (Analytic-DPM, :func:`ldcodec.diffusion.coding_grid.step_densities`)
``Delta``              step size ``sqrt(12 var_q)``: a uniform error on ``[-Delta/2, Delta/2)`` has
                       variance ``var_q``
``w``                  dither ``U(-1/2, 1/2)``, shared: the format's generator
                       (:func:`ldcodec.coding.candidates.dither`) keyed by image and step
``k``                  ``round(mu_q / Delta + w)``, integer, the only thing sent
``z_s``                ``Delta (k - w)``: what both sides continue from
=====================  ===========================================================================

Zamir & Feder: ``z_s - mu_q = Delta (k - w - mu_q / Delta)`` is uniform on ``[-Delta/2, Delta/2)``
with variance ``var_q``, independent of ``mu_q``; the step is a uniform-noise channel with the
Gaussian step's first two moments. Under the model ``mu_q ~ N(mu_p, c0^2 v)``, hence

    P(k = j | w) = Phi((j + 1/2 - m) / sigma) - Phi((j - 1/2 - m) / sigma),
    m = mu_p / Delta + w,   sigma = c0 sqrt(v) / Delta = sqrt(var_p - var_q) / Delta,

a Gaussian quantised to unit bins: the range coder codes ``j = k - round(m)`` with constriction's
``QuantizedGaussian`` of mean ``frac = m - round(m)`` and std ``sigma`` on ``[-R, R]``
(:func:`step_range`). Its expected cost is ``H(K | W) = I(mu_q; mu_q + U)``, the information of a
uniform-noise channel at the per-step SNR ``r = c0^2 v / var_q``: about ``1/2 log2(1 + r) + 0.2546``
bits per dim once ``r > 1`` (``1/2 log2(2 pi e / 12)``), and far more than the Gaussian step's
``r / (2 ln 2)`` when ``r`` is small (it grows like ``sqrt(r)``: uniform noise has unbounded
Fisher information). :data:`EXCESS` tabulates the excess ``I - 1/2 log2(1 + r)``; the codec uses it
to pick few, large coding steps.

Determinism. ``frac`` and ``sigma`` come from floating-point network outputs and tables, so both
are rounded to the grid ``2^-GRID_BITS`` (``sigma`` at least one grid step) before the coder sees
them, and constriction builds its 24-bit fixed-point model from these dyadic numbers. Residual
risk: an encoder and a decoder whose denoiser outputs differ (another device, BLAS or thread
count) round a ``frac`` differently when it lies within that difference of a grid boundary (about
``2^GRID_BITS * |difference| / Delta`` per symbol), and constriction's own ``erf`` could differ
between platforms in the last bit where a fixed-point probability sits on a rounding boundary.
The codec therefore runs the coding denoiser in float64 (differences near ``1e-16``), draws the
dither from integers, and refuses a payload that is not the canonical coding of the symbols it
decodes to (a desync almost surely breaks it).
"""

from __future__ import annotations

import math

from dataclasses import dataclass

import constriction
import numpy as np
import torch

from ldcodec.coding import candidates as cand
from ldcodec.coding import range_coder
from ldcodec.coding.pfr import kl_bits
from ldcodec.coding.simulator import ChannelSimulator, Encoded, Step, register_simulator
from ldcodec.diffusion.coding_grid import CodingTables, StepCost
from ldcodec.errors import LdcodecError

GRID_BITS = 12  # model mean offsets and stds are multiples of 2^-GRID_BITS
# After the first step the latent's noise is partly uniform while the next step's density assumes it
# Gaussian: a cost the per-step excess table does not see. Measured on the exact Gaussian source
# (d = 64, t = 0.1, benchmarks/gaussian_diffc.py --simulator dq): 11 steps cost 6.4 bits more than one
# although the table predicted them cheaper, i.e. at least 0.01 bits per dim and extra step; priced
# at 0.023 (24 / 2^10) so that the grid takes a step only where it saves more than that.
STEP_MISMATCH = 24
STEP_DIM_BITS = 24  # a dim's bits in one step are not limited (a larger step only widens its symbols' range)
MIN_RANGE = 1 << 10  # symbols j = k - round(m) are coded on [-R, R], R >= MIN_RANGE
MAX_RANGE = 1 << 22
RANGE_STDS = 32  # R covers at least this many model stds

# Excess of the dithered-quantisation step over the Gaussian step's information, per dim, in
# 2^-10 bits, at Gaussian bits b = 1/2 log2(1 + r) = j / EXCESS_STEPS for j = 0..128 (b <= 2);
# beyond the table it is EXCESS[-1] (the limit 1/2 log2(2 pi e / 12) = 0.2546 bits, reached to
# 1e-3 bits at b = 1). Integers, so the codec's choice of coding steps is the same on every machine. The values
# are I(X; X + U) - b for X ~ N(0, r/12), U ~ U(-1/2, 1/2), by quadrature;
# tests/test_dq.py recomputes them.
EXCESS_STEPS = 64
EXCESS = (
    0, 98, 130, 152, 168, 181, 191, 200, 207, 213, 219, 224, 228, 231, 235, 237, 240, 242, 244,
    246, 247, 249, 250, 251, 252, 253, 254, 254, 255, 255, 256, 256, 257, 257, 258, 258, 258, 258,
    259, 259, 259, 259, 259, 259, 260, 260, 260, 260, 260, 260, 260, 260, 260, 260, 260, 260, 260,
    260, 260, 260, 260, 260, 260, 261, 261, 261, 261, 261, 261, 261, 261, 261, 261, 261, 261, 261,
    261, 261, 261, 261, 261, 261, 261, 261, 261, 261, 261, 261, 261, 261, 261, 261, 261, 261, 261,
    261, 261, 261, 261, 261, 261, 261, 261, 261, 261, 261, 261, 261, 261, 261, 261, 261, 261, 261,
    261, 261, 261, 261, 261, 261, 261, 261, 261, 261, 261, 261, 261, 261, 261,
)

Tensor = torch.Tensor


def quantise(x: Tensor, floor: bool = False) -> Tensor:
    """``x`` rounded to the grid ``2^-GRID_BITS`` (float64, exactly representable); with ``floor``
    at least one grid step (for stds)."""
    q = torch.round(x.double() * 2.0**GRID_BITS)
    return (q.clamp(min=1.0) if floor else q) * 2.0**-GRID_BITS


def step_model(mu_p: Tensor, var_q: float, var_p: Tensor, w: Tensor) -> tuple[Tensor, Tensor, Tensor, float]:
    """The coding model of one step -> ``(centre (B, d) int64, frac (B, d), sigma (d,), Delta)``.

    ``centre = round(mu_p / Delta + w)``, ``frac`` the rest on the grid, ``sigma`` on the grid.
    ``mu_p`` ``(B, d)``, ``var_p`` ``(d,)``, ``w`` ``(B, d)`` float64.
    """
    delta = math.sqrt(12.0 * var_q)
    m = mu_p / delta + w
    centre = torch.round(m)
    if not torch.isfinite(centre).all() or (centre.numel() and centre.abs().max() > 2.0**52):
        raise ValueError("the model mean of a dithered-quantisation step is not finite")
    frac = quantise(m - centre)
    sigma = quantise((var_p.double() - var_q).clamp(min=0.0).sqrt() / delta, floor=True)
    return centre.to(torch.int64), frac, sigma, delta


def step_range(sigma: Tensor) -> int:
    """``R`` of a step's symbols: the next power of two >= ``RANGE_STDS`` max ``sigma``, at least
    ``MIN_RANGE`` (its leak, ``(2R + 1) 2^-24`` of the mass, costs under ``2e-4`` bits a symbol),
    at most ``MAX_RANGE``. A function of the gridded ``sigma`` alone."""
    need = math.ceil(RANGE_STDS * float(sigma.max()) if sigma.numel() else 0.0)
    return int(min(max(MIN_RANGE, 1 << max(need - 1, 0).bit_length()), MAX_RANGE))


def quantise_step(mu_q: Tensor, w: Tensor, delta: float) -> tuple[Tensor, Tensor]:
    """The encoder: ``k = round(mu_q / Delta + w)`` ``(B, d)`` int64 and the decoded ``z_s``."""
    k = torch.round(mu_q / delta + w)
    return k.to(torch.int64), reconstruct(k.to(torch.int64), w, delta)


def reconstruct(k: Tensor, w: Tensor, delta: float) -> Tensor:
    """The decoder: ``z_s = Delta (k - w)`` (float64; the encoder continues from the same value)."""
    return delta * (k.double() - w)


def _family(r: int):
    return constriction.stream.model.QuantizedGaussian(-r, r)


def write_symbols(encoder, j: np.ndarray, frac: np.ndarray, sigma: np.ndarray, r: int) -> None:
    """Append the symbols ``j`` ``(B, d)`` (row-major) under their models to a range coder."""
    j = np.asarray(j, np.int64)
    if j.size == 0:
        return
    if np.abs(j).max() > r:
        raise LdcodecError(f"a latent lies {int(np.abs(j).max())} quantisation steps from the prior's mean "
                           f"(more than {RANGE_STDS} of its stds): this image is too far from the model to code")
    encoder.encode(j.reshape(-1).astype(np.int32), _family(r), *_params(frac, sigma, j.shape))


def read_symbols(decoder, frac: np.ndarray, sigma: np.ndarray, r: int) -> np.ndarray:
    """Inverse of :func:`write_symbols` -> ``(B, d)`` int64."""
    frac = np.asarray(frac, np.float64)
    if frac.size == 0:
        return np.zeros(frac.shape, np.int64)
    out = decoder.decode(_family(r), *_params(frac, sigma, frac.shape))
    return np.asarray(out, np.int64).reshape(frac.shape)


def _params(frac, sigma, shape) -> tuple[np.ndarray, np.ndarray]:
    frac = np.ascontiguousarray(np.asarray(frac, np.float64).reshape(-1))
    sigma = np.ascontiguousarray(np.broadcast_to(np.asarray(sigma, np.float64), shape).reshape(-1))
    if not (np.isfinite(frac).all() and np.isfinite(sigma).all()):
        raise ValueError("non-finite dithered-quantisation model")
    return frac, sigma


def symbol_bits(j: Tensor, frac: Tensor, sigma: Tensor) -> Tensor:
    """``-log2 P(j)`` per symbol ``(B, d)`` under the quantised Gaussian of mean ``frac``, std
    ``sigma`` (the coder's model, before its 24-bit rounding and leak), computed from the tail
    nearer to the mean (``log_ndtr``) so that far symbols keep their precision."""
    j, frac, sigma = j.double(), frac.double(), sigma.double()
    lo, hi = (j - 0.5 - frac) / sigma, (j + 0.5 - frac) / sigma
    flip = lo > 0  # both bounds above the mean: use the upper tail, P = Phi(-lo) - Phi(-hi)
    a, b = torch.where(flip, -hi, lo), torch.where(flip, -lo, hi)
    log_b, log_a = torch.special.log_ndtr(b), torch.special.log_ndtr(a)
    log_p = log_b + torch.log1p(-torch.exp(log_a - log_b).clamp(max=1.0 - 1e-16))
    return (-log_p / math.log(2.0)).clamp(max=float(range_coder.CODER_PRECISION))


def excess_bits(step_bits: np.ndarray) -> np.ndarray:
    """:data:`EXCESS` at Gaussian bits ``step_bits`` (int64, ``2^-10`` units, any shape), by
    linear interpolation in integers -> int64 ``2^-10`` bits."""
    b = np.asarray(step_bits, np.int64) * EXCESS_STEPS
    table = np.asarray(EXCESS, np.int64)
    i = np.minimum(b >> 10, len(table) - 1)
    nxt = np.minimum(i + 1, len(table) - 1)
    rest = np.where(i < len(table) - 1, b - (i << 10), 0)
    return table[i] + ((table[nxt] - table[i]) * rest >> 10)


def uniform_channel_bits(r: float, points: int = 200_001) -> float:
    """``I(X; X + U)`` in bits for ``X ~ N(0, r / 12)``, ``U ~ U(-1/2, 1/2)`` (quadrature of
    ``-int p log2 p`` with ``p(y) = Phi((y + 1/2) / s) - Phi((y - 1/2) / s)``): the expected cost
    of a dithered-quantisation step per dim at per-step SNR ``r``. Used to build and test :data:`EXCESS`."""
    s = math.sqrt(r / 12.0)
    y = torch.linspace(-0.5 - 12 * s, 0.5 + 12 * s, points, dtype=torch.float64)
    p = (torch.special.ndtr((y + 0.5) / s) - torch.special.ndtr((y - 0.5) / s)).clamp(min=1e-300)
    return float(torch.trapezoid(-p * torch.log2(p), y))


@dataclass
class DQSymbols:
    """One step's symbols: ``j`` ``(N, d)`` int64 and their coding model, ``frac`` ``(N, d)``,
    ``sigma`` ``(d,)`` and the range ``r`` (:func:`write_symbols`)."""

    j: np.ndarray
    frac: np.ndarray
    sigma: np.ndarray
    r: int

    def rows(self, rows: slice) -> DQSymbols:
        return DQSymbols(self.j[rows], self.frac[rows], self.sigma, self.r)


@register_simulator
class DQSimulator(ChannelSimulator):
    """Every dim of a step at once by dithered quantisation (module docstring). Per step ``z_u -> z_s``
    and image, all ``d`` dims: ``Delta = sqrt(12 var_q)``, dither ``w`` from the format's generator
    keyed by image and step, ``k = round(mu_q / Delta + w)``, sent ``j = k - round(mu_p / Delta + w)``,
    ``z_s = Delta (k - w)``. Estimated bits: ``-log2 P(j)`` under the coded model. Diagnostics:
    ``noise_variance_ratio`` (``sum (z_s - mu_q)^2 / (N d var_q)``, 1 by construction),
    ``gaussian_kl_bits`` (the Gaussian steps' ``KL(q || p)`` the uniform channel replaces, per image)
    and ``excess_bits`` (estimated minus that KL, per image). The step model depends on the decoded
    ``z_u`` through a float64 coding denoiser (determinism, module docstring)."""

    name, codec_name, codec_id = "dq", "diffc-dq", 8
    coding_dtype = torch.float64

    def cost(self) -> StepCost:
        """Per step and dim its expected Gaussian KL ``b`` plus the uniform channel's excess at ``b``
        (:func:`excess_bits`) plus :data:`STEP_MISMATCH`, integers in ``2^-10`` bits."""
        return StepCost("dq", STEP_DIM_BITS, lambda e: (e + excess_bits(e) + STEP_MISMATCH).sum(1))

    def plan(self, tables: CodingTables, a: int, b: int) -> None:
        return None  # every dim of the step at once

    @staticmethod
    def _model(step: Step) -> tuple[Tensor, Tensor, Tensor, Tensor, float]:
        """``(w, centre, frac, sigma, Delta)`` of the step (:func:`step_model`), the same on both sides."""
        mu_p = step.mu_p
        w = cand.dither(step.key, step.word, step.images, mu_p.shape[1]).to(mu_p.device)
        return (w, *step_model(mu_p, step.var_q, step.var_p, w))

    def encode(self, step: Step, z0: Tensor, generator: torch.Generator) -> Encoded:
        w, centre, frac, sigma, delta = self._model(step)
        mu_q = step.mu_q(z0)
        k, z = quantise_step(mu_q, w, delta)
        j = k - centre
        bits = symbol_bits(j, frac, sigma).sum(1).cpu()
        kl = kl_bits(mu_q, step.mu_p, step.var_q, step.var_p).cpu()
        symbols = DQSymbols(j.cpu().numpy(), frac.cpu().numpy(), sigma.cpu().numpy(), step_range(sigma))
        return Encoded(z, symbols, bits, {"noise": float((z - mu_q).square().sum()),
                                          "expected": step.var_q * z.numel(),
                                          "kl": float(kl.sum()), "bits": float(bits.sum())})

    def decode(self, step: Step, symbols: DQSymbols) -> Tensor:
        w, centre, _, _, delta = self._model(step)
        return reconstruct(centre + torch.from_numpy(symbols.j).to(centre.device), w, delta)

    def write(self, encoder, symbols: DQSymbols) -> None:
        write_symbols(encoder, symbols.j, symbols.frac, symbols.sigma, symbols.r)

    def read(self, decoder, step: Step, count: int) -> DQSymbols:
        _, _, frac, sigma, _ = self._model(step)
        frac_np, sigma_np, r = frac.cpu().numpy(), sigma.cpu().numpy(), step_range(sigma)
        return DQSymbols(read_symbols(decoder, frac_np, sigma_np, r), frac_np, sigma_np, r)

    def matches(self, decoder, symbols: DQSymbols) -> bool:
        return np.array_equal(read_symbols(decoder, symbols.frac, symbols.sigma, symbols.r), symbols.j)

    def summary(self, stats: dict[str, float], count: int) -> dict[str, float]:
        expected = stats.get("expected", 0.0)
        kl, bits = stats.get("kl", 0.0), stats.get("bits", 0.0)
        return {"noise_variance_ratio": stats.get("noise", 0.0) / expected if expected else 1.0,
                "gaussian_kl_bits": kl / count, "excess_bits": (bits - kl) / count}
