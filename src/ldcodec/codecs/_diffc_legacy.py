"""TEMPORARY: mode U (DiffC) of :class:`ldcodec.codec.Codec` under the codec contract.

Stands in for ``codecs/diffc.py`` (bitstream format 2's mode U, issue 8) until it lands, so that
``evaluate``, the command line and the contract tests run on the contract now. The old codec's
per-image payloads become one payload of parts (:func:`~ldcodec.codecs.container.join_parts`);
params are ``t`` (float32), the coding steps (uint8) and the default decode (uint8, index in
:data:`~ldcodec.diffusion.decodes.DECODES`), 6 bytes.

Rate: ``{"t_stop": t}`` or ``{"bits": b}`` (a budget per image), with optional ``coding_steps``
and the stream's default ``decode``; ``rate_setting`` is ``{"t_stop": t, "coding_steps": k}``.
Decode options: ``decode``, ``max_steps`` (decode only the first K coded steps: progressive).
"""

from __future__ import annotations

import struct

import torch

from ldcodec.codecs import container, register
from ldcodec.codecs.base import Codec, Compressed, parts_file_bits
from ldcodec.coding import bitstream
from ldcodec.diffusion.decodes import DECODES, check_decode
from ldcodec.errors import LdcodecError

_PARAMS = struct.Struct("<fBB")
DEFAULT_T = (0.7, 0.5, 0.35, 0.25, 0.15)


@register
class LegacyDiffCCodec(Codec):
    """Mode U codec of a trained unconditional LSGM model (or the exact Gaussian model)."""

    name, codec_id, mode = "diffc", 1, "U"
    decodes = tuple(DECODES)

    def __init__(self, model, device: str = "cpu", batch_size: int = 256):
        from ldcodec.codec import Codec as OldCodec

        if model.cfg.cond.enabled:
            raise LdcodecError("the diffc codec needs a mode U checkpoint; this one is mode C: use the cdc codec")
        self.old = OldCodec(model, device=device, batch_size=batch_size)
        h, w, c = model.image_shape
        self.image_shape = (c, h, w)

    def model_id(self) -> bytes:
        return self.old.hash[:container.MODEL_ID_BYTES]

    def default_rates(self) -> list[dict]:
        return [{"t_stop": t} for t in DEFAULT_T]

    def compress(self, x: torch.Tensor, rate: dict | None = None) -> Compressed:
        rate = self.check_rate(rate, ("t_stop", "bits", "coding_steps", "decode"))
        if "t_stop" in rate and "bits" in rate:
            raise LdcodecError("give the diffc rate as t_stop (--t) or bits (--bits), not both")
        decode = check_decode(rate.get("decode", "flow"))
        x = self.check_images(x)
        r = self.old.compress(x, decode, t=rate.get("t_stop"), bits=rate.get("bits"), steps=rate.get("coding_steps"))
        header, parts = bitstream.read_stream(r.stream)
        params = _PARAMS.pack(header.rate, header.steps, list(DECODES).index(decode))
        return Compressed(self.name, params, container.join_parts(parts), len(parts), r.estimated_bits,
                          parts_file_bits(parts, len(params)), {"t_stop": header.rate, "coding_steps": header.steps})

    def decompress(self, params: bytes, payload: bytes, count: int, **decode_opts) -> torch.Tensor:
        """``decode_opts``: ``decode`` (overrides the stream's default), ``max_steps``."""
        self.check_decode_opts(decode_opts, ("decode", "max_steps"))
        if len(params) != _PARAMS.size:
            raise LdcodecError(f"diffc stream parameters are {len(params)} bytes, not {_PARAMS.size}: damaged")
        t, steps, method = _PARAMS.unpack(params)
        if method >= len(DECODES) or steps < 1:
            raise LdcodecError(f"diffc stream parameters {params.hex()} are damaged")
        decode = decode_opts.get("decode") or list(DECODES)[method]
        c, h, w = self.image_shape
        header = bitstream.StreamHeader(self.old.hash, "U", t, steps, (h, w, c), check_decode(decode))
        stream = bitstream.write_stream(header, container.split_parts(payload, count))
        return self.old.decompress(stream, max_steps=decode_opts.get("max_steps"))
