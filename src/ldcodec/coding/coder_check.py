"""Known-answer self-check of the ``constriction`` range coder: streams must be bit-exact everywhere.

Every entropy-coded byte ldcodec writes goes through constriction's queue range coder with
models built from integers (:mod:`ldcodec.coding.range_coder`): a ``Categorical`` whose fixed-point
table is exactly an integer count table (weights ``counts * 2**(24 - precision) - 1`` with
``perfect=False``), and the ``Uniform`` model, alone or as a family of per-symbol sizes. If a
constriction release changed how it quantises those weights or how it renormalises, streams
written on one machine would stop decoding on another, silently. :func:`check_coder` encodes a
fixed symbol sequence through each of these models and compares the compressed words with
golden words recorded with constriction 0.5.0, then decodes them back. It runs once, when
:mod:`ldcodec.coding` is first imported (about a millisecond), and raises
:class:`~ldcodec.errors.LdcodecError` naming the installed version if anything differs.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

import constriction
import numpy as np

from ldcodec.errors import LdcodecError

CODER_PRECISION = 24  # constriction's default range coder: 24-bit fixed-point probabilities
PRECISION = 12  # of the test table
COUNTS = np.array([2048, 1500, 400, 147, 1], dtype=np.int64)  # sums to 2**12; the last is the rarest possible
SYMBOLS = np.array([(7 * i * i + 3 * i) % 5 for i in range(40)], dtype=np.int32)  # includes symbol 4
UNIFORM_SIZE = 1000
UNIFORM_VALUES = np.array([0, 999, 500, 1, 998, 123], dtype=np.int32)
RAW_SIZES = np.array([2, 4, 2**16, 2**15, 8], dtype=np.int32)  # raw bits through the Uniform family
RAW_VALUES = np.array([1, 3, 65535, 12345, 0], dtype=np.int32)

GOLDEN_WORDS = (  # encode_known_answer() with constriction 0.5.0
    0x3FFFDAFB, 0x4C217936, 0xC5FA5E05, 0x67DCCBC6, 0xCF23F9BF, 0x94A0D912, 0x65C1507F, 0x2DE2A90D,
    0x2160C998, 0xA5567CE8, 0x861F9E00,
)

_checked = False


def _categorical():
    weights = COUNTS.astype(np.float64) * float(2 ** (CODER_PRECISION - PRECISION)) - 1.0
    return constriction.stream.model.Categorical(weights, perfect=False)


def encode_known_answer() -> np.ndarray:
    """The words (uint32) of the fixed test message: categorical, then uniform, then raw bits."""
    encoder = constriction.stream.queue.RangeEncoder()
    encoder.encode(SYMBOLS, _categorical())
    encoder.encode(UNIFORM_VALUES, constriction.stream.model.Uniform(UNIFORM_SIZE))
    encoder.encode(RAW_VALUES, constriction.stream.model.Uniform(), RAW_SIZES)
    return np.asarray(encoder.get_compressed(), dtype=np.uint32)


def check_coder(force: bool = False) -> None:
    """Raise ``LdcodecError`` unless constriction reproduces the golden words and decodes them back."""
    global _checked
    if _checked and not force:
        return
    words = encode_known_answer()
    try:
        installed = version("constriction")
    except PackageNotFoundError:
        installed = "(version unknown)"
    if tuple(int(w) for w in words) != GOLDEN_WORDS:
        raise LdcodecError(f"the installed constriction {installed} range-codes differently from the version "
                           "ldcodec was checked with (0.5.0): its streams would not decode elsewhere; "
                           "install constriction==0.5.0")
    decoder = constriction.stream.queue.RangeDecoder(words)
    try:
        back = (decoder.decode(_categorical(), len(SYMBOLS)),
                decoder.decode(constriction.stream.model.Uniform(UNIFORM_SIZE), len(UNIFORM_VALUES)),
                decoder.decode(constriction.stream.model.Uniform(), RAW_SIZES))
    except (AssertionError, ValueError, RuntimeError):  # what constriction raises on data it cannot decode
        back = ()
    if len(back) != 3 or not all(np.array_equal(b, v) for b, v in zip(back, (SYMBOLS, UNIFORM_VALUES, RAW_VALUES))):
        raise LdcodecError(f"the installed constriction {installed} does not decode its own known-answer stream; "
                           "install constriction==0.5.0")
    _checked = True
