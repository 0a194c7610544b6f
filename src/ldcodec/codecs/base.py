"""The codec contract: one interface for every codec, one way to count its bits.

In the spirit of CompressAI's ``CompressionModel``: :meth:`Codec.compress` turns a batch of images
into one payload plus the codec's header parameters and its per-image bit accounting
(:class:`Compressed`); :meth:`Codec.decompress` inverts it; :meth:`Codec.update` builds the integer
coding tables after training. :mod:`ldcodec.codecs.container` frames every codec's output the same
way, so the rates of all codecs are counted alike:

- ``estimated_bits`` ``(N,)``: what the codec's densities promise per image (``None`` for codecs
  without a density model, the Pillow formats);
- ``file_bits`` ``(N,)``: a real file holding that image alone, container included (measured by
  framing the image's own payload; :func:`~ldcodec.codecs.container.file_bytes`);
- the actual rate of a batch is ``8 * len(container.write(c)) / N``: its share of one file holding
  the whole batch (:meth:`Codec.actual_bits`);
- ``ideal_bits`` ``(N,)``: the information the model says the image needs, where a codec knows it.

Images are ``(N, C, H, W)`` floats in ``[0, 1]`` and shapes are CHW everywhere, like the tensors.
"""

from __future__ import annotations

import abc
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch

from ldcodec.codecs import container
from ldcodec.errors import LdcodecError, reraise_damage
from ldcodec.metrics.rate import rate_fields


@dataclass
class Compressed:
    """What :meth:`Codec.compress` returns for ``count`` images (``N``).

    Attributes:
        codec: the codec's registry name.
        params: codec-specific header parameters (a few bytes; the codec encodes and parses them).
        payload: one payload for the whole batch, in the codec's own layout.
        count: ``N``, images in the batch.
        estimated_bits: ``(N,)`` bits the codec's densities promise per image, or ``None``.
        file_bits: ``(N,)`` bits of a file holding that image alone, container included.
        rate_setting: the human-readable rate knob, e.g. ``{"t_stop": 0.3, "coding_steps": 8}``;
            passed back to ``compress`` it gives the same stream.
        ideal_bits: ``(N,)`` the model's ideal rate per image, where the codec defines one.
        extra: codec-specific diagnostics (e.g. mode U's ``exactness``), not part of the stream.
    """

    codec: str
    params: bytes
    payload: bytes
    count: int
    estimated_bits: np.ndarray | None
    file_bits: np.ndarray
    rate_setting: dict
    ideal_bits: np.ndarray | None = None
    extra: dict = field(default_factory=dict)


