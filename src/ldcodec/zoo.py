"""Shipped models: trained checkpoints inside the package, found by name, nothing downloaded.

Each model is a folder ``ldcodec/models/NAME/`` that is a complete checkpoint folder for
:func:`ldcodec.checkpoint.load_model` (``config.yaml``, the EMA weights ``ema.safetensors`` and,
for mode U, the coding tables ``coding-tables.safetensors``) plus ``card.json``, its card:

- ``name``, ``summary`` (one line, listed by ``ldcodec models``), ``mode`` (``U`` or ``C``),
  ``dataset``, ``model_id`` (hex of the container's 4-byte id: a stream records it, so a stream
  of another model is refused),
- ``trained``: the command that trained it, its steps, wall time and machine,
- ``points``: measured operating points (rate setting, images, bits, PSNR, accuracy, FID with its
  floor), each with the ``ldcodec evaluate --model NAME`` command that reproduces it.

Use: ``ldcodec models``; ``--model NAME`` wherever a command takes a checkpoint; in Python
``ldcodec.load("NAME")`` returns the model's codec. :func:`ship` writes a folder from a run.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from .errors import LdcodecError

MODELS_DIR = Path(__file__).resolve().parent / "models"
CARD = "card.json"
SHIPPED_FILES = ("config.yaml", "ema.safetensors", "coding-tables.safetensors")


def names() -> list[str]:
    """The shipped models' names, sorted."""
    if not MODELS_DIR.is_dir():
        return []
    return sorted(p.name for p in MODELS_DIR.iterdir() if (p / CARD).is_file())


def model_path(name: str) -> Path:
    """The checkpoint folder of shipped model ``name``; an unknown name lists the shipped ones."""
    if name not in names():
        raise LdcodecError(f"no shipped model {name!r}; shipped models: {', '.join(names()) or 'none'} "
                           "(ldcodec models lists them)")
    return MODELS_DIR / name


def card(name: str) -> dict:
    """The card of shipped model ``name`` (module docstring)."""
    return json.loads((model_path(name) / CARD).read_text())


def load(name: str, device: str = "cpu"):
    """The codec of shipped model ``name`` (``diffc`` or ``cdc``, by its mode), ready to compress:
    ``codec.frame(codec.compress(x, {"bits": 64}))`` for images ``x`` ``(N, C, H, W)`` in [0, 1]."""
    from .checkpoint import load_model
    from .codecs import model_codec

    path = model_path(name)
    model, _, _ = load_model(path, device=device)
    return model_codec(model, path, device=device)


def measure_check(codec, dataset: str, rate: dict, images: int, data_root=None) -> dict:
    """The card's check point: the first ``images`` test images compressed in one file at ``rate``,
    its actual bits per image and the PSNR of its default decode (mode U: mse)."""
    from .data import load_split, to_tensor
    from .metrics import distortion

    x = to_tensor(load_split(dataset, "test", data_root, limit=images)[0])
    c = codec.compress(x, dict(rate))
    data = codec.frame(c)
    y = codec.decompress_file(data, **({"decode": "mse"} if codec.mode == "U" else {}))
    return {"rate_setting": dict(rate), "images": len(x), "bits_actual": codec.actual_bits(c, data),
            "psnr": float(distortion.psnr(x, y).mean())}


def ship(run: str | Path, name: str, summary: str, trained: dict, points: list[dict], quickstart_rates: list[dict],
         check_images: int = 64, data_root=None, root: Path | None = None) -> Path:
    """Write shipped model ``name`` into ``root`` (default :data:`MODELS_DIR`) from the checkpoint
    ``run`` (a run folder or a ``ckpt-N`` folder): its config, EMA weights and coding tables (built
    first if missing), and a card with ``summary``, ``trained``, the measured ``points``, the rates
    of ``ldcodec quickstart`` and a check point measured now at its first rate on ``check_images``
    test images (:func:`measure_check`; tests recompute it); atomically (a temporary folder renamed)."""
    from .checkpoint import find_checkpoint, load_model
    from .codecs import model_codec

    root = MODELS_DIR if root is None else Path(root)
    ckpt = find_checkpoint(run)
    model, cfg, _ = load_model(ckpt)
    codec = model_codec(model, ckpt, data_root=data_root)  # builds and stores a mode U model's coding tables
    out, tmp = root / name, root / f".tmp-{name}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f in SHIPPED_FILES:
        if (ckpt / f).is_file():
            shutil.copy2(ckpt / f, tmp / f)
    info = {"name": name, "summary": summary, "mode": codec.mode, "dataset": cfg.data.dataset, "codec": codec.name,
            "model_id": codec.model_id().hex(), "trained": trained, "points": points,
            "quickstart_rates": quickstart_rates,
            "check": measure_check(codec, cfg.data.dataset, quickstart_rates[0], check_images, data_root)}
    (tmp / CARD).write_text(json.dumps(info, indent=1) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.replace(out)
    return out
