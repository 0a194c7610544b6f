"""The issue-10 frontier configs load, build at full size and give a finite loss on real digits."""

import pytest
import torch

from ldcodec.config import load_config
from ldcodec.data import load_split, to_tensor
from ldcodec.model import LatentCodec

from conftest import REPO

FRONTIER = sorted((REPO / "configs" / "frontier").glob("*.yaml"))


def test_there_is_a_mode_u_cell_and_a_mode_c_ladder():
    names = {p.stem for p in FRONTIER}
    assert "mnist-u" in names
    lams = sorted(load_config(p).cond.lam for p in FRONTIER if load_config(p).cond.enabled)
    assert len(lams) >= 3 and len(set(lams)) == len(lams)


@pytest.mark.parametrize("path", FRONTIER, ids=[p.stem for p in FRONTIER])
def test_config_builds_and_its_loss_is_finite(path):
    cfg = load_config(path)
    assert cfg.data.dataset == "mnist" and cfg.model.prior == "diffusion"
    torch.manual_seed(0)
    model = LatentCodec(cfg)
    images, _ = load_split("mnist", "test", None, limit=4)
    terms = model(to_tensor(images), generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(terms["loss"]) and terms["mse"].shape == (4,)
    assert (terms["rate_bits"] > 0).all() == cfg.cond.enabled
