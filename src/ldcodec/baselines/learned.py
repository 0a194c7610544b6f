"""Learned transform-coding baselines: the networks of Ballé et al.'s factorised-prior and scale-hyperprior codecs.

- ``"factorized"``: Ballé, Laparra, Simoncelli 2017, "End-to-end optimized image
  compression": ``y = g_a(x)``, ``y_hat = round(y)`` entropy-coded with a learned
  per-channel density (the non-parametric density of Ballé et al. 2018, Appendix 6.1,
  :class:`~ldcodec.coding.entropy_models.FactorizedDensity`), ``x_hat = g_s(y_hat)``.
- ``"hyperprior"``: Ballé, Minnen, Singh, Hwang, Johnston 2018, "Variational image
  compression with a scale hyperprior", Sec. 3: side information ``z = h_a(|y|)`` coded
  with the factorised density; ``y_hat`` coded with
  :class:`~ldcodec.coding.entropy_models.GaussianConditional` of scale ``h_s(z_hat)``.

Transforms (scaled down for 28x28 and 32x32 images): ``g_a`` = two 5x5 stride-2 convs
with GDN between, so ``y`` is ``(B, M, H/4, W/4)``; ``g_s`` mirrors it with IGDN;
``h_a`` = 3x3 conv, two 5x5 stride-2 convs (ReLU between), so ``z`` is
``(B, N, H/16, W/16)``; ``h_s`` mirrors it and ends in a softplus (positive scales).
Images whose size is not a multiple of the total stride (4, or 16 with the hyperprior)
are padded at the bottom and right by edge replication; reconstructions are cropped.

Training minimises ``R + lambda * D`` with ``R`` in bits per pixel and
``D = 255^2 * MSE`` (the convention of Ballé 2018 and CompressAI: ``lambda`` around
0.001-0.1), uniform noise standing in for rounding (Ballé 2017, Sec. 2). Below
:data:`LAMBDA_START` the training ``lambda`` starts there and decays to its target over the
first half of the steps (:func:`lambda_schedule`): trained at its target from the start, the
MNIST hyperprior at ``lambda`` 0.0003 collapses to the mean image (10.5 dB after 3000 steps: the
rate term wins before the decoder learns anything), while the warm-up gives 20.5 dB.

The codecs that ship these networks are :mod:`ldcodec.codecs.balle` (``factorized`` and
``hyperprior``): they code a file's images with one range coder (``constriction`` through
:mod:`ldcodec.coding.range_coder`, integer tables fixed after training by ``update_tables``)
through :meth:`LearnedModel.write_images` and :meth:`LearnedModel.read_images`, image after
image; for the hyperprior an image's ``z`` symbols come before its ``y`` symbols. The image
size is not in the stream: the decoder is given it, as the dataset fixes it (as in
CompressAI). The hyperprior's scale bins come from an integer version of ``h_s``
(:mod:`ldcodec.baselines.integer_net`, after Ballé, Johnston & Minnen 2019), an exact
function of ``z_hat`` on any machine; compress and decompress run on the CPU.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ldcodec.baselines.integer_net import IntegerScaleNet
from ldcodec.coding import range_coder
from ldcodec.coding.entropy_models import FactorizedDensity, GaussianConditional, quantize
from ldcodec.errors import LdcodecError


class GDN(nn.Module):
    """Generalised divisive normalisation over channels of ``(B, C, H, W)`` (Ballé, Laparra, Simoncelli 2016).

    ``y_i = x_i / sqrt(beta_i + sum_j gamma_ij x_j^2)``; with ``inverse=True`` the
    approximate inverse IGDN ``y_i = x_i * sqrt(beta_i + sum_j gamma_ij x_j^2)`` (Ballé
    et al. 2017, Sec. 2). ``beta > 0`` and ``gamma >= 0`` through a softplus; initially
    ``beta = 1``, ``gamma = 0.1 I``.
    """

    def __init__(self, channels: int, inverse: bool = False):
        super().__init__()
        self.inverse = inverse
        inv_softplus = lambda v: math.log(math.expm1(v))  # noqa: E731
        self.beta_raw = nn.Parameter(torch.full((channels,), inv_softplus(1.0)))
        gamma = torch.full((channels, channels), inv_softplus(1e-4))
        self.gamma_raw = nn.Parameter(gamma.fill_diagonal_(inv_softplus(0.1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gamma = F.softplus(self.gamma_raw)[:, :, None, None]
        norm = F.conv2d(x * x, gamma, F.softplus(self.beta_raw) + 1e-6)
        return x * torch.sqrt(norm) if self.inverse else x * torch.rsqrt(norm)


def _down(c_in: int, c_out: int, kernel: int = 5, stride: int = 2) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2)


def _up(c_in: int, c_out: int) -> nn.ConvTranspose2d:
    """5x5 stride-2 transposed conv: ``(h, w) -> (2h, 2w)``."""
    return nn.ConvTranspose2d(c_in, c_out, 5, stride=2, padding=2, output_padding=1)


class LearnedModel(nn.Module):
    """Shared parts: transforms ``g_a``/``g_s``, padding, coding of symbols. Subclasses add the entropy model.

    Args:
        image_channels: ``C`` (1 for MNIST, 3 for CIFAR-10).
        channels: ``N``, width of the transforms (and of ``z`` for the hyperprior).
        latent_channels: ``M``, channels of ``y``.
    """

    kind: str
    stride: int

    def __init__(self, image_channels: int, channels: int = 64, latent_channels: int = 32):
        super().__init__()
        self.config = {"kind": self.kind, "image_channels": image_channels, "channels": channels,
                       "latent_channels": latent_channels}
        self.g_a = nn.Sequential(_down(image_channels, channels), GDN(channels), _down(channels, latent_channels))
        self.g_s = nn.Sequential(_up(latent_channels, channels), GDN(channels, inverse=True), _up(channels, image_channels))

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        return F.pad(x, (0, -w % self.stride, 0, -h % self.stride), mode="replicate")

    def _padded_size(self, image_size: tuple[int, int]) -> tuple[int, int]:
        return tuple(s + -s % self.stride for s in image_size)

    def forward(self, x: torch.Tensor, quantization: str = "noise") -> dict[str, torch.Tensor]:
        """``(B, C, H, W)`` in ``[0, 1]`` -> ``x_hat`` ``(B, C, H, W)`` and estimated ``bits`` ``(B,)``.

        ``quantization="noise"`` is the training proxy, ``"round"`` what the coder sends
        (then ``bits`` is the model's estimate of the real rate).
        """
        y = self.g_a(self._pad(x))
        y_hat, bits = self._quantize_and_bits(y, quantization)
        x_hat = self.g_s(y_hat)[..., : x.shape[-2], : x.shape[-1]]
        return {"x_hat": x_hat, "bits": bits}

    def _quantize_and_bits(self, y: torch.Tensor, quantization: str) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def latent_symbols(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The integer symbols sent for images ``(B, C, H, W)``: ``y`` (and ``z``), ``(B, ...)`` integer-valued floats."""
        raise NotImplementedError

    def _read(self, decoder: range_coder.RangeDecoder, image_size: tuple[int, int]) -> dict[str, torch.Tensor]:
        """The next image's symbols from ``decoder`` (of :meth:`write_images`), each ``(1, ...)``."""
        raise NotImplementedError

    def _latent_shape(self, image_size: tuple[int, int]) -> tuple[int, int, int, int]:
        h, w = self._padded_size(image_size)
        return (1, self.config["latent_channels"], h // 4, w // 4)

    def _require_cpu(self) -> None:
        if any(p.device.type != "cpu" for p in self.parameters()):
            raise LdcodecError("move the learned model to the CPU (model.cpu()) before coding: "
                               "the entropy coder's probabilities must be computed identically at both ends")

    def _symbol_tables(self, symbols: dict[str, torch.Tensor]) -> list[tuple[str, np.ndarray, range_coder.Tables]]:
        """What each image's part of the stream holds, in order: ``(name, table index (B, m), tables)``
        per symbol tensor of ``B`` images (the tables :meth:`_read` reads it with)."""
        raise NotImplementedError

    @torch.no_grad()
    def write_images(self, encoder: range_coder.RangeEncoder, symbols: dict[str, torch.Tensor]) -> None:
        """Append the symbols of ``B`` images (:meth:`latent_symbols` of a batch, ``(B, ...)`` each) to
        one ``encoder``, image after image: the stream of a file of several images."""
        self._require_cpu()
        parts = [(symbols[name].reshape(len(index), -1).numpy().astype(np.int64), index, tables)
                 for name, index, tables in self._symbol_tables(symbols)]
        for b in range(len(symbols["y"])):
            for values, index, tables in parts:
                range_coder.write_symbols(encoder, values[b], index[b], tables)

    @torch.no_grad()
    def decodes_to(self, decoder: range_coder.RangeDecoder, symbols: dict[str, torch.Tensor]) -> bool:
        """Whether ``decoder`` reads back exactly ``symbols`` (of :meth:`write_images`), reading with the
        tables the expected symbols imply (no network call per image)."""
        parts = [(symbols[name].reshape(len(index), -1).numpy().astype(np.int64), index, tables)
                 for name, index, tables in self._symbol_tables(symbols)]
        return all(np.array_equal(range_coder.read_symbols(decoder, index[b], tables), values[b])
                   for b in range(len(symbols["y"])) for values, index, tables in parts)

    @torch.no_grad()
    def read_images(self, decoder: range_coder.RangeDecoder, count: int,
                    image_size: tuple[int, int]) -> dict[str, torch.Tensor]:
        """Inverse of :meth:`write_images` for ``count`` images of ``(H, W)``."""
        self._require_cpu()
        rows = [self._read(decoder, image_size) for _ in range(count)]
        return {k: torch.cat([r[k] for r in rows]) for k in rows[0]} if rows else {}

    @torch.no_grad()
    def synthesize(self, y: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        """Decoded ``y`` ``(B, ...)`` -> ``(B, C, H, W)`` reconstructions in ``[0, 1]``."""
        return self.g_s(y)[..., : image_size[0], : image_size[1]].clamp(0, 1)

    def update_tables(self) -> None:
        """Fix the integer coding tables of every entropy model (after training, before coding)."""
        for module in self.modules():
            if isinstance(module, (FactorizedDensity, GaussianConditional)):
                module.update_tables()


def _channel_index(shape: torch.Size | tuple[int, ...]) -> np.ndarray:
    """Table index of each entry of a ``(B, c, h, w)`` tensor, flattened: its channel."""
    return np.broadcast_to(np.arange(shape[1]).reshape(1, -1, 1, 1), shape).reshape(-1)


class FactorizedPriorModel(LearnedModel):
    """Ballé et al. 2017: ``y_hat`` coded with a per-channel factorised density."""

    kind, stride = "factorized", 4

    def __init__(self, image_channels: int, channels: int = 64, latent_channels: int = 32):
        super().__init__(image_channels, channels, latent_channels)
        self.prior = FactorizedDensity(latent_channels)

    def _quantize_and_bits(self, y, quantization):
        y_hat = quantize(y, quantization)
        return y_hat, self.prior.bits(y_hat)

    def latent_symbols(self, x):
        return {"y": torch.round(self.g_a(self._pad(x)))}

    def _symbol_tables(self, symbols):
        y = symbols["y"]
        return [("y", _channel_index(y.shape).reshape(len(y), -1), self.prior.tables())]

    def _read(self, decoder, image_size):
        shape = self._latent_shape(image_size)
        y = range_coder.read_symbols(decoder, _channel_index(shape), self.prior.tables())
        return {"y": torch.from_numpy(y).float().reshape(shape)}


class HyperpriorModel(LearnedModel):
    """Ballé et al. 2018: ``z_hat`` (factorised density) sets the scales of a Gaussian model of ``y_hat``.

    Training and the rate estimate of :meth:`forward` use the float ``h_s``; the coder picks each
    symbol's scale bin with ``scale_net``, the integer network fixed from ``h_s`` by
    :meth:`update_tables` (exact, so encoder and decoder agree on every machine).
    """

    kind, stride = "hyperprior", 16

    def __init__(self, image_channels: int, channels: int = 64, latent_channels: int = 32):
        super().__init__(image_channels, channels, latent_channels)
        n, m = channels, latent_channels
        self.h_a = nn.Sequential(_down(m, n, kernel=3, stride=1), nn.ReLU(), _down(n, n), nn.ReLU(), _down(n, n))
        self.h_s = nn.Sequential(_up(n, n), nn.ReLU(), _up(n, n), nn.ReLU(), _down(n, m, kernel=3, stride=1),
                                 nn.Softplus())
        self.hyper_prior = FactorizedDensity(n)
        self.conditional = GaussianConditional()
        self.scale_net = IntegerScaleNet(self.h_s)

    def _quantize_and_bits(self, y, quantization):
        z_hat = quantize(self.h_a(torch.abs(y)), quantization)
        y_hat = quantize(y, quantization)
        bits = self.hyper_prior.bits(z_hat) + self.conditional.bits(y_hat, self.h_s(z_hat))
        return y_hat, bits

    def latent_symbols(self, x):
        y = self.g_a(self._pad(x))
        return {"y": torch.round(y), "z": torch.round(self.h_a(torch.abs(y)))}

    def _symbol_tables(self, symbols):
        z = symbols["z"]
        return [("z", _channel_index(z.shape).reshape(len(z), -1), self.hyper_prior.tables()),
                ("y", self.scale_net(z).reshape(len(z), -1).numpy(), self.conditional.tables())]

    def _read(self, decoder, image_size):
        y_shape = self._latent_shape(image_size)
        z_shape = (1, self.config["channels"], y_shape[2] // 4, y_shape[3] // 4)
        z = range_coder.read_symbols(decoder, _channel_index(z_shape), self.hyper_prior.tables())
        z = torch.from_numpy(z).float().reshape(z_shape)
        scale_index = self.scale_net(z).reshape(-1).numpy()
        y = range_coder.read_symbols(decoder, scale_index, self.conditional.tables())
        return {"y": torch.from_numpy(y).float().reshape(y_shape), "z": z}

    def update_tables(self) -> None:
        """Fix the coding tables and the integer scale network (after training, before coding)."""
        super().update_tables()
        self.scale_net.update(self.h_s, self.conditional.scale_table, self.conditional.scale_bound)


MODELS: dict[str, type[LearnedModel]] = {"factorized": FactorizedPriorModel, "hyperprior": HyperpriorModel}


def build_learned(kind: str, image_channels: int, channels: int = 64, latent_channels: int = 32) -> LearnedModel:
    """A fresh network of ``kind`` (``"factorized"`` or ``"hyperprior"``)."""
    if kind not in MODELS:
        raise LdcodecError(f"unknown learned codec {kind!r}: choose one of {', '.join(MODELS)}")
    return MODELS[kind](image_channels, channels, latent_channels)


def rate_distortion_loss(out: dict[str, torch.Tensor], x: torch.Tensor, lam: float) -> torch.Tensor:
    """``mean bpp + lam * 255^2 * MSE`` for a batch ``x`` ``(B, C, H, W)`` and :meth:`LearnedModel.forward` output."""
    bpp = out["bits"] / (x.shape[-2] * x.shape[-1])
    return bpp.mean() + lam * 255**2 * F.mse_loss(out["x_hat"], x)


LAMBDA_START = 0.01  # the training lambda of a low-rate codec's first step (see the module docstring)


def lambda_schedule(step: int, steps: int, lam: float, lam_start: float | None = LAMBDA_START) -> float:
    """The training ``lambda`` at ``step`` of ``steps`` for the target ``lam``.

    Geometric from ``max(lam, lam_start)`` at step 0 down to ``lam`` at ``steps // 2``, then
    ``lam``; ``lam_start`` None (or not above ``lam``) keeps ``lam`` throughout.
    """
    if lam_start is None or lam_start <= lam:
        return lam
    left = max(0.0, 1.0 - step / max(1, steps // 2))
    return lam * (lam_start / lam) ** left


def train_learned(
    kind: str,
    images: torch.Tensor,
    lam: float,
    steps: int,
    device: str | torch.device = "cpu",
    batch_size: int = 16,
    lr: float = 5e-4,
    channels: int = 64,
    latent_channels: int = 32,
    seed: int = 0,
    progress: bool = True,
    lam_start: float | None = LAMBDA_START,
) -> LearnedModel:
    """Train a network of ``kind`` on ``(N, C, H, W)`` images in ``[0, 1]`` for ``steps`` Adam steps.

    Minimises :func:`rate_distortion_loss` at :func:`lambda_schedule`'s ``lambda`` (``lam_start``
    None: ``lam`` from the first step) on random batches (the data set moves to
    ``device`` whole), then fixes the coding tables and returns the network on the CPU in
    eval mode, ready for :class:`~ldcodec.codecs.balle.BalleCodec`.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        codec = build_learned(kind, images.shape[1], channels, latent_channels).to(device)
    x = images.to(device)
    generator = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(codec.parameters(), lr=lr)
    codec.train()
    for step in tqdm(range(steps), desc=f"train-{kind}", disable=not progress):
        batch = x[torch.randint(len(x), (batch_size,), generator=generator).to(device)]
        loss = rate_distortion_loss(codec(batch), batch, lambda_schedule(step, steps, lam, lam_start))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    codec = codec.cpu().eval()
    codec.update_tables()
    return codec
