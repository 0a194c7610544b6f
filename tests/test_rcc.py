"""Reverse channel coding (PFR): exact reproduction, sample law, index cost, stream round trips."""

import math

import numpy as np
import pytest
from scipy import stats

from ldcodec.coding import entropy, rcc
from ldcodec.errors import LdcodecError


def _step(d, kl_bits, seed=0, s=0.4):
    """Means of a step whose KL is ``kl_bits``, with chi-square-like per-dim KLs."""
    rng = np.random.default_rng(seed)
    mu_p = rng.standard_normal(d)
    v = rng.standard_normal(d)
    v *= math.sqrt(2 * kl_bits * math.log(2)) / np.linalg.norm(v)
    return mu_p + s * v, mu_p, s


@pytest.mark.parametrize("d", [1, 3, 64, 500])
def test_decoder_reproduces_encoder_sample_bit_exact(d):
    mu_q, mu_p, s = _step(d, kl_bits=1.5 * d, seed=d)
    code, sample = rcc.encode_step(mu_q, mu_p, s, seed=2**64 - 1 - d, step=3, pad=2)
    assert math.isclose(code.kl_bits, 1.5 * d, rel_tol=1e-9)
    decoded = rcc.StepCode.from_bytes(code.to_bytes(), d)
    np.testing.assert_array_equal(decoded.indices, code.indices)
    np.testing.assert_array_equal(decoded.slices, code.slices)
    assert np.array_equal(rcc.decode_step(mu_p, s, 2**64 - 1 - d, 3, decoded), sample)
    # another seed or step gives another sample: the candidates really come from the key
    assert not np.array_equal(rcc.decode_step(mu_p, s, 5, 3, decoded), sample)
    assert not np.array_equal(rcc.decode_step(mu_p, s, 2**64 - 1 - d, 4, decoded), sample)


def test_several_steps_share_one_stream_and_sizes_vary():
    encoder = entropy.new_encoder()
    steps = []
    for i, (d, kl) in enumerate([(1, 0.0), (2, 30.0), (7, 5.0), (130, 200.0), (1000, 40.0)]):
        mu_q, mu_p, s = _step(d, kl, seed=i)
        code, sample = rcc.encode_step(mu_q, mu_p, s, seed=11, step=i, pad=1)
        code.write(encoder)
        steps.append((d, mu_p, s, sample))
    decoder = entropy.decoder_from_bytes(entropy.encoder_bytes(encoder))
    for i, (d, mu_p, s, sample) in enumerate(steps):
        code = rcc.StepCode.read(decoder, d)
        assert np.array_equal(rcc.decode_step(mu_p, s, 11, i, code), sample)


def _projection_along_shift(mu_q, mu_p, s, samples):
    """``(x - mu_p) / s`` projected on the unit shift; under q it is N(||v||, 1)."""
    v = (mu_q - mu_p) / s
    return ((samples - mu_p) / s) @ (v / np.linalg.norm(v)), np.linalg.norm(v)


def test_one_dim_sample_is_distributed_as_q_when_padded():
    mu_q, mu_p, s = np.array([0.9]), np.array([-0.5]), 0.6  # KL = 3.9 bits
    samples = np.array(
        [rcc.encode_step(mu_q, mu_p, s, seed=k, step=0, pad=8)[1][0] for k in range(400)]
    )
    assert abs(samples.mean() - 0.9) < 4 * s / math.sqrt(400)
    assert abs(samples.std() / s - 1) < 0.12
    assert stats.kstest(samples, "norm", args=(0.9, s)).pvalue > 1e-3


def test_truncation_bias_is_visible_and_pad_removes_it():
    """pad=0 leaves the high-weight tail of q unsampled (sample pulled toward p); pad=8 does not."""
    mu_q, mu_p, s = _step(6, kl_bits=24.0, seed=7)
    for pad, faithful in [(8, True), (0, False)]:
        samples = np.stack(
            [rcc.encode_step(mu_q, mu_p, s, seed=k, step=1, max_chunk_bits=6, pad=pad)[1] for k in range(150)]
        )
        z, norm = _projection_along_shift(mu_q, mu_p, s, samples)
        pvalue = stats.kstest(z - norm, "norm").pvalue
        assert (pvalue > 1e-3) == faithful, (pad, pvalue, z.mean() / norm)


