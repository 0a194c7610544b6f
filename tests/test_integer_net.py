"""The hyperprior's integer scale network (``ldcodec.baselines.integer_net``): scale bins are an exact
integer function of ``z_hat``, untouched by last-bit changes of the float ``h_s``."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from ldcodec.baselines import integer_net
from ldcodec.baselines.integer_net import A_MAX, IntegerScaleNet, requantize
from ldcodec.baselines.learned import build_learned
from ldcodec.codecs.balle import HyperpriorCodec
from ldcodec.errors import LdcodecError


@pytest.fixture(scope="module")
def codec():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        codec = build_learned("hyperprior", 1, channels=8, latent_channels=4).eval()
        with torch.no_grad():  # spread the scales over many bins (an untrained h_s gives ~0.7 everywhere)
            codec.h_s[-2].weight.mul_(20)
    codec.update_tables()
    return codec


def _z(codec, seed: int = 0, shape=(1, 8, 2, 2), high: int = 6) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-high, high + 1, shape, generator=g).float()


def _reference(net: IntegerScaleNet, z: torch.Tensor) -> np.ndarray:
    """The integer network in Python integers, one output at a time, in another summation order."""
    a = np.vectorize(int, otypes=[object])(z[0].round().clamp(-integer_net.Z_MAX, integer_net.Z_MAX).long().numpy())
    for i, (transposed, stride, padding, output_padding) in enumerate(net.layers):
        w = getattr(net, f"weight{i}").numpy().astype(object)
        b = getattr(net, f"bias{i}").numpy().astype(object)
        c_in, h, wd = a.shape
        k = w.shape[-1]
        if transposed:  # scatter each input into the (padded) output
            full = np.zeros((w.shape[1], (h - 1) * stride + k + output_padding, (wd - 1) * stride + k + output_padding),
                            dtype=object)
            for ci in reversed(range(c_in)):
                for y in range(h):
                    for x in range(wd):
                        full[:, y * stride:y * stride + k, x * stride:x * stride + k] += a[ci, y, x] * w[ci]
            out_h, out_w = (h - 1) * stride - 2 * padding + k + output_padding, (wd - 1) * stride - 2 * padding + k + output_padding
            u = full[:, padding:padding + out_h, padding:padding + out_w]
        else:
            padded = np.zeros((c_in, h + 2 * padding, wd + 2 * padding), dtype=object)
            padded[:, padding:padding + h, padding:padding + wd] = a
            out_h, out_w = (h + 2 * padding - k) // stride + 1, (wd + 2 * padding - k) // stride + 1
            u = np.zeros((w.shape[0], out_h, out_w), dtype=object)
            for y in range(out_h):
                for x in range(out_w):
                    patch = padded[:, y * stride:y * stride + k, x * stride:x * stride + k]
                    u[:, y, x] = [(patch * w[co]).sum() for co in range(w.shape[0])]
        u = u + b[:, None, None]
        if i < len(net.layers) - 1:
            shift = integer_net.WEIGHT_BITS + (integer_net.ACTIVATION_BITS if i else 0) - integer_net.ACTIVATION_BITS
            a = np.vectorize(lambda v: min((max(v, 0) + (1 << (shift - 1))) >> shift, A_MAX), otypes=[object])(u)
    thresholds = [int(t) for t in net.thresholds]
    return np.vectorize(lambda v: min(sum(t < v for t in thresholds), len(thresholds) - 1))(u).astype(np.int64)


def test_indices_equal_an_exact_python_integer_reference(codec):
    for seed in range(3):
        z = _z(codec, seed)
        assert np.array_equal(codec.scale_net(z)[0].numpy(), _reference(codec.scale_net, z))


def test_int64_convolutions_are_exact_where_float64_would_round():
    a = torch.tensor([[[[2**50 + 1, 3]]]], dtype=torch.int64)
    w = torch.tensor([[[[2**12 + 1, 1]]]], dtype=torch.int64)
    exact = (2**50 + 1) * (2**12 + 1) + 3
    assert torch.nn.functional.conv2d(a, w).item() == exact
    assert int(float(2**50 + 1) * float(2**12 + 1) + 3.0) != exact  # the float64 path would lose the low bits


def test_last_bit_changes_of_the_float_h_s_change_nothing(codec):
    x = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    shipped = HyperpriorCodec(codec, (1, 28, 28), lam=0.01)
    payload = shipped.compress(x).payload
    other = copy.deepcopy(codec)
    with torch.no_grad():
        for p in other.h_s.parameters():
            p.copy_(torch.nextafter(p, torch.full_like(p, float("inf"))))
    assert not torch.equal(other.h_s[0].weight, codec.h_s[0].weight)
    other_shipped = HyperpriorCodec(other, (1, 28, 28), lam=0.01)
    assert other_shipped.compress(x).payload == payload
    assert torch.equal(other_shipped.decompress(b"", payload, 2), shipped.decompress(b"", payload, 2))
    z = _z(codec)
    assert torch.equal(other.scale_net(z), codec.scale_net(z))


def test_indices_do_not_depend_on_the_thread_count(codec):
    z = _z(codec, shape=(1, 8, 4, 4))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = codec.scale_net(z)
        torch.set_num_threads(2)
        assert torch.equal(codec.scale_net(z), one)
    finally:
        torch.set_num_threads(threads)


def test_integer_bins_track_the_float_bins(codec):
    """The fixed-point error moves a few scales at most one bin from the float network's."""
    z = torch.cat([_z(codec, seed) for seed in range(8)])
    with torch.no_grad():
        float_bins = codec.conditional.scale_index(codec.h_s(z))
    int_bins = torch.cat([codec.scale_net(zi[None]) for zi in z])
    assert len(torch.unique(float_bins)) >= 10  # the scales really spread over the table
    assert (int_bins - float_bins).abs().max() <= 1 and (int_bins == float_bins).float().mean() >= 0.95


