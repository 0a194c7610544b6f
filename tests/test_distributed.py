"""Data-parallel training: two gloo processes against one, and resuming across process counts."""

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

from ldcodec.config import Config
from ldcodec.errors import LdcodecError
from ldcodec.train import Trainer, train

from conftest import REPO, tiny_config

DELTA = "configs/grid/mnist-mlp-ddpm-uncond-delta.yaml"
NOISELESS = ("model.prior=normal", "train.ckpt_every=1")  # a delta latent with N(0, I): the step draws no noise


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, runs: list, results: str) -> None:
    """Train each ``(config dict, out, resume)`` of ``runs`` as process ``rank``; save its final weights."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from ldcodec import distributed

    for cfg, out, resume in runs:
        trainer = Trainer(Config.from_dict(cfg), out, resume=resume, progress=False)
        trainer.run()
        torch.save(trainer.model.state_dict(), f"{results}/{os.path.basename(out)}-rank{rank}.pt")
    distributed.leave()


def _close(a: dict, b: dict) -> None:
    """Equal within float rounding: summing 2 x 8 gradients differs from 16 in the last bits, and Adam's
    first steps (``lr g / (|g| + eps)``) magnify that in near-zero gradients to ~1e-6 after 3 steps;
    training on other images than the combined batch moves weights by ~lr = 1e-3."""
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=2e-5, msg=k)


def _model(run, step: int) -> dict:
    return load_file(run / f"ckpt-{step:08d}" / "model.safetensors")


def test_two_processes_train_like_one_and_resume_across_counts(tmp_path):
    noiseless = tiny_config(DELTA, *NOISELESS, "train.steps=3")
    stages = tiny_config(DELTA, "train.two_stage=true", "train.stage1_steps=2", "diffusion.weighting=unweighted",
                         "train.ckpt_every=2", "train.steps=4")
    train(noiseless, tmp_path / "one", progress=False)  # reference: one process, checkpoints at 1, 2, 3
    noiseless.train.steps = 1
    train(noiseless, tmp_path / "half", progress=False)  # one process to step 1; two processes take it on
    noiseless.train.steps = 2
    noisy = tiny_config("configs/grid/mnist-mlp-sde-cond-gauss.yaml", "train.steps=4", "train.ckpt_every=2")
    noisy_half = tiny_config("configs/grid/mnist-mlp-sde-cond-gauss.yaml", "train.steps=2", "train.ckpt_every=2")
    runs = [(noiseless.to_dict(), str(tmp_path / "two"), False), (noiseless.to_dict(), str(tmp_path / "half"), True),
            (stages.to_dict(), str(tmp_path / "stages"), False), (noisy.to_dict(), str(tmp_path / "noisy"), False),
            (noisy_half.to_dict(), str(tmp_path / "resumed"), False), (noisy.to_dict(), str(tmp_path / "resumed"), True)]
    mp.spawn(_worker, args=(2, _free_port(), runs, str(tmp_path)), nprocs=2)
    for name in ("model.safetensors", "ema.safetensors"):  # 2 processes resumed by 2: bit for bit
        a, b = (load_file(tmp_path / run / "ckpt-00000004" / name) for run in ("noisy", "resumed"))
        assert all(torch.equal(a[k], b[k]) for k in a), name

    for run in ("two", "half", "stages", "noisy"):  # DDP keeps every process's weights identical, bit for bit
        r0, r1 = (torch.load(tmp_path / f"{run}-rank{r}.pt") for r in (0, 1))
        assert all(torch.equal(r0[k], r1[k]) for k in r0), run
    _close(_model(tmp_path / "two", 2), _model(tmp_path / "one", 2))  # 2 x 8 images == 1 x 16
    _close(_model(tmp_path / "half", 2), _model(tmp_path / "one", 2))  # resumed: 1 -> 2 processes
    assert not torch.allclose(_model(tmp_path / "two", 2)["ae.encoder.net.0.weight"],
                              _model(tmp_path / "one", 1)["ae.encoder.net.0.weight"], atol=1e-4)  # a real step

    noiseless.train.steps = 3
    train(noiseless, tmp_path / "two", resume=True, progress=False)  # 2 -> 1 process
    _close(_model(tmp_path / "two", 3), _model(tmp_path / "one", 3))
    launches = [json.loads(line) for line in (tmp_path / "two" / "launches.jsonl").read_text().splitlines()]
    assert [(x["start_step"], x["processes"], x["batch_per_process"], x["effective_batch"]) for x in launches] == \
        [(0, 2, 8, 16), (2, 1, 16, 16)]

    # two-stage training: the frozen autoencoder of stage 2 gets no gradient under DDP either
    a, b = _model(tmp_path / "stages", 2), _model(tmp_path / "stages", 4)
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith("ae."))
    assert not all(torch.equal(a[k], b[k]) for k in a if k.startswith("prior."))


def test_torchrun_runs_the_command_line(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "ldcodec",
           "train", DELTA, "--out", str(out), "--steps", "3", "--set", "model.hidden=32", "--set",
           "train.batch_size=6", "--set", "train.warmup=1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "2 process(es) x 3 images = effective batch 6, learning rate 0.001" in done.stderr
    assert done.stdout.count("trained mnist-mlp-ddpm-uncond-delta to step 3") == 1  # rank 0 alone reports
    assert (out / "latest").read_text().strip() == "ckpt-00000003"
    assert json.loads((out / "launches.jsonl").read_text())["processes"] == 2



def test_batch_must_split_over_the_processes(tmp_path, monkeypatch):
    for k, v in {"WORLD_SIZE": "4", "RANK": "0", "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(LdcodecError, match="train.batch_size=6 .the effective batch. does not split into 4"):
        train(tiny_config(DELTA, "train.batch_size=6"), tmp_path, progress=False)  # before any rendezvous
