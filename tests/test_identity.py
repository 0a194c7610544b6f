"""Model identity (ldcodec.codecs.identity) and the portable config: ids of existing models must
never change (a stream names its model by them)."""

from pathlib import Path

import pytest

from ldcodec.checkpoint import load_model
from ldcodec.codecs import container
from ldcodec.codecs.identity import lsgm_hash, model_digest, model_hash, model_id
from ldcodec.config import Config, portable_config

GOLDEN = Path(__file__).parent / "golden"


def test_portable_config_drops_the_data_path_only():
    cfg = Config()
    cfg.data.root = "/somewhere/data"
    d = portable_config(cfg)
    assert "root" not in d["data"] and cfg.data.root == "/somewhere/data"
    full = cfg.to_dict()
    del full["data"]["root"]
    assert d["data"] == full["data"] and d.keys() == full.keys()
    assert all(d[s].items() <= full[s].items() for s in d)  # at most keys at their neutral defaults left out
    assert portable_config(cfg.to_dict()) == d  # a dict works too, and is not modified
    assert portable_config({"train": {"steps": 1}}) == {"train": {"steps": 1}}


def test_model_id_of_a_committed_model_is_its_streams():
    """The committed mode C model's id is the one its committed stream carries."""
    model = load_model(GOLDEN / "tiny-c", ema=False)[0]
    stream_id = container.read((GOLDEN / "tiny-c.ldc").read_bytes())[1]
    assert model_id(model) == stream_id == model_digest(model)[:container.MODEL_ID_BYTES]
    assert lsgm_hash(model) == model_digest(model)
    assert model_digest(model) == model_hash(model.state_dict(), portable_config(model.cfg))


def test_model_id_does_not_see_the_data_path_but_sees_extras_and_dropped_keys():
    model = load_model(GOLDEN / "tiny-c", ema=False)[0]
    base = model_digest(model)
    model.cfg.data.root = "/elsewhere"
    assert model_digest(model) == base
    assert model_digest(model, drop_keys=("codec.simulator", "nosection.x")) == base  # absent keys
    assert model_digest(model, drop_keys=("train.seed",)) != base
    extra = model_digest(model, {"coding_tables.t": model.state_dict()[next(iter(model.state_dict()))]})
    assert extra != base
    with pytest.raises(ValueError):
        model_digest(model, {next(iter(model.state_dict())): 0})
