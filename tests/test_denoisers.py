"""Latent denoisers: shapes on every latent size, conditioning, null condition and dropout."""

import math

import pytest
import torch

from ldcodec.diffusion.processes import make_process
from ldcodec.errors import LdcodecError
from ldcodec.diffusion.gaussian import GaussianDenoiser
from ldcodec.nets.denoisers import MLPDenoiser, UNetDenoiser
from ldcodec.nets.embeddings import TimeEmbedding, sinusoidal_embedding


def perturb_output(net):
    """Zero-initialised output layers make every output 0; randomise them to test the wiring."""
    torch.nn.init.normal_(net.out[-1].weight, std=0.5)
    torch.nn.init.normal_(net.out[-1].bias, std=0.5)
    return net


def check_conditioning(net, z, t, cond):
    """Dropped rows equal the unconditional output, kept rows the conditional one; no batch coupling."""
    uncond, full = net(z, t), net(z, t, cond)
    assert uncond.shape == z.shape and full.shape == z.shape
    assert not torch.allclose(uncond, full)
    drop = torch.tensor([True, False] * (z.shape[0] // 2))
    mixed = net(z, t, cond, drop)
    torch.testing.assert_close(mixed[drop], uncond[drop])
    torch.testing.assert_close(mixed[~drop], full[~drop])
    torch.testing.assert_close(net(z[:1], t[:1], cond[:1]), full[:1], atol=1e-4, rtol=1e-4)  # conv kernels vary with B


def test_sinusoidal_embedding():
    emb = sinusoidal_embedding(torch.tensor([0.0, 0.5, 1.0]), 9)
    assert emb.shape == (3, 9)
    torch.testing.assert_close(emb[0], torch.tensor([1.0] * 4 + [0.0] * 5))
    # The highest frequency at t = 0.5 is cos(500), sin(500) (time scaled by 1000).
    torch.testing.assert_close(emb[1, [0, 4]], torch.tensor([math.cos(500.0), math.sin(500.0)]))
    assert TimeEmbedding(16)(torch.rand(5)).shape == (5, 16)


def test_fresh_denoisers_predict_zero():
    z, t = torch.randn(4, 6), torch.rand(4)
    assert torch.equal(MLPDenoiser(6, hidden=16)(z, t), torch.zeros_like(z))
    zs = torch.randn(4, 2, 7, 7)
    assert torch.equal(UNetDenoiser(2, base=8)(zs, t), torch.zeros_like(zs))


def test_mlp_denoiser_shapes_and_conditioning():
    torch.manual_seed(0)
    net = perturb_output(MLPDenoiser(6, hidden=16, depth=2, cond_dim=3))
    z, t, cond = torch.randn(4, 6), torch.rand(4), torch.randn(4, 3)
    check_conditioning(net, z, t, cond)
    net(z, t, cond).square().sum().backward()
    assert net.null.value.grad is None or net.null.value.grad.abs().sum() == 0  # null unused when not dropped
    assert all(p.grad is not None for name, p in net.named_parameters() if not name.startswith("null"))


@pytest.mark.parametrize("size", [4, 7, 8, 14, 16])
@pytest.mark.parametrize("mults", [(1, 2), (1, 2, 2)], ids=["2-levels", "3-levels"])
def test_unet_denoiser_on_every_latent_size(size, mults):
    torch.manual_seed(0)
    net = perturb_output(UNetDenoiser(3, base=8, mults=mults, cond_channels=2))
    z, t = torch.randn(2, 3, size, size), torch.rand(2)
    # Condition maps at another resolution (e.g. a quantised code y) are resized to (h, w).
    for cond_size in (size, 2 * size, 3):
        cond = torch.randn(2, 2, cond_size, cond_size)
        check_conditioning(net, z, t, cond)
    out = net(z, t)
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    assert net.conv_in.weight.grad.abs().sum() > 0


def test_unet_on_a_rectangular_odd_latent():
    net = perturb_output(UNetDenoiser(1, base=8, mults=(1, 2, 2)))
    z = torch.randn(3, 1, 7, 14)
    assert net(z, torch.rand(3)).shape == z.shape


def test_conditioning_errors():
    z, t = torch.randn(2, 4), torch.rand(2)
    with pytest.raises(LdcodecError, match="unconditional"):
        MLPDenoiser(4, hidden=8)(z, t, torch.randn(2, 3))
    with pytest.raises(LdcodecError, match="expects 3 condition channels"):
        MLPDenoiser(4, hidden=8, cond_dim=3)(z, t, torch.randn(2, 5))
    with pytest.raises(LdcodecError, match="expects 2 condition channels"):
        UNetDenoiser(1, base=8, cond_channels=2)(torch.randn(2, 1, 4, 4), t, torch.randn(2, 1, 4, 4))
    with pytest.raises(LdcodecError, match="mults"):
        UNetDenoiser(1, base=8, mults=())


def test_gaussian_denoiser_is_the_closed_form():
    process = make_process("ve")
    m, s = torch.tensor([[0.5, -1.0]], dtype=torch.float64), torch.tensor([[2.0, 0.3]], dtype=torch.float64)
    net = GaussianDenoiser(process, m, s)
    z, t = torch.randn(3, 1, 2, dtype=torch.float64), torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    alpha, sigma = (v[:, None, None] for v in process.alpha_sigma(t))
    torch.testing.assert_close(net(z, t), sigma * (z - alpha * m) / (alpha**2 * s**2 + sigma**2))
    with pytest.raises(LdcodecError):
        net(z, t, torch.randn(3, 1))


def test_nets_do_not_import_diffusion():
    """Networks are networks: the analytic Gaussian denoiser lives in diffusion/, not nets/."""
    import subprocess
    import sys

    code = "import sys, ldcodec.nets.denoisers; print(any(m.startswith('ldcodec.diffusion') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
