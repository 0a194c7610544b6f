"""The range coder's known-answer check (``ldcodec.coding.coder_check``)."""

import constriction
import numpy as np
import pytest

from ldcodec.coding import coder_check, range_coder
from ldcodec.errors import LdcodecError


def test_the_installed_constriction_passes():
    coder_check.check_coder(force=True)


def test_the_range_coder_module_writes_the_golden_words():
    """ldcodec's own coding path (integer tables, uniform values, raw bits) is the one that is checked."""
    c = coder_check
    encoder = range_coder.new_encoder()
    range_coder.write_categorical(encoder, c.SYMBOLS, c.COUNTS, c.PRECISION)
    range_coder.write_uniform(encoder, c.UNIFORM_VALUES, c.UNIFORM_SIZE)
    range_coder.write_bits(encoder, c.RAW_VALUES, np.log2(c.RAW_SIZES).astype(np.int64))
    assert range_coder.encoder_bytes(encoder) == np.array(c.GOLDEN_WORDS, dtype="<u4").tobytes()


def test_a_coder_that_quantises_differently_is_caught(monkeypatch):
    weights = coder_check.COUNTS.astype(np.float64)  # counts as probabilities: off by the 2**24 - n rescaling
    monkeypatch.setattr(coder_check, "_categorical",
                        lambda: constriction.stream.model.Categorical(weights, perfect=False))
    with pytest.raises(LdcodecError, match="range-codes differently.*constriction==0.5.0"):
        coder_check.check_coder(force=True)


def test_a_coder_that_does_not_decode_its_words_is_caught(monkeypatch):
    real = coder_check._categorical
    calls = []

    def encode_right_decode_wrong():
        calls.append(1)
        if len(calls) == 1:
            return real()
        return constriction.stream.model.Categorical(np.array([1.0, 1, 1, 1, 1]), perfect=False)

    monkeypatch.setattr(coder_check, "_categorical", encode_right_decode_wrong)
    with pytest.raises(LdcodecError, match="does not decode"):
        coder_check.check_coder(force=True)
