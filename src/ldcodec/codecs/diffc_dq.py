"""Mode U with dithered quantisation: DiffC's chain, each step coded by :mod:`ldcodec.coding.dq`.

Codec ``diffc-dq`` (container id 8), selected by ``codec.simulator: dq``. Everything but the step's
channel simulator is :class:`~ldcodec.codecs.diffc.DiffC`'s: the levels and the tables, the params
byte and its optional head byte, the ``z_1`` candidate, the three decodes, the model id, the ideal
rate. Per coding step ``z_u -> z_s`` (levels ``a -> b``) and per image ``b`` of the file, all ``d``
latent dims at once:

    mu_q = cu z_u + c0 z0,  mu_p = cu z_u + c0 z0_hat(z_u),  var_p = var_q + c0^2 v(a)      (d,)
    Delta = sqrt(12 var_q),  w ~ U(-1/2, 1/2)^d  (candidates.dither, keyed by image and step)
    k = round(mu_q / Delta + w)                      sent: j = k - round(mu_p / Delta + w)
    z_s = Delta (k - w)                              z_s - mu_q ~ U(-Delta/2, Delta/2), variance var_q

``j`` is range coded under the quantised Gaussian of :func:`ldcodec.coding.dq.step_model` (mean
offset and std on a ``2^-12`` grid). Rates per image: ``estimated`` is the sum of ``-log2 P(j)``
under the coded model (what is sent, before the coder's flush); ``ideal`` as DiffC. ``extra``:
``noise_variance_ratio`` (``sum (z_s - mu_q)^2 / (N d var_q)`` over the steps, 1 by construction:
a measured check of ``Delta``), ``gaussian_kl_bits`` (the Gaussian steps' ``KL(q || p)`` that the
uniform channel replaces, per image) and ``excess_bits`` (estimated minus that KL, per image).

Payload: one range coder, step-major; within a step the symbols of every image, image-major
(``(N, d)`` row-major). The model of a step depends on the decoded ``z_u``, so the decoder runs
the denoiser once per step for the whole file (in batches of ``batch_size`` rows, as the
encoder) before it reads that step; the coding denoiser is a float64 copy of the prior
(:mod:`ldcodec.coding.dq`, determinism). Every decode of the whole chain re-encodes its symbols
and refuses a payload that is not their canonical coding; a prefix decode (``max_steps``) reads
only the first steps and cannot check the rest.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from ldcodec.codecs.diffc import DiffC, _step_key
from ldcodec.coding import candidates as cand
from ldcodec.coding import dq, pfr, range_coder
from ldcodec.diffusion.coding_grid import StepCost
from ldcodec.errors import LdcodecError

# After the first step the latent's noise is partly uniform while the next step's density assumes it
# Gaussian: a cost the per-step excess table does not see. Measured on the exact Gaussian source
# (d = 64, t = 0.1, benchmarks/gaussian_diffc.py --simulator dq): 11 steps cost 6.4 bits more than one
# although the table predicted them cheaper, i.e. at least 0.01 bits per dim and extra step; priced
# at 0.023 (24 / 2^10) so that the grid takes a step only where it saves more than that.
STEP_MISMATCH = 24
GRID_BITS = 24  # a dim's bits in one step are not limited (it only widens its symbols' range)


class DiffCDQ(DiffC):
    """DiffC whose coding steps are dithered quantisers (module docstring); same constructor."""

    name = "diffc-dq"
    codec_id = 8
    simulator = "dq"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.coding_prior = copy.deepcopy(self.model.prior).double()
        self.coding_dtype = torch.float64

    # -- what the simulator decides ----------------------------------------------------------
    def step_cost(self) -> StepCost:
        """Per step and dim its expected Gaussian KL ``b`` plus the uniform channel's excess at ``b``
        (:func:`ldcodec.coding.dq.excess_bits`) plus :data:`STEP_MISMATCH`, integers in ``2^-10`` bits;
        one dim's bits in a step are not bounded (a larger step only widens its symbols' range)."""
        return StepCost("dq", GRID_BITS, lambda e: (e + dq.excess_bits(e) + STEP_MISMATCH).sum(1))

    def _step_plan(self, a: int, b: int):
        return None  # every dim of the step at once

    # -- one step -----------------------------------------------------------------------------
    def _step_models(self, z: torch.Tensor, a: int, b: int, images: torch.Tensor):
        """Both sides' view of the step from ``z_u`` ``(N, d)``: ``(base, c0, mu_p, var_q, var_p, w,
        centre, frac, sigma, Delta)``; the denoiser runs in batches of ``batch_size`` rows."""
        parts = [self._means(z[i:i + self.batch_size], a, b) for i in range(0, len(z), self.batch_size)]
        base = torch.cat([p[0] for p in parts])
        z0_hat = torch.cat([p[2] for p in parts])
        c0, var_q, var_p = parts[0][1], parts[0][3], parts[0][4]
        mu_p = base + c0 * z0_hat
        w = cand.dither(self.key, _step_key(a, b), images, self.dims).to(mu_p.device)
        centre, frac, sigma, delta = dq.step_model(mu_p, var_q, var_p, w)
        return base, c0, mu_p, var_q, var_p, w, centre, frac, sigma, delta

    def _encode_chain(self, z0: torch.Tensor, plan, generator: torch.Generator):
        """Latents ``(N, d)`` -> ``(steps, estimated bits (N,), extra)``; ``steps`` holds per step
        ``(j, frac, sigma, R)`` as numpy arrays (``(N, d)``, ``(N, d)``, ``(d,)``, int)."""
        n = len(z0)
        z, images = self._z1(range(n)), torch.arange(n)
        bits = torch.zeros(n, dtype=torch.float64)
        kl = torch.zeros(n, dtype=torch.float64)
        noise, expected = 0.0, 0.0
        steps = []
        for a, b, _ in plan:
            base, c0, mu_p, var_q, var_p, w, centre, frac, sigma, delta = self._step_models(z, a, b, images)
            mu_q = base + c0 * z0
            k, z = dq.quantise_step(mu_q, w, delta)
            j = k - centre
            bits += dq.symbol_bits(j, frac, sigma).sum(1).cpu()
            kl += pfr.kl_bits(mu_q, mu_p, var_q, var_p).cpu()
            noise, expected = noise + float((z - mu_q).square().sum()), expected + var_q * z.numel()
            steps.append((j.cpu().numpy(), frac.cpu().numpy(), sigma.cpu().numpy(), dq.step_range(sigma)))
        estimated = bits.numpy()
        return steps, estimated, {"noise_variance_ratio": noise / expected if expected else 1.0,
                                  "gaussian_kl_bits": float(kl.mean()),
                                  "excess_bits": float((bits - kl).mean())}

    def _payload(self, plan, steps, rows: slice) -> bytes:
        """The range-coded symbols of ``rows``, step-major, cut to the shortest verified length."""
        encoder = range_coder.new_encoder()
        for j, frac, sigma, r in steps:
            dq.write_symbols(encoder, j[rows], frac[rows], sigma, r)
        want = [j[rows] for j, _, _, _ in steps]

        def decodes_same(data: bytes) -> bool:
            decoder = range_coder.decoder_from_trimmed(data)
            return all(np.array_equal(dq.read_symbols(decoder, frac[rows], sigma, r), exp)
                       for (_, frac, sigma, r), exp in zip(steps, want))

        return range_coder.shortest_stream(encoder, decodes_same)

    def _decode_payload(self, plan, payload: bytes, count: int, max_steps: int | None) -> torch.Tensor:
        """Read and decode step by step (each step's model needs the previous ``z``), then check
        that the payload is the canonical coding of what it decoded to (full decodes only)."""
        images = torch.arange(count)
        z = self._z1(range(count))
        limit = len(plan) if max_steps is None else min(max_steps, len(plan))
        steps = []
        try:
            decoder = range_coder.decoder_from_trimmed(payload)
            for a, b, _ in plan[:limit]:
                *_, w, centre, frac, sigma, delta = self._step_models(z, a, b, images)
                frac_np, sigma_np, r = frac.cpu().numpy(), sigma.cpu().numpy(), dq.step_range(sigma)
                j = dq.read_symbols(decoder, frac_np, sigma_np, r)
                z = dq.reconstruct(centre + torch.from_numpy(j).to(centre.device), w, delta)
                steps.append((j, frac_np, sigma_np, r))
            canonical = limit < len(plan) or self._payload(plan, steps, slice(None)) == bytes(payload)
        except (ValueError, AssertionError, RuntimeError, OverflowError) as err:
            raise LdcodecError(f"damaged mode U payload ({err.__class__.__name__}); the stream is corrupt") from None
        if not canonical:
            raise LdcodecError("damaged mode U stream: its payload does not match its parameters")
        return z
