"""The whole model of one grid cell: autoencoder, latent prior and (mode C) the sent code.

Objective (negative ELBO, nats per image; Vahdat, Kreis & Kautz 2021, Eq. 2-3):

    -ELBO = E_q[-log p(x|z0)] - H(q(z0|x)) + CE(q(z0|x) || p(z0))

- ``prior = normal``: ``p(z0) = N(0, I)``, the plain VAE baseline; CE is analytic.
- ``prior = diffusion``: the LSGM prior; CE is the weighted denoising score-matching bound of
  ``diffusion.losses.cross_entropy`` (its ``bound`` enters the ELBO, its ``loss`` is trained).
- Mode C (``cond.enabled``): a code ``y = g(mu)`` is quantised (uniform noise in training, Ballé et
  al. 2017) and the prior becomes ``p(z0 | y~)``. With the uniform posterior ``q(y~|z0)``, whose
  log-density is 0, ``-ELBO = rec - H + CE(z0 | y~) + R(y~)``, a two-level bound; the loss weighs
  the code's rate by ``cond.lam`` to move along the rate axis. ``R`` comes from the code density
  named by ``cond.density``: factorised per channel, or autoregressive over the code's entries.

``bpd`` is ``-ELBO / (D ln 2) + log2(255)``: the continuous density's bound expressed per 8-bit
pixel bin. It bounds the discrete bits/dim only for dequantised data (no dequantisation noise is
added here), so use it to compare models, not as a lossless code length.

A delta encoder has no entropy term and no valid ELBO; its ``bound`` is the code length of the
latent point under the prior density, reported for comparison only.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .autoencoder import LOG_2PI, Autoencoder
from .config import Config
from .data import image_shape
from .nets.mlp import mlp
from .tensors import sum_except_batch

LN2 = math.log(2.0)
LOG2_255 = math.log2(255.0)  # pixels k/255: a density on [0, 1] times bins of width 1/255


class CodeEncoder(nn.Module):
    """Mode C's code ``y`` from the latent mean: ``(B, d) -> (B, k)`` or ``(B, C, h, w) -> (B, k, h', w')``.

    The spatial code halves the latent resolution (8 -> 4, 7 -> 4).
    """

    def __init__(self, cfg: Config, latent_shape: tuple[int, ...]):
        super().__init__()
        if len(latent_shape) == 1:
            self.net = mlp([latent_shape[0], cfg.model.hidden // 2, cfg.cond.code_dim])
            self.channels = cfg.cond.code_dim
        else:
            c, ch = latent_shape[0], cfg.model.channels
            self.net = nn.Sequential(nn.Conv2d(c, ch, 3, padding=1), nn.SiLU(),
                                     nn.Conv2d(ch, ch, 3, stride=2, padding=1), nn.SiLU(),
                                     nn.Conv2d(ch, cfg.cond.code_channels, 3, padding=1))
            self.channels = cfg.cond.code_channels

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


def build_prior(cfg: Config, latent_shape: tuple[int, ...]):
    """The LSGM diffusion prior for this cell (process + denoiser + mixing weights)."""
    from .diffusion.prior import DiffusionPrior
    from .diffusion.processes import make_process
    from .nets.denoisers import MLPDenoiser, UNetDenoiser

    d = cfg.diffusion
    if d.family == "ddpm":
        process = make_process("ddpm", N=d.num_steps, schedule=d.schedule)
    else:
        process = make_process(d.sde)
    if len(latent_shape) == 1:
        net = MLPDenoiser(latent_shape[0], d.hidden, d.depth, cond_dim=cfg.cond.code_dim if cfg.cond.enabled else 0)
    else:
        net = UNetDenoiser(latent_shape[0], d.unet_channels, (1, 2),
                           cond_channels=cfg.cond.code_channels if cfg.cond.enabled else 0)
    return DiffusionPrior(process, net, latent_shape, mixed=d.mixed)


class LSGMModel(nn.Module):
    """Autoencoder + prior (+ code encoder and its entropy model in mode C)."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.image_shape = image_shape(cfg.data.dataset)  # (C, H, W)
        self.ae = Autoencoder(cfg.model, self.image_shape)
        self.latent_shape = self.ae.latent_shape
        self.prior = build_prior(cfg, self.latent_shape) if cfg.model.prior == "diffusion" else None
        if cfg.cond.enabled:
            if self.prior is None:
                raise ValueError("mode C (cond.enabled) needs model.prior = diffusion")
            from .coding.entropy_models import code_density

            self.code_encoder = CodeEncoder(cfg, self.latent_shape)
            with torch.no_grad():
                code_shape = self.code_encoder(torch.zeros(1, *self.latent_shape)).shape[1:]
            self.code_density = code_density(cfg.cond.density, tuple(code_shape))

    @property
    def num_dims(self) -> int:
        return math.prod(self.image_shape)

    def code(self, mean: torch.Tensor) -> torch.Tensor:
        """Mode C: the continuous code ``y`` of a latent mean (quantise it before use)."""
        return self.code_encoder(mean)

    def cross_entropy(self, z0: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor | None,
                      cond: torch.Tensor | None, generator: torch.Generator | None,
                      normal: bool = False) -> dict[str, torch.Tensor]:
        """``CE(q(z0|x) || p(z0 [| y]))`` per image ``(B,)``: ``loss`` to train and ``bound`` for the ELBO.

        ``normal=True`` (or no diffusion prior) uses ``p(z0) = N(0, I)``, analytic for a Gaussian ``q``.
        """
        if normal or self.prior is None:
            if logvar is None:
                ce = 0.5 * sum_except_batch(z0 ** 2 + LOG_2PI)
            else:
                ce = 0.5 * sum_except_batch(mean ** 2 + logvar.exp() + LOG_2PI)
            return {"loss": ce, "bound": ce}
        from .diffusion.losses import cross_entropy

        drop = None
        if cond is not None and self.training and self.cfg.cond.drop > 0:
            drop = torch.rand(z0.shape[0], generator=generator, device=z0.device) < self.cfg.cond.drop
        return cross_entropy(self.prior, z0, cond=cond, drop=drop, weighting=self.cfg.diffusion.weighting,
                             generator=generator, importance=self.cfg.diffusion.importance)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None,
                train_autoencoder: bool = True, train_prior: bool = True) -> dict[str, torch.Tensor]:
        """Loss terms for images ``x`` ``(B, C, H, W)``; all per-image ``(B,)`` except ``loss`` (scalar).

        ``train_autoencoder=False`` freezes the autoencoder (second stage of two-stage training);
        ``train_prior=False`` trains the autoencoder alone with the N(0, I) prior (first stage).
        """
        with torch.set_grad_enabled(train_autoencoder and torch.is_grad_enabled()):
            post = self.ae.encode(x)
            z0 = post.sample(generator)
            x_mean = self.ae.decode(z0)
            rec = self.ae.recon_nll(x, x_mean)
            ent = post.entropy()
        out = {"rec": rec, "entropy": ent, "mse": sum_except_batch((x - x_mean) ** 2) / self.num_dims}
        cond, rate = None, torch.zeros_like(rec)
        if self.cfg.cond.enabled and train_prior:  # the N(0, I) stage-1 prior ignores the code
            y = self.code(post.mean)
            if self.training:  # uniform noise stands in for rounding (Balle et al. 2017, Sec. 3.1)
                y = y + torch.rand(y.shape, generator=generator, device=y.device) - 0.5
            else:
                y = torch.round(y)
            rate = self.code_density.bits(y) * LN2
            cond = y
        ce = self.cross_entropy(z0, post.mean, post.logvar, cond, generator, normal=not train_prior)
        neg_elbo = rec - ent + ce["bound"] + rate
        out.update(ce=ce["bound"], rate_bits=rate / LN2, neg_elbo=neg_elbo,
                   bpd=neg_elbo / (self.num_dims * LN2) + LOG2_255)
        if not train_autoencoder:
            loss = ce["loss"] + self.cfg.cond.lam * rate
        else:
            loss = rec - ent + ce["loss"] + self.cfg.cond.lam * rate
        out["loss"] = loss.mean() / self.num_dims
        return out

    @torch.no_grad()
    def update_tables(self) -> None:
        """Mode C: recompute the code density's integer coding tables from its current weights."""
        if self.cfg.cond.enabled:
            self.code_density.update_tables()

    @torch.no_grad()
    def generate(self, n: int, method: str = "ancestral", steps: int = 100, cond: torch.Tensor | None = None,
                 generator: torch.Generator | None = None, **opts) -> torch.Tensor:
        """``n`` images ``(n, C, H, W)`` from the prior: ``z_1 ~ p(z_1)``, reverse diffusion, decoder mean.

        With the N(0, I) prior, ``z0 ~ N(0, I)`` directly. ``cond=None`` on a mode C model samples
        the unconditional model that condition dropout trained alongside.
        """
        device = next(self.parameters()).device
        shape = (n, *self.latent_shape)
        if self.prior is None:
            z0 = torch.randn(shape, generator=generator, device=device)
        else:
            from .diffusion.samplers import sample

            z1 = self.prior.process.prior_sample(shape, generator=generator, device=device)
            z0 = sample(self.prior, z1, 1.0, method=method, steps=None if method == "ode" else steps,
                        cond=cond, generator=generator, **opts)
        return self.ae.decode(z0)
