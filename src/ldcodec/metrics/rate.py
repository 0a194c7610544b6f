"""Rate units: bits per image -> bits per pixel (bpp) and bits per dimension, for every rate.

An image of shape ``(C, H, W)`` has ``H * W`` pixels and ``C * H * W`` dimensions, so

- ``bpp = bits / (H * W)``: the usual unit of image-compression papers (a pixel of an
  RGB image counts once, whatever its channels);
- ``bits/dim = bits / (C * H * W)``: the unit of likelihood models, ``-log2 p(x) / D``.

Each operating point reports four rates (``docs/design.md`` §3; ``docs/results-schema.md``):
``ideal`` (the model's information, where a codec defines it), ``estimated`` (the codec's
densities), ``actual`` (the image's share of one real file of the whole set) and ``file`` (a
real file of the image alone). :func:`rate_fields` is the one place that converts them.
"""

from __future__ import annotations

RATES = ("ideal", "estimated", "actual", "file")


def rate_fields(bits: dict[str, float | None], image_shape: tuple[int, int, int]) -> dict[str, float | None]:
    """``{"ideal": b, "estimated": b, "actual": b, "file": b}`` (mean bits per image, or None) for images
    ``(C, H, W)`` -> ``bits_R``, ``bpp_R = bits / (H W)`` and ``bits_per_dim_R = bits / (C H W)`` for each rate R."""
    c, h, w = image_shape
    out = {}
    for name in RATES:
        b = bits.get(name)
        out[f"bits_{name}"] = None if b is None else float(b)
        out[f"bpp_{name}"] = None if b is None else float(b) / (h * w)
        out[f"bits_per_dim_{name}"] = None if b is None else float(b) / (c * h * w)
    return out