def test_default_settings_bias_is_small():
    mu_q, mu_p, s = _step(8, kl_bits=32.0, seed=3)
    samples = np.stack([rcc.encode_step(mu_q, mu_p, s, seed=k, step=2)[1] for k in range(120)])
    z, norm = _projection_along_shift(mu_q, mu_p, s, samples)
    assert 0.93 < z.mean() / norm < 1.03  # measured 0.964 at the defaults (8 bits, pad 6)
    orthogonal = (samples - mu_p) / s - np.outer(z, (mu_q - mu_p) / s / norm)
    assert abs(np.mean(orthogonal**2) * 8 / 7 - 1) < 0.1  # other directions stay N(0, 1)


def test_index_cost_per_chunk_is_within_the_pfr_bound():
    chunk_kl, index_bits = [], []
    for k in range(25):
        mu_q, mu_p, s = _step(16, kl_bits=40.0, seed=100 + k)
        code, _ = rcc.encode_step(mu_q, mu_p, s, seed=k, step=0)
        kl_dims = ((mu_q - mu_p) / s) ** 2 / (2 * math.log(2))
        perm = rcc._permutation(k, 0, 16)
        for (a, z), r in zip(rcc._blocks(16, code.groups), code.slices):
            chunk_kl += [kl_dims[perm[a:z]].sum() / r] * int(r)
        buckets, _, nbits = rcc._split_indices(code.indices)
        table = rcc._index_table(code.budget, code.log2_candidates)
        index_bits += list(rcc.TABLE_PRECISION - np.log2(table[buckets].astype(float)) + nbits)
    chunk_kl, index_bits = np.array(chunk_kl), np.array(index_bits)
    assert chunk_kl.max() <= rcc.DEFAULT_MAX_CHUNK_BITS + 1e-9
    assert chunk_kl.mean() > 0.8 * rcc.DEFAULT_MAX_CHUNK_BITS  # slices keep chunks near the budget
    assert index_bits.mean() <= np.mean(chunk_kl + np.log2(chunk_kl + 1) + 4)


def test_num_bits_stream_length_and_planning_estimate_agree():
    mu_q, mu_p, s = _step(128, kl_bits=300.0, seed=5)
    code, _ = rcc.encode_step(mu_q, mu_p, s, seed=1, step=0, pad=4)
    actual = 8 * len(code.to_bytes())
    assert 0 <= actual - code.num_bits() <= 64
    expected = rcc.expected_bits(300.0, pad=4, dim=128)
    assert abs(expected - code.num_bits()) < 0.15 * code.num_bits()
    assert code.kl_bits < code.num_bits() < 1.6 * code.kl_bits


def test_zero_kl_step_is_cheap_and_exact():
    mu = np.linspace(-1, 1, 10)
    code, sample = rcc.encode_step(mu, mu, 0.3, seed=9, step=0)
    assert code.budget == 0 and code.slices.tolist() == [1]
    assert code.num_bits() < 16
    assert np.array_equal(rcc.decode_step(mu, 0.3, 9, 0, rcc.StepCode.from_bytes(code.to_bytes(), 10)), sample)


def test_corrupt_or_mismatched_codes_raise_clear_errors():
    code = rcc.StepCode(4, 1, rcc.MAX_BUDGET, rcc.MAX_PAD, np.array([1]), np.array([0]))
    with pytest.raises(LdcodecError, match="candidates per chunk"):
        rcc.StepCode.from_bytes(code.to_bytes(), 4)
    mu_q, mu_p, s = _step(5, 10.0)
    good, _ = rcc.encode_step(mu_q, mu_p, s, seed=0, step=0, pad=1)
    with pytest.raises(LdcodecError, match="does not fit"):
        rcc.decode_step(np.zeros(6), s, 0, 0, good)
    with pytest.raises(ValueError):
        rcc.encode_step(mu_q, mu_p, -1.0, seed=0, step=0)
