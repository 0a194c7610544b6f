"""The PFR of one chunk (coding/pfr.py): exact-enough samples, the index law's cost, index coding."""

import math

import numpy as np
import torch

from ldcodec.coding import pfr, range_coder


def _chunk(e_bits: float, m: int, n: int, seed: int):
    r = 2 ** (2 * e_bits / m) - 1
    rng = np.random.default_rng(seed)
    var_p = torch.full((m,), 1 + r, dtype=torch.float64)
    mu_q = torch.from_numpy(rng.standard_normal((n, m)) * math.sqrt(r))
    return mu_q, torch.zeros(n, m, dtype=torch.float64), var_p


def test_index_law_costs_close_to_the_simulated_entropy_and_round_trips():
    for e_bits, m in ((1.0, 3), (6.0, 4)):
        mu_q, mu_p, var_p = _chunk(e_bits, m, 300, 1)
        alpha, beta = pfr.weights(mu_q, mu_p, 1.0, var_p)
        log2_n = pfr.log2_candidates(e_bits)
        idx = pfr.select(3, 1, 0, log2_n, alpha, beta, torch.arange(300), torch.Generator().manual_seed(0)).numpy()
        buckets = pfr.split_index(idx)[0]
        p = np.bincount(buckets, minlength=log2_n + 1) / len(buckets)
        entropy_bits = -(p[p > 0] * np.log2(p[p > 0])).sum() + np.maximum(buckets - 1, 0).mean()
        law = pfr.index_bits(idx, e_bits, log2_n).mean()
        assert entropy_bits - 0.05 <= law <= entropy_bits + 1.0  # the fitted law is near the simulated entropy
        kl = pfr.kl_bits(mu_q, mu_p, 1.0, var_p).mean().item()
        assert law <= kl + 3.0  # the index overhead is about 2 bits per chunk
        enc = range_coder.new_encoder()
        pfr.write_indices(enc, idx, e_bits, log2_n)
        dec = range_coder.decoder_from_trimmed(range_coder.encoder_bytes_trimmed(enc))
        assert np.array_equal(pfr.read_indices(dec, len(idx), e_bits, log2_n), idx)


def test_samples_follow_q_on_average():
    """Over many chunks (fresh codebooks), the coded sample's mean shift matches q's."""
    moved, wanted = 0.0, 0.0
    for step in range(20):
        mu_q, mu_p, var_p = _chunk(4.0, 2, 100, step)
        alpha, beta = pfr.weights(mu_q, mu_p, 1.0, var_p)
        idx = pfr.select(5, step, 0, pfr.log2_candidates(4.0), alpha, beta, torch.arange(100),
                         torch.Generator().manual_seed(step))
        u = pfr.sample(5, step, 0, idx, torch.arange(100), mu_p, var_p)
        moved += float((u * mu_q).sum())
        wanted += float((mu_q * mu_q).sum())
    assert abs(moved / wanted - 1) < 0.1
