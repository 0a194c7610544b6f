"""The exact Gaussian source as a model: identity autoencoder, exact diffusion prior.

Mode U on it is DiffC with the true score, so its points test the rate accounting in closed
form (``I(X; Z_t)``, the MMSE, Shannon's ``R(D)``). Images are ``(N, 1, 1, d)``; latents ``(N, d)``.
"""

from __future__ import annotations

import numpy as np
import torch

from ldcodec.autoencoder import Posterior
from ldcodec.config import Config


class Identity(torch.nn.Module):
    """Identity "autoencoder": images ``(N, 1, 1, d)`` <-> latents ``(N, d)``."""

    def encode(self, x: torch.Tensor) -> Posterior:
        return Posterior(x.flatten(1), None)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z.reshape(len(z), 1, 1, -1)


class ExactGaussianModel(torch.nn.Module):
    """``N(0, diag(variances))`` data with its exact prior (``variances``: ``(d,)``)."""

    def __init__(self, variances: np.ndarray, cfg: Config | None = None):
        super().__init__()
        from ldcodec.diffusion.prior import DiffusionPrior
        from ldcodec.diffusion.processes import make_process
        from ldcodec.diffusion.gaussian import GaussianDenoiser

        if cfg is None:
            cfg = Config()
            cfg.data.dataset = "gaussian"
        self.variances = np.asarray(variances, dtype=np.float64)
        d = len(self.variances)
        process = make_process("vp")
        std = torch.tensor(np.sqrt(self.variances), dtype=torch.float64)
        self.prior = DiffusionPrior(process, GaussianDenoiser(process, 0.0, std), (d,), mixed=False)
        self.cfg, self.image_shape, self.latent_shape = cfg, (1, 1, d), (d,)  # (C, H, W)
        self.ae = Identity()
