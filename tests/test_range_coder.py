"""Integer-table entropy coding: exact tables in constriction, round trips, escapes, code lengths."""

import constriction
import numpy as np
import pytest

from ldcodec.coding import range_coder
from ldcodec.errors import LdcodecError


@pytest.mark.parametrize("precision", [8, 16, 24])
def test_quantize_pmf_counts_are_positive_and_sum_to_a_power_of_two(precision):
    rng = np.random.default_rng(0)
    pmf = rng.dirichlet(np.full(50, 0.3), size=(3, 4))
    pmf[0, 0, :10] = 0.0
    counts = range_coder.quantize_pmf(pmf, precision)
    assert counts.shape == pmf.shape and counts.dtype == np.uint32
    assert (counts >= 1).all()
    assert (counts.sum(axis=-1, dtype=np.int64) == 2**precision).all()
    if precision == 24:
        np.testing.assert_allclose(counts / 2**precision, pmf / pmf.sum(-1, keepdims=True), atol=4e-6)


def test_quantize_pmf_is_deterministic_and_handles_degenerate_rows():
    assert (range_coder.quantize_pmf(np.zeros(4), 4) == 4).all()  # no mass: uniform
    np.testing.assert_array_equal(range_coder.quantize_pmf([0.5, 0.5, np.nan], 2), [2, 1, 1])
    with pytest.raises(ValueError):
        range_coder.quantize_pmf(np.ones(5), 2)  # 5 symbols cannot all get a count at 2 bits


def _table(precision):
    counts = np.array([1, 1, 2, 3], dtype=np.int64)
    rest = 2**precision - counts.sum()
    return np.append(counts, [rest // 2, rest - rest // 2])


def _ans_step(model, symbol, state=(1 << 32) + 987654321):
    """Push one symbol on an ANS coder holding ``state``; return the new 64-bit state."""
    coder = constriction.stream.stack.AnsCoder(np.array([state & 0xFFFFFFFF, state >> 32], dtype=np.uint32))
    coder.encode_reverse(symbol, model)
    words = coder.get_compressed().astype(np.uint64)
    return int(words[0]) | (int(words[1]) << 32)


def _expected_ans_step(counts, precision, symbol, state=(1 << 32) + 987654321):
    """rANS with the exact 24-bit table ``counts * 2**(24 - precision)``: no renormalisation at this state."""
    scale = 2 ** (range_coder.CODER_PRECISION - precision)
    freq, left = int(counts[symbol]) * scale, int(counts[:symbol].sum()) * scale
    return ((state // freq) << range_coder.CODER_PRECISION) | (state % freq + left)


@pytest.mark.parametrize("precision", [10, 16, 24])
def test_constriction_uses_exactly_the_integer_table(precision):
    """The fixed-point table inside constriction's model is read off the ANS state update
    ``x -> (x // f) << 24 | (x % f + F)``, which exposes every frequency f and cumulative F."""
    counts = _table(precision)
    model = range_coder.categorical_model(counts, precision)
    for symbol in range(len(counts)):
        assert _ans_step(model, symbol) == _expected_ans_step(counts, precision, symbol)


def test_naive_dyadic_probabilities_would_not_be_exact():
    """The check above can fail: handing constriction counts / 2**precision rescales the table."""
    counts = _table(16)
    naive = constriction.stream.model.Categorical(counts / 2**16, perfect=False)
    assert any(_ans_step(naive, s) != _expected_ans_step(counts, 16, s) for s in range(len(counts)))


def test_range_coded_length_is_the_ideal_length_plus_flush():
    """2000 symbols of count 1, 1, 2, 3 at 24 bits: a table off by one would cost ~1000 bits more."""
    counts = _table(24)
    symbols = np.random.default_rng(0).integers(0, 4, size=2000)
    encoder = range_coder.new_encoder()
    range_coder.write_categorical(encoder, symbols, counts, 24)
    data = range_coder.encoder_bytes(encoder)
    assert 0 <= 8 * len(data) - range_coder.categorical_bits(symbols, counts, 24) <= 32
    decoded = range_coder.read_categorical(range_coder.decoder_from_bytes(data), len(symbols), counts, 24)
    np.testing.assert_array_equal(decoded, symbols)


def _tables():
    rng = np.random.default_rng(1)
    pmfs = [rng.dirichlet(np.ones(n)) * 0.999 for n in (1, 5, 40, 300)]
    return range_coder.Tables.from_pmfs(pmfs, offsets=[0, -2, -20, 7], precision=16)


def test_symbols_round_trip_with_per_symbol_tables_and_escapes():
    tables = _tables()
    rng = np.random.default_rng(2)
    index = rng.integers(0, 4, size=3000)
    symbols = tables.offsets[index] + rng.integers(0, tables.sizes[index] - 1)  # inside each table
    symbols[::97] = rng.integers(-(2**40), 2**40, size=len(symbols[::97]))  # far outside: escapes
    symbols[5] = tables.offsets[index[5]] - 1  # just below
    symbols[6] = tables.offsets[index[6]] + tables.sizes[index[6]] - 1  # just above
    data = range_coder.encode_symbols(symbols, index, tables)
    np.testing.assert_array_equal(range_coder.decode_symbols(data, index, tables), symbols)
    assert 0 <= 8 * len(data) - range_coder.symbols_bits(symbols, index, tables) <= 32


def test_code_length_tracks_table_probabilities():
    tables = _tables()
    rng = np.random.default_rng(3)
    index = np.full(5000, 2)
    pmf = tables.row(2) / 2**16
    symbols = rng.choice(len(pmf) - 1, size=5000, p=pmf[:-1] / pmf[:-1].sum()) + tables.offsets[2]
    data = range_coder.encode_symbols(symbols, index, tables)
    ideal = float(np.sum(-np.log2(pmf[symbols - tables.offsets[2]])))
    assert abs(8 * len(data) - ideal) <= 32


def test_raw_bits_round_trip_up_to_63_bits():
    rng = np.random.default_rng(4)
    nbits = rng.integers(0, 64, size=500)
    values = np.array([int(rng.integers(0, 2**62)) % (1 << int(n)) if n else 0 for n in nbits], dtype=np.int64)
    encoder = range_coder.new_encoder()
    range_coder.write_bits(encoder, values, nbits)
    decoder = range_coder.decoder_from_bytes(range_coder.encoder_bytes(encoder))
    np.testing.assert_array_equal(range_coder.read_bits(decoder, nbits), values)


def test_bad_inputs_raise():
    with pytest.raises(LdcodecError, match="32-bit words"):
        range_coder.decoder_from_bytes(b"\x00\x01\x02")
    with pytest.raises(ValueError):
        range_coder.encode_symbols(np.zeros(3), np.array([0, 9, 0]), _tables())
