"""Shared fixtures: real data locations and tiny configs for every grid cell."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from ldcodec.config import load_config

# Tiny models gain nothing from intra-op threads, and OpenMP spin-waiting on a busy 2-core
# machine slows them down by orders of magnitude.
torch.set_num_threads(1)

# Mode U coding tables of the tiny test models: fewer training latents than a real run (the
# tables' statistics need no precision here, the round trips only their determinism).
import ldcodec.codecs.diffc as _diffc  # noqa: E402

_diffc.TABLE_LATENTS = 128

REPO = Path(__file__).resolve().parents[1]
GRID = sorted((REPO / "configs" / "grid").glob("*.yaml"))

# Sizes small enough that a few steps of any cell run in about a second on 2 CPU cores.
TINY = ["model.hidden=64", "model.depth=1", "model.channels=8", "model.latent_dim=8",
        "diffusion.hidden=64", "diffusion.depth=2", "diffusion.unet_channels=8", "diffusion.num_steps=100",
        "cond.code_dim=4", "cond.code_channels=2", "train.batch_size=16", "train.warmup=2",
        "train.log_every=1", "train.ckpt_every=1000", "train.steps=10"]


def shared_data_root() -> Path | None:
    root = Path(os.environ.get("LDCODEC_TEST_DATA", REPO.parent / "shared" / "data"))
    return root if (root / "cifar10").is_dir() else None


@pytest.fixture
def data_root() -> Path:
    """The shared real datasets (MNIST and CIFAR-10 shards); tests needing CIFAR-10 skip without them."""
    root = shared_data_root()
    if root is None:
        pytest.skip("shared CIFAR-10 shards not found (set LDCODEC_TEST_DATA)")
    return root


def tiny_config(path: str | Path = GRID[0], *extra: str):
    """A grid cell's config at test size; CIFAR-10 cells read the shared shards."""
    cfg = load_config(path, TINY + list(extra))
    if cfg.data.dataset == "cifar10":
        root = shared_data_root()
        if root is None:
            pytest.skip("shared CIFAR-10 shards not found")
        cfg.data.root = str(root)
    return cfg


# Tiny trained grid cells shared by the codec tests (trained once per session, read-only):
# name -> (grid cell, overrides). The mode C codes are large enough for >= 100 bits per image.
CELLS = {
    "mlp-U": ("mnist-mlp-ddpm-uncond-gauss", ()),
    "cnn-U": ("mnist-cnn-sde-uncond-delta", ()),
    "mlp-C": ("mnist-mlp-sde-cond-delta", ("cond.code_dim=64",)),
    "cnn-C": ("mnist-cnn-ddpm-cond-gauss", ("cond.code_channels=4",)),
}
CELL_TRAIN_STEPS = 20


@pytest.fixture(scope="session")
def runs(tmp_path_factory) -> dict[str, Path]:
    """The four tiny trained runs ``CELLS``, as run folders."""
    from ldcodec.train import train

    root = tmp_path_factory.mktemp("codec-runs")
    out = {}
    for name, (cell, extra) in CELLS.items():
        out[name] = root / name
        train(tiny_config(REPO / "configs" / "grid" / f"{cell}.yaml", f"train.steps={CELL_TRAIN_STEPS}", *extra),
              out[name], progress=False)
    return out
