"""Mode U: DiffC in latent space (Theis et al. 2022), bitstream format 2.

The encoder sends the noisy latent ``z_t`` of each image as a chain of reverse steps on the
model's coding levels (:mod:`ldcodec.diffusion.coding_grid`): ``z_1`` is candidate 0 of the
format's generator (free), then each step ``z_u -> z_s`` sends an exact sample of
``q(z_s | z_u, z0)`` by the PFR (:mod:`ldcodec.coding.pfr`) against the Analytic-DPM reverse
density ``p(z_s | z_u)``. The decoder turns ``z_t`` into ``z0`` by ``flow``, ``realism`` or
``mse`` (:mod:`ldcodec.diffusion.decodes`) and decodes the image.

Rates per image: ``ideal`` is the continuous-time truncated ELBO, ``KL(q(z_1|z0) || p(z_1)) +
1/2 int_{SNR_1}^{SNR_t} ||z0 - z0_hat(z_snr)||^2 dSNR`` (VDM, Kingma et al. 2021, Eq. 11 and 17,
in nats -> bits), estimated by the trapezoid rule in log-SNR on the coding levels (every
``ideal_stride``-th) with one noise draw per level; ``estimated`` is the sum of the coded steps' ``KL(q || p)``; ``actual`` and ``file`` come
from the container (:mod:`ldcodec.codecs.container`). On the exact Gaussian source all three
are ``I(X; Z_t)`` in expectation plus the coding overhead of the last two.

Exactness (``extra["exactness"]``): ``sum (u - mu_p) . (mu_q - mu_p) / sum ||mu_q - mu_p||^2`` over
the coded chunks and images, 1 for exact samples of ``q``; the truncated PFR pulls samples toward
``p`` and lowers it. It is reported beside the bits because fewer candidates buy bits with it.

Payload (format 2): one range coder for the whole file. Step-major: for each coding step, for
each chunk of its plan, the indices of every image (:func:`ldcodec.coding.pfr.write_indices`).
Everything else (the levels of the chain, each step's chunks and candidate counts) follows from
the model's integer tables and the params (one byte, the stop level; :meth:`DiffC._params`): the per-step side
information is zero. Decoding the first ``k`` steps (``max_steps=k``) gives every image at the
coarser time of level ``g_k`` (progressive).
"""

from __future__ import annotations

import hashlib
import math
import sys
from pathlib import Path

import numpy as np
import torch

from ldcodec.codecs.base import Codec, Compressed
from ldcodec.coding import candidates as cand
from ldcodec.coding import pfr, range_coder
from ldcodec.diffusion.coding_grid import LEVELS, CodingTables, StepCost, pfr_cost, step_densities
from ldcodec.diffusion.decodes import DECODES, check_decode, decode_latent
from ldcodec.diffusion.samplers import denoise
from ldcodec.errors import LdcodecError

AUTO_MAX_STEPS = 32  # the automatic number of coding steps is searched in 1..AUTO_MAX_STEPS
MAX_STEPS = 64
DEFAULT_T = 0.3  # stop time when neither t_stop nor bits is given
TABLE_LATENTS = 1024  # training latents behind the coding tables
TABLES_FILE = "coding-tables.safetensors"


def _container_bits(payload_bytes: int, count: int) -> float:
    from ldcodec.codecs import container

    return 8.0 * container.file_bytes(payload_bytes, 1, count)


