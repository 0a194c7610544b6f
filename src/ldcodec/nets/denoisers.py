"""Latent denoisers ``eps'(z_t, t, cond)``: the network part of the LSGM mixed score.

Every denoiser has ``forward(z_t, t, cond=None, drop=None) -> eps`` with ``eps`` shaped like
``z_t``, ``t`` of shape ``(B,)`` in [0, 1]. ``cond=None`` is the unconditional case (a learned
null condition is used); ``drop`` is a ``(B,)`` bool mask that swaps the condition for the null one
(condition dropout for classifier-free guidance, Ho & Salimans 2022).

- ``MLPDenoiser``: vector latents ``(B, d)``, condition ``(B, c)``; a residual MLP with the time
  (and condition) embedding added inside every block.
- ``UNetDenoiser``: spatial latents ``(B, C, h, w)``, condition ``(B, c_y, h_y, w_y)`` resized to
  ``(h, w)`` and concatenated to the input; a small U-Net (Ronneberger et al. 2015, in the
  residual-block form of Ho et al. 2020, App. B, without attention). Sizes not divisible by the
  total downsampling factor (e.g. 7 or 14) are padded by edge replication and cropped back.

The analytic denoiser of Gaussian data lives in :mod:`ldcodec.diffusion.gaussian` (it needs the
noise process, so it belongs to ``diffusion``; ``nets`` holds networks only).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ldcodec.errors import LdcodecError
from ldcodec.nets.embeddings import NullCondition, TimeEmbedding

Tensor = torch.Tensor


def _check_cond(cond_channels: int, cond: Tensor | None, name: str) -> None:
    if cond is not None and cond_channels == 0:
        raise LdcodecError(f"{name} was built unconditional (0 condition channels) but got a condition; "
                           "build it with cond_dim/cond_channels > 0 or pass cond=None")
    if cond is not None and cond.shape[1] != cond_channels:
        raise LdcodecError(f"{name} expects {cond_channels} condition channels, got a condition of shape "
                           f"{tuple(cond.shape)}")


def _zero_init(layer: nn.Module) -> nn.Module:
    """Zero the last layer so a fresh denoiser predicts ``eps' = 0`` (Ho et al. 2020 code; LSGM)."""
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class _MLPBlock(nn.Module):
    """Pre-norm residual block ``h + W2 SiLU(W1 SiLU(LN h) + E emb)``, ``(B, hidden)``."""

    def __init__(self, hidden: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.fc1 = nn.Linear(hidden, hidden)
        self.emb = nn.Linear(hidden, hidden)
        self.fc2 = nn.Linear(hidden, hidden)

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        x = self.fc1(F.silu(self.norm(h))) + self.emb(emb)
        return h + self.fc2(F.silu(x))


class MLPDenoiser(nn.Module):
    """``eps'(z_t, t, cond)`` for ``(B, dim)`` latents with an optional ``(B, cond_dim)`` condition."""

    def __init__(self, dim: int, hidden: int = 256, depth: int = 3, cond_dim: int = 0):
        super().__init__()
        self.dim, self.cond_dim = dim, cond_dim
        self.inp = nn.Linear(dim, hidden)
        self.time = TimeEmbedding(hidden)
        self.null = NullCondition(cond_dim) if cond_dim else None
        self.cond = nn.Linear(cond_dim, hidden) if cond_dim else None
        self.blocks = nn.ModuleList(_MLPBlock(hidden) for _ in range(depth))
        self.out = nn.Sequential(nn.LayerNorm(hidden), nn.SiLU(), _zero_init(nn.Linear(hidden, dim)))

    def forward(self, z_t: Tensor, t: Tensor, cond: Tensor | None = None, drop: Tensor | None = None) -> Tensor:
        _check_cond(self.cond_dim, cond, "MLPDenoiser")
        emb = self.time(t)
        if self.cond_dim:
            emb = emb + self.cond(self.null(cond, drop, (z_t.shape[0], self.cond_dim)))
        h = self.inp(z_t)
        for block in self.blocks:
            h = block(h, emb)
        return self.out(h)


def _groups(channels: int) -> int:
    """Largest group count <= 8 dividing ``channels`` (GroupNorm, Wu & He 2018)."""
    return next(g for g in (8, 4, 2, 1) if channels % g == 0)


class _ResBlock(nn.Module):
    """``(B, c_in, h, w) -> (B, c_out, h, w)``: two GroupNorm-SiLU-conv layers, time embedding added between."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(c_in), c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, c_out)
        self.norm2 = nn.GroupNorm(_groups(c_out), c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x))) + self.emb(emb)[:, :, None, None]
        return self.skip(x) + self.conv2(F.silu(self.norm2(h)))


class UNetDenoiser(nn.Module):
    """``eps'(z_t, t, cond)`` for ``(B, channels, h, w)`` latents; ``len(mults)`` resolution levels.

    Level ``i`` has ``base * mults[i]`` channels; each level but the last halves the resolution.
    The condition ``(B, cond_channels, h_y, w_y)`` is resized (bilinear, antialiased) to ``(h, w)``.
    """

    def __init__(self, channels: int, base: int = 32, mults: Sequence[int] = (1, 2), cond_channels: int = 0):
        super().__init__()
        if not mults:
            raise LdcodecError("UNetDenoiser needs at least one level in mults, e.g. mults=(1, 2)")
        self.channels, self.cond_channels = channels, cond_channels
        self.factor = 2 ** (len(mults) - 1)
        emb_dim = 4 * base
        widths = [base * m for m in mults]
        self.time = TimeEmbedding(emb_dim)
        self.null = NullCondition(cond_channels) if cond_channels else None
        self.conv_in = nn.Conv2d(channels + cond_channels, base, 3, padding=1)
        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        ch = base
        for i, width in enumerate(widths):
            self.down.append(_ResBlock(ch, width, emb_dim))
            ch = width
            if i < len(widths) - 1:
                self.downsample.append(nn.Conv2d(width, width, 3, stride=2, padding=1))
        self.mid = _ResBlock(ch, ch, emb_dim)
        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for i in reversed(range(len(widths))):
            self.up.append(_ResBlock(ch + widths[i], widths[i], emb_dim))
            ch = widths[i]
            if i > 0:
                self.upsample.append(nn.Conv2d(ch, ch, 3, padding=1))
        self.out = nn.Sequential(
            nn.GroupNorm(_groups(ch), ch), nn.SiLU(), _zero_init(nn.Conv2d(ch, channels, 3, padding=1))
        )

    def _condition(self, cond: Tensor | None, drop: Tensor | None, shape: tuple[int, int, int, int]) -> Tensor:
        """The condition resized to the latent's ``(h, w)``, null where absent or dropped."""
        if cond is not None and cond.shape[-2:] != shape[-2:]:
            cond = F.interpolate(cond, size=shape[-2:], mode="bilinear", align_corners=False, antialias=True)
        return self.null(cond, drop, shape)

    def forward(self, z_t: Tensor, t: Tensor, cond: Tensor | None = None, drop: Tensor | None = None) -> Tensor:
        _check_cond(self.cond_channels, cond, "UNetDenoiser")
        b, _, h, w = z_t.shape
        x = z_t
        if self.cond_channels:
            x = torch.cat([x, self._condition(cond, drop, (b, self.cond_channels, h, w)).to(x.dtype)], dim=1)
        height, width = (math.ceil(n / self.factor) * self.factor for n in (h, w))
        x = F.pad(x, (0, width - w, 0, height - h), mode="replicate")
        emb = self.time(t)
        x = self.conv_in(x)
        skips = []
        for i, block in enumerate(self.down):
            x = block(x, emb)
            skips.append(x)
            if i < len(self.downsample):
                x = self.downsample[i](x)
        x = self.mid(x, emb)
        for j, block in enumerate(self.up):
            x = block(torch.cat([x, skips.pop()], dim=1), emb)
            if j < len(self.upsample):
                x = self.upsample[j](F.interpolate(x, scale_factor=2.0, mode="nearest"))
        return self.out(x)[:, :, :h, :w]
