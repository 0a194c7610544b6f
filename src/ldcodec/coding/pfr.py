"""Poisson functional representation of one chunk, for a whole batch against one shared codebook.

One chunk of one mode U coding step sends, for every image ``b`` of a file, a sample of
``q_b = N(mu_q_b, s^2 I_m)`` to a decoder that knows ``p_b = N(mu_p_b, diag(sigma_p^2))``
(:func:`ldcodec.diffusion.coding_grid.step_densities`; ``sigma_p >= s``, Analytic-DPM).
Symbols (Li & El Gamal 2018, "Strong functional representation lemma", Sec. III):

=====================  ===========================================================================
``e_n``                candidate ``n`` in ``[0, N)``, ``N = 2^log2_n``: i.i.d. ``N(0, I_m)`` from the
                       format's generator (:func:`ldcodec.coding.candidates.candidates`), the same
                       for every image of the file; ``u_n = mu_p + sigma_p e_n`` is a draw of ``p``
``T_n``                Poisson arrival times ``E_1 + ... + E_n``, ``E ~ Exp(1)``: the encoder's own
                       randomness (never needed by the decoder)
``k_b``                image ``b``'s offset (:func:`.candidates.offsets`): its arrival ``n`` goes with
                       codebook row ``n XOR k_b``, and ``n*`` is what is sent
``log w_bn``           ``log q_b(u) - log p_b(u)`` at ``u = mu_p + sigma_p e``, ``e = e_(n XOR k_b)``:
                       ``alpha . e^2 + beta_b . e + const_b`` with ``alpha = (1 - sigma_p^2 / s^2) / 2``
                       and ``beta_b = sigma_p (mu_q_b - mu_p_b) / s^2``
``n*_b``               ``argmin_n log T_n - log w_bn``: ``u_{n*}`` is an exact sample of ``q_b`` when
                       ``N`` is unbounded (the PFR); the truncation to ``N`` pulls it toward ``p``
=====================  ===========================================================================

With different variances the KL-slicing of format 1 (sending a shift as several equal-KL slices)
no longer applies; chunks are groups of dims instead (:meth:`CodingTables.chunks`), and a dim
with too much information for one chunk is handled by more coding steps.

Sharing the codebook across the images of a file keeps every image's own sample exact (each
image still sees i.i.d. candidates independent of its target, and its own arrivals) and scores
all images with one matrix product per candidate batch: the candidates are drawn once per file.

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
from ldcodec.coding import entropy

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
    ``images`` ``(B,)`` the images' indices in the file (their codebook offsets). The arrival
    times are the encoder's own randomness from ``generator`` (a CPU generator), shared by the
    batch; image ``b`` pairs arrival ``n`` with codebook row ``n XOR k_b``. For each image the
    pairs are still i.i.d. candidates independent of the arrivals, so its sample stays exact,
    while two images of a low-KL chunk (which mostly take ``n* = 0``) get different rows: the
    decoded latents of a file keep their diversity.
    """
    device = beta.device
    n, b = 1 << log2_n, beta.shape[0]
    log_t = torch.log(torch.cumsum(torch.empty(n, dtype=torch.float64).exponential_(generator=generator), 0))
    log_t = log_t.to(device, torch.float32)
    k = cand.offsets(key, step, chunk, images, log2_n).to(device)
    a, bt = alpha.to(torch.float32), beta.to(torch.float32).T.contiguous()
    best_score = torch.full((b,), math.inf, device=device)
    best = torch.zeros(b, dtype=torch.int64, device=device)
    for start in range(0, n, ROWS):
        rows = min(ROWS, n - start)
        row = torch.arange(start, start + rows, device=device)
        e = cand.candidates(key, step, chunk, start, rows, beta.shape[1], device=device)
        score = log_t[row[:, None] ^ k[None, :]] - (e.square() @ a)[:, None] - e @ bt
        value, index = score.min(0)
        better = value < best_score
        best_score = torch.where(better, value, best_score)
        best = torch.where(better, index + start, best)
    return best ^ k


def sample(key: int, step: int, chunk: int, index: Tensor, images: Tensor, log2_n: int, mu_p: Tensor,
           var_p: Tensor) -> Tensor:
    """``u = mu_p + sigma_p e_row``, ``row = n* XOR k_b``, per image ``(B, m)``: what both sides continue from."""
    index = index.to(mu_p.device)
    row = index ^ cand.offsets(key, step, chunk, images, log2_n).to(mu_p.device)
    e = cand.candidate(key, step, chunk, row, mu_p.shape[1]).to(mu_p.dtype)
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
    return entropy.quantize_pmf(p, TABLE_PRECISION)


def quantised_expectation(expected_bits: float) -> int:
    """The chunk's expected KL in quarter bits, the key of :func:`index_table` (capped at 64 bits)."""
    return int(min(max(round(4.0 * expected_bits), 0), 256))


def split_index(index: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices -> (bucket ``j``, offset in the bucket, offset bits ``max(j - 1, 0)``)."""
    index = np.asarray(index, dtype=np.int64)
    buckets = entropy.bit_length(index)
    nbits = np.maximum(buckets - 1, 0)
    offsets = np.where(buckets == 0, 0, index - (np.int64(1) << nbits))
    return buckets, offsets, nbits


def write_indices(encoder, index: np.ndarray, expected_bits: float, log2_n: int) -> None:
    """Append one chunk's indices (one per image) to a range coder."""
    buckets, offsets, nbits = split_index(index)
    entropy.write_categorical(encoder, buckets, index_table(quantised_expectation(expected_bits), log2_n),
                              TABLE_PRECISION)
    entropy.write_bits(encoder, offsets, nbits)


def read_indices(decoder, count: int, expected_bits: float, log2_n: int) -> np.ndarray:
    """Inverse of :func:`write_indices` for ``count`` images."""
    buckets = entropy.read_categorical(decoder, count, index_table(quantised_expectation(expected_bits), log2_n),
                                       TABLE_PRECISION)
    nbits = np.maximum(buckets - 1, 0)
    offsets = entropy.read_bits(decoder, nbits)
    return np.where(buckets == 0, 0, (np.int64(1) << nbits) + offsets)


def index_bits(index: np.ndarray, expected_bits: float, log2_n: int) -> np.ndarray:
    """Information content of each index under the code of :func:`write_indices` -> ``(B,)`` bits."""
    buckets, _, nbits = split_index(index)
    counts = index_table(quantised_expectation(expected_bits), log2_n).astype(np.float64)
    return -np.log2(counts[buckets] / 2**TABLE_PRECISION) + nbits