class DiffC(Codec):
    """Mode U codec of a trained model with a diffusion prior (``cfg.cond.enabled`` false).

    ``tables``: the model's :class:`CodingTables` (see :func:`load_or_build_tables`). ``ideal``:
    whether :meth:`compress` also estimates the ideal rate (it costs a denoiser call per coding level
    and is not part of coding; speed benchmarks time compression without it). ``ideal_stride``: the
    ideal's quadrature uses every ``ideal_stride``-th level (and the stop level); 4, the tables' own
    stride, costs a quarter and moves the exact Gaussian source's ideal by under 1 %.
    """

    name = "diffc"
    codec_id = 1
    simulator = "pfr"  # the value of ``codec.simulator`` that selects this class (:func:`ldcodec.codecs.model_codec`)
    mode = "U"
    decodes = DECODES
    decode_knob = True

    def __init__(self, model, tables: CodingTables, device: str = "cpu", batch_size: int = 256,
                 ideal: bool = True, ideal_stride: int = 1):
        if model.prior is None:
            raise LdcodecError("this checkpoint has the N(0, I) prior (model.prior = normal): compression "
                               "needs a diffusion prior; train a grid config")
        if model.cfg.cond.enabled:
            raise LdcodecError("this is a mode C (conditional) model: use the cdc codec")
        if ideal_stride < 1:
            raise LdcodecError(f"ideal_stride must be >= 1, got {ideal_stride}")
        self.model, self.tables, self.device, self.batch_size = model.eval(), tables, device, batch_size
        self.ideal_stride = ideal_stride
        self.ideal = ideal  # estimate the ideal rate in compress (one denoiser call per level; not coding)
        self.latent_shape = tuple(model.latent_shape)
        self.dims = math.prod(self.latent_shape)
        if tables.dims != self.dims:
            raise LdcodecError(f"coding tables for {tables.dims} dims do not fit a {self.dims}-dim latent")
        h, w, c = model.image_shape
        self.image_shape = (c, h, w)
        self.budget, self.pad = int(model.cfg.codec.max_chunk_bits), int(model.cfg.codec.pad)
        if not (1 <= self.budget <= 20 and 0 <= self.pad <= pfr.MAX_PAD):
            raise LdcodecError(f"codec.max_chunk_bits = {self.budget} and codec.pad = {self.pad} must lie in 1..20 "
                               f"and 0..{pfr.MAX_PAD}")
        self._id = _model_id(model, tables)
        self._auto_steps: dict[int, int] = {}
        self.key = cand.stream_key(self._id)
        self.coding_prior, self.coding_dtype = model.prior, torch.float32  # the denoiser behind the coding densities

    def model_id(self) -> bytes:
        return self._id

    def default_rates(self) -> list[dict]:
        return [{"t_stop": t} for t in (0.7, 0.5, 0.35, 0.25, 0.15)]

    # -- rate settings ------------------------------------------------------------------------
    def _stop_level(self, rate: dict) -> int:
        if rate.get("bits") is not None:
            bits = float(rate["bits"])
            if not (math.isfinite(bits) and bits > 0):
                raise LdcodecError(f"--bits {bits} must be a positive number of bits per image")
            return self.tables.level_of_bits(bits, lambda level: self._predicted_bits(level, rate.get("coding_steps")))
        t = DEFAULT_T if rate.get("t_stop") is None else float(rate["t_stop"])
        t_low = float(self.tables.t[-1])
        if not t_low <= t < 1.0:
            raise LdcodecError(f"--t {t} is outside [{t_low:g}, 1) (this model's deepest coding level); "
                               "smaller t costs more bits")
        return max(self.tables.level_of_time(t), 1)

    def _steps(self, stop: int, steps: int | None) -> int:
        steps = steps if steps is not None else (self.model.cfg.codec.coding_steps or None)
        if steps is None:
            if stop not in self._auto_steps:
                self._auto_steps[stop] = self.tables.best_steps(stop, AUTO_MAX_STEPS, self.step_cost())
            return self._auto_steps[stop]
        if not 1 <= steps <= MAX_STEPS:
            raise LdcodecError(f"--coding-steps {steps} is outside 1..{MAX_STEPS}")
        return int(steps)

    def _predicted_bits(self, stop: int, steps: int | None) -> float:
        """The tables' prediction of a chain's bits per image beyond the ideal (its discretisation gap
        and the simulator's overheads, :meth:`step_cost`)."""
        levels = self.tables.grid(stop, self._steps(stop, steps), self.step_cost())
        return self.tables.predicted_cost(levels, self.step_cost()) / 2**10 - self.tables.expected_bits(stop)

    # -- what the simulator decides (the PFR here; ``DiffCDQ`` overrides these) ---------------
    def step_cost(self) -> StepCost:
        """How the simulator prices a coding step, for the grid (:class:`StepCost`): the PFR's KL plus
        its index overhead per chunk; a chunk cannot split a dim, so one dim's bits are bounded by the
        chunk budget."""
        return pfr_cost(self.budget)

    def _step_plan(self, a: int, b: int):
        """The integer plan of the step ``a -> b``: its PFR chunks (:meth:`CodingTables.chunks`)."""
        return self.tables.chunks(a, b, self.budget)

    def plan(self, stop: int, steps: int | None) -> list[tuple[int, int, list[tuple[np.ndarray, int]]]]:
        """``[(level a, level b, step plan), ...]`` of the chain to level ``stop`` (integers only)."""
        levels = self.tables.grid(stop, self._steps(stop, steps), self.step_cost())
        return [(a, b, self._step_plan(a, b)) for a, b in zip(levels[:-1], levels[1:])]

    # -- the contract -------------------------------------------------------------------------
    @torch.no_grad()
    def compress(self, x: torch.Tensor, rate: dict | None = None) -> Compressed:
        """Images ``(N, C, H, W)`` -> one payload. ``rate``: ``t_stop`` or ``bits`` (per image,
        predicted from the tables), ``coding_steps`` (default: the number with the least predicted cost, :meth:`CodingTables.best_steps`),
        ``decode`` (the default decode written in the params)."""
        rate = self.check_rate(rate, ("t_stop", "bits", "coding_steps", "decode"))
        self.check_images(x)
        stop = self._stop_level(rate)
        steps = self._steps(stop, rate.get("coding_steps"))
        plan = self.plan(stop, steps)
        decode = rate.get("decode") or DECODES[0]
        if decode not in DECODES:
            raise LdcodecError(f"unknown decode {decode!r}; valid names: {', '.join(DECODES)}")
        params, head = self._params(stop, steps, decode)
        z0 = torch.cat([self.model.ae.encode(x[i:i + self.batch_size].to(self.device)).mean.flatten(1)
                        for i in range(0, len(x), self.batch_size)]).double()
        generator = torch.Generator().manual_seed(int.from_bytes(hashlib.sha256(
            self._id + z0.cpu().numpy().tobytes()).digest()[:8], "little") >> 1)
        symbols, estimated, extra = self._encode_chain(z0, plan, generator)
        payload = head + self._payload(plan, symbols, slice(None))
        file_bits = np.array([_container_bits(len(head) + len(self._payload(plan, symbols, slice(b, b + 1))), 1)
                              for b in range(len(x))])
        setting = {"t_stop": float(self.tables.t[stop]), "coding_steps": steps}
        if decode != DECODES[0]:
            setting["decode"] = decode
        return Compressed(self.name, params, payload, len(x), estimated, file_bits, setting,
                          ideal_bits=self.ideal_bits(z0, stop, generator) if self.ideal else None,
                          extra={**extra, "level": stop, "chain_steps": len(plan)})

    @torch.no_grad()
    def decompress(self, params: bytes, payload: bytes, count: int, decode: str | None = None,
                   max_steps: int | None = None) -> torch.Tensor:
        """Payload -> images ``(N, C, H, W)``; ``max_steps`` decodes only the first steps."""
        method = check_decode(decode or self._parse_params(params, payload)[2], knob=True)
        z_all, level = self.decode_latents(params, payload, count, max_steps)
        t_end = float(self.tables.t[level])
        out = []
        for i in range(0, count, self.batch_size):
            rows = range(i, min(i + self.batch_size, count))
            z0 = decode_latent(self.model.prior, z_all[i:rows.stop].float(),
                               torch.full((len(rows),), t_end, device=self.device), method, None, self.image_keys(rows))
            out.append(self.model.ae.decode(z0).cpu())
        return torch.cat(out) if out else torch.zeros(0, *self.image_shape)

    @torch.no_grad()
    def decode_latents(self, params: bytes, payload: bytes, count: int,
                       max_steps: int | None = None) -> tuple[torch.Tensor, int]:
        """Payload -> ``(z, level)``: the decoded noisy latents ``(N, *latent_shape)`` float64 (the chain's
        exact values) after the first ``max_steps`` coding steps (all: ``None``) and the coding level
        they are at (its time is ``tables.t[level]``; level 0, ``t = 1``, when no step is decoded)."""
        stop, steps, _, payload = self._parse_params(params, payload)
        if max_steps is not None and max_steps < 0:
            raise LdcodecError(f"--max-steps {max_steps} must be >= 0 (0 decodes z_1 alone)")
        full = self.plan(stop, steps)
        plan = full[:max_steps]
        z = self._decode_payload(full, payload, count, max_steps)
        return z.view(-1, *self.latent_shape), (plan[-1][1] if plan else 0)

    def image_keys(self, rows: range) -> list[int]:
        """The decode keys of images ``rows`` of a file (:func:`ldcodec.diffusion.decodes.image_generator`)."""
        return [self.key * 1_000_003 + j for j in rows]

    def _decode_payload(self, plan, payload: bytes, count: int, max_steps: int | None) -> torch.Tensor:
        """The payload -> ``z`` of every image after the first ``max_steps`` steps (all: ``None``),
        ``(count, d)`` float64; a damaged payload raises ``LdcodecError``."""
        try:
            indices = self._read_indices(plan, payload, count)
        except (ValueError, AssertionError, RuntimeError) as err:
            raise LdcodecError(f"damaged mode U payload ({err.__class__.__name__}); the stream is corrupt") from None
        # The encoder writes the canonical (shortest verified) coding of its indices: a payload
        # that is not the canonical coding of what it decodes to was damaged or was read with the
        # wrong parameters, even if every checksum passed.
        if self._payload(plan, indices, slice(None)) != bytes(payload):
            raise LdcodecError("damaged mode U stream: its payload does not match its parameters")
        if max_steps is not None:
            plan, indices = plan[:max_steps], indices[:max_steps]
        out = [self._decode_chain(plan, [[ix[rows] for ix in step] for step in indices], rows)
               for rows in (slice(i, min(i + self.batch_size, count)) for i in range(0, count, self.batch_size))]
        return torch.cat(out) if out else torch.zeros(0, self.dims, dtype=torch.float64)

    # -- the chain ----------------------------------------------------------------------------
    def _log2_n(self, expected: int) -> int:
        return pfr.log2_candidates(expected / 2**10, self.pad)

    def _z1(self, rows: range) -> torch.Tensor:
        """``z_1`` of each image: candidate 0 of step 0, chunk = image index (format-defined)."""
        return torch.cat([cand.candidates(self.key, 0, j, 0, 1, self.dims, device=self.device)
                          for j in rows]).double()

    def _means(self, z: torch.Tensor, a: int, b: int):
        process = self.model.prior.process
        cu, c0, var_q, var_p = step_densities(process, self.tables, a, b)
        t = torch.full((len(z),), float(self.tables.t[a]), device=self.device, dtype=self.coding_dtype)
        z0_hat = denoise(self.coding_prior, z.view(-1, *self.latent_shape).to(self.coding_dtype), t).flatten(1).double()
        return cu * z, c0, z0_hat, var_q, var_p.to(self.device)

    def _encode_chain(self, z0: torch.Tensor, plan, generator: torch.Generator):
        """Latents ``(N, d)`` -> ``(symbols, estimated bits (N,), extra)``: each step's PFR indices per
        chunk, the steps' KLs, and the exactness (module docstring)."""
        z = self._z1(range(len(z0)))
        images = torch.arange(len(z0))
        kl = torch.zeros(len(z0), dtype=torch.float64)
        moved, wanted = 0.0, 0.0
        indices = []
        for a, b, chunks in plan:
            base, c0, z0_hat, var_q, var_p = self._means(z, a, b)
            mu_p, mu_q = base + c0 * z0_hat, base + c0 * z0
            step = []
            for c, (dims, e) in enumerate(chunks):
                d, ln, key = torch.from_numpy(dims).to(self.device), self._log2_n(e), _step_key(a, b)
                alpha, beta = pfr.weights(mu_q[:, d], mu_p[:, d], var_q, var_p[d])
                index = pfr.select(self.key, key, c, ln, alpha, beta, images, generator)
                kl += pfr.kl_bits(mu_q[:, d], mu_p[:, d], var_q, var_p[d]).cpu()
                u = pfr.sample(self.key, key, c, index, images, mu_p[:, d], var_p[d])
                shift = mu_q[:, d] - mu_p[:, d]
                moved, wanted = moved + float(((u - mu_p[:, d]) * shift).sum()), wanted + float(shift.square().sum())
                mu_p[:, d] = u
                step.append(index.cpu().numpy())
            z = mu_p
            indices.append(step)
        return indices, kl.numpy(), {"exactness": moved / wanted if wanted > 0 else 1.0}

    def _decode_chain(self, plan, indices, rows: slice) -> torch.Tensor:
        z = self._z1(range(rows.start, rows.stop))
        images = torch.arange(rows.start, rows.stop)
        for (a, b, chunks), step in zip(plan, indices):
            base, c0, z0_hat, _, var_p = self._means(z, a, b)
            mu_p = base + c0 * z0_hat
            for c, ((dims, e), index) in enumerate(zip(chunks, step)):
                d = torch.from_numpy(dims).to(self.device)
                mu_p[:, d] = pfr.sample(self.key, _step_key(a, b), c, torch.from_numpy(index), images,
                                        mu_p[:, d], var_p[d])
            z = mu_p
        return z

    def _payload(self, plan, indices, rows: slice) -> bytes:
        """The range-coded indices of ``rows``, step-major, cut to the shortest verified length."""
        encoder = range_coder.new_encoder()
        for (_, _, chunks), step in zip(plan, indices):
            for (_, e), index in zip(chunks, step):
                pfr.write_indices(encoder, index[rows], e / 2**10, self._log2_n(e))
        want = [[index[rows] for index in step] for step in indices]
        count = len(want[0][0]) if want and want[0] else 0
        return range_coder.shortest_stream(encoder, lambda data: all(
            np.array_equal(a, b) for got, exp in zip(self._read_indices(plan, data, count), want)
            for a, b in zip(got, exp)))

    def _read_indices(self, plan, payload: bytes, count: int) -> list[list[np.ndarray]]:
        decoder = range_coder.decoder_from_trimmed(payload)
        return [[pfr.read_indices(decoder, count, e / 2**10, self._log2_n(e)) for _, e in chunks]
                for _, _, chunks in plan]

    @torch.no_grad()
    def ideal_bits(self, z0: torch.Tensor, stop: int, generator: torch.Generator) -> np.ndarray:
        """The continuous-time truncated ELBO per image ``(N,)`` in bits (module docstring)."""
        process, prior = self.model.prior.process, self.model.prior
        z0 = z0.view(-1, *self.latent_shape).float()
        prior_kl = process.prior_kl(z0.double()).cpu()
        levels = sorted(set(range(0, stop + 1, self.ideal_stride)) | {stop})
        err = []
        for level in levels:
            t = torch.full((len(z0),), float(self.tables.t[level]), device=self.device)
            eps = torch.randn(z0.shape, generator=generator).to(self.device)
            z0_hat = denoise(prior, process.marginal(z0, t, eps), t)
            err.append((z0 - z0_hat).double().square().flatten(1).sum(1).cpu())
        # 1/2 int ||z0 - z0_hat||^2 dSNR = 1/2 int ||.||^2 SNR dlog(SNR): the trapezoid in log-SNR, where
        # the integrand is smooth (a sigmoid for a Gaussian dim), so a stride of a few levels is exact enough
        snr = torch.from_numpy(self.tables.snr[levels])[:, None]
        f = torch.stack(err) * snr
        integral = 0.5 * (torch.diff(snr.log(), dim=0) * 0.5 * (f[:-1] + f[1:])).sum(0)
        return ((prior_kl + integral) / math.log(2.0)).numpy()

    # -- checks -------------------------------------------------------------------------------
    def _params(self, stop: int, steps: int, decode: str) -> tuple[bytes, bytes]:
        """``(params, payload head)``: one byte ``stop - 1`` (7 bits) with bit 7 set when a second
        byte ``(steps - 1) | decode << 6`` opens the payload; it is left out when the steps are the
        automatic number for this stop level and the decode is ``flow`` (the usual case)."""
        if steps == self._steps(stop, None) and decode == DECODES[0]:
            return bytes([stop - 1]), b""
        return bytes([0x80 | (stop - 1)]), bytes([(steps - 1) | DECODES.index(decode) << 6])

    def _parse_params(self, params: bytes, payload: bytes) -> tuple[int, int, str, bytes]:
        """Inverse of :meth:`_params` -> ``(stop, steps, decode, payload without its head)``."""
        if len(params) != 1:
            raise LdcodecError(f"mode U parameters {bytes(params).hex()} are invalid: the stream is damaged")
        stop = (params[0] & 0x7F) + 1
        if not params[0] & 0x80:
            return stop, self._steps(stop, None), DECODES[0], payload
        if not payload or payload[0] >> 6 >= len(DECODES):
            raise LdcodecError("mode U stream header is damaged (bad coding steps or decode byte)")
        return stop, (payload[0] & 0x3F) + 1, DECODES[payload[0] >> 6], payload[1:]


