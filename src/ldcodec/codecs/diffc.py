"""Mode U: DiffC in latent space (Theis et al. 2022), bitstream format 2.

The encoder sends the noisy latent ``z_t`` of each image as a chain of reverse steps on the
model's coding levels (:mod:`ldcodec.diffusion.coding_grid`): ``z_1`` is candidate 0 of the
format's generator (free), then each step ``z_u -> z_s`` sends a sample of ``q(z_s | z_u, z0)``
against the Analytic-DPM reverse density ``p(z_s | z_u)`` through the codec's channel simulator
(:mod:`ldcodec.coding.simulator`: the PFR, codec ``diffc``, or dithered quantisation, codec
``diffc-dq``). The decoder turns ``z_t`` into ``z0`` by ``flow``, ``realism`` or ``mse``
(:mod:`ldcodec.diffusion.decodes`) and decodes the image. docs/design.md §2 and §3.

Rates per image: ``ideal`` is the continuous-time truncated ELBO, ``KL(q(z_1|z0) || p(z_1)) +
1/2 int_{SNR_1}^{SNR_t} ||z0 - z0_hat(z_snr)||^2 dSNR`` (VDM, Kingma et al. 2021, Eq. 11 and 17,
in nats -> bits), estimated by the trapezoid rule in log-SNR on the coding levels with one noise
draw per level, the image's squared error measured on every ``ideal_stride``-th level and shaped
between them by the tables' mean error (:meth:`DiffC.ideal_bits`); ``estimated`` is the simulator's estimate of
the coded steps (the PFR: their ``KL(q || p)``; dithered quantisation: the symbols' information);
``actual`` and ``file`` come from the container (:mod:`ldcodec.codecs.container`). On the exact
Gaussian source all three are ``I(X; Z_t)`` in expectation plus the coding overhead of the last two.
The simulator's diagnostics (the PFR's ``exactness``, ...) go to ``Compressed.extra``.

Payload (format 2): one range coder for the whole file (:func:`~ldcodec.codecs.base.single_stream`,
the shortest verified termination). Step-major: for each coding step, the simulator's symbols of
every image (PFR: for each chunk of the step's plan, the indices of every image). Everything else
(the levels of the chain, each step's plan) follows from the model's integer tables and the params
(one byte, the stop level; :meth:`DiffC._params`): the per-step side information is zero. Decoding
the first ``k`` steps (``max_steps=k``) gives every image at the coarser time of level ``g_k``
(progressive).
"""

from __future__ import annotations

import copy
import math
import sys
from pathlib import Path

import numpy as np
import torch

from ldcodec.codecs.base import Codec, Compressed, SymbolCoder, check_canonical, single_stream, single_stream_file_bits
from ldcodec.coding import candidates as cand
from ldcodec.coding import range_coder
from ldcodec.coding.pfr import PFRSimulator
from ldcodec.coding.simulator import Chain, ChannelSimulator, Step
from ldcodec.diffusion.coding_grid import FRAC_BITS, CodingTables, step_densities
from ldcodec.diffusion.decodes import DECODES, check_decode, decode_latent
from ldcodec.diffusion.samplers import denoise
from ldcodec.errors import LdcodecError, reraise_damage
from ldcodec.seeds import content_generator, image_key

AUTO_MAX_STEPS = 32  # the automatic number of coding steps is searched in 1..AUTO_MAX_STEPS
MAX_STEPS = 64
DEFAULT_T = 0.3  # stop time when neither t_stop nor bits is given
DEFAULT_TIMES = (0.7, 0.5, 0.35, 0.25, 0.15)  # the stop times evaluate sweeps by default
IDEAL_STRIDE = 16  # the ideal rate measures every 16th coding level (DiffC.ideal_bits)
TABLE_LATENTS = 1024  # training latents behind the coding tables
TABLES_FILE = "coding-tables.safetensors"


