"""Image grids as PNG files (no torchvision needed)."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np

from .data import save_png


def grid(rows: list[np.ndarray], pad: int = 2) -> np.ndarray:
    """Tile rows of uint8 ``(N, H, W, C)`` images (same N, H, W, C) into one uint8 ``(H', W', C)`` image."""
    n, h, w, c = rows[0].shape
    out = np.full((len(rows) * (h + pad) + pad, n * (w + pad) + pad, c), 255, np.uint8)
    for r, row in enumerate(rows):
        for i, im in enumerate(row):
            y, x = pad + r * (h + pad), pad + i * (w + pad)
            out[y:y + h, x:x + w] = im
    return out


def png_b64(images: np.ndarray) -> str:
    """uint8 ``(N, H, W, C)`` images in one row -> a base64 PNG (for JSON results and HTML)."""
    from PIL import Image

    tile = grid([images])
    buf = io.BytesIO()
    Image.fromarray(tile[..., 0] if tile.shape[-1] == 1 else tile).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def save_grid(rows: list[np.ndarray], path: str | Path, per_row: int | None = None) -> Path:
    """Write ``rows`` as a PNG grid; ``per_row`` wraps one long row into full rows of that length."""
    if per_row is not None and len(rows) == 1:
        imgs = rows[0]
        rows = [imgs[i:i + per_row] for i in range(0, len(imgs) - per_row + 1, per_row)]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_png(grid(rows), path)
    return path