class Codec(abc.ABC):
    """A registered codec (:func:`ldcodec.codecs.register`).

    Class attributes: ``name`` (registry name), ``codec_id`` (its byte in the container),
    ``decodes`` (the decode methods it offers; ``("default",)`` for one fixed decoder),
    ``decode_knob`` (whether its decoder also takes the ``eta=X`` decodes of
    :mod:`ldcodec.diffusion.decodes`), ``kind`` and ``mode`` (how results label it).
    Instance attribute: ``image_shape`` ``(C, H, W)``, the images it codes.
    """

    name: ClassVar[str]
    codec_id: ClassVar[int]
    decodes: ClassVar[tuple[str, ...]] = ("default",)
    decode_knob: ClassVar[bool] = False
    kind: ClassVar[str] = "ldcodec"  # results' family: ldcodec, classical or learned
    mode: ClassVar[str | None] = None  # ldcodec's mode: "U" (diffc) or "C" (cdc)
    image_shape: tuple[int, int, int]

    @abc.abstractmethod
    def model_id(self) -> bytes:
        """4 bytes identifying the model (weights and config); ``bytes(4)`` for parameter-free codecs."""

    @abc.abstractmethod
    def default_rates(self) -> list[dict]:
        """The rate settings ``evaluate`` sweeps by default (each a valid ``rate`` of :meth:`compress`)."""

    @abc.abstractmethod
    def compress(self, x: torch.Tensor, rate: dict | None = None) -> Compressed:
        """Images ``(N, C, H, W)`` in ``[0, 1]`` -> :class:`Compressed` (``rate=None``: the codec's default)."""

    @abc.abstractmethod
    def decompress(self, params: bytes, payload: bytes, count: int, **decode_opts) -> torch.Tensor:
        """The parameters and payload of :meth:`compress` -> ``(count, C, H, W)`` images in ``[0, 1]``.
        Damaged or foreign input raises ``LdcodecError``. A codec names its decode options as keyword
        parameters (e.g. ``decode=None``); :meth:`decompress_file` refuses any other."""

    def update(self) -> None:
        """Build the integer coding tables from the current weights (no-op for codecs without any)."""

    # -- shared by every codec ----------------------------------------------------------------

    def frame(self, c: Compressed) -> bytes:
        """The file (format 2) holding ``c``: see :mod:`ldcodec.codecs.container`."""
        if c.codec != self.name:
            raise LdcodecError(f"cannot frame a {c.codec} payload as codec {self.name}")
        return container.write(self.codec_id, self.model_id(), c.params, c.payload, c.count)

    def decompress_file(self, data: bytes, **decode_opts) -> torch.Tensor:
        """A file of :meth:`frame` -> images; refuses a file of another codec or model with ``LdcodecError``."""
        codec_id, model_id, params, payload, count = container.read(data)
        if codec_id != self.codec_id:
            from ldcodec.codecs import codec_name

            raise LdcodecError(f"the stream was written by codec {codec_name(codec_id)}, not {self.name}: "
                               "decode it with the codec (checkpoint) that made it")
        if model_id != self.model_id():
            raise LdcodecError(f"stream was encoded by model {model_id.hex()} but the loaded {self.name} model is "
                               f"{self.model_id().hex()}: decode with the checkpoint that encoded it")
        unknown = sorted(set(decode_opts) - set(self.decode_options()))
        if unknown:
            raise LdcodecError(f"the {self.name} codec takes no decode option(s) {', '.join(unknown)}; "
                               f"valid: {', '.join(self.decode_options()) or 'none'}")
        return self.decompress(params, payload, count, **decode_opts)

    def decode_options(self) -> tuple[str, ...]:
        """The options :meth:`decompress` takes: its keyword parameters after ``count``."""
        params = list(inspect.signature(self.decompress).parameters.values())[3:]
        return tuple(p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))

    @staticmethod
    def actual_bits(c: Compressed, data: bytes) -> float:
        """Bits per image of ``c`` framed as ``data``: its share of one file holding the whole batch."""
        return 8.0 * len(data) / c.count

    def rates(self, c: Compressed, data: bytes) -> dict[str, float | None]:
        """The mean ideal, estimated, actual and file rates of ``c`` framed as ``data``, in bits, bpp and
        bits/dim (:func:`ldcodec.metrics.rate.rate_fields`; ``None`` where the codec has no such rate)."""
        def mean(bits):
            return None if bits is None else float(np.mean(bits))

        return rate_fields({"ideal": mean(c.ideal_bits), "estimated": mean(c.estimated_bits),
                            "actual": self.actual_bits(c, data), "file": mean(c.file_bits)}, self.image_shape)

    def check_images(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` if it is a non-empty ``(N, *image_shape)`` batch, else a one-line ``LdcodecError``."""
        c, h, w = self.image_shape
        if x.dim() != 4 or tuple(x.shape[1:]) != (c, h, w):
            raise LdcodecError(f"images of shape {tuple(x.shape[1:])} do not fit this {self.name} codec, which "
                               f"codes {c}x{h}x{w} (CxHxW)")
        if len(x) == 0:
            raise LdcodecError("no images to compress: the input holds 0 images")
        if len(x) > container.MAX_COUNT:
            raise LdcodecError(f"{len(x)} images: a file holds at most {container.MAX_COUNT}; split the input")
        return x

    def check_rate(self, rate: dict | None, allowed: tuple[str, ...]) -> dict:
        """``rate`` (``{}`` for ``None``) if its keys are among ``allowed``, else a one-line ``LdcodecError``."""
        rate = dict(rate or {})
        unknown = sorted(set(rate) - set(allowed))
        if unknown:
            raise LdcodecError(f"the {self.name} codec has no rate setting(s) {', '.join(unknown)}; "
                               f"valid: {', '.join(allowed) or 'none (its rate is fixed by training)'}")
        return rate

    def check_trained_rate(self, rate: dict | None, lam: float, allowed: tuple[str, ...] = ()) -> dict:
        """For codecs whose rate was fixed by training with ``lam``: ``rate`` may repeat ``lambda``
        (its ``rate_setting``) but not change it; other keys must be among ``allowed``."""
        rate = self.check_rate(rate, ("lambda", *allowed))
        if rate.pop("lambda", lam) != lam:
            raise LdcodecError(f"this {self.name} model was trained for lambda {lam:g}; its rate is fixed by "
                               "training: train another model for another rate")
        return rate


def _same(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    return torch.equal(a, b)


def _rows(symbols, rows: slice):
    if hasattr(symbols, "rows"):
        return symbols.rows(rows)
    return {k: v[rows] for k, v in symbols.items()} if isinstance(symbols, dict) else symbols[rows]


def _count(symbols) -> int:
    if hasattr(symbols, "count") and not isinstance(symbols, torch.Tensor):
        return symbols.count
    return len(next(iter(symbols.values())) if isinstance(symbols, dict) else symbols)


@dataclass(frozen=True)
class SymbolCoder:
    """How a codec's symbols go through one range coder for a whole file.

    ``symbols``: a tensor ``(N, ...)`` of integer symbols, a dict of such tensors, or an object
    with ``count`` (``N``) and ``rows(slice)`` (mode U's :class:`~ldcodec.coding.simulator.Chain`).
    ``write(encoder, symbols)`` appends those of ``N`` images; ``read(decoder, n)`` reads ``n``
    images' symbols back (the same types); ``check(decoder, symbols) -> bool`` tells whether
    ``decoder`` reads back exactly ``symbols`` with the densities the symbols imply (faster than
    ``read``, and the only way for symbols whose densities depend on what was decoded before), for
    the shortest-stream search. At least one of ``read`` and ``check`` is given.
    """

    write: Callable
    read: Callable | None = None
    check: Callable | None = None

    def decodes_to(self, data: bytes, symbols) -> bool:
        from ldcodec.coding import range_coder

        decoder = range_coder.decoder_from_trimmed(data)
        if self.check is not None:
            return bool(self.check(decoder, symbols))
        return _same(self.read(decoder, _count(symbols)), symbols)


def single_stream(coder: SymbolCoder, symbols) -> bytes:
    """One range coder over all the images of ``symbols``, cut to its shortest verified length
    (:func:`~ldcodec.coding.range_coder.shortest_stream`): a file pays one coder's flush, not one
    per image."""
    from ldcodec.coding import range_coder

    encoder = range_coder.new_encoder()
    coder.write(encoder, symbols)
    return range_coder.shortest_stream(encoder, lambda data: coder.decodes_to(data, symbols))


def read_single_stream(coder: SymbolCoder, payload: bytes, count: int, what: str):
    """Inverse of :func:`single_stream` for ``count`` images: their symbols. A payload that is not the
    canonical (shortest verified) coding of what it decodes to was damaged: ``LdcodecError``."""
    from ldcodec.coding import range_coder

    with reraise_damage(what):
        symbols = coder.read(range_coder.decoder_from_trimmed(payload), count)
    check_canonical(coder, symbols, payload, what)
    return symbols


def check_canonical(coder: SymbolCoder, symbols, payload: bytes, what: str) -> None:
    """Refuse (``LdcodecError``) a payload that is not the :func:`single_stream` of the symbols it
    decoded to: it was damaged or read with the wrong parameters, even if every checksum passed."""
    with reraise_damage(what):
        canonical = single_stream(coder, symbols) == bytes(payload)
    if not canonical:
        raise LdcodecError(f"damaged {what} stream: its payload is not the coding of what it decodes to")


def single_stream_file_bits(coder: SymbolCoder, symbols, params_len: int, head: int = 0) -> np.ndarray:
    """``(N,)`` file bits of each image alone: its own :func:`single_stream` (after ``head`` bytes
    the codec puts before it) in a container."""
    return np.array([8.0 * container.file_bytes(head + len(single_stream(coder, _rows(symbols, slice(b, b + 1)))),
                                                params_len, 1) for b in range(_count(symbols))])

