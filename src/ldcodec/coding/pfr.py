"""Poisson functional representation of one chunk, for a whole batch against one shared codebook.

One chunk of one mode U coding step sends, for every image ``b`` of a file, a sample of
``q_b = N(mu_q_b, s^2 I_m)`` to a decoder that knows ``p_b = N(mu_p_b, diag(sigma_p^2))``
(:func:`ldcodec.diffusion.coding_grid.step_densities`; ``sigma_p >= s``, Analytic-DPM).
Symbols (Li & El Gamal 2018, "Strong functional representation lemma", Sec. III):

=====================  ===========================================================================
``e_n``                candidate ``n`` in ``[0, N)``, ``N = 2^log2_n``: i.i.d. ``N(0, I_m)`` from the
                       format's generator (:func:`ldcodec.coding.candidates.candidates`), the same
                       for every image of the file; ``u_n = mu_p + sigma_p e_n`` is a draw of ``p``
``T_bn``               image ``b``'s Poisson arrival times ``E_1 + ... + E_n``, ``E ~ Exp(1)``: the
                       encoder's own randomness (never needed by the decoder)
``S_b``                image ``b``'s signed permutation of the chunk's coordinates
                       (:func:`.candidates.signed_permutations`): it sees candidates ``S_b e_n``
``log w_bn``           ``log q_b(u) - log p_b(u)`` at ``u = mu_p + sigma_p e``, ``e = S_b e_n``:
                       ``alpha . e^2 + beta_b . e + const_b`` with ``alpha = (1 - sigma_p^2 / s^2) / 2``
                       and ``beta_b = sigma_p (mu_q_b - mu_p_b) / s^2``
``n*_b``               ``argmin_n log T_bn - log w_bn``: ``u_{n*}`` is an exact sample of ``q_b`` when
                       ``N`` is unbounded (the PFR); the truncation to ``N`` pulls it toward ``p``
=====================  ===========================================================================

With different variances the KL-slicing of format 1 (sending a shift as several equal-KL slices)
no longer applies; chunks are groups of dims instead (:meth:`CodingTables.chunks`), and a dim
with too much information for one chunk is handled by more coding steps.

Sharing the codebook across the images of a file keeps every image's own sample exact (each
image sees i.i.d. candidates independent of its target, and its own arrivals) and scores all
images with one matrix product per candidate batch: the candidates are drawn once per file.

Index code: bucket ``j = bit_length(n*)`` with an integer table centred on the chunk's expected
KL (known to the decoder from the plan, so no side information), then ``j - 1`` raw bits
(:func:`index_table`).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

from ldcodec.coding import candidates as cand
from ldcodec.coding import range_coder

DEFAULT_PAD = 6  # candidates per chunk: 2^(ceil(expected KL) + pad)
MAX_PAD = 10
MAX_LOG2_CANDIDATES = 22
MIN_LOG2_CANDIDATES = 10
ROWS = 1 << 11  # candidates scored per matrix product (cache-sized)
TABLE_PRECISION = 16

Tensor = torch.Tensor


def log2_candidates(expected_bits: float, pad: int = DEFAULT_PAD) -> int:
    """``log2 N`` for a chunk of ``expected_bits`` expected KL (at least ``MIN_LOG2_CANDIDATES``, so
    that the images of a file rarely share a codebook row in low-KL chunks)."""
    return int(min(max(math.ceil(expected_bits - 1e-9) + pad, MIN_LOG2_CANDIDATES), MAX_LOG2_CANDIDATES))


def weights(mu_q: Tensor, mu_p: Tensor, var_q: float, var_p: Tensor) -> tuple[Tensor, Tensor]:
    """``(alpha (m,), beta (B, m))`` of ``log w`` for means ``(B, m)``, ``var_p`` ``(m,)``."""
    sd_p = var_p.sqrt()
    return 0.5 * (1.0 - var_p / var_q), sd_p * (mu_q - mu_p) / var_q


def kl_bits(mu_q: Tensor, mu_p: Tensor, var_q: float, var_p: Tensor) -> Tensor:
    """``KL(q_b || p_b)`` in bits per image ``(B,)`` for means ``(B, m)``, variances ``var_q``, ``(m,)``."""
    per = 0.5 * (torch.log(var_p / var_q) + (var_q + (mu_q - mu_p).square()) / var_p - 1.0)
    return per.sum(1) / math.log(2.0)


@torch.no_grad()
def select(key: int, step: int, chunk: int, log2_n: int, alpha: Tensor, beta: Tensor, images: Tensor,
           generator: torch.Generator) -> Tensor:
    """``n*`` per image ``(B,)`` int64: the PFR over ``2^log2_n`` shared candidates.

    ``alpha`` ``(m,)`` and ``beta`` ``(B, m)`` as in :func:`weights` (any device; float32 scoring);
    ``images`` ``(B,)`` the images' indices in the file. Image ``b`` sees the candidates ``S_b e_n``
    (its own signed permutation, :func:`~ldcodec.coding.candidates.signed_permutations`): i.i.d.
    ``N(0, I)`` like ``e_n``, but different points for different images, so two images of a low-KL
    chunk (which mostly take ``n* = 0``) do not decode to the same value. Its weights are
    ``alpha . (S e)^2 + beta . S e = alpha' . e^2 + beta' . e`` with the transform moved onto
    ``alpha, beta``: one matrix product still scores every image. The arrival times are each
    image's own, drawn from ``generator`` (a CPU generator): with arrivals shared by the images the
    selection is no longer an exact sample (measured: the MSE fell 12-20 % below the MMSE).
    """
    device = beta.device
    n, b, m = 1 << log2_n, beta.shape[0], beta.shape[1]
    perm, sign = cand.signed_permutations(key, step, chunk, images, m)
    perm, sign = perm.to(device), sign.to(device)
    a_img = torch.zeros(b, m, device=device).scatter_(1, perm, alpha.to(torch.float32).expand(b, m))
    b_img = torch.zeros(b, m, device=device).scatter_(1, perm, beta.to(torch.float32) * sign)
    a_t, b_t = a_img.T.contiguous(), b_img.T.contiguous()
    clock = torch.zeros(b, dtype=torch.float64)
    best_score = torch.full((b,), math.inf, device=device)
    best = torch.zeros(b, dtype=torch.int64, device=device)
    for start in range(0, n, ROWS):
        rows = min(ROWS, n - start)
        gaps = torch.cumsum(torch.empty(rows, b).exponential_(generator=generator), 0)  # float32 in a batch
        log_t = torch.log(clock.to(torch.float32) + gaps)
        clock = clock + gaps[-1].double()  # float64 across batches
        e = cand.candidates(key, step, chunk, start, rows, m, device=device)
        score = log_t.to(device) - e.square() @ a_t - e @ b_t
        value, index = score.min(0)
        better = value < best_score
        best_score = torch.where(better, value, best_score)
        best = torch.where(better, index + start, best)
    return best


def sample(key: int, step: int, chunk: int, index: Tensor, images: Tensor, mu_p: Tensor, var_p: Tensor) -> Tensor:
    """``u = mu_p + sigma_p (S_b e_{n*})`` per image ``(B, m)``: what both sides continue from."""
    e = cand.candidate(key, step, chunk, index.to(mu_p.device), mu_p.shape[1]).to(mu_p.dtype)
    perm, sign = cand.signed_permutations(key, step, chunk, images, mu_p.shape[1])
    e = torch.gather(e, 1, perm.to(mu_p.device)) * sign.to(mu_p.device, mu_p.dtype)
    return mu_p + var_p.sqrt().to(mu_p.dtype) * e


@lru_cache(maxsize=None)
def index_table(expected_q: int, log2_n: int) -> np.ndarray:
    """Integer table of the bucket ``j = 0..log2_n`` of ``n*`` for a chunk whose expected KL is
    ``e = expected_q / 4`` bits: ``P(j) ∝ 0.005 + 1 / (1 + ((j - e) / (1.5 + 0.1 e))^2)``, bucket 0
    raised by ``4 / (1 + 2 e)``. The constants were fitted by simulation of this module's PFR on
    Gaussian chunks of 1-8 dims and 0.1-12 bits (0.18 bits per chunk below the law of format 1's
    shape); ``tests/test_pfr.py`` checks the cost against the simulated index entropy. Only
    ``+ - * /``: the table is identical on every IEEE-754 machine."""
    e = expected_q / 4.0
    j = np.arange(log2_n + 1, dtype=np.float64)
    t = (j - e) / (1.5 + 0.1 * e)
    p = 0.005 + 1.0 / (1.0 + t * t)
    p[0] += 4.0 / (1.0 + 2.0 * e)
    return range_coder.quantize_pmf(p, TABLE_PRECISION)


def quantised_expectation(expected_bits: float) -> int:
    """The chunk's expected KL in quarter bits, the key of :func:`index_table` (capped at 64 bits)."""
    return int(min(max(round(4.0 * expected_bits), 0), 256))


