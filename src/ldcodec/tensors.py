"""Small tensor helpers shared by every module (rank-agnostic diffusion code lives on these)."""

from __future__ import annotations

import torch


def bcast(v: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
    """Broadcast per-sample scalars ``v`` of shape ``(B,)`` (or a float) to ``like``'s rank.

    ``(B,)`` becomes ``(B, 1, ..., 1)`` so it multiplies a ``(B, d)`` or ``(B, C, h, w)`` latent.
    """
    if not torch.is_tensor(v):
        return torch.as_tensor(v, dtype=like.dtype, device=like.device)
    return v.reshape(v.shape + (1,) * (like.dim() - v.dim()))


def sum_except_batch(x: torch.Tensor) -> torch.Tensor:
    """``(B, ...) -> (B,)``: sum over every dimension but the first."""
    return x.reshape(x.shape[0], -1).sum(dim=1)
