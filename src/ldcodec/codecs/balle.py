"""The Ballé et al. learned baselines (:mod:`ldcodec.baselines.learned`) under the codec contract.

``factorized`` (Ballé, Laparra & Simoncelli 2017) and ``hyperprior`` (Ballé et al. 2018) wrap a
trained :class:`~ldcodec.baselines.learned.LearnedModel`. The payload is one range coder over the
images' symbols, image after image, with the shortest verified termination
(:func:`~ldcodec.codecs.base.single_stream`), like every ldcodec stream: a file pays one coder flush,
not one per image. The rate is set at training time by ``lambda``
(``R + lambda * 255^2 * MSE``), so ``rate_setting`` is ``{"lambda": lam}`` and ``compress`` takes
no rate; the stream has no params. ``estimated_bits`` is the model's density of the rounded
symbols, ``-log2 p(y_hat) [- log2 p(z_hat)]``. The model id is 4 bytes of the digest of the
weights and config; compress and decompress run on the CPU (the scales must agree bit for bit).
"""

from __future__ import annotations

from typing import ClassVar

import torch

from ldcodec.baselines.learned import LearnedModel, train_learned
from ldcodec.codecs import container, register
from ldcodec.codecs.base import (Codec, Compressed, SymbolCoder, read_single_stream, single_stream,
                                 single_stream_file_bits)
from ldcodec.codecs.identity import model_hash
from ldcodec.errors import LdcodecError, reraise_damage


class BalleCodec(Codec):
    """A trained :class:`LearnedModel` of images ``image_shape`` ``(C, H, W)``, trained with ``lam``."""

    kind = "learned"
    net_kind: ClassVar[str]  # the LearnedModel kind it wraps

    def __init__(self, net: LearnedModel, image_shape: tuple[int, int, int], lam: float):
        if net.kind != self.net_kind:
            raise LdcodecError(f"the {self.name} codec wraps a {self.net_kind} network, got a {net.kind} one")
        if image_shape[0] != net.config["image_channels"]:
            raise LdcodecError(f"this {self.name} network codes {net.config['image_channels']}-channel images, "
                               f"not {image_shape[0]}")
        self.net, self.image_shape, self.lam = net.cpu().eval(), tuple(image_shape), float(lam)
        self._id = self._digest()

    def _digest(self) -> bytes:
        """4 bytes over the weights, the integer tables, the config and lambda."""
        return model_hash(self.net.state_dict(), {**self.net.config, "lambda": self.lam})[:container.MODEL_ID_BYTES]

    @classmethod
    def train(cls, images: torch.Tensor, lam: float, steps: int, **options) -> "BalleCodec":
        """Train on ``(N, C, H, W)`` images (``options``: those of :func:`train_learned`)."""
        return cls(train_learned(cls.net_kind, images, lam, steps, **options), tuple(images.shape[1:]), lam)

    @classmethod
    def for_sweep(cls, image_shape, train_images, settings):
        """``evaluate``'s instances: one trained codec per ``settings.learned_lambdas``."""
        x = train_images()
        return [cls.train(x, lam, settings.learned_steps, device=settings.device, seed=settings.seed,
                          progress=settings.progress, lam_start=settings.learned_lambda_start) for lam in settings.learned_lambdas]

    def model_id(self) -> bytes:
        return self._id

    def default_rates(self) -> list[dict]:
        return [{"lambda": self.lam}]

    def update(self) -> None:
        self.net.update_tables()
        self._id = self._digest()

    def compress(self, x: torch.Tensor, rate: dict | None = None) -> Compressed:
        self.check_trained_rate(rate, self.lam)
        x = self.check_images(x).cpu()
        with torch.no_grad():
            symbols = self.net.latent_symbols(x)
            est = self.net(x, quantization="round")["bits"].double().numpy()
        payload = single_stream(self._coder(), symbols)
        return Compressed(self.name, b"", payload, len(x), est, single_stream_file_bits(self._coder(), symbols, 0),
                          {"lambda": self.lam})

    def _coder(self) -> SymbolCoder:
        """How the images' symbols go through the file's range coder."""
        size = self.image_shape[1:]
        return SymbolCoder(self.net.write_images, lambda decoder, n: self.net.read_images(decoder, n, size),
                           self.net.decodes_to)

    def decompress(self, params: bytes, payload: bytes, count: int) -> torch.Tensor:
        if params:
            raise LdcodecError(f"{self.name} streams carry no parameters, this one has {len(params)} bytes: damaged")
        symbols = read_single_stream(self._coder(), payload, count, self.name)
        with reraise_damage(self.name):
            return self.net.synthesize(symbols["y"], self.image_shape[1:])


@register
class FactorizedCodec(BalleCodec):
    name, codec_id, net_kind = "factorized", 3, "factorized"


@register
class HyperpriorCodec(BalleCodec):
    name, codec_id, net_kind = "hyperprior", 4, "hyperprior"

