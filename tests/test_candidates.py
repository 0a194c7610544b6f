"""The format-defined candidate generator: Random123 known answers, normals, addressing."""

import pytest
import torch

from ldcodec.coding import candidates as cand
from ldcodec.errors import LdcodecError

# Random123 kat_vectors for Philox4x32-10 (Salmon et al. 2011).
KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


def test_philox_known_answers():
    for ctr, key, want in KAT:
        got = cand.philox4x32(tuple(torch.tensor([c]) for c in ctr), key)
        assert tuple(int(w[0]) for w in got) == want


def test_self_check_catches_a_broken_generator(monkeypatch):
    cand._CHECKED.clear()
    cand.self_check()
    cand._CHECKED.clear()
    monkeypatch.setattr(cand, "ROUNDS", 9)
    with pytest.raises(LdcodecError, match="Philox"):
        cand.self_check()
    cand._CHECKED.clear()


def test_philox_vectorised_matches_scalar():
    ctr = torch.arange(0, 50, dtype=torch.int64) * 7919
    words = cand.philox4x32((ctr, torch.tensor(3), torch.tensor(5), torch.tensor(11)), (123, 456))
    for i in (0, 17, 49):
        one = cand.philox4x32((ctr[i:i + 1], torch.tensor(3), torch.tensor(5), torch.tensor(11)), (123, 456))
        assert [int(w[i]) for w in words] == [int(w[0]) for w in one]


def test_candidates_golden_values():
    """Pins the whole pipeline (words -> uniforms -> Box-Muller); a change of the format breaks this."""
    e = cand.candidates(key=0x01020304, step=2, chunk=1, start=0, count=2, dims=5)
    golden = torch.tensor(GOLDEN)
    assert torch.allclose(e, golden, atol=1e-6), e.tolist()


def test_chosen_candidate_equals_codebook_row_and_is_standard_normal():
    book = cand.candidates(key=7, step=1, chunk=3, start=0, count=4096, dims=6)
    rows = torch.tensor([0, 5, 4095, 1234])
    assert torch.equal(cand.candidate(7, 1, 3, rows, 6), book[rows])
    tail = cand.candidates(key=7, step=1, chunk=3, start=1000, count=10, dims=6)
    assert torch.equal(tail, book[1000:1010])
    flat = book.flatten().double()
    assert abs(flat.mean()) < 0.03 and abs(flat.std() - 1) < 0.03
    other = cand.candidates(key=7, step=1, chunk=4, start=0, count=4096, dims=6).flatten().double()
    assert abs(torch.corrcoef(torch.stack([flat, other]))[0, 1]) < 0.03


GOLDEN = [[0.7706568837165833, -0.3973117470741272, 0.05943721905350685, -0.03101104497909546, -0.260460764169693],
          [1.6198991537094116, 1.0464513301849365, 1.7032431364059448, 0.7840667963027954, 1.2135462760925293]]


def test_signed_permutations_are_per_image_and_format_defined():
    imgs = torch.arange(6)
    perm, sign = cand.signed_permutations(5, 2, 1, imgs, 7)
    assert perm.shape == sign.shape == (6, 7)
    assert all(sorted(p.tolist()) == list(range(7)) for p in perm)
    assert set(sign.flatten().tolist()) <= {-1.0, 1.0}
    assert len({tuple(p.tolist()) for p in perm}) > 1  # images differ
    again = cand.signed_permutations(5, 2, 1, imgs[3:4], 7)
    assert torch.equal(again[0][0], perm[3]) and torch.equal(again[1][0], sign[3])