def test_edges_match_the_float_searchsorted_exactly():
    """``#{t_k < u}`` is ``searchsorted(table, softplus(u / 2**F))``, away from float ties."""
    table = torch.exp(torch.linspace(np.log(0.11), np.log(256.0), 64, dtype=torch.float64))
    edges = torch.from_numpy(integer_net._integer_edges(table.numpy(), 0.11, 24))
    u = torch.randint(-2**26, 2**31, (5000,), generator=torch.Generator().manual_seed(0))
    expected = torch.searchsorted(table, torch.nn.functional.softplus(u.double() / 2**24)).clamp_max(63)
    assert torch.equal(torch.searchsorted(edges, u).clamp_max(63), expected)


def test_requantize_rounds_half_up_and_clamps():
    u = torch.tensor([-5, 0, 127, 128, 383, 2**40], dtype=torch.int64)
    assert requantize(u, 8).tolist() == [0, 0, 0, 1, 1, A_MAX]


def test_coding_needs_update_tables_and_sane_weights():
    torch.manual_seed(0)
    codec = build_learned("hyperprior", 1, channels=8, latent_channels=4).eval()
    with pytest.raises(LdcodecError, match="update_tables"):
        codec.scale_net(torch.zeros(1, 8, 2, 2))
    with torch.no_grad():
        codec.h_s[0].weight.fill_(1e12)
    with pytest.raises(LdcodecError, match="too large for the integer network"):
        codec.update_tables()


def test_the_integer_network_travels_in_the_state_dict(codec):
    fresh = build_learned("hyperprior", 1, channels=8, latent_channels=4).eval()
    fresh.load_state_dict(codec.state_dict())
    z = _z(codec)
    assert torch.equal(fresh.scale_net(z), codec.scale_net(z))


def test_the_float_path_it_replaces_moves_a_bin_on_one_ulp(codec):
    """Why the integer network: a float scale on a bin edge changes bin when its last bit does."""
    edge = codec.conditional.scale_table[10:11]
    assert codec.conditional.scale_index(edge) != codec.conditional.scale_index(torch.nextafter(edge, edge + 1))
