"""Rewrite the committed mode U reference streams after a deliberate format change.

    python tests/golden/regenerate.py

The golden tests (tests/test_diffc.py) exist to catch an *unintended* change of the candidate
generator, the tables, the coding plan or the index code: run this only when the format itself
changed, and say so in the commit. It rewrites ``diffc-gauss16.ldc/.npy`` (exact Gaussian source,
no weights: 4 vectors, 3 coded steps, the mse decode in the stream's params) and ``tiny-u.ldc/.npy``
(the committed tiny mode U model and its committed coding tables: 3 built-in test digits at the
default stop time) and ``tiny-c.ldc/.npy`` (the committed tiny mode C model: the same 3 digits).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def main() -> None:
    from test_diffc import gaussian_codec

    from ldcodec.checkpoint import load_model
    from ldcodec.codecs import model_codec
    from ldcodec.data import load_split, to_tensor, to_uint8
    from ldcodec.metrics.gaussian_source import GaussianSource

    codec, var = gaussian_codec()
    x = GaussianSource(tuple(var)).sample(4, seed=0).view(4, *codec.image_shape)
    data = codec.frame(codec.compress(x, {"t_stop": 0.3, "coding_steps": 3, "decode": "mse"}))
    (HERE / "diffc-gauss16.ldc").write_bytes(data)
    np.save(HERE / "diffc-gauss16.npy", codec.decompress_file(data).numpy())

    x = to_tensor(load_split("mnist", "test", None, limit=3)[0])
    for name in ("tiny-u", "tiny-c"):
        run = HERE / name
        model, _, _ = load_model(run, ema=False)
        codec = model_codec(model, run)
        data = codec.frame(codec.compress(x))
        (HERE / f"{name}.ldc").write_bytes(data)
        np.save(HERE / f"{name}.npy", to_uint8(codec.decompress_file(data)))
    print("rewrote diffc-gauss16, tiny-u and tiny-c")


if __name__ == "__main__":
    main()