def split_index(index: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices -> (bucket ``j``, offset in the bucket, offset bits ``max(j - 1, 0)``)."""
    index = np.asarray(index, dtype=np.int64)
    buckets = range_coder.bit_length(index)
    nbits = np.maximum(buckets - 1, 0)
    offsets = np.where(buckets == 0, 0, index - (np.int64(1) << nbits))
    return buckets, offsets, nbits


def write_indices(encoder, index: np.ndarray, expected_bits: float, log2_n: int) -> None:
    """Append one chunk's indices (one per image) to a range coder."""
    buckets, offsets, nbits = split_index(index)
    range_coder.write_categorical(encoder, buckets, index_table(quantised_expectation(expected_bits), log2_n),
                              TABLE_PRECISION)
    range_coder.write_bits(encoder, offsets, nbits)


def read_indices(decoder, count: int, expected_bits: float, log2_n: int) -> np.ndarray:
    """Inverse of :func:`write_indices` for ``count`` images."""
    buckets = range_coder.read_categorical(decoder, count, index_table(quantised_expectation(expected_bits), log2_n),
                                       TABLE_PRECISION)
    nbits = np.maximum(buckets - 1, 0)
    offsets = range_coder.read_bits(decoder, nbits)
    return np.where(buckets == 0, 0, (np.int64(1) << nbits) + offsets)


def index_bits(index: np.ndarray, expected_bits: float, log2_n: int) -> np.ndarray:
    """Information content of each index under the code of :func:`write_indices` -> ``(B,)`` bits."""
    buckets, _, nbits = split_index(index)
    counts = index_table(quantised_expectation(expected_bits), log2_n).astype(np.float64)
    return -np.log2(counts[buckets] / 2**TABLE_PRECISION) + nbits
