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
no longer applies; chunks are groups of dims instead (:func:`chunks`), and a dim with too much
information for one chunk is handled by more coding steps.

Sharing the codebook across the images of a file keeps every image's own sample exact (each
image sees i.i.d. candidates independent of its target, and its own arrivals) and scores all
images with one matrix product per candidate batch: the candidates are drawn once per file.

Index code: bucket ``j = bit_length(n*)`` with an integer table centred on the chunk's expected
KL (known to the decoder from the plan, so no side information), then ``j - 1`` raw bits
(:func:`index_table`).

:class:`PFRSimulator` is mode U's channel simulator over these pieces
(:mod:`ldcodec.coding.simulator`): a step's plan is its chunks, its symbols are one index per image
and chunk, its cost the expected KL plus an index overhead per chunk and per step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from ldcodec.coding import candidates as cand
from ldcodec.coding import range_coder
from ldcodec.coding.simulator import ChannelSimulator, Encoded, Step, register_simulator
from ldcodec.diffusion.coding_grid import FRAC_BITS, CodingTables, StepCost
from ldcodec.errors import LdcodecError

DEFAULT_PAD = 6  # candidates per chunk: 2^(ceil(expected KL) + pad)
MAX_PAD = 10
MAX_LOG2_CANDIDATES = 22
MIN_LOG2_CANDIDATES = 10
ROWS = 1 << 11  # candidates scored per matrix product (cache-sized)
FIRST_ROWS = 1 << 7  # select's first batch of candidates; each next batch doubles, up to ROWS
STOP_MARGIN = 1e-3  # early stop: relative slack on the score bound for float32 scoring (select)
TABLE_PRECISION = 16
CHUNK_OVERHEAD = 2 << FRAC_BITS  # index cost of a chunk beyond its KL, measured: about 2 bits (index_table)
# What a further PFR step costs beyond its chunks: on the exact Gaussian source (d = 64, t = 0.05,
# benchmarks/gaussian_diffc.py) a 5-step chain with the same 8 chunks as the 1-step chain cost 2.9
# bits more (exactness falls with each truncated step), about 0.7 bits a step; priced at 1 bit, so
# that the grid adds a step only where it saves more (ties of the tables' rounding go to fewer steps).
STEP_OVERHEAD = 1 << FRAC_BITS

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


def max_log_ratio(alpha: Tensor, beta: Tensor) -> Tensor:
    """``(B,)`` float64: per image, the largest ``alpha . e^2 + beta_b . e`` over all ``e`` (the
    density ratio's maximum up to its constant): ``sum_i -beta_bi^2 / (4 alpha_i)`` for ``alpha < 0``
    (``sigma_p > s``); ``+inf`` where a dim has ``alpha > 0``, or ``alpha = 0`` and ``beta != 0`` (no bound)."""
    a, b = alpha.double().cpu(), beta.double().cpu()
    safe = torch.where(a < 0, a, torch.full_like(a, -1.0))
    unbounded = (a > 0) | ((a == 0) & (b != 0))
    per = torch.where(a < 0, -b.square() / (4 * safe), torch.where(unbounded, math.inf, 0.0))
    return per.sum(1)


@torch.no_grad()
def select(key: int, step: int, chunk: int, log2_n: int, alpha: Tensor, beta: Tensor, images: Tensor,
           generator: torch.Generator, early_stop: bool = True) -> Tensor:
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

    Early stop (``early_stop``): the arrivals increase, and no candidate scores below
    ``log T - max_log_ratio`` (:func:`max_log_ratio`), so once the clock has passed that point for
    an image's best score, no later candidate can win: the image leaves the search (its arrivals
    are no longer drawn, its scores no longer computed), and the candidates stop when every image
    has left. Batches start at ``FIRST_ROWS`` candidates and double up to ``ROWS``, so a chunk whose