def _step_key(a: int, b: int) -> int:
    """The generator's step word of the coding step ``level a -> level b``."""
    return a * (LEVELS + 1) + b


def _model_id(model, tables: CodingTables) -> bytes:
    """4 bytes over the weights, the config (minus the data path) and the coding tables."""
    from ldcodec.codecs.identity import model_hash

    cfg = model.cfg.to_dict()
    cfg.get("data", {}).pop("root", None)
    cfg.get("codec", {}).pop("simulator", None)  # the container's codec id names the simulator
    return model_hash({**model.state_dict(), **{f"coding_tables.{k}": v for k, v in tables.to_tensors().items()}},
                      cfg)[:4]


def load_or_build_tables(model, run_dir: str | Path | None = None, data_root=None) -> CodingTables:
    """The model's coding tables: read from ``coding-tables.safetensors`` in the checkpoint folder
    (``run_dir`` or the checkpoint its ``latest`` names) if present, else estimated from
    ``TABLE_LATENTS`` training latents (the dataset's train split, or the built-in sample) and
    written there atomically, so encoder and decoder use the same tables and each checkpoint its own."""
    from safetensors.torch import load_file, save_file

    from ldcodec.checkpoint import find_checkpoint

    if model.prior is None:
        raise LdcodecError("this checkpoint has the N(0, I) prior (model.prior = normal): compression "
                           "needs a diffusion prior; train a grid config")
    path = find_checkpoint(run_dir) / TABLES_FILE if run_dir is not None else None
    dims = math.prod(model.latent_shape)
    if path is not None and path.is_file():
        try:
            return CodingTables.from_tensors(load_file(str(path)), dims)
        except (OSError, ValueError, RuntimeError) as e:
            raise LdcodecError(f"{path}: unreadable coding tables ({e}); delete the file to rebuild them") from None
    if hasattr(model, "variances"):
        tables = CodingTables.gaussian(model.prior.process, model.variances)
    else:
        from ldcodec.data import load_split, to_tensor

        images, _ = load_split(model.cfg.data.dataset, "train", data_root, limit=TABLE_LATENTS)
        with torch.no_grad():
            device = next(model.parameters()).device
            latents = torch.cat([model.ae.encode(to_tensor(images[i:i + 256]).to(device)).mean.cpu()
                                 for i in range(0, len(images), 256)])
        tables = CodingTables.estimate(model.prior, latents)
    if path is not None:
        tmp = path.with_name(f".tmp-{path.name}")
        try:
            save_file(tables.to_tensors(), str(tmp))
            tmp.replace(path)
        except OSError as e:
            print(f"ldcodec: warning: cannot store the coding tables in {path.parent} ({e.strerror}); they are "
                  "rebuilt each time, and a decoder elsewhere must rebuild the same ones", file=sys.stderr)
    return tables
