"""Ballé factorised-prior and hyperprior baselines: training works, real bytes round-trip exactly."""

import pytest
import torch

from ldcodec.baselines import learned
from ldcodec.baselines.learned import GDN, build_learned, lambda_schedule, rate_distortion_loss, train_learned
from ldcodec.data import load_split, to_tensor
from ldcodec.errors import LdcodecError

KINDS = ("factorized", "hyperprior")
TINY = {"channels": 8, "latent_channels": 4, "batch_size": 8}


@pytest.fixture(scope="module")
def mnist():
    return to_tensor(load_split("mnist", "train", limit=512)[0]), to_tensor(load_split("mnist", "test", limit=6)[0])


@pytest.fixture(scope="module")
def codecs(mnist):
    train, _ = mnist
    return {kind: train_learned(kind, train, lam=0.01, steps=40, progress=False, **TINY) for kind in KINDS}


@pytest.mark.parametrize("kind", KINDS)
def test_training_lowers_the_rate_distortion_loss(kind, codecs, mnist):
    _, test = mnist
    with torch.random.fork_rng():
        torch.manual_seed(0)  # the same initialisation train_learned starts from
        untrained = build_learned(kind, 1, TINY["channels"], TINY["latent_channels"])
    with torch.no_grad():
        before = rate_distortion_loss(untrained(test, "round"), test, lam=0.01)
        after = rate_distortion_loss(codecs[kind](test, "round"), test, lam=0.01)
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


@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_is_exact_in_latent_symbols(kind, codecs, mnist):
    codec, (_, test) = codecs[kind], mnist
    streams = codec.compress(test)
    assert len(streams) == len(test) and all(isinstance(s, bytes) for s in streams)
    for image, data in zip(test.split(1), streams):
        sent, received = codec.latent_symbols(image), codec.decode_symbols(data, (28, 28))
        assert sent.keys() == received.keys()
        assert all(torch.equal(sent[k], received[k]) for k in sent)
    x_hat = codec.decompress(streams, (28, 28))
    assert x_hat.shape == test.shape and x_hat.min() >= 0 and x_hat.max() <= 1
    per_image = torch.cat([codec(image, "round")["x_hat"] for image in test.split(1)]).clamp(0, 1)
    assert torch.allclose(x_hat, per_image, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_real_bits_are_close_to_the_estimate(kind, codecs, mnist):
    codec, (_, test) = codecs[kind], mnist
    actual = torch.tensor([8.0 * len(s) for s in codec.compress(test)])
    with torch.no_grad():
        estimated = torch.cat([codec(image, "round")["bits"] for image in test.split(1)])
    # the range coder's flush and 32-bit words cost up to about 64 bits per stream
    assert torch.all((actual - estimated).abs() <= 0.05 * estimated + 64), (actual, estimated)


def test_colour_images_of_any_size_round_trip():
    torch.manual_seed(0)
    codec = build_learned("hyperprior", 3, channels=8, latent_channels=4).eval()
    codec.update_tables()
    x = torch.rand(2, 3, 20, 22)
    streams = codec.compress(x)
    assert codec.decompress(streams, (20, 22)).shape == x.shape
    for image, data in zip(x.split(1), streams):
        assert torch.equal(codec.latent_symbols(image)["y"], codec.decode_symbols(data, (20, 22))["y"])


def test_gdn_closed_form_at_initialisation():
    x = torch.linspace(-3, 3, 12).reshape(1, 1, 3, 4)
    norm = torch.sqrt(1 + 1e-6 + 0.1 * x * x)
    assert torch.allclose(GDN(1)(x), x / norm, atol=1e-6)
    assert torch.allclose(GDN(1, inverse=True)(x), x * norm, atol=1e-6)


def test_unknown_kind():
    with pytest.raises(LdcodecError, match="choose one of"):
        build_learned("vq-vae", 1)
