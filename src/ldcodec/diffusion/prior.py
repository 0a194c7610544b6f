"""The LSGM latent prior with a mixed score (Vahdat, Kreis & Kautz 2021, Sec. 3.2).

``eps_theta(z_t, t) = (1 - a) * eps_normal(z_t, t) + a * eps'(z_t, t)`` with a learnable
per-dimension mixing weight ``a = sigmoid(logit)`` in (0, 1) and
``eps_normal = sigma_t z_t / (alpha_t^2 + sigma_t^2)``, the exact eps of ``N(0, I)`` data pushed
through the process (``sigma_t z_t`` for VP). It is the geometric mixture
``p(z_t) ∝ N(z_t; 0, I)^(1 - a) p_theta(z_t)^a``: ``a = 0`` is exactly the standard-normal prior
of a plain VAE, and the network only has to model the residual. Shapes: ``z_t`` is
``(B, *latent_shape)``, ``t`` is ``(B,)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ldcodec.diffusion.processes import NoiseProcess
from ldcodec.errors import LdcodecError

Tensor = torch.Tensor


class DiffusionPrior(nn.Module):
    """Diffusion prior ``p(z0)`` over latents of ``latent_shape``: a process, a denoiser, a mixing logit.

    ``net(z_t, t, cond=None, drop=None) -> eps'`` is any denoiser of ``ldcodec.nets.denoisers``.
    ``mixed=False`` uses ``eps'`` alone. ``mixing_logit_init`` sets the initial ``a`` (LSGM's
    configurations use -3 to -6, i.e. a prior that starts close to ``N(0, I)``).
    """

    def __init__(
        self,
        process: NoiseProcess,
        net: nn.Module,
        latent_shape: Sequence[int],
        mixed: bool = True,
        mixing_logit_init: float = -3.0,
    ):
        super().__init__()
        self.process = process
        self.net = net
        self.latent_shape = tuple(int(n) for n in latent_shape)
        self.mixed = mixed
        self.mixing_logit = nn.Parameter(torch.full(self.latent_shape, float(mixing_logit_init))) if mixed else None

    def mixing(self) -> Tensor | None:
        """The mixing weight ``a`` of ``latent_shape`` (None when the prior is not mixed)."""
        return torch.sigmoid(self.mixing_logit) if self.mixed else None

    def forward(self, z_t: Tensor, t: Tensor, cond: Tensor | None = None, drop: Tensor | None = None) -> Tensor:
        """``eps_theta(z_t, t, cond)``, shaped like ``z_t`` (LSGM Sec. 3.2, mixed score)."""
        if tuple(z_t.shape[1:]) != self.latent_shape:
            raise LdcodecError(f"latent of shape {tuple(z_t.shape[1:])} does not match the prior's latent "
                               f"shape {self.latent_shape}; encode with the matching autoencoder")
        eps_net = self.net(z_t, t, cond, drop)
        if not self.mixed:
            return eps_net
        a = torch.sigmoid(self.mixing_logit).to(eps_net.dtype)
        return (1.0 - a) * self.process.gaussian_eps(z_t, t) + a * eps_net

    def eps(self, z_t: Tensor, t: Tensor, cond: Tensor | None = None, drop: Tensor | None = None) -> Tensor:
        """Alias of ``forward`` (module hooks included)."""
        return self(z_t, t, cond, drop)

    def eps_guided(self, z_t: Tensor, t: Tensor, cond: Tensor, scale: float) -> Tensor:
        """Classifier-free guidance (Ho & Salimans 2022, Eq. 6): ``(1 + w) eps(c) - w eps(null)``.

        One batched network call on ``[z_t; z_t]`` with the second half's condition dropped.
        """
        if cond is None:
            raise LdcodecError("classifier-free guidance needs a condition; pass cond or set guidance=0")
        b = z_t.shape[0]
        drop = torch.cat([torch.zeros(b, dtype=torch.bool), torch.ones(b, dtype=torch.bool)]).to(z_t.device)
        eps = self(torch.cat([z_t, z_t]), torch.cat([t, t]), torch.cat([cond, cond]), drop)
        eps_cond, eps_null = eps[:b], eps[b:]
        return eps_cond + scale * (eps_cond - eps_null)
