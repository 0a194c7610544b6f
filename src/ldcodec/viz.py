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


def save_grid(rows: list[np.ndarray], path: str | Path, per_row: int | None = None,
              labels: list[str] | None = None) -> Path:
    """Write ``rows`` as a PNG grid; ``per_row`` wraps one long row into full rows of that length;
    ``labels`` (one per row) are written in a white margin at the left, so the picture says what
    each row shows."""
    if per_row is not None and len(rows) == 1:
        imgs = rows[0]
        rows = [imgs[i:i + per_row] for i in range(0, len(imgs) - per_row + 1, per_row)]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tile = grid(rows)
    if labels is not None:
        tile = _labelled(tile, labels, rows[0].shape[1])
    save_png(tile, path)
    return path


def _labelled(tile: np.ndarray, labels: list[str], row_height: int, pad: int = 2) -> np.ndarray:
    """``tile`` with ``labels`` drawn (Pillow's built-in bitmap font) in a margin left of each row."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    draw = ImageDraw.Draw(Image.new("L", (1, 1)))
    width = max(int(draw.textlength(text, font=font)) for text in labels) + 8
    image = Image.new("RGB", (tile.shape[1] + width, tile.shape[0]), "white")
    image.paste(Image.fromarray(tile[..., 0] if tile.shape[-1] == 1 else tile).convert("RGB"), (width, 0))
    draw = ImageDraw.Draw(image)
    for r, text in enumerate(labels):
        y = pad + r * (row_height + pad) + max(0, row_height // 2 - 6)
        draw.text((4, y), text, fill="black", font=font)
    out = np.asarray(image)
    return out[..., :1] if tile.shape[-1] == 1 and _is_gray(out) else out


def _is_gray(rgb: np.ndarray) -> bool:
    return bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())
