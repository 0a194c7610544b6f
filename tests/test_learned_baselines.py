"""Ballé factorised-prior and hyperprior baselines: training works, and real files of the shipped codecs
(:mod:`ldcodec.codecs.balle`) round-trip exactly, cost what the model estimates and refuse damage."""

import pytest
import torch

from ldcodec.baselines import learned
from ldcodec.baselines.learned import GDN, MODELS, build_learned, lambda_schedule, rate_distortion_loss, train_learned
from ldcodec.codecs import container
from ldcodec.codecs.balle import FactorizedCodec, HyperpriorCodec
from ldcodec.coding import range_coder
from ldcodec.data import load_split, to_tensor
from ldcodec.errors import LdcodecError

KINDS = ("factorized", "hyperprior")
TINY = {"channels": 8, "latent_channels": 4, "batch_size": 8}


@pytest.fixture(scope="module")
def mnist():
    return to_tensor(load_split("mnist", "train", limit=512)[0]), to_tensor(load_split("mnist", "test", limit=6)[0])


@pytest.fixture(scope="module")
def nets(mnist):
    train, _ = mnist
    return {kind: train_learned(kind, train, lam=0.01, steps=40, progress=False, **TINY) for kind in KINDS}


@pytest.fixture(scope="module")
def shipped(nets):
    """The trained networks in the registered codecs that ship them (the one coding path)."""
    return {kind: cls(nets[kind], (1, 28, 28), lam=0.01) for kind, cls in
            (("factorized", FactorizedCodec), ("hyperprior", HyperpriorCodec))}


@pytest.mark.parametrize("kind", KINDS)
def test_training_lowers_the_rate_distortion_loss(kind, nets, mnist):
    _, test = mnist
    with torch.random.fork_rng():
        torch.manual_seed(0)  # the same initialisation train_learned starts from
        untrained = build_learned(kind, 1, TINY["channels"], TINY["latent_channels"])
    with torch.no_grad():
        before = rate_distortion_loss(untrained(test, "round"), test, lam=0.01)
        after = rate_distortion_loss(nets[kind](test, "round"), test, lam=0.01)
    assert after < 0.8 * before


def test_a_small_lambda_warms_up_from_lambda_start_over_half_the_steps():
    lams = [lambda_schedule(step, 100, 1e-4, 1e-2) for step in range(100)]
    assert lams[0] == pytest.approx(1e-2) and lams[25] == pytest.approx(1e-3)
    assert all(a > b for a, b in zip(lams[:50], lams[1:51])) and lams[50:] == [1e-4] * 50
    assert {lambda_schedule(s, 100, 0.05, 1e-2) for s in range(100)} == {0.05}  # lambda above the start
    assert {lambda_schedule(s, 100, 1e-4, None) for s in range(100)} == {1e-4}  # warm-up off


def test_training_uses_the_warm_up_schedule(mnist, monkeypatch):
    seen = []
    loss = learned.rate_distortion_loss
    monkeypatch.setattr(learned, "rate_distortion_loss", lambda out, x, lam: seen.append(lam) or loss(out, x, lam))
    train_learned("factorized", mnist[0], lam=1e-4, steps=4, progress=False, **TINY)
    assert seen == pytest.approx([1e-2, 1e-3, 1e-4, 1e-4])
    seen.clear()
    train_learned("factorized", mnist[0], lam=1e-4, steps=2, progress=False, lam_start=None, **TINY)
    assert seen == [1e-4, 1e-4]


def _decoded_symbols(codec, c):
    """The symbols the shipped decoder reads from ``c``'s payload (what ``decompress`` synthesises)."""
    return codec.net.read_images(range_coder.decoder_from_trimmed(c.payload), c.count, codec.image_shape[1:])


