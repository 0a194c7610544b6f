import json

import pytest
import torch
from safetensors.torch import load_file

from ldcodec.checkpoint import find_checkpoint, load_model
from ldcodec.codecs.identity import lsgm_hash as codec_hash
from ldcodec.errors import LdcodecError
from ldcodec.train import train

from conftest import tiny_config

NORMAL = "configs/grid/mnist-mlp-ddpm-uncond-gauss.yaml"


def test_loss_decreases_on_real_mnist(tmp_path):
    cfg = tiny_config(NORMAL, "model.prior=normal", "train.steps=60", "train.lr=3e-3", "train.log_every=10")
    train(cfg, tmp_path, progress=False)
    losses = [json.loads(line)["loss"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 6 and losses[-1] < 0.7 * losses[0]


def test_checkpoint_rebuilds_identical_model(tmp_path):
    cfg = tiny_config(NORMAL, "model.prior=normal", "train.steps=3")
    train(cfg, tmp_path, progress=False)
    ckpt = find_checkpoint(tmp_path)
    m1, cfg1, _ = load_model(tmp_path, ema=False)
    m2, _, _ = load_model(ckpt, ema=False)
    assert cfg1 == cfg and codec_hash(m1) == codec_hash(m2)
    x = torch.rand(4, 1, 28, 28)
    assert torch.equal(m1.ae.decode(m1.ae.encode(x).mean), m2.ae.decode(m2.ae.encode(x).mean))
    saved = load_file(ckpt / "model.safetensors")
    assert all(torch.equal(saved[k], v) for k, v in m1.state_dict().items())


class Crash(Exception):
    pass


def crash_after_first_checkpoint(monkeypatch):
    """Make training die right after it writes its first checkpoint, as a killed job would."""
    import ldcodec.train as train_module

    real = train_module.save_checkpoint

    def save_then_crash(*args, **kwargs):
        real(*args, **kwargs)
        raise Crash

    monkeypatch.setattr(train_module, "save_checkpoint", save_then_crash)
    return lambda: monkeypatch.setattr(train_module, "save_checkpoint", real)


@pytest.mark.parametrize("cell, extra", [
    (NORMAL, ("model.prior=normal",)),
    ("configs/grid/mnist-mlp-sde-cond-gauss.yaml", ()),  # diffusion times, code noise, coding tables
    ("configs/grid/mnist-mlp-ddpm-uncond-delta.yaml", ("train.two_stage=true", "train.stage1_steps=2",
                                                      "diffusion.weighting=unweighted")),
])
def test_resume_equals_uninterrupted_run(tmp_path, monkeypatch, cell, extra):
    cfg = tiny_config(cell, "train.steps=6", "train.ckpt_every=3", *extra)
    train(cfg, tmp_path / "a", progress=False)
    restore = crash_after_first_checkpoint(monkeypatch)
    with pytest.raises(Crash):
        train(cfg, tmp_path / "b", progress=False)
    restore()
    assert (tmp_path / "b" / "latest").read_text().strip() == "ckpt-00000003"
    train(cfg, tmp_path / "b", resume=True, progress=False)
    a = load_file(find_checkpoint(tmp_path / "a") / "ema.safetensors")
    b = load_file(find_checkpoint(tmp_path / "b") / "ema.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    steps = [json.loads(line)["step"] for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 7))  # the crashed run's lines are not logged twice


def test_refuses_to_overwrite_and_checks_resume_config(tmp_path):
    cfg = tiny_config(NORMAL, "model.prior=normal", "train.steps=2")
    train(cfg, tmp_path, progress=False)
    with pytest.raises(LdcodecError, match="already holds a training run"):
        train(cfg, tmp_path, progress=False)
    cfg.model.hidden = 32
    with pytest.raises(LdcodecError, match="model.hidden"):
        train(cfg, tmp_path, resume=True, progress=False)


def test_nan_loss_stops_and_keeps_last_checkpoint(tmp_path, monkeypatch):
    from ldcodec.model import LatentCodec

    cfg = tiny_config(NORMAL, "model.prior=normal", "train.steps=8", "train.ckpt_every=2")
    real_forward, calls = LatentCodec.forward, []

    def forward_going_nan(self, *args, **kwargs):
        out = real_forward(self, *args, **kwargs)
        calls.append(1)
        if len(calls) == 5:
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(LatentCodec, "forward", forward_going_nan)
    with pytest.raises(LdcodecError, match="loss became nan at step 4.*ckpt-00000004"):
        train(cfg, tmp_path, progress=False)
    assert (tmp_path / "latest").read_text().strip() == "ckpt-00000004"
    assert not list(tmp_path.glob(".tmp*"))
    load_model(tmp_path)  # the kept checkpoint still loads


def test_unweighted_loss_needs_two_stage_training():
    with pytest.raises(LdcodecError, match="two_stage"):
        tiny_config(NORMAL, "diffusion.weighting=unweighted")


def test_damaged_checkpoint_gives_a_clear_error(tmp_path):
    cfg = tiny_config(NORMAL, "model.prior=normal", "train.steps=2")
    train(cfg, tmp_path, progress=False)
    (find_checkpoint(tmp_path) / "state.pt").write_bytes(b"garbage")
    cfg.train.steps = 4
    with pytest.raises(LdcodecError, match="state.pt is damaged"):
        train(cfg, tmp_path, resume=True, progress=False)
    (find_checkpoint(tmp_path) / "ema.safetensors").write_bytes(b"garbage")
    with pytest.raises(LdcodecError, match="cannot read weights"):
        load_model(tmp_path)
