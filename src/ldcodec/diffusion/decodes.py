"""Decode methods: a noisy latent ``z_t`` at per-image times ``t`` -> a clean latent ``z0``.

Registry ``DECODES`` (every codec and the command line take their decode names from it):

======== ======================================================================================
flow     the probability-flow path: DDIM with ``eta = 0`` (Song, Meng & Ermon 2021), deterministic
realism  ancestral sampling ``z_s ~ p_theta(z_s | z_t)`` (Ho et al. 2020, Alg. 2): a sample of
         ``p(z0 | z_t)``, the "perfect realism" decode of DiffC (Theis et al. 2022)
mse      the denoised mean ``E[z0 | z_t]`` in one network call (the MSE-optimal latent)
======== ======================================================================================

Every function has the signature ``fn(prior, z_t, t, cond, seeds) -> z0``: ``z_t`` ``(B, ...)``,
``t`` ``(B,)``, ``cond`` the mode C condition or ``None``, ``seeds`` one stream-keyed seed per
image (the realism sampler draws its noise from them, so a decode never depends on the batching).
Samplers run ``ceil(DECODE_STEPS * max(t))`` steps (fewer from a later start).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ldcodec.diffusion.samplers import denoise, sample
from ldcodec.errors import LdcodecError
from ldcodec.seeds import cpu_generator, derive_seed

DECODE_STEPS = 50  # sampler steps from t = 1


def _steps(t: torch.Tensor) -> int:
    return max(1, math.ceil(DECODE_STEPS * float(t.max())))


def decode_flow(prior, z_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None, seeds: list[int]) -> torch.Tensor:
    return sample(prior, z_t, t, method="ddim", steps=_steps(t), cond=cond, eta=0.0)


def decode_realism(prior, z_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None,
                   seeds: list[int]) -> torch.Tensor:
    generators = [cpu_generator(derive_seed(b"decode", s)) for s in seeds]
    return sample(prior, z_t, t, method="ancestral", steps=_steps(t), cond=cond, generator=generators)


def decode_mse(prior, z_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None, seeds: list[int]) -> torch.Tensor:
    return denoise(prior, z_t, t, cond)


DECODES: dict[str, Callable[..., torch.Tensor]] = {"flow": decode_flow, "realism": decode_realism, "mse": decode_mse}


def check_decode(name: str) -> str:
    """``name`` if it is a registered decode, else a one-line ``LdcodecError`` listing the valid ones."""
    if name not in DECODES:
        raise LdcodecError(f"unknown decode method {name!r}; choose one of: {', '.join(DECODES)}")
    return name


@torch.no_grad()
def decode_latent(prior, z_t: torch.Tensor, t: torch.Tensor, method: str, cond: torch.Tensor | None,
                  seeds: list[int]) -> torch.Tensor:
    """``z_t`` at per-image times ``t`` ``(B,)`` -> ``z0`` by the registered ``method``."""
    return DECODES[check_decode(method)](prior, z_t, t, cond, seeds)
