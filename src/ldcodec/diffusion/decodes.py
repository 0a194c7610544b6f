"""The decode registry: how a decoder turns ``z_t`` at time ``t`` into ``z0`` (DESIGN.md §3).

``flow`` runs DDIM with ``eta = 0`` (the probability-flow ODE's discretisation; deterministic),
``realism`` runs ancestral sampling (a sample of ``p(z0 | z_t)``: realism at the cost of MSE),
``mse`` takes the denoised mean ``E[z0 | z_t]`` (Tweedie). The realism noise comes from one CPU
generator per image keyed by the caller, so a decode does not depend on batching or device.
"""

from __future__ import annotations

import hashlib
import math

import torch

from ldcodec.diffusion.samplers import denoise, sample

DECODES = ("flow", "realism", "mse")
DECODE_STEPS = 50  # sampler steps from t = 1 (proportionally fewer from a later start)


def image_generator(key: int) -> torch.Generator:
    """A CPU generator keyed by an integer (SHA-256 of it, 63 bits)."""
    seed = int.from_bytes(hashlib.sha256(b"decode" + int(key).to_bytes(16, "little", signed=False)).digest()[:8],
                          "little")
    return torch.Generator().manual_seed(seed >> 1)


@torch.no_grad()
def decode_latent(prior, z_t: torch.Tensor, t: torch.Tensor, method: str, cond: torch.Tensor | None,
                  keys: list[int]) -> torch.Tensor:
    """``z_t`` at per-image times ``t`` ``(B,)`` -> ``z0`` shaped like ``z_t``, by ``method``."""
    if method == "mse":
        return denoise(prior, z_t, t, cond)
    steps = max(1, math.ceil(DECODE_STEPS * float(t.max())))
    if method == "flow":
        return sample(prior, z_t, t, method="ddim", steps=steps, cond=cond, eta=0.0)
    return sample(prior, z_t, t, method="ancestral", steps=steps, cond=cond,
                  generator=[image_generator(k) for k in keys])
