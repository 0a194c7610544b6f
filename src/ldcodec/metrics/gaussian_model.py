"""The synthetic Gaussian source as a model a codec can take: identity autoencoder, exact prior.

Data ``x ~ N(0, diag(v))`` in ``d`` dimensions, stored as images ``(N, 1, 1, d)`` (CHW: one
channel, one row, ``d`` columns); the latent is ``x`` itself, ``(N, d)``. The prior's denoiser is
the closed-form :class:`~ldcodec.diffusion.gaussian.GaussianDenoiser`, so mode U on this model is
DiffC with the true score and its points test the rate accounting against Shannon's ``R(D)``
(:mod:`ldcodec.metrics.gaussian_source`).
"""

from __future__ import annotations

import numpy as np
import torch

from ldcodec.autoencoder import Posterior
from ldcodec.config import Config


class IdentityAutoencoder(torch.nn.Module):
    """Images ``(N, 1, 1, d)`` <-> latents ``(N, d)``, exactly."""

    def encode(self, x: torch.Tensor) -> Posterior:
        return Posterior(x.flatten(1), None)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z.reshape(len(z), 1, 1, -1)


class ExactGaussianModel(torch.nn.Module):
    """The LSGM-model interface (``cfg``, ``ae``, ``prior``, ``image_shape`` HWC, ``latent_shape``) for
    the Gaussian source of per-dimension ``variances`` ``(d,)``, with ``coding_steps`` mode U steps."""

    def __init__(self, variances: np.ndarray, coding_steps: int = 4):
        super().__init__()
        from ldcodec.diffusion.gaussian import GaussianDenoiser
        from ldcodec.diffusion.prior import DiffusionPrior
        from ldcodec.diffusion.processes import make_process

        d = len(variances)
        process = make_process("vp")
        std = torch.tensor(np.sqrt(variances), dtype=torch.float64)
        self.prior = DiffusionPrior(process, GaussianDenoiser(process, 0.0, std), (d,), mixed=False)
        self.cfg = Config()
        self.cfg.data.dataset = "gaussian"
        self.cfg.codec.coding_steps = coding_steps
        self.image_shape, self.latent_shape = (1, d, 1), (d,)
        self.ae = IdentityAutoencoder()
