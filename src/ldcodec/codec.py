"""Compression with real bits, format 1: ``compress`` / ``decompress`` for mode U (DESIGN.md §3).

**Mode U** (unconditional prior; DiffC, Theis et al. 2022, in latent space). The encoder sends a
noisy latent ``z_t``. On a coding grid ``1 = t_0 > t_1 > ... > t_K`` (uniform in log-SNR),
``z_{t_0}`` is drawn from the noise prior with a seed both sides share (free: its KL to
``q(z_1|z0)`` is ``alpha_1^2 ||z0||^2 / 2``, about 1e-9 nats per unit of ``||z0||^2`` for the VP
processes), then each step ``t_{j-1} -> t_j`` sends an exact sample of
``q(z_{t_j} | z_{t_{j-1}}, z0) = N(mu_q, s^2 I)`` by reverse channel coding
(:mod:`ldcodec.coding.rcc`) against ``p_theta(z_{t_j} | z_{t_{j-1}}) = N(mu_p, s^2 I)``, where ``mu_p``
is the same posterior mean with ``z0`` replaced by the prior's denoised estimate. Its cost is
about the step's ``KL = ||mu_q - mu_p||^2 / (2 s^2)``; the sum over the coded steps (the truncated
diffusion ELBO) is the *estimated* rate. The decoder turns ``z_{t_k}`` into ``z0`` by ``flow``
(DDIM, eta = 0), ``realism`` (ancestral sampling) or ``mse`` (the denoised mean ``E[z0|z_t]``),
then decodes the image. The rate knob is the stopping time ``t`` or a bit budget per image;
the steps of one image share one range-coded payload and decode in order, so decoding the first
``k`` steps of a stream gives the coarser image of time ``t_k`` (progressive).

Mode C lives in :mod:`ldcodec.codecs.cdc`; this module is wrapped by the temporary
:mod:`ldcodec.codecs._diffc_legacy` until ``codecs/diffc.py`` (format 2) replaces both.

Determinism: every random draw the decoder makes comes from generators keyed by the stream
(numpy Philox in the RCC, seeded CPU torch generators here), never from a device RNG; the coded
indices do not depend on floating point at all, and the posterior means are rounded to a
``2^-16`` grid before coding so both sides agree despite last-bit differences.

Per-image *actual* bits are ``8 x (payload + record overhead + header / count)`` bytes.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from .coding import bitstream, entropy, rcc
from .codecs.identity import lsgm_hash as codec_hash
from .diffusion.decodes import DECODES as _DECODES, decode_latent
from .seeds import derive_seed as _seed, prior_noise
from .errors import LdcodecError, reraise_damage

DECODES = tuple(_DECODES)
MAX_CODING_STEPS = 64  # mode U: bound on the steps a stream may declare
MEAN_GRID = 2.0 ** 16


@dataclass
class Result:
    """What ``compress`` returns: the stream and per-image accounting."""

    stream: bytes
    estimated_bits: np.ndarray  # (N,) model's estimate
    actual_bits: np.ndarray  # (N,) bytes x 8, header share included
    seconds: float
    rate: float  # mode U: the stop time t used; mode C: the model's lambda


def coding_times(process, k: int, t_stop: float) -> torch.Tensor:
    """``(<= k + 1,)`` float64 times decreasing from 1 to ``t_stop``, equally spaced in log-SNR.

    On a discrete (DDPM) process the times snap to ``i / N``; repeated points are dropped.
    """
    ends = torch.tensor([1.0, t_stop], dtype=torch.float64)
    lo, hi = process.log_snr(ends).tolist()
    ls = torch.linspace(lo, hi, k + 1, dtype=torch.float64)
    t = process.t_from_log_snr(ls).clamp(process.t_min, 1.0)
    t[0], t[-1] = 1.0, t_stop
    if not process.continuous:
        t = torch.unique(torch.round(t * process.N).clamp(min=1), sorted=True).flip(0) / process.N
    return t


def _round_grid(x: torch.Tensor) -> np.ndarray:
    return (torch.round(x.double().cpu() * MEAN_GRID) / MEAN_GRID).numpy()


class Codec:
    """Compress and decompress images ``(N, C, H, W)`` in [0, 1] with a trained model (eval mode)."""

    def __init__(self, model, device: str = "cpu", batch_size: int = 256):
        if model.prior is None:
            raise LdcodecError("this checkpoint has the N(0, I) prior (model.prior = normal): compression "
                               "needs a diffusion prior; train a grid config")
        if model.cfg.cond.enabled:
            raise LdcodecError("this format 1 codec is mode U only; mode C models use ldcodec.codecs.cdc")
        self.model, self.cfg, self.device, self.batch_size = model.eval(), model.cfg, device, batch_size
        self.mode = "U"
        self.hash = codec_hash(model)
        self.shape = tuple(model.latent_shape)
        self.dim = math.prod(self.shape)

    # -- the public contract ------------------------------------------------------------------

    def compress(self, x: torch.Tensor, decode: str = "flow", t: float | None = None,
                 bits: float | None = None, steps: int | None = None) -> Result:
        """Images ``(N, C, H, W)`` -> stream. Mode U takes ``t`` (stop time) or ``bits`` (per image),
        and ``steps``, the number of coding steps (default ``codec.coding_steps``; more steps lower
        the ideal KL but pay side information per step, so the best number grows with the rate)."""
        if decode not in DECODES:
            raise LdcodecError(f"unknown decode method {decode!r}; choose one of: {', '.join(DECODES)}")
        h, w, c = self.model.image_shape
        if x.dim() != 4 or tuple(x.shape[1:]) != (c, h, w):
            raise LdcodecError(f"images of shape {tuple(x.shape[1:])} do not fit this model, which codes "
                               f"{c}x{h}x{w} ({self.cfg.data.dataset})")
        if len(x) == 0:
            raise LdcodecError("no images to compress: the input holds 0 images")
        start = time.perf_counter()
        k = self.cfg.codec.coding_steps if steps is None else steps
        if not 1 <= k <= MAX_CODING_STEPS:
            raise LdcodecError(f"--coding-steps {k} is outside 1..{MAX_CODING_STEPS}")
        t = self._choose_t(x, bits, k) if bits is not None else self._check_t(t)
        payloads, est = self._compress_u(x, self._times(t, k))
        header = bitstream.StreamHeader(self.hash, "U", t, k, (h, w, c), decode)
        stream = bitstream.write_stream(header, payloads)
        actual = np.array([8.0 * (len(p) + bitstream.record_bytes(len(p)) + bitstream.HEADER_BYTES / len(payloads))
                           for p in payloads])
        return Result(stream, est, actual, time.perf_counter() - start, header.rate)

    @torch.no_grad()
    def decompress(self, stream: bytes, decode: str | None = None, max_steps: int | None = None) -> torch.Tensor:
        """Stream -> images ``(N, C, H, W)`` in [0, 1]. ``max_steps`` decodes only a prefix (mode U)."""
        if max_steps is not None and max_steps < 0:
            raise LdcodecError(f"--max-steps {max_steps} must be >= 0 (0 decodes z_1 alone)")
        header, payloads = bitstream.read_stream(stream)
        bitstream.check_model(header, self.hash)
        h, w, c = self.model.image_shape
        if header.mode != self.mode or tuple(header.image_shape) != (h, w, c):
            raise LdcodecError(f"stream is mode {header.mode} for {header.image_shape} images, but the model is "
                               f"mode {self.mode} for {(h, w, c)}: use the checkpoint that made it")
        method = decode or header.decode_method
        if method not in DECODES:
            raise LdcodecError(f"unknown decode method {method!r}; choose one of: {', '.join(DECODES)}")
        if not (0.0 < header.rate < 1.0 and 1 <= header.steps <= MAX_CODING_STEPS):
            raise LdcodecError(f"stream header has rate t = {header.rate}, steps = {header.steps}: it is damaged")
        out = []
        for i in range(0, len(payloads), self.batch_size):
            chunk = payloads[i:i + self.batch_size]
            seeds = [_seed(self.hash, i + j) for j in range(len(chunk))]
            times = self._times(header.rate, header.steps)
            out.append(self.model.ae.decode(self._decompress_u(chunk, seeds, times, method, max_steps)).cpu())
        return torch.cat(out) if out else torch.zeros(0, c, h, w)

    # -- mode U -------------------------------------------------------------------------------

    def _times(self, t: float, k: int) -> torch.Tensor:
        return coding_times(self.model.prior.process, k, t)

    def _check_t(self, t: float | None) -> float:
        if t is None:
            raise LdcodecError("mode U needs a rate: give --t T (stop time in (0, 1)) or --bits B (per image)")
        stored = float(np.float32(t))  # the header holds float32: both sides build the grid from it
        t_min = self.model.prior.process.t_min
        if not t_min <= stored < 1.0:
            raise LdcodecError(f"--t {t} is outside [{t_min:g}, 1) once stored as float32 (this model's "
                               f"smallest time is {t_min:g}); smaller t costs more bits")
        return stored

    @torch.no_grad()
    def _choose_t(self, x: torch.Tensor, bits: float, k: int) -> float:
        """The stop time whose expected cost on these images is ``bits`` per image (bisection in log-SNR).

        The cost of a candidate ``t`` is predicted without coding: the chain's KLs along a sample of
        ``q`` through :func:`rcc.expected_bits`, plus the record and header bytes.
        """
        if not (math.isfinite(bits) and bits > 0):
            raise LdcodecError(f"--bits {bits} must be a positive number of bits per image")
        process = self.model.prior.process
        xb = x[:64].to(self.device)
        z0 = torch.from_numpy(_round_grid(self.model.ae.encode(xb).mean))
        seeds = [_seed(self.hash, j) for j in range(len(xb))]
        fixed = 8.0 * (bitstream.record_bytes(64) + 2 + bitstream.HEADER_BYTES / len(x))  # record, flush, header

        def cost(t: float) -> float:
            times = self._times(t, k)
            z = prior_noise(self.model.prior.process, self.shape, seeds, self.device)
            total = np.zeros(len(xb))
            for j in range(1, len(times)):
                mu_p, mu_q, s = self._means(z, times[j - 1].item(), times[j].item(), z0)
                kl = ((mu_q - mu_p) ** 2).sum(1) / (2 * s * s * math.log(2))
                total += [rcc.expected_bits(b, self.cfg.codec.max_chunk_bits, dim=self.dim) for b in kl]
                z = torch.from_numpy(mu_q + s * np.random.default_rng(j).standard_normal(mu_q.shape))
                z = z.view(-1, *self.shape).to(self.device, torch.float32)
            return float(total.mean()) + fixed

        lo, hi = process.log_snr(torch.tensor([0.99, 0.01], dtype=torch.float64)).tolist()
        for _ in range(12):
            mid = (lo + hi) / 2
            t = float(process.t_from_log_snr(torch.tensor([mid], dtype=torch.float64)))
            lo, hi = (mid, hi) if cost(t) < bits else (lo, mid)
        return self._check_t(float(process.t_from_log_snr(torch.tensor([lo], dtype=torch.float64))))

    def _means(self, z: torch.Tensor, t: float, s: float, z0: torch.Tensor | None):
        """Posterior means ``mu_p`` (and ``mu_q`` if ``z0`` is given) for ``t -> s``, on the 2^-16 grid."""
        from .diffusion.samplers import denoise

        prior = self.model.prior
        tt = torch.full((len(z),), t, dtype=torch.float64)
        ss = torch.full((len(z),), s, dtype=torch.float64)
        z_hat = denoise(prior, z, tt.to(z.dtype).to(self.device)).double().cpu()
        zd = torch.from_numpy(_round_grid(z))
        mu_p, var = prior.process.posterior(zd, torch.from_numpy(_round_grid(z_hat)), tt, ss)
        mu_q = None if z0 is None else prior.process.posterior(zd, z0, tt, ss)[0]
        return mu_p.flatten(1).numpy(), None if mu_q is None else mu_q.flatten(1).numpy(), math.sqrt(var[0].item())

    @torch.no_grad()
    def _compress_u(self, x: torch.Tensor, times: torch.Tensor):
        """Every image's chain ``1 = t_0 > ... > t_K``, one range-coded payload per image."""
        payloads, est = [], []
        for i in range(0, len(x), self.batch_size):
            xb = x[i:i + self.batch_size].to(self.device)
            z0 = torch.from_numpy(_round_grid(self.model.ae.encode(xb).mean))
            seeds = [_seed(self.hash, i + j) for j in range(len(xb))]
            z = prior_noise(self.model.prior.process, self.shape, seeds, self.device)
            encoders = [entropy.new_encoder() for _ in seeds]
            kl = np.zeros(len(seeds))
            for j in range(1, len(times)):
                mu_p, mu_q, s = self._means(z, times[j - 1].item(), times[j].item(), z0)
                new = np.empty_like(mu_p)
                for b, seed in enumerate(seeds):
                    code, new[b] = rcc.encode_step(mu_q[b], mu_p[b], s, seed, j,
                                                   max_chunk_bits=self.cfg.codec.max_chunk_bits)
                    code.write(encoders[b])
                    kl[b] += code.kl_bits
                z = torch.from_numpy(new).view(z.shape).to(self.device, z.dtype)
            payloads += [entropy.encoder_bytes(e) for e in encoders]
            est += kl.tolist()
        return payloads, np.array(est)

    def _read_u(self, payload: bytes, steps: int) -> list[rcc.StepCode]:
        with reraise_damage("mode U"):
            dec = entropy.decoder_from_bytes(payload)
            return [rcc.StepCode.read(dec, self.dim) for _ in range(steps)]

    @torch.no_grad()
    def _decompress_u(self, payloads: list[bytes], seeds: list[int], times: torch.Tensor, method: str,
                      max_steps: int | None):
        n = len(times) - 1 if max_steps is None else min(max_steps, len(times) - 1)
        codes = [self._read_u(p, n) for p in payloads]
        z = prior_noise(self.model.prior.process, self.shape, seeds, self.device)
        for j in range(1, n + 1):
            mu_p, _, s = self._means(z, times[j - 1].item(), times[j].item(), None)
            new = np.stack([rcc.decode_step(mu_p[b], s, seed, j, codes[b][j - 1]) for b, seed in enumerate(seeds)])
            z = torch.from_numpy(new).view(z.shape).to(self.device, z.dtype)
        t = torch.full((len(seeds),), times[n].item(), device=self.device, dtype=z.dtype)
        return decode_latent(self.model.prior, z, t, method, None, seeds)
