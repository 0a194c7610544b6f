"""The decode registry: how a decoder turns ``z_t`` at time ``t`` into ``z0`` (``docs/design.md`` §5).

======== ======================================================================================
flow     DDIM with ``eta = 0`` (Song, Meng & Ermon 2021; the probability-flow ODE's
         discretisation): deterministic
realism  ancestral sampling (Ho et al. 2020, Alg. 2): a sample of ``p(z0 | z_t)``, the "perfect
         realism" decode of DiffC (Theis et al. 2022), at the cost of MSE. With the DDPM
         posterior variance and ``ceil(50 t)`` steps it under-disperses at low ``t``: on the
         exact Gaussian source its spread around ``E[z0 | z_t]`` is 0.49-0.51 of ``Var(z0 | z_t)``
         at t = 0.088 (5 steps) and 0.70-0.87 at t = 0.6 (``benchmarks/decode_variants.py``); on
         the MNIST lean checkpoint, samplers with the full spread scored a worse FID
         (``benchmarks/RESULTS.md`` section 10), so the step count stays
mse      the denoised mean ``E[z0 | z_t]`` (Tweedie), one network call
======== ======================================================================================

The decoder-side distortion-perception knob: ``eta=X`` (X in [0, 1]) is DDIM with that ``eta``
(Song et al. 2021, Eq. 16), the reverse variance ``eta^2 Var q(z_s | z_t, z0)`` noised with the
same per-image generators as ``realism``. ``eta=0`` is the flow decode; ``eta=1`` takes the DDPM
posterior variance, an ancestral sampler of ``p(z0 | z_t)`` like ``realism``. It moves from one to
the other at decode time, from the same stream (Blau & Michaeli 2018: the lower MSE end has the
worse perception). A stream stores one of the named decodes; ``eta=X`` is a decoder override.

Every decoder has the signature ``fn(prior, z_t, t, cond, keys) -> z0`` with ``z_t`` ``(B, ...)``,
``t`` ``(B,)``, ``cond`` the mode C condition or ``None``, and one integer key per image: the
realism noise comes from one CPU generator per image keyed by the caller
(:func:`ldcodec.seeds.image_generator`), so a decode does not depend on batching or device. Samplers run
``ceil(DECODE_STEPS * max(t))`` steps (proportionally fewer from a later start). The codecs and
the command line take their decode names from :data:`DECODES`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ldcodec.diffusion.samplers import denoise, sample
from ldcodec.errors import LdcodecError
from ldcodec.seeds import image_generator

DECODE_STEPS = 50  # sampler steps from t = 1 (proportionally fewer from a later start)


def _steps(t: torch.Tensor) -> int:
    return max(1, math.ceil(DECODE_STEPS * float(t.max())))


def decode_flow(prior, z_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None, keys: list[int]) -> torch.Tensor:
    return sample(prior, z_t, t, method="ddim", steps=_steps(t), cond=cond, eta=0.0)


def decode_realism(prior, z_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None,
                   keys: list[int]) -> torch.Tensor:
    return sample(prior, z_t, t, method="ancestral", steps=_steps(t), cond=cond,
                  generator=[image_generator(k) for k in keys])


def decode_mse(prior, z_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None, keys: list[int]) -> torch.Tensor:
    return denoise(prior, z_t, t, cond)


def decode_eta(prior, z_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None, keys: list[int],
               eta: float) -> torch.Tensor:
    return sample(prior, z_t, t, method="ddim", steps=_steps(t), cond=cond, eta=eta,
                  generator=[image_generator(k) for k in keys])


DECODERS: dict[str, Callable[..., torch.Tensor]] = {"flow": decode_flow, "realism": decode_realism,
                                                     "mse": decode_mse}
DECODES = tuple(DECODERS)  # the registered names, in the order streams index them
KNOB = "eta="  # prefix of the decoder-side knob, e.g. "eta=0.5"


def knob_eta(name: str) -> float | None:
    """The ``eta`` of a knob decode name (``"eta=0.25"`` -> 0.25), ``None`` for any other name;
    ``LdcodecError`` for a knob name whose value is not a number in [0, 1]."""
    if not name.startswith(KNOB):
        return None
    try:
        eta = float(name[len(KNOB):])
    except ValueError:
        eta = math.nan
    if not 0.0 <= eta <= 1.0:
        raise LdcodecError(f"decode {name!r}: eta must be a number in [0, 1], e.g. eta=0.5")
    return eta


def check_decode(name: str, knob: bool = False) -> str:
    """``name`` if it is a registered decode (or, with ``knob``, an ``eta=X`` decode), else a one-line
    ``LdcodecError`` listing the valid ones."""
    if name in DECODERS or (knob and knob_eta(name) is not None):
        return name
    valid = ", ".join(DECODES) + (f", {KNOB}X with X in [0, 1]" if knob else "")
    raise LdcodecError(f"unknown decode method {name!r}; choose one of: {valid}")


@torch.no_grad()
def decode_latent(prior, z_t: torch.Tensor, t: torch.Tensor, method: str, cond: torch.Tensor | None,
                  keys: list[int]) -> torch.Tensor:
    """``z_t`` at per-image times ``t`` ``(B,)`` -> ``z0`` shaped like ``z_t``, by the registered ``method``
    or the knob ``eta=X``."""
    eta = knob_eta(check_decode(method, knob=True))
    if eta is not None:
        return decode_eta(prior, z_t, t, cond, keys, eta)
    return DECODERS[method](prior, z_t, t, cond, keys)