winner comes early stops early. The winner is the full search's for the same arrivals (a margin covers float32
    scoring); only the encoder's draws change, not the format. ``early_stop=False`` scores all
    ``2^log2_n`` candidates (a check of the bound).
    """
    device = beta.device
    n, b, m = 1 << log2_n, beta.shape[0], beta.shape[1]
    perm, sign = cand.signed_permutations(key, step, chunk, images, m)
    perm, sign = perm.to(device), sign.to(device)
    a_img = torch.zeros(b, m, device=device).scatter_(1, perm, alpha.to(torch.float32).expand(b, m))
    b_img = torch.zeros(b, m, device=device).scatter_(1, perm, beta.to(torch.float32) * sign)
    a_t, b_t = a_img.T.contiguous(), b_img.T.contiguous()
    bound = max_log_ratio(alpha.expand(b, m), beta) if early_stop else torch.full((b,), math.inf, dtype=torch.float64)
    bound = bound + STOP_MARGIN * (1.0 + bound.abs())
    clock = torch.zeros(b, dtype=torch.float64)
    best_score = torch.full((b,), math.inf, device=device)
    best = torch.zeros(b, dtype=torch.int64, device=device)
    active, start, rows = torch.arange(b), 0, FIRST_ROWS
    while start < n and len(active):
        rows = min(rows, n - start)
        # Exp(1) gaps as -log(1 - U): five times faster on the CPU than Tensor.exponential_; float32 in a batch
        gaps = torch.cumsum(torch.rand(rows, len(active), generator=generator).neg_().log1p_().neg_(), 0)
        log_t = torch.log(clock[active].to(torch.float32) + gaps)
        clock[active] += gaps[-1].double()  # float64 across batches
        e = cand.candidates(key, step, chunk, start, rows, m, device=device)
        on = active.to(device)
        score = log_t.to(device) - e.square() @ a_t[:, on] - e @ b_t[:, on]
        value, index = score.min(0)
        better = value < best_score[on]
        best_score[on] = torch.where(better, value, best_score[on])
        best[on] = torch.where(better, index + start, best[on])
        done = torch.log(clock[active]) - bound[active] > best_score[on].double().cpu()
        active, start, rows = active[~done], start + rows, min(2 * rows, ROWS)
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


def step_cost(budget_bits: int, chunk_overhead: int = CHUNK_OVERHEAD, step_overhead: int = STEP_OVERHEAD) -> StepCost:
    """The PFR's step cost: its expected KL plus ``chunk_overhead`` per chunk, ``ceil(KL / budget)``
    chunks (at least one), plus ``step_overhead``; a dim cannot be cut across chunks, so
    ``max_dim_bits`` is the budget."""
    cap = budget_bits << FRAC_BITS

    def per_step(e: np.ndarray) -> np.ndarray:
        kl = e.sum(1)
        return kl + chunk_overhead * np.maximum(1, -(-kl // cap)) + step_overhead

    return StepCost(f"pfr-{budget_bits}-{chunk_overhead}-{step_overhead}", budget_bits, per_step)


def chunks(tables: CodingTables, a: int, b: int, budget_bits: int) -> list[tuple[np.ndarray, int]]:
    """Chunk plan of the step ``a -> b``: ``[(dims, expected bits x 2^FRAC_BITS), ...]``.

    First-fit decreasing packing of the dims, by their expected bits in this step
    (:meth:`CodingTables.step_bits`), into chunks of at most ``budget_bits`` (a dim above the budget
    is a chunk of its own). Integers only; ties are broken by dim index, so the plan is identical on
    every machine.
    """
    e = tables.step_bits(a, b)
    order = np.lexsort((np.arange(len(e)), -e))
    cap = budget_bits << FRAC_BITS
    bins: list[list[int]] = []
    load: list[int] = []
    for i in order.tolist():
        for k, used in enumerate(load):
            if used + int(e[i]) <= cap:
                bins[k].append(i)
                load[k] = used + int(e[i])
                break
        else:
            bins.append([i])
            load.append(int(e[i]))
    return [(np.array(sorted(dims), dtype=np.int64), used) for dims, used in zip(bins, load)]


@dataclass
class PFRSymbols:
    """One step's symbols: ``indices[c]`` ``(N,)`` int64, the PFR index of every image in chunk ``c``,
    and ``coding[c]`` ``(expected bits, log2 candidates)``, the chunk's index code."""

    indices: list[np.ndarray]
    coding: list[tuple[float, int]]

    def rows(self, rows: slice) -> PFRSymbols:
        return PFRSymbols([index[rows] for index in self.indices], self.coding)


