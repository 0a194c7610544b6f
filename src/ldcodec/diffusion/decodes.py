"""The decode registry: how a decoder turns ``z_t`` at time ``t`` into ``z0`` (DESIGN.md §3).

======== ======================================================================================
flow     DDIM with ``eta = 0`` (Song, Meng & Ermon 2021; the probability-flow ODE's
         discretisation): deterministic
realism  ancestral sampling (Ho et al. 2020, Alg. 2): a sample of ``p(z0 | z_t)``, the "perfect
         realism" decode of DiffC (Theis et al. 2022), at the cost of MSE
mse      the denoised mean ``E[z0 | z_t]`` (Tweedie), one network call
======== ======================================================================================

Every decoder has the signature ``fn(prior, z_t, t, cond, keys) -> z0`` with ``z_t`` ``(B, ...)``,
``t`` ``(B,)``, ``cond`` the mode C condition or ``None``, and one integer key per image: the
realism noise comes from one CPU generator per image keyed by the caller
(:func:`image_generator`), so a decode does not depend on batching or device. Samplers run
``ceil(DECODE_STEPS * max(t))`` steps (proportionally fewer from a later start). The codecs and
the command line take their decode names from :data:`DECODES`.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable

import torch

from ldcodec.diffusion.samplers import denoise, sample
from ldcodec.errors import LdcodecError

DECODE_STEPS = 50  # sampler steps from t = 1 (proportionally fewer from a later start)


def image_generator(key: int) -> torch.Generator:
    """A CPU generator keyed by an integer (SHA-256 of it, 63 bits)."""
    seed = int.from_bytes(hashlib.sha256(b"decode" + int(key).to_bytes(16, "little", signed=False)).digest()[:8],
                          "little")
    return torch.Generator().manual_seed(seed >> 1)


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


DECODERS: dict[str, Callable[..., torch.Tensor]] = {"flow": decode_flow, "realism": decode_realism,
                                                     "mse": decode_mse}
DECODES = tuple(DECODERS)  # the registered names, in the order streams index them


def check_decode(name: str) -> str:
    """``name`` if it is a registered decode, else a one-line ``LdcodecError`` listing the valid ones."""
    if name not in DECODERS:
        raise LdcodecError(f"unknown decode method {name!r}; choose one of: {', '.join(DECODES)}")
    return name


@torch.no_grad()
def decode_latent(prior, z_t: torch.Tensor, t: torch.Tensor, method: str, cond: torch.Tensor | None,
                  keys: list[int]) -> torch.Tensor:
    """``z_t`` at per-image times ``t`` ``(B,)`` -> ``z0`` shaped like ``z_t``, by the registered ``method``."""
    return DECODERS[check_decode(method)](prior, z_t, t, cond, keys)
