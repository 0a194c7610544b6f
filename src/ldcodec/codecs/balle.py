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

import inspect
import json
import sys
from pathlib import Path
from typing import ClassVar

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from ldcodec.baselines.learned import LearnedModel, build_learned, train_learned
from ldcodec.codecs import container, register
from ldcodec.codecs.base import (Codec, Compressed, SymbolCoder, read_single_stream, single_stream,
                                 single_stream_file_bits)
from ldcodec.codecs.identity import model_hash
from ldcodec.errors import LdcodecError, reraise_damage
from ldcodec.files import write_atomic


STORE_FORMAT = 1  # of --learned-dir's files; part of their key


def _training_defaults() -> dict:
    """:func:`train_learned`'s fixed hyperparameters (batch, lr, widths): part of a stored network's key."""
    params = inspect.signature(train_learned).parameters
    return {k: params[k].default for k in ("batch_size", "lr", "channels", "latent_channels")}


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
        """``evaluate``'s instances: one trained codec per ``settings.learned_lambdas``.

        With ``settings.learned_dir`` each trained network is kept there
        (:meth:`_stored_or_trained`), so a second evaluation of the same training (other test
        images, an interrupted run) loads it instead of training again.
        """
        x = train_images()
        return [cls._stored_or_trained(x, lam, settings) for lam in settings.learned_lambdas]

    @classmethod
    def _stored_or_trained(cls, x: torch.Tensor, lam: float, s) -> "BalleCodec":
        """The codec trained on ``x`` at ``lam`` with ``s``'s options, from ``s.learned_dir`` when
        it holds that training (file named by a digest of the options and of ``x``), else trained
        now and written there atomically (safetensors, the training options in the metadata)."""
        options = dict(device=s.device, seed=s.seed, progress=s.progress, lam_start=s.learned_lambda_start)
        if s.learned_dir is None:
            return cls.train(x, lam, s.learned_steps, **options)
        recipe = {"format": STORE_FORMAT, "kind": cls.net_kind, "lambda": lam, "steps": s.learned_steps, "seed": s.seed,
                  "lam_start": s.learned_lambda_start, **_training_defaults()}
        key = model_hash({"train_images": x}, recipe).hex()[:12]
        path = Path(s.learned_dir) / f"{cls.name}-lam{lam:g}-{s.learned_steps}-{key}.safetensors"
        if path.exists():
            try:
                with safe_open(path, "pt") as f:
                    config = json.loads((f.metadata() or {})["config"])
                net = build_learned(config["kind"], config["image_channels"], config["channels"], config["latent_channels"])
                net.load_state_dict(load_file(path))
            except (OSError, SafetensorError, KeyError, ValueError, RuntimeError) as e:
                raise LdcodecError(f"{path}: not a stored {cls.name} network of this ldcodec ({e}); delete it "
                                   "to train again") from None
            net.eval().update_tables()
            if s.progress:
                print(f"{cls.name} lambda {lam:g}: the network trained before, from {path}", file=sys.stderr)
            return cls(net, tuple(x.shape[1:]), lam)
        codec = cls.train(x, lam, s.learned_steps, **options)
        meta = {"config": json.dumps(codec.net.config), "recipe": json.dumps(recipe)}
        state = {k: v.contiguous() for k, v in codec.net.state_dict().items()}
        write_atomic(path, lambda tmp: save_file(state, tmp, metadata=meta), parents=True)
        return codec

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

