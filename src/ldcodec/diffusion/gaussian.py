"""The analytic denoiser of Gaussian data: the exact ``E[eps | z_t]`` when ``z0 ~ N(m, diag(s^2))``.

Under ``z_t = alpha_t z0 + sigma_t eps`` the data law at ``t`` is ``N(alpha_t m, alpha_t^2 s^2 + sigma_t^2)``
and ``E[eps | z_t] = sigma_t (z_t - alpha_t m) / (alpha_t^2 s^2 + sigma_t^2)``
(:meth:`~ldcodec.diffusion.processes.NoiseProcess.gaussian_eps`). As the network of a
``DiffusionPrior`` with mixing weight 1 it makes the prior exactly the Gaussian law: the reference
model of the tests and of the Gaussian-source theory checks.
"""

from __future__ import annotations

import torch
from torch import nn

from ldcodec.diffusion.processes import NoiseProcess
from ldcodec.errors import LdcodecError

Tensor = torch.Tensor


class GaussianDenoiser(nn.Module):
    """Exact ``E[eps | z_t]`` for data ``N(mean, diag(std^2))`` under ``process`` (no parameters).

    ``mean`` and ``std`` are tensors of the latent shape (or floats); ``forward`` has the
    denoisers' signature ``(z_t, t (B,), cond=None, drop=None) -> eps`` shaped like ``z_t``.
    """

    def __init__(self, process: NoiseProcess, mean: Tensor | float = 0.0, std: Tensor | float = 1.0):
        super().__init__()
        self.process = process
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float64))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float64))

    def forward(self, z_t: Tensor, t: Tensor, cond: Tensor | None = None, drop: Tensor | None = None) -> Tensor:
        if cond is not None:
            raise LdcodecError("GaussianDenoiser is unconditional (0 condition channels) but got a condition; "
                               "pass cond=None")
        return self.process.gaussian_eps(z_t, t, self.mean.to(z_t.dtype), self.std.to(z_t.dtype))
