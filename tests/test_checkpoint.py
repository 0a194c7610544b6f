"""Checkpoints are untrusted input: nothing in one runs code, and every malformed, truncated or
mismatched part gets a clear error naming what is wrong (``ldcodec.checkpoint``)."""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file

from ldcodec.checkpoint import FORMAT_VERSION, find_checkpoint, load_model, read_tensors
from ldcodec.errors import LdcodecError
from ldcodec.train import train

from conftest import tiny_config

CELL = "configs/grid/mnist-mlp-ddpm-uncond-gauss.yaml"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ckpt") / "run"
    train(tiny_config(CELL, "train.steps=2"), out, progress=False)
    return out


@pytest.fixture
def run(trained, tmp_path) -> Path:
    """A fresh copy of the trained run folder to damage."""
    return Path(shutil.copytree(trained, tmp_path / "run"))


class RunsCode:
    """Unpickling this calls ``os.system``: what a malicious file would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_code_running_pickle_in_state_pt_is_refused_without_running(run, tmp_path):
    marker = tmp_path / "pwned"
    (find_checkpoint(run) / "state.pt").write_bytes(pickle.dumps({"step": RunsCode(marker)}, protocol=2))
    pickle.loads(pickle.dumps(RunsCode(tmp_path / "control")))  # the payload does work when unpickled
    assert (tmp_path / "control").exists()
    with pytest.raises(LdcodecError, match="state.pt"):
        train(tiny_config(CELL, "train.steps=4"), run, resume=True, progress=False)
    assert not marker.exists()


def test_a_python_tag_in_config_yaml_is_refused_without_running(run, tmp_path):
    marker = tmp_path / "pwned"
    config = find_checkpoint(run) / "config.yaml"
    config.write_text(f"!!python/object/apply:os.system ['touch {marker}']\n" + config.read_text())
    with pytest.raises(LdcodecError, match="config.yaml is not valid YAML"):
        load_model(run)
    assert not marker.exists()


def test_weights_files_hold_no_code(run, tmp_path):
    """safetensors is a JSON header plus raw numbers: a pickle posing as one is refused."""
    marker = tmp_path / "pwned"
    (find_checkpoint(run) / "ema.safetensors").write_bytes(pickle.dumps(RunsCode(marker), protocol=2))
    with pytest.raises(LdcodecError, match="ema.safetensors: cannot read weights"):
        load_model(run)
    assert not marker.exists()


def _edit_config(run: Path, edit) -> None:
    config = find_checkpoint(run) / "config.yaml"
    d = yaml.safe_load(config.read_text())
    edit(d)
    config.write_text(yaml.safe_dump(d))


@pytest.mark.parametrize("edit, match", [
    (lambda d: d["model"].update(colour="red"), r"config.yaml: unknown key model.colour; valid keys: model.net"),
    (lambda d: d.update(extras={}), "unknown section 'extras'"),
    (lambda d: d["model"].update(hidden="wide"), "model.hidden must be a int"),
    (lambda d: d["diffusion"].update(num_steps=10**12), r"diffusion.num_steps = 1000000000000 is outside"),
    (lambda d: d["model"].update(hidden=65), r"tensor ae\..* is \[.*\] torch.float32, the model of its "
                                             r"config.yaml needs \[.*65.*\]"),
    (lambda d: d["model"].update(net="cnn"), "tensors missing.*unexpected.*another model"),
    (lambda d: d["cond"].update(enabled=True), "does not fit the model"),
])
def test_configs_that_do_not_match_are_named(run, edit, match):
    _edit_config(run, edit)
    with pytest.raises(LdcodecError, match=match):
        load_model(run)


@pytest.mark.parametrize("text, match", [("", "a mapping of sections, got NoneType"),
                                         ("- 1\n- 2\n", "got list"), ("model: [\n", "not valid YAML")])
def test_malformed_config_yaml(run, text, match):
    (find_checkpoint(run) / "config.yaml").write_text(text)
    with pytest.raises(LdcodecError, match=match):
        load_model(run)


def test_truncated_and_missing_weights(run):
    weights = find_checkpoint(run) / "ema.safetensors"
    data = weights.read_bytes()
    for cut in (4, 100, len(data) - 1):
        weights.write_bytes(data[:cut])
        with pytest.raises(LdcodecError, match="ema.safetensors: cannot read weights.*damaged"):
            load_model(run)
    weights.unlink()
    with pytest.raises(LdcodecError, match="has no ema.safetensors"):
        load_model(run)
    shutil.rmtree(find_checkpoint(run))
    with pytest.raises(LdcodecError, match="is not a checkpoint"):
        load_model(run)


def _rewrite_weights(run: Path, edit, metadata: dict | None = None) -> None:
    file = find_checkpoint(run) / "ema.safetensors"
    tensors = read_tensors(file)
    edit(tensors)
    save_file(tensors, file, metadata=metadata)


@pytest.mark.parametrize("edit, match", [
    (lambda t: t.update({next(iter(t)): torch.zeros(3, 3)}), r"is \[3, 3\] torch.float32, .* needs"),
    (lambda t: t.update({k: v.double() for k, v in list(t.items())[:1]}), "torch.float64, the model .* needs"),
    (lambda t: t.pop(next(iter(t))), "1 tensors missing"),
    (lambda t: t.update(extra=torch.zeros(1)), r"1 unexpected, e.g. \['extra'\]"),
    (lambda t: next(v for v in t.values() if v.is_floating_point()).view(-1).__setitem__(0, float("nan")),
     "NaN or infinite weights"),
])
def test_weights_that_do_not_match_are_named(run, edit, match):
    _rewrite_weights(run, edit, {"ldcodec_format_version": str(FORMAT_VERSION)})
    with pytest.raises(LdcodecError, match=match):
        load_model(run)


def test_format_version(run):
    _rewrite_weights(run, lambda t: None, metadata=None)  # files written before the version existed
    load_model(run)
    _rewrite_weights(run, lambda t: None, {"ldcodec_format_version": str(FORMAT_VERSION + 1)})
    with pytest.raises(LdcodecError, match=f"checkpoint format '{FORMAT_VERSION + 1}'; this ldcodec reads "
                                           f"format {FORMAT_VERSION}"):
        load_model(run)


def test_an_intact_checkpoint_still_loads(run):
    model, cfg, ckpt = load_model(run)
    assert ckpt == find_checkpoint(run) and not model.training
