"""The effects of the grid's four choices: paired comparisons of finished sweep cells.

Each choice (:data:`FACTORS`: networks, diffusion family, mode, latent) has two levels; every pair
of finished cells of one dataset that differ in that choice alone is compared on its mse-decode
rate-distortion curve, and :func:`effects` averages the pairs (definition in
:data:`EFFECTS_DEFINITION`). ``ldcodec sweep`` prints the table in its summary
(:mod:`ldcodec.sweep_summary`).
"""

from __future__ import annotations

import math

import numpy as np

#: The four choices of the grid: (name in the effects table, config getter, level A, level B).
FACTORS = (
    ("networks", lambda c: c["model"]["net"], "mlp", "cnn"),
    ("diffusion", lambda c: c["diffusion"]["family"], "sde", "ddpm"),
    ("mode", lambda c: "C" if c["cond"]["enabled"] else "U", "U", "C"),
    ("latent", lambda c: c["model"]["latent"], "gauss", "delta"),
)


EFFECTS_DEFINITION = (
    "For each choice, every pair of finished cells of one dataset that differ in that choice alone (level A vs "
    "level B) is compared on its mse-decode rate-distortion curve (actual bits per image, PSNR; mode C: its one "
    "point). ΔPSNR at equal bits: the mean over the bit rates of both curves' points that lie inside both "
    "curves' bit ranges of PSNR_B - PSNR_A, each curve linearly interpolated in log2(bits). Δbits at equal PSNR: "
    "likewise over the PSNRs inside both PSNR ranges, bits_B - bits_A (and in % of bits_A), interpolating "
    "log2(bits) in PSNR. Each column is the mean over the pairs whose ranges overlap, with the smallest and "
    "largest pair in brackets (pairs of mode U cells and of mode C cells are averaged together); pairs without "
    "overlap (e.g. two mode C cells at different rates, one point each) are counted but not averaged.")


def curve(r: dict) -> np.ndarray:
    """``(n, 2)`` of (log2 bits_actual, PSNR) of a cell's mse-decode points, sorted by bits."""
    pts = [(math.log2(p["bits_actual"]), p["psnr"]) for p in r["results"]["points"] if p["decode"] == "mse"]
    return np.array(sorted(pts)).reshape(-1, 2)


def _common(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The values of ``a`` and ``b`` inside both ranges ``[min, max]``."""
    lo, hi = max(a.min(), b.min()), min(a.max(), b.max())
    both = np.concatenate([a, b])
    return np.unique(both[(both >= lo - 1e-9) & (both <= hi + 1e-9)])


def pair_effect(a: np.ndarray, b: np.ndarray) -> dict | None:
    """ΔPSNR at equal bits and Δbits at equal PSNR of curve ``b`` over curve ``a`` (see
    :data:`EFFECTS_DEFINITION`); None where the curves share no bit range and no PSNR range."""
    if not (len(a) and len(b)):
        return None
    out = {}
    x = _common(a[:, 0], b[:, 0])
    if len(x):
        out["dpsnr"] = float(np.mean(np.interp(x, b[:, 0], b[:, 1]) - np.interp(x, a[:, 0], a[:, 1])))
    y = _common(a[:, 1], b[:, 1])
    if len(y):
        sa, sb = a[np.argsort(a[:, 1])], b[np.argsort(b[:, 1])]
        bits_a, bits_b = 2 ** np.interp(y, sa[:, 1], sa[:, 0]), 2 ** np.interp(y, sb[:, 1], sb[:, 0])
        out["dbits"], out["dbits_pct"] = float(np.mean(bits_b - bits_a)), float(np.mean(100 * (bits_b / bits_a - 1)))
    return out or None


def effects(results: list[dict]) -> list[dict]:
    """Per dataset and choice: the mean effect of level B over level A over matched cell pairs."""
    by_key = {}
    for r in results:
        c = r["config"]
        by_key[(c["data"]["dataset"],) + tuple(get(c) for _, get, _, _ in FACTORS)] = r
    out = []
    for dataset in sorted({k[0] for k in by_key}):
        for i, (name, _, level_a, level_b) in enumerate(FACTORS):
            pairs = [(r, by_key.get(k[:1 + i] + (level_b,) + k[2 + i:])) for k, r in by_key.items()
                     if k[0] == dataset and k[1 + i] == level_a]
            pairs = [(a, b) for a, b in pairs if b is not None]
            found = [e for a, b in pairs if (e := pair_effect(curve(a), curve(b))) is not None]
            row = {"dataset": dataset, "choice": name, "a": level_a, "b": level_b, "matched": len(pairs),
                   "overlap": len(found)}
            for k in ("dpsnr", "dbits", "dbits_pct"):
                values = [e[k] for e in found if k in e]
                row[k] = float(np.mean(values)) if values else None
                row[f"{k}_range"] = (float(min(values)), float(max(values))) if values else None
            out.append(row)
    return out


def effects_rows(results: list[dict]) -> list[list[str]]:
    """The effects table's cells: each mean with the range over its pairs in brackets."""
    def text(e: dict, k: str, spec: str) -> str:
        lo_hi = e[f"{k}_range"]
        return "" if e[k] is None else f"{e[k]:{spec}} ({lo_hi[0]:{spec}} .. {lo_hi[1]:{spec}})"

    return [[e["dataset"], e["choice"], f"{e['b']} vs {e['a']}", f"{e['overlap']} / {e['matched']}",
             text(e, "dpsnr", "+.2f"), text(e, "dbits", "+.1f"), text(e, "dbits_pct", "+.1f")] for e in effects(results)]
