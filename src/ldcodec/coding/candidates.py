"""Shared randomness defined by the format: Philox4x32-10 words and Box-Muller normals, in torch.

Mode U's reverse channel coding needs the encoder and the decoder to draw the same Gaussian
candidates. Format 2 specifies the generator itself instead of relying on a library's stream
(numpy does not promise to keep ``Generator.standard_normal``'s stream across versions), and
this module computes it with integer tensor operations only, so the same code runs on the CPU
and the GPU and gives the same words everywhere.

Philox4x32-10 (Salmon, Moraes, Dror & Shaw 2011, "Parallel random numbers: as easy as 1, 2, 3",
Sec. 3 and the Random123 reference): a counter ``(c0, c1, c2, c3)`` and a key ``(k0, k1)`` of
32-bit words go through 10 rounds of

    (hi0, lo0) = M0 * c0,  (hi1, lo1) = M1 * c2                      (64-bit products)
    (c0, c1, c2, c3) <- (hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0)
    (k0, k1) <- (k0 + W0, k1 + W1)  mod 2^32                         (between rounds)

with ``M0 = 0xD2511F53``, ``M1 = 0xCD9E8D57``, ``W0 = 0x9E3779B9``, ``W1 = 0xBB67AE85``. Words
live in int64 tensors; ``tests/test_candidates.py`` and :func:`self_check` (run before a codec
draws its first candidate) check Random123's known-answer vectors.

Normals (format 2, fixed here): a word ``w`` gives the float32 uniform
``u = ((w >> 8) + 0.5) / 2^24`` in (0, 1); the pair ``(w_a, w_b)`` gives
``r = sqrt(-2 ln u_a)``, ``theta = 2 pi u_b`` and the normals ``(r cos theta, r sin theta)``
(Box & Muller 1958), all in float32. One Philox block ``(w0, w1, w2, w3)`` gives four normals:
``BM(w0, w1)`` then ``BM(w2, w3)``. The transcendental functions may differ in the last bit
between devices; only the *values* of the regenerated candidates can differ by that much, never
the coded indices (the coded symbols never depend on floating point).

Uniforms of the dither (format 2, fixed here): ``w = ((word >> 8) + 0.5) / 2^24 - 1/2`` in
``(-1/2, 1/2)``, exact in float32 and float64 (integer operations and a power-of-two scale only, so
they are the same on every device; no transcendental function is involved).

Addressing: candidate ``n`` of a chunk of ``m`` dims uses the blocks ``b = n * ceil(m / 4) + i``,
``i < ceil(m / 4)``, at counter ``(b mod 2^32, b >> 32, chunk, step)`` and key
``(stream key, purpose)``; its dim ``k`` is normal ``k`` of those blocks, in order.
"""

from __future__ import annotations

import math

import torch

from ldcodec.errors import LdcodecError

M0, M1 = 0xD2511F53, 0xCD9E8D57
W0, W1 = 0x9E3779B9, 0xBB67AE85
ROUNDS = 10
MASK32 = 0xFFFFFFFF

PURPOSE_CANDIDATES = 0  # the Gaussian candidates e_n of a chunk (encoder and decoder)
PURPOSE_TRANSFORMS = 1  # each image's signed permutation of a chunk's shared candidates
PURPOSE_DITHER = 2  # the subtractive dither of a dithered-quantisation step (:mod:`ldcodec.coding.dq`)

Tensor = torch.Tensor


def philox4x32(counter: tuple[Tensor, Tensor, Tensor, Tensor], key: tuple[int, int]) -> tuple[Tensor, ...]:
    """Philox4x32-10 of int64 word tensors ``counter`` (broadcastable, each in [0, 2^32)) under
    ``key = (k0, k1)`` -> four int64 word tensors of the broadcast shape.

    Each 32x32-bit product is one int64 multiplication: its low 64 bits are exact in two's
    complement, so ``p & MASK32`` and ``(p >> 32) & MASK32`` are the product's low and high words
    whatever its sign. :func:`self_check` verifies this on the running machine (Random123's
    known answers) before the first candidate is drawn.
    """
    c0, c1, c2, c3 = (torch.as_tensor(c, dtype=torch.int64) for c in counter)
    c0, c1, c2, c3 = torch.broadcast_tensors(c0, c1, c2, c3)
    k0, k1 = int(key[0]) & MASK32, int(key[1]) & MASK32
    for r in range(ROUNDS):
        p0, p1 = c0 * M0, c2 * M1
        c0, c1, c2, c3 = ((p1 >> 32) & MASK32) ^ c1 ^ k0, p1 & MASK32, ((p0 >> 32) & MASK32) ^ c3 ^ k1, p0 & MASK32
        if r < ROUNDS - 1:
            k0, k1 = (k0 + W0) & MASK32, (k1 + W1) & MASK32
    return c0, c1, c2, c3


# Random123's kat_vectors for Philox4x32-10: (counter, key, output).
KNOWN_ANSWERS = (
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
)
_CHECKED: set[str] = set()


