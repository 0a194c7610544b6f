"""Model identity: a digest of a model's weights and config, the source of the container's 4-byte
model id (a decoder refuses a stream of another model) and of the codecs' stream-keyed seeds
(``docs/design.md`` §5).

The one recipe (:func:`model_hash`): SHA-256 over named tensors and a config. For an LSGM model
(modes U and C) the tensors are its ``state_dict()`` plus any tables the codec codes with, and the
config is :func:`ldcodec.config.portable_config` (no data path) less the keys the container already
names: :func:`model_digest` (16 bytes, a seed key) and :func:`model_id` (its first 4 bytes, the
container's field). A codec without an LSGM model (the Ballé baselines) calls :func:`model_hash`
on its own tensors and config. Existing ids must never change: a stream names its model by them
(``tests/golden/``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable

import numpy as np
import torch

from ldcodec.codecs.container import MODEL_ID_BYTES
from ldcodec.config import portable_config

DIGEST_BYTES = 16


def model_hash(tensors: dict, config: dict) -> bytes:
    """First 16 bytes of SHA-256 over named tensors (name, dtype, shape, raw bytes; sorted by
    name) and the JSON of ``config`` (sorted keys). ``tensors`` is e.g. a ``state_dict()``;
    torch tensors and numpy arrays both work."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name]
        if isinstance(t, torch.Tensor):
            t = t.detach().cpu().contiguous()
            raw = t.reshape(-1).view(torch.uint8).numpy().tobytes()
        else:
            t = np.ascontiguousarray(t)
            raw = t.tobytes()
        dtype = str(t.dtype).removeprefix("torch.")
        digest.update(f"{name}|{dtype}|{tuple(t.shape)}|".encode())
        digest.update(raw)
    digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    return digest.digest()[:DIGEST_BYTES]


def model_digest(model, extra_tensors: dict | None = None, drop_keys: Iterable[str] = ()) -> bytes:
    """The 16-byte identity of a trained LSGM model (anything with ``state_dict()`` and ``cfg``): its
    weights, ``extra_tensors`` (named as the caller names them, e.g. ``coding_tables.t``; a name
    must not repeat a weight's) and its portable config less ``drop_keys`` (``"section.key"``, e.g.
    ``"codec.simulator"`` where the container's codec id already names it; absent keys are fine)."""
    tensors = dict(model.state_dict())
    for name, t in (extra_tensors or {}).items():
        if name in tensors:
            raise ValueError(f"extra tensor {name!r} would replace the model's weight of that name")
        tensors[name] = t
    cfg = portable_config(model.cfg)
    for key in drop_keys:
        section, _, name = key.partition(".")
        cfg.get(section, {}).pop(name, None)
    return model_hash(tensors, cfg)


def model_id(model, extra_tensors: dict | None = None, drop_keys: Iterable[str] = ()) -> bytes:
    """The container's 4-byte model id: the first bytes of :func:`model_digest` (same arguments)."""
    return model_digest(model, extra_tensors, drop_keys)[:MODEL_ID_BYTES]


def lsgm_hash(model) -> bytes:
    """:func:`model_digest` of the model alone (weights and portable config); kept for callers."""
    return model_digest(model)
