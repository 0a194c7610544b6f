"""The VAE's two ends: encoder ``q_phi(z0|x)`` (Gaussian or delta) and decoder ``p_psi(x|z0)``.

Kingma & Welling 2014: the ELBO is ``E_q[log p(x|z0)] + H(q(z0|x)) + E_q[log p(z0)]``; this module
owns the first two terms (the prior's cross-entropy lives in ``model.py``).

- Gaussian encoder: ``q(z0|x) = N(mu, diag exp(logvar))``, reparameterised sample, analytic entropy.
- Delta encoder: ``z0 = mu`` rescaled to unit root-mean-square per image. A deterministic latent has
  no entropy term to stop the prior's cross-entropy from shrinking it, so its scale is pinned.
- Decoder: Gaussian likelihood with fixed std ``x_sigma`` on pixels in [0, 1], so
  ``-log p(x|z0) = ||x - x_mean||^2 / (2 x_sigma^2) + D/2 log(2 pi x_sigma^2)`` (a scaled MSE).

Latents are ``(B, d)`` for the MLP networks and ``(B, C, h, w)`` for the CNN networks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .config import ModelConfig
from .nets.cnn import CNNDecoder, CNNEncoder
from .nets.mlp import MLPDecoder, MLPEncoder
from .tensors import sum_except_batch

LOG_2PI = math.log(2 * math.pi)


@dataclass
class Posterior:
    """``q(z0|x)``: ``mean`` and ``logvar`` of shape ``latent_shape`` (``logvar`` None for delta)."""

    mean: torch.Tensor
    logvar: torch.Tensor | None

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.logvar is None:
            return self.mean
        eps = torch.randn(self.mean.shape, generator=generator, device=self.mean.device)
        return self.mean + torch.exp(0.5 * self.logvar) * eps

    def entropy(self) -> torch.Tensor:
        """``H(q(z0|x))`` in nats, ``(B,)``; zero for a delta latent (it is excluded from the bound)."""
        if self.logvar is None:
            return torch.zeros(self.mean.shape[0], device=self.mean.device)
        return 0.5 * sum_except_batch(self.logvar + 1.0 + LOG_2PI)


def latent_shape(cfg: ModelConfig, image_shape: tuple[int, int, int]) -> tuple[int, ...]:
    """``(d,)`` for the MLP, ``(C', H / 2^k, W / 2^k)`` for the CNN, of images ``(C, H, W)``."""
    if cfg.net == "mlp":
        return (cfg.latent_dim,)
    _, h, w = image_shape
    f = 2 ** cfg.downsample
    if h % f or w % f:
        raise ValueError(f"image size {h}x{w} is not divisible by 2^downsample = {f}")
    return (cfg.latent_channels, h // f, w // f)


class Autoencoder(nn.Module):
    """Encoder and decoder for images ``(B, C, H, W)`` in [0, 1]; ``image_shape`` is ``(C, H, W)``."""

    def __init__(self, cfg: ModelConfig, image_shape: tuple[int, int, int]):
        super().__init__()
        self.cfg, self.image_shape = cfg, tuple(image_shape)
        self.latent_shape = latent_shape(cfg, image_shape)
        c = image_shape[0]
        k = self.latent_shape[0]
        out = 2 * k if cfg.latent == "gauss" else k
        if cfg.net == "mlp":
            self.encoder = MLPEncoder(image_shape, cfg.hidden, cfg.depth, out)
            self.decoder = MLPDecoder(image_shape, cfg.hidden, cfg.depth, k)
        else:
            self.encoder = CNNEncoder(c, cfg.channels, cfg.downsample, out, cfg.channel_mult)
            self.decoder = CNNDecoder(c, cfg.channels, cfg.downsample, k, cfg.channel_mult)

    @property
    def num_pixels(self) -> int:
        return math.prod(self.image_shape)

    def encode(self, x: torch.Tensor) -> Posterior:
        h = self.encoder(x)
        if self.cfg.latent == "delta":
            rms = h.pow(2).flatten(1).mean(1).add(1e-6).sqrt()
            return Posterior(h / rms.view(-1, *[1] * (h.dim() - 1)), None)
        mean, logvar = h.chunk(2, dim=1)
        return Posterior(mean, logvar.clamp(min=self.cfg.logvar_min, max=4.0))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Decoder mean ``(B, C, H, W)`` in [0, 1]."""
        return self.decoder(z)

    def recon_nll(self, x: torch.Tensor, x_mean: torch.Tensor) -> torch.Tensor:
        """``-log p(x|z0)`` in nats per image, ``(B,)``, for the fixed-variance Gaussian decoder."""
        s2 = self.cfg.x_sigma ** 2
        return sum_except_batch((x - x_mean) ** 2) / (2 * s2) + 0.5 * self.num_pixels * (LOG_2PI + math.log(s2))
