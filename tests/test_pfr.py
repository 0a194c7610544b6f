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


def test_early_stop_keeps_the_full_searchs_winner_and_draws_less(monkeypatch):
    """One image per call (its arrivals are then the same draws in both searches): the early-stopped
    search returns the full search's index on every chunk, and many stop long before 2^log2_n
    candidates. A bound that is too low (here: 0) stops too early and changes winners."""
    g = torch.Generator().manual_seed(1)
    calls, total, searched = [], 0, 0
    real = pfr.cand.candidates
    monkeypatch.setattr(pfr.cand, "candidates", lambda *a, **k: (calls.append(a[4]), real(*a, **k))[1])
    for chunk in range(40):
        m, bits = 4, 1.0 + chunk % 6
        var_q = 0.5
        var_p = torch.full((m,), var_q * (1 + 0.3 * (1 + chunk % 3)), dtype=torch.float64)
        mu_q = torch.randn(1, m, generator=g, dtype=torch.float64) * math.sqrt(2 ** (2 * bits / m) - 1) * 0.7
        alpha, beta = pfr.weights(mu_q, torch.zeros(1, m, dtype=torch.float64), var_q, var_p)
        log2_n = pfr.log2_candidates(bits)
        calls.clear()
        fast = pfr.select(7, 2, chunk, log2_n, alpha, beta, torch.arange(1), torch.Generator().manual_seed(chunk))
        drawn = sum(calls)
        full = pfr.select(7, 2, chunk, log2_n, alpha, beta, torch.arange(1), torch.Generator().manual_seed(chunk),
                          early_stop=False)
        assert int(fast) == int(full)
        assert drawn <= 1 << log2_n
        total, searched = total + (1 << log2_n), searched + drawn
    assert searched < 0.75 * total  # many chunks stop long before their 2^log2_n candidates
    monkeypatch.setattr(pfr, "max_log_ratio", lambda alpha, beta: torch.zeros(beta.shape[0], dtype=torch.float64))
    changed = sum(int(pfr.select(7, 2, c, 14, *pfr.weights(torch.full((1, 4), 3.0, dtype=torch.float64),
                                                             torch.zeros(1, 4, dtype=torch.float64), 0.5,
                                                             torch.full((4,), 0.6, dtype=torch.float64)),
                                 torch.arange(1), torch.Generator().manual_seed(c))) !=
                  int(pfr.select(7, 2, c, 14, *pfr.weights(torch.full((1, 4), 3.0, dtype=torch.float64),
                                                             torch.zeros(1, 4, dtype=torch.float64), 0.5,
                                                             torch.full((4,), 0.6, dtype=torch.float64)),
                                 torch.arange(1), torch.Generator().manual_seed(c), early_stop=False))
                  for c in range(10))
    assert changed > 0
