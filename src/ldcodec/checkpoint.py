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

Checkpoints are untrusted input (researchers share them). Nothing in one can run code: the
weights are safetensors (a JSON header and raw numbers), ``config.yaml`` is read with
``yaml.safe_load`` (no Python tags) and ``state.pt`` with ``torch.load(weights_only=True)``
(tensors and plain containers only). :func:`load_model` checks, before it allocates the model,
that the config is valid (known keys, values in range) and that the model it describes has
exactly the tensors of the weights file (names, shapes, dtypes, read from the header only);
then that every weight is finite. Each weights file carries its layout version
(``FORMAT_VERSION`` in the safetensors metadata; files without one are version 1).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
import yaml
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .config import Config, check_consistency, save_config
from .errors import LdcodecError
from .files import write_text_atomic

KEEP = 3  # checkpoints kept per run
FORMAT_VERSION = 1  # layout of the tensors in a weights file; bump when it changes incompatibly
_FORMAT_KEY = "ldcodec_format_version"
NONPERSISTENT_LIMIT = 2**28  # bytes a config may ask for beyond its weights (schedules, ...)


def save_checkpoint(out: Path, step: int, cfg: Config, model: torch.nn.Module, ema: dict[str, torch.Tensor],
                    state: dict) -> Path:
    """Write ``OUT/ckpt-{step}`` atomically, point ``latest`` at it, keep the newest ``KEEP``."""
    out.mkdir(parents=True, exist_ok=True)
    final = out / f"ckpt-{step:08d}"
    tmp = out / f".tmp-ckpt-{step:08d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    write_tensors(model.state_dict(), tmp / "model.safetensors")
    write_tensors(ema, tmp / "ema.safetensors")
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
    weights = (p / "model.safetensors").is_file() or (p / "ema.safetensors").is_file()
    if not weights or not (p / "config.yaml").is_file():
        raise LdcodecError(f"{path} is not a checkpoint: expected a run folder made by `ldcodec train`, "
                           f"its ckpt-NNNNNNNN folder (with config.yaml and model.safetensors) or a shipped "
                           f"model's folder (config.yaml and ema.safetensors)")
    return p


def load_config_of(ckpt: Path) -> Config:
    """The checkpoint's ``config.yaml`` (safe YAML, validated like a config file)."""
    source = str(ckpt / "config.yaml")
    try:
        raw = yaml.safe_load((ckpt / "config.yaml").read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise LdcodecError(f"{source} is not valid YAML ({str(e).splitlines()[0]})") from None
    return check_consistency(Config.from_dict(raw, source=source), source)


def load_weights(model: torch.nn.Module, file: Path) -> None:
    """Load safetensors weights, with a clear error when they do not fit the model."""
    weights = read_tensors(file)
    check_fit(model, {k: (tuple(v.shape), v.dtype) for k, v in weights.items()}, file)
    bad = [k for k, v in weights.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise LdcodecError(f"{file}: {len(bad)} tensors hold NaN or infinite weights (e.g. {bad[0]}); "
                           "the checkpoint is damaged, use an earlier one")
    model.load_state_dict(weights)


def check_fit(model: torch.nn.Module, tensors: dict[str, tuple[tuple[int, ...], torch.dtype]], file: Path) -> None:
    """Raise a clear error unless ``tensors`` (name -> shape, dtype) are exactly the model's.

    A buffer the model declares empty is sized by what it loads (coding tables), so any shape fits it.
    """
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise LdcodecError(f"{file} does not fit the model of its config.yaml ({len(missing)} tensors missing, "
                           f"e.g. {missing[:2]}; {len(unexpected)} unexpected, e.g. {unexpected[:2]}); "
                           "was the config edited, or is this another model's file?")
    for name, want in expected.items():
        shape, dtype = tensors[name]
        if (want.numel() and shape != tuple(want.shape)) or dtype != want.dtype:
            raise LdcodecError(f"{file}: tensor {name} is {list(shape)} {dtype}, the model of its config.yaml "
                               f"needs {list(want.shape)} {want.dtype}; the config does not match the weights")


def check_device(device: str) -> str:
    """``device`` if torch can use it here, else a clear error."""
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise LdcodecError(f"--device {device!r} is not a device; use cpu or cuda") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise LdcodecError(f"--device {device} asked for, but no CUDA GPU is available; use --device cpu")
    return device


def write_tensors(tensors: dict[str, torch.Tensor], file: Path) -> None:
    """A safetensors file of ``tensors`` (on the CPU) stamped with ``FORMAT_VERSION``."""
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, file,
              metadata={_FORMAT_KEY: str(FORMAT_VERSION)})


def _open_tensors(file: Path, read):
    """``read(handle)`` on an open safetensors file after its version check; clear errors when damaged."""
    try:
        with safe_open(file, "pt") as f:
            version = (f.metadata() or {}).get(_FORMAT_KEY, "1")
            if version != str(FORMAT_VERSION):
                raise LdcodecError(f"{file}: weights in checkpoint format {version!r}; this ldcodec reads "
                                   f"format {FORMAT_VERSION}: use the ldcodec version that wrote it")
            return read(f)
    except (SafetensorError, OSError) as e:
        raise LdcodecError(f"{file}: cannot read weights ({e}); the checkpoint is damaged, use an earlier one") from None


def read_tensors(file: Path) -> dict[str, torch.Tensor]:
    """A safetensors file, with a clear error when it is missing, damaged or of another format version."""
    return _open_tensors(file, lambda f: {k: f.get_tensor(k) for k in f.keys()})


def tensor_specs(file: Path) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Name -> (shape, dtype) of a safetensors file, from its header alone (nothing is allocated)."""
    dtypes = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
              "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
              "BOOL": torch.bool}

    def specs(f):
        out = {}
        for k in f.keys():
            piece = f.get_slice(k)
            out[k] = (tuple(piece.get_shape()), dtypes.get(piece.get_dtype()))
        return out

    return _open_tensors(file, specs)


def build_model(cfg: Config, file: Path) -> torch.nn.Module:
    """The model of ``cfg``, built only once its meta-device twin matches ``file``'s header."""
    from .model import LSGMModel

    try:
        with torch.device("meta"):
            twin = LSGMModel(cfg)
    except (ValueError, RuntimeError, ZeroDivisionError, OverflowError) as e:
        raise LdcodecError(f"{file.parent}/config.yaml does not describe a buildable model ({e})") from None
    check_fit(twin, tensor_specs(file), file)
    persistent = set(twin.state_dict())
    extra = sum(b.numel() * b.element_size() for name, b in twin.named_buffers() if name not in persistent)
    if extra > NONPERSISTENT_LIMIT:
        raise LdcodecError(f"{file.parent}/config.yaml asks for {extra / 2**20:.0f} MiB of buffers beyond the "
                           f"weights (limit {NONPERSISTENT_LIMIT / 2**20:.0f} MiB); the config is not plausible")
    return LSGMModel(cfg)


def load_model(path: str | os.PathLike, ema: bool = True, device: str = "cpu"):
    """Rebuild the model of a checkpoint from its config and load its (EMA) weights, in eval mode."""
    check_device(device)
    ckpt = find_checkpoint(path)
    cfg = load_config_of(ckpt)
    file = ckpt / ("ema.safetensors" if ema else "model.safetensors")
    if not file.is_file():
        raise LdcodecError(f"{ckpt} has no {file.name}: a shipped model holds the EMA weights only")
    model = build_model(cfg, file)
    load_weights(model, file)
    return model.to(device).eval(), cfg, ckpt

