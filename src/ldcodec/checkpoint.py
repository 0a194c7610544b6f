"""Checkpoints: a folder per step, written atomically, with the config that rebuilds the model.

Layout of a run folder ``OUT``::

    OUT/config.yaml                 resolved config of the run
    OUT/latest                      name of the newest complete checkpoint folder
    OUT/ckpt-00001000/model.safetensors   raw weights
    OUT/ckpt-00001000/ema.safetensors     EMA weights (used for sampling and compression)
    OUT/ckpt-00001000/state.pt            optimiser, schedule, step
    OUT/ckpt-00001000/config.yaml         the same config, so a folder is self-contained

A checkpoint is first written to a temporary folder, then renamed into place, then ``latest``
is replaced atomically: a crash never leaves a half-written checkpoint that ``latest`` names.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .config import Config, save_config
from .errors import LdcodecError
from .files import write_text_atomic

KEEP = 3  # checkpoints kept per run


def save_checkpoint(out: Path, step: int, cfg: Config, model: torch.nn.Module, ema: dict[str, torch.Tensor],
                    state: dict) -> Path:
    """Write ``OUT/ckpt-{step}`` atomically, point ``latest`` at it, keep the newest ``KEEP``."""
    out.mkdir(parents=True, exist_ok=True)
    final = out / f"ckpt-{step:08d}"
    tmp = out / f".tmp-ckpt-{step:08d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, tmp / "model.safetensors")
    save_file({k: v.detach().cpu().contiguous() for k, v in ema.items()}, tmp / "ema.safetensors")
    torch.save(state, tmp / "state.pt")
    save_config(cfg, tmp / "config.yaml")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    write_text_atomic(out / "latest", final.name + "\n")
    for old in sorted(out.glob("ckpt-*"))[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def find_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint folder from a run folder (via ``latest``) or a checkpoint folder itself."""
    p = Path(path)
    if (p / "latest").is_file():
        p = p / (p / "latest").read_text().strip()
    if not (p / "model.safetensors").is_file() or not (p / "config.yaml").is_file():
        raise LdcodecError(f"{path} is not a checkpoint: expected a run folder made by `ldcodec train` "
                           f"or its ckpt-NNNNNNNN folder (with model.safetensors and config.yaml)")
    return p


def load_config_of(ckpt: Path) -> Config:
    try:
        return Config.from_dict(yaml.safe_load((ckpt / "config.yaml").read_text()), source=str(ckpt / "config.yaml"))
    except yaml.YAMLError as e:
        raise LdcodecError(f"{ckpt}/config.yaml is not valid YAML: {e}") from None


def load_weights(model: torch.nn.Module, file: Path) -> None:
    """Load safetensors weights, with a clear error when they do not fit the model."""
    weights = read_tensors(file)
    missing, unexpected = set(model.state_dict()) - set(weights), set(weights) - set(model.state_dict())
    if missing or unexpected:
        raise LdcodecError(f"{file} does not fit the model of its config.yaml (missing {sorted(missing)[:3]}, "
                           f"unexpected {sorted(unexpected)[:3]}); was the config edited?")
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        raise LdcodecError(f"{file}: weights do not fit the model ({str(e).splitlines()[-1].strip()})") from None


def check_device(device: str) -> str:
    """``device`` if torch can use it here, else a clear error."""
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise LdcodecError(f"--device {device!r} is not a device; use cpu or cuda") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise LdcodecError(f"--device {device} asked for, but no CUDA GPU is available; use --device cpu")
    return device


def read_tensors(file: Path) -> dict[str, torch.Tensor]:
    """A safetensors file, with a clear error when it is missing or damaged."""
    try:
        return load_file(file)
    except (SafetensorError, OSError) as e:
        raise LdcodecError(f"{file}: cannot read weights ({e}); the checkpoint is damaged, use an earlier one") from None


def load_model(path: str | os.PathLike, ema: bool = True, device: str = "cpu"):
    """Rebuild the model of a checkpoint from its config and load its (EMA) weights, in eval mode."""
    from .model import LatentCodec

    check_device(device)
    ckpt = find_checkpoint(path)
    cfg = load_config_of(ckpt)
    model = LatentCodec(cfg)
    load_weights(model, ckpt / ("ema.safetensors" if ema else "model.safetensors"))
    return model.to(device).eval(), cfg, ckpt

