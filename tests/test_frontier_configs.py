"""The frontier configs (MNIST, issue 10; CIFAR-10, issue 24) load, build at full size and give a
finite loss on real images of their dataset."""

import pytest
import torch

from ldcodec.config import load_config
from ldcodec.data import load_split, to_tensor
from ldcodec.model import LSGMModel

from conftest import REPO, shared_data_root

FRONTIER = sorted((REPO / "configs" / "frontier").glob("*.yaml"))


def test_there_is_a_mode_u_cell_and_a_mode_c_ladder():
    names = {p.stem for p in FRONTIER}
    assert "mnist-u" in names
    rungs = [(c.cond.lam, c.cond.density) for c in map(load_config, FRONTIER)
             if c.cond.enabled and c.data.dataset == "mnist"]  # the MNIST ladder (CIFAR-10 has one rung)
    assert len({lam for lam, _ in rungs}) >= 3 and len(set(rungs)) == len(rungs)
    assert {density for _, density in rungs} == {"factorized", "autoregressive"}


@pytest.mark.parametrize("path", FRONTIER, ids=[p.stem for p in FRONTIER])
def test_config_builds_and_its_loss_is_finite(path):
    cfg = load_config(path)
    assert cfg.model.prior == "diffusion"
    root = None if cfg.data.dataset == "mnist" else shared_data_root()
    if cfg.data.dataset != "mnist" and root is None:
        pytest.skip("shared CIFAR-10 shards not found")
    torch.manual_seed(0)
    model = LSGMModel(cfg)
    images, _ = load_split(cfg.data.dataset, "test", root, limit=4)
    terms = model(to_tensor(images), generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(terms["loss"]) and terms["mse"].shape == (4,)
    assert (terms["rate_bits"] > 0).all() == cfg.cond.enabled


def test_mode_c_with_the_autoregressive_code_density_trains_and_codes():
    from test_grid import check_codec_round_trip

    from conftest import tiny_config

    cfg = tiny_config(REPO / "configs" / "grid" / "mnist-mlp-ddpm-cond-gauss.yaml", "cond.density=autoregressive")
    torch.manual_seed(0)
    model = LSGMModel(cfg)
    assert type(model.code_density).__name__ == "AutoregressiveDensity"
    images, _ = load_split("mnist", "train", None, limit=16)
    x = to_tensor(images)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    for step in range(3):
        loss = model(x, generator=torch.Generator().manual_seed(step))["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    grads = [p.grad for p in model.code_density.parameters()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    check_codec_round_trip(model.eval(), x[:2])


def test_channel_mult_widens_the_cnn_at_low_resolution_and_keeps_old_ids():
    """``model.channel_mult`` 2 gives 32, 64, 128 channels at 32, 16, 8 pixels (cifar10-u); at its
    neutral value 1 the key is left out of the portable config, so models trained before it existed
    keep their ids."""
    from ldcodec.config import portable_config

    cfg = load_config(REPO / "configs" / "frontier" / "cifar10-u.yaml")
    widths = sorted({m.out_channels for m in LSGMModel(cfg).ae.encoder.modules() if isinstance(m, torch.nn.Conv2d)})
    assert widths == [16, 32, 64, 128]  # 32 -> 64 -> 128 channels, and 2 x 8 latent channels out
    assert "channel_mult" in portable_config(cfg)["model"]
    plain = load_config(None)
    assert "channel_mult" not in portable_config(plain)["model"]
