import math

import pytest
import torch

from ldcodec.autoencoder import Autoencoder
from ldcodec.config import ModelConfig


@pytest.mark.parametrize("net", ["mlp", "cnn"])
@pytest.mark.parametrize("latent", ["gauss", "delta"])
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_shapes(net, latent, shape):
    cfg = ModelConfig(net=net, latent=latent, hidden=32, depth=1, channels=8, latent_dim=6, latent_channels=3)
    ae = Autoencoder(cfg, shape)
    c, h, w = shape
    expect = (6,) if net == "mlp" else (3, h // 4, w // 4)
    assert ae.latent_shape == expect
    x = torch.rand(5, c, h, w)
    post = ae.encode(x)
    z = post.sample(torch.Generator().manual_seed(0))
    assert z.shape == (5, *expect)
    xm = ae.decode(z)
    assert xm.shape == x.shape and 0 <= xm.min() and xm.max() <= 1
    assert ae.recon_nll(x, xm).shape == (5,)
    if latent == "delta":
        assert post.logvar is None and torch.equal(z, post.mean)
        rms = z.pow(2).flatten(1).mean(1).sqrt()
        torch.testing.assert_close(rms, torch.ones(5), atol=1e-3, rtol=0)  # pinned scale
        assert torch.equal(post.entropy(), torch.zeros(5))
    else:
        assert not torch.equal(z, post.mean)


def test_gaussian_entropy_and_nll_closed_forms():
    cfg = ModelConfig(net="mlp", latent="gauss", hidden=16, depth=1, latent_dim=4, x_sigma=0.5)
    ae = Autoencoder(cfg, (1, 28, 28))
    post = ae.encode(torch.rand(3, 1, 28, 28))
    dist = torch.distributions.Normal(post.mean, (0.5 * post.logvar).exp())
    torch.testing.assert_close(post.entropy(), dist.entropy().sum(1))
    x, xm = torch.rand(2, 1, 28, 28), torch.rand(2, 1, 28, 28)
    ref = -torch.distributions.Normal(xm, 0.5).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(ae.recon_nll(x, xm), ref)
    assert math.isclose(ae.num_pixels, 784)