@register_simulator
class PFRSimulator(ChannelSimulator):
    """Each chunk of dims of a step by the PFR over ``2^(ceil(KL) + pad)`` shared candidates
    (module docstring); chunks of at most ``max_chunk_bits`` expected bits. Diagnostic
    ``exactness``: ``sum (u - mu_p) . (mu_q - mu_p) / sum ||mu_q - mu_p||^2`` over the chunks and
    images, 1 for exact samples of ``q``; the truncated PFR pulls samples toward ``p`` and lowers it."""

    name, codec_name, codec_id = "pfr", "diffc", 1

    def __init__(self, max_chunk_bits: int, pad: int):
        if not (1 <= max_chunk_bits <= 20 and 0 <= pad <= MAX_PAD):
            raise LdcodecError(f"codec.max_chunk_bits = {max_chunk_bits} and codec.pad = {pad} must lie in 1..20 "
                               f"and 0..{MAX_PAD}")
        self.budget, self.pad = int(max_chunk_bits), int(pad)

    def cost(self) -> StepCost:
        return step_cost(self.budget)

    def plan(self, tables: CodingTables, a: int, b: int) -> list[tuple[np.ndarray, int]]:
        return chunks(tables, a, b, self.budget)

    def _coding(self, plan) -> list[tuple[float, int]]:
        return [(e / 2**FRAC_BITS, log2_candidates(e / 2**FRAC_BITS, self.pad)) for _, e in plan]

    def encode(self, step: Step, z0: Tensor, generator: torch.Generator) -> Encoded:
        mu_p, mu_q = step.mu_p, step.mu_q(z0)
        kl = torch.zeros(len(z0), dtype=torch.float64)
        moved, wanted, indices = 0.0, 0.0, []
        coding = self._coding(step.plan)
        for c, ((dims, _), (_, log2_n)) in enumerate(zip(step.plan, coding)):
            d = torch.from_numpy(dims).to(mu_p.device)
            var_p = step.var_p[d]
            alpha, beta = weights(mu_q[:, d], mu_p[:, d], step.var_q, var_p)
            index = select(step.key, step.word, c, log2_n, alpha, beta, step.images, generator)
            kl += kl_bits(mu_q[:, d], mu_p[:, d], step.var_q, var_p).cpu()
            u = sample(step.key, step.word, c, index, step.images, mu_p[:, d], var_p)
            shift = mu_q[:, d] - mu_p[:, d]
            moved, wanted = moved + float(((u - mu_p[:, d]) * shift).sum()), wanted + float(shift.square().sum())
            mu_p[:, d] = u
            indices.append(index.cpu().numpy())
        return Encoded(mu_p, PFRSymbols(indices, coding), kl, {"moved": moved, "wanted": wanted})

    def decode(self, step: Step, symbols: PFRSymbols) -> Tensor:
        mu_p = step.mu_p
        for c, ((dims, _), index) in enumerate(zip(step.plan, symbols.indices)):
            d = torch.from_numpy(dims).to(mu_p.device)
            mu_p[:, d] = sample(step.key, step.word, c, torch.from_numpy(index), step.images, mu_p[:, d],
                                step.var_p[d])
        return mu_p

    def write(self, encoder, symbols: PFRSymbols) -> None:
        for index, (bits, log2_n) in zip(symbols.indices, symbols.coding):
            write_indices(encoder, index, bits, log2_n)

    def read(self, decoder, step: Step, count: int) -> PFRSymbols:
        coding = self._coding(step.plan)
        return PFRSymbols([read_indices(decoder, count, bits, log2_n) for bits, log2_n in coding], coding)

    def matches(self, decoder, symbols: PFRSymbols) -> bool:
        count = len(symbols.indices[0]) if symbols.indices else 0
        return all(np.array_equal(read_indices(decoder, count, bits, log2_n), index)
                   for index, (bits, log2_n) in zip(symbols.indices, symbols.coding))

    def summary(self, stats: dict[str, float], count: int) -> dict[str, float]:
        wanted = stats.get("wanted", 0.0)
        return {"exactness": stats.get("moved", 0.0) / wanted if wanted > 0 else 1.0}
