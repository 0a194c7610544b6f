"""Reverse channel coding of one Gaussian step with the Poisson functional representation.

One coding step of mode U (DESIGN.md §3; DiffC, Theis et al. 2022) sends a sample of
``q = N(mu_q, s^2 I)`` to a decoder that knows only ``p = N(mu_p, s^2 I)`` and shared
randomness. In units of ``s`` around ``mu_p`` the shift is ``v = (mu_q - mu_p) / s`` and
``KL(q || p) = ||v||^2 / 2`` nats.

Scheme (symbols as in Li & El Gamal 2018, "Strong functional representation lemma")
----------------------------------------------------------------------------------
=====================  ======================================================================
``perm``               permutation of the ``d`` dims, drawn from the stream key
``G``, groups          ``perm`` cut into ``G`` contiguous groups of near-equal size
``R_g``, slices        group ``g`` (shift ``v_g``, KL ``K_g``) is sent as ``R_g`` independent
                       *KL slices*: ``e_g = sum_r x_r`` with ``x_r ~ N(v_g / R_g, I / R_g)``,
                       each against ``N(0, I / R_g)`` with ``KL = K_g / R_g`` (equal by
                       construction, so chunks are balanced whatever the per-dim KLs are;
                       ``R_g = ceil(K_g / max_chunk_bits)``)
chunk                  one slice of one group; the unit that one PFR index codes
``b``, budget          integer bits, ``b >= every chunk's KL`` (one per step)
``N = 2**(b + pad)``   candidates per chunk
``eps_n``              candidate ``n``: i.i.d. ``N(0, I_m)`` from Philox keyed by
                       ``(seed, step, chunk, n // CANDIDATE_BATCH)``; ``x_n = eps_n / sqrt(R_g)``
``T_n``                arrival times ``E_1 + ... + E_n``, ``E_i ~ Exp(1)`` (encoder only)
``log w_n``            ``eps_n . v_g / sqrt(R_g) - K_g / R_g``   (``log q(x_n) / p(x_n)``)
``n*``                 ``argmin_n log T_n - log w_n`` = ``argmin_n T_n / w_n`` (the PFR)
=====================  ======================================================================

The chosen ``x_{n*}`` is an exact sample of ``q`` when ``N`` is unbounded; truncating to
``N = 2**(b + pad)`` candidates biases it toward ``p`` (the high-``w`` tail of ``q`` is
undersampled: ``log w`` has standard deviation ``sqrt(2 KL)`` under ``q``). ``pad`` sets
this trade-off; see ``tests/test_rcc.py`` and the measurements below.

The index ``n*`` is coded by bucket ``j = bit_length(n*)`` (``j = 0`` for ``n* = 0``, else
``n*`` in ``[2**(j-1), 2**j)``) with an integer table, then ``j - 1`` raw bits: a law of the
form ``P(n) = P(j) / 2**(j-1)``, i.e. Zipf with exponent 1 inside each octave. The bucket law
``P(j) ∝ 0.1 + 1 / (1 + ((j - b + 3) / 4.5)^2)`` (bucket 0 doubled) was fitted by simulation to
the index of truncated PFR for chunk KLs in ``[b/2, b]``; on that data it costs 0.06 bits less
than the Li & El Gamal Zipf law (exponent ``1 + 1/b``) and 0.14 less than a flat bucket law,
and 0.1 bits more than the empirical entropy. It uses only ``+ - * /``, so the quantised table is
identical on every IEEE-754 machine.

Everything the decoder needs besides ``(mu_p, s, seed, step)`` is in the :class:`StepCode`:
``G``, ``b``, ``pad``, the ``R_g`` and the indices (about ``log2 G + 4`` bits per step plus
about 3 bits per group). :meth:`StepCode.write` / :meth:`StepCode.read` append to / read from a
shared range coder (several steps in one stream, decoded in order: ~16 bits of flush per
image); :meth:`StepCode.to_bytes` / :meth:`StepCode.from_bytes` make one stream per step
(progressive: a prefix of steps decodes on its own, at ~16 more bits per step).

The decoder reproduces the encoder's sample bit for bit given the same numpy version (the
candidates come from ``Generator(Philox).standard_normal`` and ``permutation``); the stream
itself never depends on floating point at the decoder, so a 1-ulp difference in ``mu_p`` can
only change the sample by as much, never desynchronise the stream.

Measurements (2-core shared CPU; per-dim KL chi-square like, 2 bits/dim on average; ``bits``
is :meth:`StepCode.num_bits`, ``stream`` the standalone :meth:`StepCode.to_bytes`; ``shrink``
is the mean of the sample's projection on the shift over its target, 1 for an exact sample of
q, measured on d=8, KL=32 bits, 300 encodings):

=====  ===  ===  ========  =======  =======  =========  ==========  ======
d      max  pad  KL/step   bits/KL  stream   enc s/stp  dec ms/stp  shrink
=====  ===  ===  ========  =======  =======  =========  ==========  ======
256    8    6    498       1.45     1.49     0.62       18          0.964
256    8    4    498       1.38     1.39     0.18       14          0.905
256    8    8    483       1.51     1.55     2.5        16          0.996
256    6    6    498       1.66     1.69     0.17       11          0.974
256    10   4    501       1.33     1.36     0.67       30          0.904
256    12   2    501       1.20     1.25     0.67       37          0.870
64     8    6    123       1.48     1.60     0.17       6           (same)
=====  ===  ===  ========  =======  =======  =========  ==========  ======

Per chunk the index costs KL + 0.4 pad + 0.2 bits on average (KL + 2.6 at the defaults; the
Li & El Gamal bound KL + log2(KL + 1) + 4 holds with 4 bits to spare). A ratio of 1.2 is only
reached by giving up exactness (max 12, pad 2: the sample is pulled 13% toward ``p``); an exact
sample needs ``pad`` of about ``3.4 sqrt(KL)`` bits, and even an exact PFR index costs about
``KL + 3.5`` bits at 16-bit chunks (the spread of ``log2 n*`` is ``sqrt(2.9 KL)``), so 1.2 would
need 16-bit chunks with about 2**30 candidates each. Encoder time is
about ``4 d 2**(max + pad)`` normal draws per step (~15 ns each), independent of the KL.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from ldcodec.coding import entropy
from ldcodec.errors import LdcodecError

CANDIDATE_BATCH = 4096  # candidates per Philox stream (format constant: the decoder relies on it)
MAX_BUDGET = 31  # budget alphabet 0..31
MAX_PAD = 15  # pad alphabet 0..15
MAX_LOG2_CANDIDATES = 24  # b + pad above this is refused (memory, time)
MAX_SLICES = 1024  # slices per group, 1..MAX_SLICES
MAX_SLICE_CENTER = 64  # centre of the slice-count law, 1..64
TABLE_PRECISION = 16
_GROUPS_PRECISION = entropy.CODER_PRECISION  # the groups table has d entries

DEFAULT_MAX_CHUNK_BITS = 8
DEFAULT_PAD = 6
DEFAULT_GROUP_CHUNKS = 4

_PURPOSE_CANDIDATES, _PURPOSE_PERMUTATION, _PURPOSE_ARRIVALS = 0, 1, 2


@dataclass(frozen=True, eq=False)
class StepCode:
    """Everything the decoder of one step needs besides ``(mu_p, s, seed, step)``.

    Attributes:
        dim: number of latent dims ``d`` (known to the decoder; not written).
        groups: ``G``, groups of the permuted dims.
        budget: ``b``, integer bits; candidates per chunk ``N = 2**(b + pad)``.
        pad: extra log2 candidates beyond the budget.
        slices: ``(G,)`` int64, chunks per group (>= 1).
        indices: ``(sum(slices),)`` int64 in ``[0, N)``: the chosen candidates, group-major.
        kl_bits: the step's ``KL(q || p)`` in bits (encoder diagnostic; NaN after decoding).
    """

    dim: int
    groups: int
    budget: int
    pad: int
    slices: np.ndarray
    indices: np.ndarray
    kl_bits: float = field(default=float("nan"))

    @property
    def log2_candidates(self) -> int:
        return self.budget + self.pad

    @property
    def slice_center(self) -> int:
        """Rounded mean of ``slices``: centre of their coding law (written before them)."""
        g = len(self.slices)
        return int(min(max((int(self.slices.sum()) + g // 2) // g, 1), MAX_SLICE_CENTER))

    def write(self, encoder: entropy.RangeEncoder) -> None:
        """Append this step to a range coder (several steps can share one stream, in order)."""
        entropy.write_categorical(encoder, [self.groups - 1], _groups_table(self.dim), _GROUPS_PRECISION)
        entropy.write_categorical(encoder, [self.budget], _BUDGET_TABLE, TABLE_PRECISION)
        entropy.write_categorical(encoder, [self.pad], _PAD_TABLE, TABLE_PRECISION)
        entropy.write_categorical(encoder, [self.slice_center - 1], _CENTER_TABLE, TABLE_PRECISION)
        entropy.write_categorical(encoder, self.slices - 1, _slices_table(self.slice_center), TABLE_PRECISION)
        buckets, offsets, nbits = _split_indices(self.indices)
        entropy.write_categorical(encoder, buckets, _index_table(self.budget, self.log2_candidates), TABLE_PRECISION)
        entropy.write_bits(encoder, offsets, nbits)

    @classmethod
    def read(cls, decoder: entropy.RangeDecoder, dim: int) -> StepCode:
        """Read one step written by :meth:`write` for a ``dim``-dimensional latent."""
        groups = int(entropy.read_categorical(decoder, 1, _groups_table(dim), _GROUPS_PRECISION)[0]) + 1
        budget = int(entropy.read_categorical(decoder, 1, _BUDGET_TABLE, TABLE_PRECISION)[0])
        pad = int(entropy.read_categorical(decoder, 1, _PAD_TABLE, TABLE_PRECISION)[0])
        if budget + pad > MAX_LOG2_CANDIDATES:
            raise LdcodecError(
                f"corrupt step code: 2**{budget + pad} candidates per chunk exceeds the maximum "
                f"2**{MAX_LOG2_CANDIDATES}; the stream is damaged or from another encoder"
            )
        center = int(entropy.read_categorical(decoder, 1, _CENTER_TABLE, TABLE_PRECISION)[0]) + 1
        slices = entropy.read_categorical(decoder, groups, _slices_table(center), TABLE_PRECISION) + 1
        buckets = entropy.read_categorical(
            decoder, int(slices.sum()), _index_table(budget, budget + pad), TABLE_PRECISION
        )
        nbits = np.maximum(buckets - 1, 0)
        offsets = entropy.read_bits(decoder, nbits)
        indices = np.where(buckets == 0, 0, (np.int64(1) << nbits) + offsets)
        return cls(dim, groups, budget, pad, slices, indices)

    def to_bytes(self) -> bytes:
        """This step alone as one range-coded stream (progressive use: one stream per step)."""
        encoder = entropy.new_encoder()
        self.write(encoder)
        return entropy.encoder_bytes(encoder)

    @classmethod
    def from_bytes(cls, data: bytes, dim: int) -> StepCode:
        """Inverse of :meth:`to_bytes`."""
        return cls.read(entropy.decoder_from_bytes(data), dim)

    def num_bits(self) -> float:
        """Exact information content of :meth:`write` in bits (the stream adds ~16 bits of flush)."""
        buckets, _, nbits = _split_indices(self.indices)
        parts = [
            ([self.groups - 1], _groups_table(self.dim), _GROUPS_PRECISION),
            ([self.budget], _BUDGET_TABLE, TABLE_PRECISION),
            ([self.pad], _PAD_TABLE, TABLE_PRECISION),
            ([self.slice_center - 1], _CENTER_TABLE, TABLE_PRECISION),
            (self.slices - 1, _slices_table(self.slice_center), TABLE_PRECISION),
            (buckets, _index_table(self.budget, self.log2_candidates), TABLE_PRECISION),
        ]
        return sum(entropy.categorical_bits(*part) for part in parts) + float(nbits.sum())


def encode_step(
    mu_q: np.ndarray,
    mu_p: np.ndarray,
    s: float,
    seed: int,
    step: int,
    max_chunk_bits: int = DEFAULT_MAX_CHUNK_BITS,
    pad: int = DEFAULT_PAD,
    group_chunks: int = DEFAULT_GROUP_CHUNKS,
    rng: np.random.Generator | None = None,
) -> tuple[StepCode, np.ndarray]:
    """Send a sample of ``N(mu_q, s^2 I)`` against ``N(mu_p, s^2 I)``.

    Args:
        mu_q, mu_p: ``(d,)`` float64, one image's flattened latent means.
        s: the shared standard deviation (> 0).
        seed: stream key in ``[0, 2**64)``, shared with the decoder (e.g. per image).
        step: coding-step number in ``[0, 2**64)``; each (seed, step) must be used once.
        max_chunk_bits: largest KL of one chunk in bits; candidates per chunk are
            ``2**(budget + pad)`` with ``budget <= max_chunk_bits``.
        pad: extra log2 candidates; larger is slower and closer to an exact sample of q.
        group_chunks: target chunks per group; larger balances chunk KLs better (fewer chunks)
            at proportionally more candidate generation.
        rng: the encoder's private randomness for the arrival times (default: derived from
            ``(seed, step)``, so encoding is reproducible).

    Returns:
        ``(code, sample)``: the step code and the ``(d,)`` sample the decoder will reproduce.
    """
    mu_q, mu_p = _check_latents(mu_q, mu_p, s)
    if not 0 <= max_chunk_bits <= MAX_BUDGET or not 0 <= pad <= MAX_PAD:
        raise ValueError(f"max_chunk_bits must be in [0, {MAX_BUDGET}] and pad in [0, {MAX_PAD}]")
    if max_chunk_bits + pad > MAX_LOG2_CANDIDATES:
        raise ValueError(f"max_chunk_bits + pad must be <= {MAX_LOG2_CANDIDATES}")
    d = len(mu_q)
    v = (mu_q - mu_p) / s
    kl_dims = v * v / (2.0 * math.log(2.0))
    perm = _permutation(seed, step, d)
    groups, slices = _plan_groups(kl_dims[perm], max(max_chunk_bits, 1), group_chunks)
    blocks = _blocks(d, groups)
    chunk_kl = np.array([kl_dims[perm[a:z]].sum() for a, z in blocks]) / slices
    budget = min(int(math.ceil(chunk_kl.max() - 1e-9)) if chunk_kl.max() > 0 else 0, max_chunk_bits)
    arrivals = rng if rng is not None else _generator(seed, _PURPOSE_ARRIVALS, (0, 0, 0, step))
    indices = []
    for chunk, (dims, r) in enumerate(_chunks(perm, blocks, slices)):
        indices.append(_select(v[dims] / math.sqrt(r), seed, step, chunk, budget + pad, arrivals))
    code = StepCode(d, groups, budget, pad, slices, np.array(indices, dtype=np.int64), float(kl_dims.sum()))
    return code, decode_step(mu_p, s, seed, step, code)


def decode_step(mu_p: np.ndarray, s: float, seed: int, step: int, code: StepCode) -> np.ndarray:
    """Rebuild the sample of :func:`encode_step` from ``(mu_p, s, seed, step)`` and the code -> ``(d,)``.

    Regenerates only the chosen candidate of each chunk (a prefix of its Philox batch).
    """
    mu_p, _ = _check_latents(mu_p, mu_p, s)
    if code.dim != len(mu_p) or len(code.slices) != code.groups or len(code.indices) != code.slices.sum():
        raise LdcodecError(
            f"step code does not fit a {len(mu_p)}-dim latent; the stream belongs to another model or is damaged"
        )
    blocks = _blocks(code.dim, code.groups)
    e = np.zeros(code.dim)
    perm = _permutation(seed, step, code.dim)
    for chunk, (dims, r) in enumerate(_chunks(perm, blocks, code.slices)):
        e[dims] += _candidate(seed, step, chunk, int(code.indices[chunk]), len(dims)) / math.sqrt(r)
    return mu_p + s * e


def expected_bits(
    kl_bits: float,
    max_chunk_bits: int = DEFAULT_MAX_CHUNK_BITS,
    pad: int = DEFAULT_PAD,
    dim: int = 256,
    group_chunks: int = DEFAULT_GROUP_CHUNKS,
) -> float:
    """Planning estimate of :meth:`StepCode.num_bits` for a step with total KL ``kl_bits``.

    Chunks: ``ceil(kl / max_chunk_bits)`` plus the rounding loss of ``R_g = ceil(.)``, about
    half a chunk per group; each chunk costs its KL plus the measured index overhead
    ``0.4 pad + 0.2`` bits; side information ``log2(G) + 3.5`` bits plus 3 bits per group.
    Matches measurements to about 5% (see the module doc). Excludes the ~16-bit stream flush.
    """
    groups = min(max(round(kl_bits / (group_chunks * max_chunk_bits)), 1), dim)
    chunks = max(math.ceil(kl_bits / max_chunk_bits), 1) + 0.5 * groups
    side = math.log2(groups) + 3.5 + 3.0 * groups
    return max(kl_bits, 0.0) + chunks * max(0.4 * pad + 0.2, 0.5) + side


def _check_latents(mu_q: np.ndarray, mu_p: np.ndarray, s: float) -> tuple[np.ndarray, np.ndarray]:
    mu_q = np.asarray(mu_q, dtype=np.float64)
    mu_p = np.asarray(mu_p, dtype=np.float64)
    if mu_q.ndim != 1 or mu_q.shape != mu_p.shape or len(mu_q) == 0:
        raise ValueError(f"mu_q and mu_p must be equal-length 1-D arrays, got {mu_q.shape} and {mu_p.shape}")
    if not (np.isfinite(mu_q).all() and np.isfinite(mu_p).all() and math.isfinite(s) and s > 0):
        raise ValueError("means must be finite and s > 0")
    if len(mu_q) >= 2**entropy.CODER_PRECISION:
        raise ValueError("latent too large for one coding step")
    return mu_q, mu_p


def _generator(seed: int, purpose: int, counter: tuple[int, int, int, int]) -> np.random.Generator:
    """A Philox stream keyed by ``(seed, purpose)`` starting at ``counter``."""
    key = np.array([int(seed) % 2**64, purpose], dtype=np.uint64)
    ctr = np.array([int(c) % 2**64 for c in counter], dtype=np.uint64)
    return np.random.Generator(np.random.Philox(key=key, counter=ctr))


def _permutation(seed: int, step: int, d: int) -> np.ndarray:
    return _generator(seed, _PURPOSE_PERMUTATION, (0, 0, 0, step)).permutation(d)


def _blocks(d: int, groups: int) -> list[tuple[int, int]]:
    """``groups`` contiguous ``[start, stop)`` ranges over ``d``; the first ``d % groups`` are one longer."""
    size, extra = divmod(d, groups)
    stops = np.cumsum([size + (g < extra) for g in range(groups)])
    return list(zip(np.concatenate([[0], stops[:-1]]).tolist(), stops.tolist()))


def _chunks(perm: np.ndarray, blocks: list[tuple[int, int]], slices: np.ndarray):
    """Yield ``(dims, R_g)`` per chunk, group-major, slice-minor."""
    for (a, z), r in zip(blocks, slices):
        for _ in range(int(r)):
            yield perm[a:z], int(r)


def _plan_groups(kl_perm: np.ndarray, max_bits: int, group_chunks: int) -> tuple[int, np.ndarray]:
    """Pick ``G`` (group KL about ``group_chunks * max_bits``) and ``R_g = ceil(K_g / max_bits)``."""
    d = len(kl_perm)
    groups = int(min(max(round(kl_perm.sum() / (group_chunks * max_bits)), 1), d))
    while True:
        group_kl = np.array([kl_perm[a:z].sum() for a, z in _blocks(d, groups)])
        slices = np.maximum(np.ceil(group_kl / max_bits - 1e-9), 1).astype(np.int64)
        if slices.max() <= MAX_SLICES:
            return groups, slices
        if groups == d:
            raise LdcodecError(
                f"one latent dim carries {group_kl.max():.0f} bits in a single step, more than "
                f"{MAX_SLICES} chunks of {max_bits} bits; use more coding steps or a larger max_chunk_bits"
            )
        groups = min(2 * groups, d)


def _select(vc: np.ndarray, seed: int, step: int, chunk: int, log2_n: int, arrivals: np.random.Generator) -> int:
    """PFR over ``2**log2_n`` candidates: ``argmin_n log T_n - eps_n . vc``, batch by batch."""
    n = 1 << log2_n
    log_t = np.log(np.cumsum(arrivals.standard_exponential(n)))
    best_score, best = math.inf, 0
    for batch in range(0, (n + CANDIDATE_BATCH - 1) // CANDIDATE_BATCH):
        rows = min(CANDIDATE_BATCH, n - batch * CANDIDATE_BATCH)
        eps = _generator(seed, _PURPOSE_CANDIDATES, (0, batch, chunk, step)).standard_normal((rows, len(vc)))
        score = log_t[batch * CANDIDATE_BATCH : batch * CANDIDATE_BATCH + rows] - eps @ vc
        i = int(np.argmin(score))
        if score[i] < best_score:
            best_score, best = float(score[i]), batch * CANDIDATE_BATCH + i
    return best


def _candidate(seed: int, step: int, chunk: int, n: int, m: int) -> np.ndarray:
    """``eps_n`` of one chunk, ``(m,)``: the prefix of its batch up to row ``n % CANDIDATE_BATCH``."""
    batch, row = divmod(n, CANDIDATE_BATCH)
    rows = _generator(seed, _PURPOSE_CANDIDATES, (0, batch, chunk, step)).standard_normal((row + 1, m))
    return rows[row]


def _split_indices(indices: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index -> (bucket ``j``, offset in the bucket, offset bits ``max(j - 1, 0)``)."""
    indices = np.asarray(indices, dtype=np.int64)
    buckets = entropy.bit_length(indices)
    nbits = np.maximum(buckets - 1, 0)
    offsets = np.where(buckets == 0, 0, indices - (np.int64(1) << nbits))
    return buckets, offsets, nbits