def self_check(device: torch.device | str = "cpu") -> None:
    """Raise ``LdcodecError`` unless :func:`philox4x32` gives Random123's known answers on ``device``
    (checked once per device type): streams would otherwise decode to different latents."""
    kind = torch.device(device).type
    if kind in _CHECKED:
        return
    for ctr, key, want in KNOWN_ANSWERS:
        got = philox4x32(tuple(torch.tensor([c], device=device) for c in ctr), key)
        if tuple(int(w[0]) for w in got) != want:
            raise LdcodecError(f"the Philox4x32 candidate generator gives wrong words on {kind} with torch "
                               f"{torch.__version__}; mode U streams cannot be coded here")
    _CHECKED.add(kind)


def _uniform(w: Tensor) -> Tensor:
    """Words -> float32 uniforms ``((w >> 8) + 0.5) / 2^24`` in (0, 1), exact in float32."""
    return ((w >> 8).to(torch.float32) + 0.5) * (2.0 ** -24)


def _box_muller(wa: Tensor, wb: Tensor) -> tuple[Tensor, Tensor]:
    r = torch.sqrt(-2.0 * torch.log(_uniform(wa)))
    theta = (2.0 * math.pi) * _uniform(wb)
    return r * torch.cos(theta), r * torch.sin(theta)


def _blocks(index: Tensor, chunk: int, step: int, key: tuple[int, int]) -> Tensor:
    """Four normals per block ``index`` (int64 tensor) -> float32 ``(*index.shape, 4)``."""
    w = philox4x32((index & MASK32, index >> 32, torch.tensor(chunk, device=index.device),
                    torch.tensor(step, device=index.device)), key)
    a, b = _box_muller(w[0], w[1])
    c, d = _box_muller(w[2], w[3])
    return torch.stack([a, b, c, d], dim=-1)


def stream_key(model_id: bytes) -> int:
    """The 32-bit key word of a model: its 4-byte id, little-endian."""
    return int.from_bytes(bytes(model_id)[:4], "little")


def candidates(key: int, step: int, chunk: int, start: int, count: int, dims: int,
               device: torch.device | str = "cpu") -> Tensor:
    """Candidates ``start .. start + count - 1`` of a chunk of ``dims`` dims -> float32 ``(count, dims)``."""
    return candidate(key, step, chunk, torch.arange(start, start + count, dtype=torch.int64, device=device), dims)


def candidate(key: int, step: int, chunk: int, n: Tensor, dims: int) -> Tensor:
    """The candidates ``n`` (int64 ``(B,)``) of one chunk -> float32 ``(B, dims)``; the decoder
    regenerates only the chosen rows, the encoder whole batches of the codebook."""
    self_check(n.device)
    per = (dims + 3) // 4
    index = n[:, None].to(torch.int64) * per + torch.arange(per, dtype=torch.int64, device=n.device)[None]
    return _blocks(index, chunk, step, (key, PURPOSE_CANDIDATES)).reshape(len(n), per * 4)[:, :dims]


def signed_permutations(key: int, step: int, chunk: int, images: Tensor, dims: int) -> tuple[Tensor, Tensor]:
    """Each image's signed permutation of a chunk's ``dims`` coordinates -> ``(perm, sign)``, int64
    ``(B, dims)`` and float32 ``(B, dims)`` of +-1: image ``b`` uses the candidate
    ``(S_b e)_i = sign[b, i] e[perm[b, i]]``.

    Format: the block at counter ``(image, i // 4, chunk, step)`` under key ``(stream key,
    PURPOSE_TRANSFORMS)`` gives coordinate ``i`` the word ``i mod 4``; ``perm`` sorts the words' high
    31 bits ascending (ties by ``i``), ``sign`` is the word's lowest bit (1 -> -1).
    """
    images = images.to(torch.int64)
    blocks = torch.arange((dims + 3) // 4, dtype=torch.int64, device=images.device)
    w = philox4x32((images[:, None], blocks[None, :], torch.tensor(chunk, device=images.device),
                    torch.tensor(step, device=images.device)),
                   (key, PURPOSE_TRANSFORMS))
    words = torch.stack(w, dim=-1).reshape(len(images), -1)[:, :dims]
    order = (words >> 1) * dims + torch.arange(dims, device=images.device)  # distinct: ties broken by i
    perm = torch.argsort(order, dim=1)
    sign = 1.0 - 2.0 * (words & 1).to(torch.float32)
    return perm, sign


def dither(key: int, step: int, images: Tensor, dims: int) -> Tensor:
    """The shared dither of one coding step -> float64 ``(B, dims)`` uniforms in ``(-1/2, 1/2)``.

    Format: image ``b``'s dims ``4 i .. 4 i + 3`` are the four words of the block at counter
    ``(i, image, 0, step)`` under key ``(stream key, PURPOSE_DITHER)``, each mapped by
    ``((w >> 8) + 0.5) / 2^24 - 1/2``. Keyed by the image's index in the file, never by its place
    in a batch, so any batching (and any device) draws the same dither.
    """
    images = images.to(torch.int64)
    self_check(images.device)
    blocks = torch.arange((dims + 3) // 4, dtype=torch.int64, device=images.device)
    w = philox4x32((blocks[None, :], images[:, None], torch.tensor(0, device=images.device),
                    torch.tensor(step, device=images.device)), (key, PURPOSE_DITHER))
    words = torch.stack(w, dim=-1).reshape(len(images), -1)[:, :dims]
    return _uniform(words).double() - 0.5
