"""Model identity: a digest of a model's weights and config, the source of the container's 4-byte
model id (a decoder refuses a stream of another model) and of the codecs' stream-keyed seeds."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import torch

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


def lsgm_hash(model) -> bytes:
    """The 16-byte identity of a trained LSGM model: its weights and config (minus the data path)."""
    cfg = model.cfg.to_dict()
    cfg["data"].pop("root")
    return model_hash(model.state_dict(), cfg)