@lru_cache(maxsize=None)
def _index_table(budget: int, log2_n: int) -> np.ndarray:
    """Integer table of the bucket law over ``j = 0..log2_n`` (see module doc)."""
    j = np.arange(log2_n + 1, dtype=np.float64)
    t = (j - (budget - 3.0)) / 4.5
    w = 0.1 + 1.0 / (1.0 + t * t)
    w[0] *= 2.0
    return entropy.quantize_pmf(w, TABLE_PRECISION)


@lru_cache(maxsize=None)
def _slices_table(center: int) -> np.ndarray:
    """Integer table of ``R - 1`` for ``R = 1..MAX_SLICES``: heavy-tailed bump at ``center``."""
    r = np.arange(1, MAX_SLICES + 1, dtype=np.float64)
    t = (r - center) / (1.0 + center / 4.0)
    return entropy.quantize_pmf(1e-5 + 1.0 / (1.0 + t * t), TABLE_PRECISION)


@lru_cache(maxsize=None)
def _groups_table(dim: int) -> np.ndarray:
    """Integer table of ``G - 1`` for ``G = 1..dim``, ``P(G) ∝ 1 / G`` (about ``log2 G + 2.5`` bits)."""
    return entropy.quantize_pmf(1.0 / np.arange(1, dim + 1, dtype=np.float64), _GROUPS_PRECISION)


def _favour(size: int, weights: dict[int, float]) -> np.ndarray:
    """Integer table over ``0..size-1``: the listed values get their weight, the others 0.1."""
    w = np.full(size, 0.1)
    for value, weight in weights.items():
        w[value] = weight
    return entropy.quantize_pmf(w, TABLE_PRECISION)


# Side-information laws. The budget is max_chunk_bits except in steps with less KL than one
# chunk (then smaller); the rounded mean of R_g = ceil(K_g / max_chunk_bits) is group_chunks or
# group_chunks + 1, or 1 for steps of one chunk. At the defaults each costs about 0.5 bits.
_BUDGET_TABLE = _favour(
    MAX_BUDGET + 1, {b: 0.5 for b in range(DEFAULT_MAX_CHUNK_BITS)} | {DEFAULT_MAX_CHUNK_BITS: 16.0}
)
_PAD_TABLE = _favour(MAX_PAD + 1, {DEFAULT_PAD: 16.0})
_CENTER_TABLE = _favour(MAX_SLICE_CENTER, {0: 4.0, DEFAULT_GROUP_CHUNKS - 1: 8.0, DEFAULT_GROUP_CHUNKS: 8.0})
