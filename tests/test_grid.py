"""Every grid cell builds, trains with its own prior, lowers its loss on real images, and
compresses and decompresses them through a real bitstream."""

import math

import numpy as np
import pytest
import torch

from ldcodec.codecs import model_codec
from ldcodec.data import Batches, load_split
from ldcodec.model import LSGMModel

from conftest import GRID, tiny_config


def fixed_loss(model: LSGMModel, x: torch.Tensor) -> float:
    """The loss on a fixed batch, averaged over fixed draws of the Monte-Carlo noise."""
    return sum(model(x, generator=torch.Generator().manual_seed(s))["loss"].item() for s in range(4)) / 4


@pytest.mark.parametrize("path", GRID, ids=[p.stem for p in GRID])
def test_cell_trains_and_loss_decreases(path):
    cfg = tiny_config(path)
    torch.manual_seed(0)
    model = LSGMModel(cfg)
    assert (model.prior is not None) and (hasattr(model, "code_density") == cfg.cond.enabled)
    images, _ = load_split(cfg.data.dataset, "train", cfg.data.root or None, limit=256)
    batches = Batches(images, 16, seed=0, flip=cfg.data.dataset == "cifar10")
    x = batches(10_000)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    before = fixed_loss(model, x)
    for step in range(12):
        loss = model(batches(step), generator=torch.Generator().manual_seed(step))["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = fixed_loss(model, x)
    assert after < before
    terms = model(x, generator=torch.Generator().manual_seed(0))
    for k in ("rec", "entropy", "ce", "rate_bits", "neg_elbo", "bpd"):
        assert terms[k].shape == (16,) and torch.isfinite(terms[k]).all()
    assert (terms["rate_bits"] > 0).all() == cfg.cond.enabled
    nats = terms["rec"] - terms["entropy"] + terms["ce"] + terms["rate_bits"] * math.log(2)
    torch.testing.assert_close(terms["neg_elbo"], nats)
    torch.testing.assert_close(terms["bpd"], nats / (model.num_dims * math.log(2)) + math.log2(255))
    check_codec_round_trip(model.eval(), x[:2])


def check_codec_round_trip(model: LSGMModel, x: torch.Tensor) -> None:
    """The cell's model writes a real file and reads it back, with its mode's registered codec."""
    model.update_tables()
    codec = model_codec(model, None, data_root=model.cfg.data.root or None)
    c = codec.compress(x, codec.default_rates()[0])
    data = codec.frame(c)
    assert codec.mode == ("C" if model.cfg.cond.enabled else "U")
    assert np.allclose(codec.actual_bits(c, data) * len(x), 8 * len(data)) and (c.estimated_bits >= 0).all()
    for decode in codec.decodes:
        y = codec.decompress_file(data, decode=decode)
        assert y.shape == x.shape and torch.equal(y, codec.decompress_file(data, decode=decode))
