import pytest

from ldcodec.config import Config, load_config
from ldcodec.errors import LdcodecError

from conftest import GRID, REPO


def test_grid_has_all_32_cells_with_matching_names():
    assert len(GRID) == 32
    for path in GRID:
        assert load_config(path).name == path.stem


def test_override_types_and_roundtrip():
    cfg = load_config(GRID[0], ["train.lr=3e-4", "model.latent=delta", "cond.enabled=true"])
    assert cfg.train.lr == 3e-4 and cfg.model.latent == "delta" and cfg.cond.enabled is True
    assert Config.from_dict(cfg.to_dict()) == cfg


def test_keys_added_later_stay_out_of_the_dict_at_their_default():
    # cond.density came after models were trained: at its default it must not change their
    # saved configs (nor the stream hashes over them)
    cfg = load_config(GRID[0])
    assert "density" not in cfg.to_dict()["cond"]
    assert Config.from_dict(cfg.to_dict()).cond.density == "factorized"
    ar = load_config(GRID[0], ["cond.density=autoregressive"])
    assert ar.to_dict()["cond"]["density"] == "autoregressive" and Config.from_dict(ar.to_dict()) == ar
    with pytest.raises(LdcodecError, match="factorized, autoregressive"):
        load_config(GRID[0], ["cond.density=hyper"])


@pytest.mark.parametrize("override, message", [
    ("train.lrr=1", "valid keys: train.steps"),
    ("nope.x=1", "valid sections: data"),
    ("model.net=foo", "choose one of: mlp, cnn"),
    ("train.steps=abc", "must be a int"),
    ("train.steps", "section.key=value"),
])
def test_bad_overrides_list_valid_choices(override, message):
    with pytest.raises(LdcodecError, match=message):
        load_config(GRID[0], [override])


def test_bad_files(tmp_path):
    with pytest.raises(LdcodecError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [1, 2\n")
    with pytest.raises(LdcodecError, match="not valid YAML"):
        load_config(bad)
    loop = tmp_path / "loop.yaml"
    loop.write_text("base: loop.yaml\n")
    with pytest.raises(LdcodecError, match="loop"):
        load_config(loop)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text(f"base: {REPO}/configs/base.yaml\nmodel: {{widht: 3}}\n")
    with pytest.raises(LdcodecError, match="unknown key model.widht"):
        load_config(unknown)