@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_is_exact_in_latent_symbols(kind, shipped, mnist):
    codec, (_, test) = shipped[kind], mnist
    c = codec.compress(test)
    assert c.codec == kind and c.count == len(test) and c.params == b"" and isinstance(c.payload, bytes)
    sent, received = codec.net.latent_symbols(test), _decoded_symbols(codec, c)
    assert sent.keys() == received.keys()
    assert all(torch.equal(sent[k], received[k]) for k in sent)
    x_hat = codec.decompress_file(codec.frame(c))
    assert x_hat.shape == test.shape and x_hat.min() >= 0 and x_hat.max() <= 1
    with torch.no_grad():
        per_image = torch.cat([codec.net(image, "round")["x_hat"] for image in test.split(1)]).clamp(0, 1)
    assert torch.allclose(x_hat, per_image, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_real_bits_are_close_to_the_estimate(kind, shipped, mnist):
    codec, (_, test) = shipped[kind], mnist
    c = codec.compress(test)
    with torch.no_grad():
        estimated = torch.cat([codec.net(image, "round")["bits"] for image in test.split(1)]).double()
    assert torch.allclose(torch.from_numpy(c.estimated_bits), estimated, rtol=1e-4)
    # one range coder for the file: its flush and 32-bit words cost up to about 64 bits in all
    actual = 8.0 * len(c.payload)
    assert abs(actual - estimated.sum().item()) <= 0.05 * estimated.sum().item() + 64, (actual, estimated)
    # each image alone: a real file of its own, whose payload is again close to the estimate
    alone = [8.0 * len(codec.frame(codec.compress(image))) for image in test.split(1)]
    assert c.file_bits.tolist() == alone
    header = 8.0 * container.file_bytes(0, 0, 1)
    own = torch.tensor(alone, dtype=torch.float64) - header
    assert torch.all((own - estimated).abs() <= 0.05 * estimated + 64), (own, estimated)
    assert codec.actual_bits(c, codec.frame(c)) < own.mean().item() + header  # a shared file pays one flush


def test_colour_images_of_any_size_round_trip():
    torch.manual_seed(0)
    net = build_learned("hyperprior", 3, channels=8, latent_channels=4).eval()
    net.update_tables()
    codec = HyperpriorCodec(net, (3, 20, 22), lam=0.01)
    x = torch.rand(2, 3, 20, 22)
    c = codec.compress(x)
    assert codec.decompress_file(codec.frame(c)).shape == x.shape
    sent, received = net.latent_symbols(x), _decoded_symbols(codec, c)
    assert torch.equal(sent["y"], received["y"]) and torch.equal(sent["z"], received["z"])


def test_damaged_payloads_are_refused_with_one_line_errors():
    torch.manual_seed(0)
    net = build_learned("hyperprior", 3, channels=8, latent_channels=4).eval()
    net.update_tables()
    codec = HyperpriorCodec(net, (3, 20, 22), lam=0.01)
    x = torch.rand(2, 3, 20, 22)
    c = codec.compress(x)
    ref = codec.decompress(c.params, c.payload, c.count)
    with pytest.raises(LdcodecError, match="not the coding of what it decodes to"):
        codec.decompress(c.params, c.payload + b"\0", c.count)  # decodes to the same symbols: not canonical
    with pytest.raises(LdcodecError, match="carry no parameters"):
        codec.decompress(b"\1", c.payload, c.count)
    for bit in range(0, 8 * len(c.payload), max(1, len(c.payload) // 8)):
        data = bytearray(c.payload)
        data[bit // 8] ^= 1 << (bit % 8)
        try:  # a flipped bit is refused (one line) or decodes to other images, never silently to these
            assert not torch.equal(codec.decompress(c.params, bytes(data), c.count), ref)
        except LdcodecError as e:
            assert str(e) and "\n" not in str(e)


def test_gdn_closed_form_at_initialisation():
    x = torch.linspace(-3, 3, 12).reshape(1, 1, 3, 4)
    norm = torch.sqrt(1 + 1e-6 + 0.1 * x * x)
    assert torch.allclose(GDN(1)(x), x / norm, atol=1e-6)
    assert torch.allclose(GDN(1, inverse=True)(x), x * norm, atol=1e-6)


def test_unknown_kind():
    with pytest.raises(LdcodecError, match="choose one of factorized, hyperprior"):
        build_learned("vq-vae", 1)
    assert {kind: type(build_learned(kind, 1)).kind for kind in MODELS} == {k: k for k in KINDS}
