"""Mode C: the conditional diffusion decoder (CDC, Yang & Mandt 2023) in latent space, under the contract.

The encoder sends the code ``y = round(g(mu))`` of the latent mean ``mu``, range-coded with the
learned code density's integer tables (computed after training by :meth:`update`, so
decoding is exact on any machine): one range coder over the images' codes, image after image, with
the shortest verified termination (:func:`~ldcodec.codecs.base.single_stream`). The decoder samples ``z0 ~ p_theta(z0 | y)`` from
``z_1`` (drawn from a seed keyed by the model and the image's index) with a registered decode
(:data:`ldcodec.diffusion.decodes.DECODES`): ``flow`` or ``realism`` decode one sample; ``mse`` is
the mean of ``MSE_SAMPLES`` decoded realism samples, a Monte-Carlo estimate of ``E[x | y]``.

The rate is fixed at training time by ``cond.lam`` (the weight of the code's bits in the loss):
``rate_setting = {"lambda": lam}``; ``rate`` may only name the default ``decode`` stored in the
stream (params: one byte, its index in ``DECODES``). ``estimated_bits`` is the information content of
``y`` under the coder's integer tables (what the range coder spends before its flush; the float
density's ``-log2 p(y)``, which training minimises, differs from it by the tables' quantisation of
the scales and probabilities, by about 1 % either way).
"""

from __future__ import annotations

import numpy as np
import torch

from ldcodec.codecs import container, register
from ldcodec.codecs.base import (Codec, Compressed, SymbolCoder, read_single_stream, single_stream,
                                 single_stream_file_bits)
from ldcodec.codecs.identity import model_digest
from ldcodec.diffusion.decodes import DECODES, check_decode, decode_latent
from ldcodec.errors import LdcodecError
from ldcodec.seeds import derive_seed, prior_noise, sub_seed

MSE_SAMPLES = 8  # "mse" decode: decoded samples averaged


@register
class CDCCodec(Codec):
    """Mode C codec of a trained conditional LSGM model (``cfg.cond.enabled``), in eval mode."""

    name, codec_id, mode = "cdc", 2, "C"
    decodes = tuple(DECODES)
    decode_knob = True

    def __init__(self, model, device: str = "cpu", batch_size: int = 256):
        if not model.cfg.cond.enabled:
            raise LdcodecError("the cdc codec needs a mode C checkpoint (cond.enabled); this one is mode U: "
                               "use the diffc codec")
        self.model, self.device, self.batch_size = model.eval(), device, batch_size
        self.image_shape = tuple(model.image_shape)
        self.latent_shape = tuple(model.latent_shape)
        self.hash = model_digest(model)  # 16 bytes: the model id is its head, the image seeds' key

    def model_id(self) -> bytes:
        return self.hash[:container.MODEL_ID_BYTES]

    def default_rates(self) -> list[dict]:
        return [{}]

    def update(self) -> None:
        self.model.update_tables()
        self.hash = model_digest(self.model)

    def _code_shape(self) -> tuple[int, ...]:
        with torch.no_grad():
            return tuple(self.model.code(torch.zeros(1, *self.latent_shape, device=self.device)).shape[1:])

    @torch.no_grad()
    def compress(self, x: torch.Tensor, rate: dict | None = None) -> Compressed:
        rate = dict(rate or {})
        if {"t_stop", "bits", "coding_steps"} & set(rate):
            raise LdcodecError("mode C (conditional) models have one rate, set by cond.lam in training: "
                               "drop --t/--bits/--coding-steps or use a mode U checkpoint")
        lam = float(self.model.cfg.cond.lam)
        decode = check_decode(self.check_trained_rate(rate, lam, ("decode",)).get("decode", "flow"))
        x = self.check_images(x)
        codes, est = [], []
        density = self.model.code_density
        for i in range(0, len(x), self.batch_size):
            mean = self.model.ae.encode(x[i:i + self.batch_size].to(self.device)).mean
            y = torch.round(self.model.code(mean)).cpu()
            codes.append(y)
            est += density.coded_bits(y).tolist()
        y = torch.cat(codes) if codes else torch.zeros(0, *self._code_shape())
        params = bytes([DECODES.index(decode)])
        return Compressed(self.name, params, single_stream(self._coder(), y), len(x), np.array(est),
                          single_stream_file_bits(self._coder(), y, len(params)), {"lambda": lam})

    def _coder(self) -> SymbolCoder:
        """How the codes ``y`` ``(N, *code shape)`` go through the file's range coder."""
        density, shape = self.model.code_density, self._code_shape()
        return SymbolCoder(density.write, lambda decoder, n: density.read(decoder, n, shape), density.decodes_to)

    @torch.no_grad()
    def decompress(self, params: bytes, payload: bytes, count: int, decode: str | None = None) -> torch.Tensor:
        """``decode`` overrides the stream's default decode."""
        if len(params) != 1 or params[0] >= len(DECODES):
            raise LdcodecError(f"cdc stream parameters {params.hex()} name no decode method: the stream is damaged")
        method = check_decode(decode or DECODES[params[0]], knob=True)
        y = read_single_stream(self._coder(), payload, count, "mode C")
        out = []
        for i in range(0, count, self.batch_size):
            seeds = [derive_seed(self.hash, j) for j in range(i, min(count, i + self.batch_size))]
            out.append(self._decode(y[i:i + self.batch_size].to(self.device), seeds, method).cpu())
        return torch.cat(out)

    def _decode(self, y: torch.Tensor, seeds: list[int], method: str) -> torch.Tensor:
        """Codes ``y`` -> images ``(B, C, H, W)``: one sample of ``p(z0 | y)``, or for ``mse`` the mean of
        ``MSE_SAMPLES`` decoded samples."""
        prior = self.model.prior
        t = torch.ones(len(seeds), device=self.device)
        draws = [seeds] if method != "mse" else [[sub_seed(s, k) for s in seeds] for k in range(MSE_SAMPLES)]
        images = 0.0
        for keys in draws:
            z1 = prior_noise(prior.process, self.latent_shape, keys, self.device)
            z0 = decode_latent(prior, z1, t, "realism" if method == "mse" else method, y, keys)
            images = images + self.model.ae.decode(z0)
        return (images / len(draws)).clamp(0, 1)