class DiffC(Codec):
    """Mode U codec of a trained model with a diffusion prior (``cfg.cond.enabled`` false), over the
    channel simulator of ``codec.simulator`` (:mod:`ldcodec.coding.simulator`).

    ``tables``: the model's :class:`CodingTables` (see :func:`load_or_build_tables`). ``ideal``:
    whether :meth:`compress` also estimates the ideal rate (it costs a denoiser call per coding level
    and is not part of coding; speed benchmarks time compression without it). ``ideal_stride``: the
    ideal's quadrature measures every ``ideal_stride``-th level (and the stop level); the default
    :data:`IDEAL_STRIDE` costs a sixteenth of every level and keeps the mean over images (within
    1 % on the shipped models), but one image's ideal is then only good to ~5-20 % (benchmarks/RESULTS.md
    §14): use 1 for per-image ideals.

    The registry holds one entry per simulator (:meth:`bind`): ``diffc`` (the PFR, this class) and
    ``diffc-dq``; the entry's name and container id say which simulator wrote a stream.
    """

    name = "diffc"
    codec_id = 1
    simulator: type[ChannelSimulator] = PFRSimulator
    mode = "U"
    decodes = DECODES
    decode_knob = True

    @classmethod
    def bind(cls, simulator: type[ChannelSimulator]) -> type[DiffC]:
        """The mode U codec over ``simulator``: this class for its own simulator, else a subclass that
        only names the simulator (registry name and container id); no method differs."""
        if simulator is cls.simulator:
            return cls
        return type(f"DiffC[{simulator.name}]", (cls,), {
            "name": simulator.codec_name, "codec_id": simulator.codec_id, "simulator": simulator,
            "__doc__": f"DiffC over the {simulator.name} channel simulator ({simulator.__module__})."})

    def __init__(self, model, tables: CodingTables, device: str = "cpu", batch_size: int = 256,
                 ideal: bool = True, ideal_stride: int = IDEAL_STRIDE):
        if model.prior is None:
            raise LdcodecError("this checkpoint has the N(0, I) prior (model.prior = normal): compression "
                               "needs a diffusion prior; train a grid config")
        if model.cfg.cond.enabled:
            raise LdcodecError("this is a mode C (conditional) model: use the cdc codec")
        if ideal_stride < 1:
            raise LdcodecError(f"ideal_stride must be >= 1, got {ideal_stride}")
        self.model, self.tables, self.device, self.batch_size = model.eval(), tables, device, batch_size
        self.ideal_stride = ideal_stride
        self.ideal = ideal  # estimate the ideal rate in compress (denoiser calls on the measured levels; not coding)
        self.reuse_chain = True  # decompress keeps the last file's decoded chain (False: time full decodes)
        self._decoded = None  # (file key, decode_latents' result) of the last decode (decompress)
        self.latent_shape = tuple(model.latent_shape)
        self.dims = math.prod(self.latent_shape)
        if tables.dims != self.dims:
            raise LdcodecError(f"coding tables for {tables.dims} dims do not fit a {self.dims}-dim latent")
        self.image_shape = tuple(model.image_shape)
        self.sim = self.simulator(int(model.cfg.codec.max_chunk_bits), int(model.cfg.codec.pad))
        dtype = self.sim.coding_dtype
        # the denoiser behind the coding densities, in the simulator's dtype
        self.coding_prior = model.prior if dtype == torch.float32 else copy.deepcopy(model.prior).to(dtype)
        self._id = _model_id(model, tables)
        self._auto_steps: dict[int, int] = {}
        self.key = cand.stream_key(self._id)
        self.coder = SymbolCoder(write=self._write, check=self._matches)

    def model_id(self) -> bytes:
        return self._id

    def default_rates(self) -> list[dict]:
        return [{"t_stop": t} for t in DEFAULT_TIMES]

    # -- rate settings ------------------------------------------------------------------------
    def _stop_level(self, rate: dict) -> int:
        if rate.get("bits") is not None:
            bits = float(rate["bits"])
            if not (math.isfinite(bits) and bits > 0):
                raise LdcodecError(f"the bit budget {bits} must be a positive number of bits per image")
            return self.tables.level_of_bits(bits, lambda level: self._predicted_bits(level, rate.get("coding_steps")))
        t = DEFAULT_T if rate.get("t_stop") is None else float(rate["t_stop"])
        t_low = float(self.tables.t[-1])
        if not t_low <= t < 1.0:
            raise LdcodecError(f"the stop time t_stop = {t} is outside [{t_low:g}, 1) (this model's deepest "
                               "coding level); smaller t costs more bits")
        return max(self.tables.level_of_time(t), 1)

    def _steps(self, stop: int, steps: int | None) -> int:
        steps = steps if steps is not None else (self.model.cfg.codec.coding_steps or None)
        if steps is None:
            if stop not in self._auto_steps:
                self._auto_steps[stop] = self.tables.best_steps(stop, AUTO_MAX_STEPS, self.sim.cost())
            return self._auto_steps[stop]
        if not 1 <= steps <= MAX_STEPS:
            raise LdcodecError(f"coding_steps = {steps} is outside 1..{MAX_STEPS}")
        return int(steps)

    def _predicted_bits(self, stop: int, steps: int | None) -> float:
        """The tables' prediction of a chain's bits per image beyond the ideal (its discretisation gap
        and the simulator's overheads, :meth:`ChannelSimulator.cost`)."""
        cost = self.sim.cost()
        levels = self.tables.grid(stop, self._steps(stop, steps), cost)
        return self.tables.predicted_cost(levels, cost) / 2**FRAC_BITS - self.tables.expected_bits(stop)

    def plan(self, stop: int, steps: int | None) -> list[tuple[int, int, object]]:
        """``[(level a, level b, the simulator's step plan), ...]`` of the chain to level ``stop``
        (integers only)."""
        levels = self.tables.grid(stop, self._steps(stop, steps), self.sim.cost())
        return [(a, b, self.sim.plan(self.tables, a, b)) for a, b in zip(levels[:-1], levels[1:])]

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
        # the encoder's private draws, keyed by the model and the images' bytes (not z0's: its last bits
        # depend on the CPU's float kernels, and a stream should not change with the machine that wrote it)
        generator = content_generator(self._id, x.detach().cpu().float())
        chain, estimated, extra = self._encode_chain(z0, plan, generator)
        payload = head + single_stream(self.coder, chain)
        file_bits = single_stream_file_bits(self.coder, chain, len(params), head=len(head))
        setting = {"t_stop": float(self.tables.t[stop]), "coding_steps": steps}
        if decode != DECODES[0]:
            setting["decode"] = decode
        return Compressed(self.name, params, payload, len(x), estimated, file_bits, setting,
                          ideal_bits=self.ideal_bits(z0, stop, generator) if self.ideal else None,
                          extra={**extra, "level": stop, "chain_steps": len(plan)})

    @torch.no_grad()
    def decompress(self, params: bytes, payload: bytes, count: int, decode: str | None = None,
                   max_steps: int | None = None) -> torch.Tensor:
        """Payload -> images ``(N, C, H, W)``; ``max_steps`` decodes only the first steps.

        With ``reuse_chain`` (the default) the decoded chain of the last file is kept, so a second
        decode of the same bytes (another ``decode``, as ``evaluate`` does) runs only the final decode."""
        method = check_decode(decode or self._parse_params(params, payload)[2], knob=True)
        key = (bytes(params), bytes(payload), count, max_steps)
        if not self.reuse_chain or self._decoded is None or self._decoded[0] != key:
            self._decoded = None
            self._decoded = (key, self.decode_latents(params, payload, count, max_steps))
        z_all, level = self._decoded[1]
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
        they are at (its time is ``tables.t[level]``; level 0, ``t = 1``, when no step is decoded).

        The chain is decoded step by step (a step's symbols may be coded under densities that depend
        on the decoded ``z_u``); a full decode then refuses a payload that is not the canonical
        coding of what it decoded to (:func:`~ldcodec.codecs.base.check_canonical`); a prefix decode
        reads only its steps and cannot check the rest."""
        stop, steps, _, payload = self._parse_params(params, payload)
        if max_steps is not None and max_steps < 0:
            raise LdcodecError(f"max_steps = {max_steps} must be >= 0 (0 decodes z_1 alone)")
        full = self.plan(stop, steps)
        plan = full[:max_steps]
        if count == 0:
            return torch.zeros(0, *self.latent_shape, dtype=torch.float64), (plan[-1][1] if plan else 0)
        z, images, decoded = self._z1(range(count)), torch.arange(count), []
        with reraise_damage("mode U"):
            decoder = range_coder.decoder_from_trimmed(payload)
        for a, b, step_plan in plan:
            step = self._step(z, a, b, step_plan, images)
            with reraise_damage("mode U"):  # only reading the payload: a damaged stream, not another failure
                decoded.append(self.sim.read(decoder, step, count))
            z = self.sim.decode(step, decoded[-1])
        if len(plan) == len(full):
            check_canonical(self.coder, Chain(decoded, count), payload, "mode U")
        return z.view(-1, *self.latent_shape), (plan[-1][1] if plan else 0)

    def image_keys(self, rows: range) -> list[int]:
        """The decode keys of images ``rows`` of a file (:func:`ldcodec.diffusion.decodes.image_generator`)."""
        return [image_key(self.key, j) for j in rows]

    # -- the chain ----------------------------------------------------------------------------
    def _z1(self, rows: range) -> torch.Tensor:
        """``z_1`` of each image: candidate 0 of step 0, chunk = image index (format-defined)."""
        return torch.cat([cand.candidates(self.key, 0, j, 0, 1, self.dims, device=self.device)
                          for j in rows]).double()

    def _step(self, z: torch.Tensor, a: int, b: int, step_plan, images: torch.Tensor) -> Step:
        """Both sides' :class:`Step` ``a -> b`` from ``z_u`` ``(N, d)``; the coding denoiser runs in
        batches of ``batch_size`` rows."""
        cu, c0, var_q, var_p = step_densities(self.model.prior.process, self.tables, a, b)
        dtype = self.sim.coding_dtype
        z0_hat = []
        for i in range(0, len(z), self.batch_size):
            rows = z[i:i + self.batch_size]
            t = torch.full((len(rows),), float(self.tables.t[a]), device=self.device, dtype=dtype)
            z0_hat.append(denoise(self.coding_prior, rows.view(-1, *self.latent_shape).to(dtype), t).flatten(1).double())
        z0_hat = torch.cat(z0_hat) if z0_hat else torch.zeros_like(z)
        return Step(a, b, step_plan, self.key, images, cu * z, c0, z0_hat, var_q, var_p.to(self.device))

    def _encode_chain(self, z0: torch.Tensor, plan, generator: torch.Generator):
        """Latents ``(N, d)`` -> ``(Chain, estimated bits (N,), extra)``: each step's symbols, the
        steps' estimated bits and the simulator's diagnostics (:meth:`ChannelSimulator.summary`)."""
        n = len(z0)
        z, images = self._z1(range(n)), torch.arange(n)
        bits = torch.zeros(n, dtype=torch.float64)
        stats: dict[str, float] = {}
        steps = []
        for a, b, step_plan in plan:
            out = self.sim.encode(self._step(z, a, b, step_plan, images), z0, generator)
            z, bits = out.z, bits + out.bits
            steps.append(out.symbols)
            for k, v in out.stats.items():
                stats[k] = stats.get(k, 0.0) + v
        return Chain(steps, n), bits.numpy(), self.sim.summary(stats, n)

    def _write(self, encoder, chain: Chain) -> None:
        """One file's payload: every step's symbols, step-major (the simulator's layout within a step)."""
        for symbols in chain.steps:
            self.sim.write(encoder, symbols)

    def _matches(self, decoder, chain: Chain) -> bool:
        return all(self.sim.matches(decoder, symbols) for symbols in chain.steps)

    @torch.no_grad()
    def ideal_bits(self, z0: torch.Tensor, stop: int, generator: torch.Generator) -> np.ndarray:
        """The continuous-time truncated ELBO per image ``(N,)`` in bits (module docstring)."""
        process, prior = self.model.prior.process, self.model.prior
        z0 = z0.view(-1, *self.latent_shape).float()
        prior_kl = process.prior_kl(z0.double()).cpu()
        levels = sorted(set(range(0, stop + 1, self.ideal_stride)) | {stop})
        err = []
        for level in levels:
            eps = torch.randn(z0.shape, generator=generator).to(self.device)
            squared = []
            for i in range(0, len(z0), self.batch_size):
                rows = z0[i:i + self.batch_size]
                t = torch.full((len(rows),), float(self.tables.t[level]), device=self.device)
                z0_hat = denoise(prior, process.marginal(rows, t, eps[i:i + len(rows)]), t)
                squared.append((rows - z0_hat).double().square().flatten(1).sum(1).cpu())
            err.append(torch.cat(squared))
        # 1/2 int ||z0 - z0_hat||^2 dSNR = 1/2 int ||.||^2 SNR dlog(SNR), the trapezoid in log-SNR over
        # every level; between the measured levels the image's error is the tables' mean error V times
        # the image's ratio to it, interpolated linearly (the ratio is smooth where V is not)
        mean_err = self.tables.mse[:stop + 1].sum(1)
        ratio = (torch.stack(err) / torch.from_numpy(mean_err[levels])[:, None]).numpy()
        weights = np.stack([np.interp(np.arange(stop + 1), levels, e) for e in np.eye(len(levels))], 1)
        fine = weights @ ratio  # (stop + 1, N)
        snr = self.tables.snr[:stop + 1]
        f = fine * (mean_err * snr)[:, None]
        integral = 0.5 * (np.diff(np.log(snr))[:, None] * 0.5 * (f[:-1] + f[1:])).sum(0)
        return (prior_kl.numpy() + integral) / math.log(2.0)

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


def _model_id(model, tables: CodingTables) -> bytes:
    """4 bytes over the weights, the portable config and the coding tables; ``codec.simulator`` is
    left out (the container's codec id names the simulator)."""
    from ldcodec.codecs.identity import model_id

    return model_id(model, {f"coding_tables.{k}": v for k, v in tables.to_tensors().items()},
                    drop_keys=("codec.simulator",))


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
