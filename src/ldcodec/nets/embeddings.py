"""Time embeddings and the learned null condition shared by the latent denoisers.

- ``sinusoidal_embedding``: the transformer position code applied to the diffusion time
  (Vaswani et al. 2017, Sec. 3.5; used for time in Ho et al. 2020, App. B).
- ``TimeEmbedding``: sinusoidal features of ``t`` followed by a two-layer MLP.
- ``NullCondition``: the learned "no condition" input and condition dropout of classifier-free
  guidance (Ho & Salimans 2022, Sec. 3.2).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ldcodec.tensors import bcast

Tensor = torch.Tensor


def sinusoidal_embedding(t: Tensor, dim: int, scale: float = 1000.0, max_period: float = 10000.0) -> Tensor:
    """``(B,) -> (B, dim)``: ``[cos(scale t w_k), sin(scale t w_k)]`` with ``w_k = max_period^(-k / (dim/2))``.

    ``t`` in [0, 1] is scaled by ``scale`` so that the DDPM step index ``i = 1000 t`` sets the phases.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = (scale * t.float())[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=1)
    return emb


class TimeEmbedding(nn.Module):
    """``(B,) -> (B, dim)``: sinusoidal features of ``t`` through ``Linear-SiLU-Linear``."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: Tensor) -> Tensor:
        return self.mlp(sinusoidal_embedding(t, self.dim).to(self.mlp[0].weight.dtype))


class NullCondition(nn.Module):
    """Learned null condition for classifier-free guidance (Ho & Salimans 2022).

    Holds a ``(channels,)`` vector. ``forward(cond, drop, shape)`` returns a condition of ``shape``
    (``(B, c)`` or ``(B, c, h, w)``): the null vector (broadcast over space) where ``cond`` is None
    or where the ``(B,)`` bool mask ``drop`` is True, ``cond`` elsewhere.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.value = nn.Parameter(torch.zeros(channels))

    def forward(self, cond: Tensor | None, drop: Tensor | None, shape: tuple[int, ...]) -> Tensor:
        null = self.value.view(1, -1, *([1] * (len(shape) - 2))).expand(shape)
        if cond is None:
            return null
        if drop is None:
            return cond
        return torch.where(bcast(drop.to(torch.bool), cond), null.to(cond.dtype), cond)
