"""The effects of the grid's four choices: paired comparisons of finished sweep cells.

Each choice (:data:`FACTORS`: networks, diffusion family, mode, latent) has two levels; every pair
of finished cells of one dataset that differ in that choice alone is compared on its mse-decode
rate-distortion curve, and :func:`effects` averages the pairs (definition in
:data:`EFFECTS_DEFINITION`). Where the cells carry per-image results (``per_image`` of each point:
``ldcodec evaluate --per-image``, which the sweep turns on), each effect gets a 95 % interval from a
paired bootstrap (:data:`INTERVAL_DEFINITION`; Efron & Tibshirani 1993, the percentile interval),
and the accuracy effect is measured the same way. ``ldcodec sweep`` prints the table in its summary
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


INTERVAL_DEFINITION = (
    "95 % intervals: a paired bootstrap ({boot} resamples, percentile interval). Each resample draws the test images "
    "with replacement, the same images for every cell (all cells are measured on the same first images of the "
    "split), and the matched pairs with replacement; each point's PSNR and accuracy are the means over the drawn "
    "images and its actual bits scale with the mean of the drawn images' estimated bits. 'no measurable effect': "
    "the interval holds 0. Accuracy: Δ at equal bits in percentage points, like ΔPSNR. An effect without interval "
    "has a cell without per-image results.")
BOOTSTRAP = 400  # resamples (10 beyond each end of the 95 % interval)


def curve(r: dict, value: str = "psnr") -> np.ndarray:
    """``(n, 2)`` of (log2 bits_actual, ``value``) of a cell's mse-decode points, sorted by bits
    (``value``: ``psnr`` or ``accuracy``; points without it are left out)."""
    pts = [(math.log2(p["bits_actual"]), p[value]) for p in r["results"]["points"]
           if p["decode"] == "mse" and p.get(value) is not None]
    return np.array(sorted(pts)).reshape(-1, 2)


class _Resampler:
    """Every bootstrap resample's curves of the cells at once: ``weights`` ``(boot, n)`` are the
    resamples' image counts over ``n`` (the same images for every cell), so a point's resampled
    PSNR, accuracy and bit scale are one product each."""

    def __init__(self, cells: list[dict], weights: np.ndarray):
        def resampled(v):
            return None if v is None else weights @ np.asarray(v, dtype=float)

        self.points = {}
        for r in cells:
            rows = []
            for p in r["results"]["points"]:
                if p["decode"] != "mse":
                    continue
                per = p["per_image"]
                est = per.get("bits_estimated")
                scale = None if est is None else resampled(est) / float(np.mean(est))
                rows.append((p["bits_actual"], resampled(per["psnr"]), resampled(per.get("correct")), scale))
            self.points[id(r)] = rows

    def curve(self, r: dict, value: str, b: int) -> np.ndarray:
        """:func:`curve` of cell ``r`` in resample ``b``."""
        pts = []
        for bits, psnr, correct, scale in self.points[id(r)]:
            y = psnr if value == "psnr" else correct
            if y is not None:
                pts.append((math.log2(bits * (1.0 if scale is None else scale[b])), y[b]))
        return np.array(sorted(pts)).reshape(-1, 2)


def _resamplable(r: dict) -> int | None:
    """The number of per-image results every mse point of cell ``r`` carries (None: some lack them)."""
    sizes = {len(p["per_image"]["psnr"]) if p.get("per_image") else None
             for p in r["results"]["points"] if p["decode"] == "mse"}
    return sizes.pop() if len(sizes) == 1 else None


def _delta_at_equal_bits(a: np.ndarray, b: np.ndarray) -> float | None:
    """Mean of ``b``'s value minus ``a``'s over the log-bits inside both curves' ranges."""
    x = _common(a[:, 0], b[:, 0]) if len(a) and len(b) else []
    return float(np.mean(np.interp(x, b[:, 0], b[:, 1]) - np.interp(x, a[:, 0], a[:, 1]))) if len(x) else None


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
    if (d := _delta_at_equal_bits(a, b)) is not None:
        out["dpsnr"] = d
    y = _common(a[:, 1], b[:, 1])
    if len(y):
        sa, sb = a[np.argsort(a[:, 1])], b[np.argsort(b[:, 1])]
        bits_a, bits_b = 2 ** np.interp(y, sa[:, 1], sa[:, 0]), 2 ** np.interp(y, sb[:, 1], sb[:, 0])
        out["dbits"], out["dbits_pct"] = float(np.mean(bits_b - bits_a)), float(np.mean(100 * (bits_b / bits_a - 1)))
    return out or None


def _pair_values(a: dict, b: dict, curve_of=curve) -> dict:
    """The effects of cell ``b`` over cell ``a``: ``dpsnr``, ``dbits``, ``dbits_pct`` and
    ``daccuracy`` (percentage points), those the curves' common ranges allow; ``curve_of(r, value)``
    gives a cell's curve (default :func:`curve`; a bootstrap resample's in :func:`_intervals`)."""
    out = pair_effect(curve_of(a, "psnr"), curve_of(b, "psnr")) or {}
    acc = _delta_at_equal_bits(curve_of(a, "accuracy"), curve_of(b, "accuracy"))
    return out | ({"daccuracy": 100 * acc} if acc is not None else {})


KEYS = ("dpsnr", "dbits", "dbits_pct", "daccuracy")


def _intervals(pairs: list[tuple[dict, dict]], n: int, boot: int, seed: int) -> dict:
    """Per key, the 95 % percentile interval of the mean effect over ``pairs`` under the paired
    bootstrap of :data:`INTERVAL_DEFINITION` (``n`` per-image results per point): each resample
    draws ``n`` images (multinomial counts, shared by all cells) and ``len(pairs)`` pairs."""
    rng = np.random.default_rng(seed)
    resampler = _Resampler([r for pair in pairs for r in pair], rng.multinomial(n, np.full(n, 1.0 / n), size=boot) / n)
    pair_counts = rng.multinomial(len(pairs), np.full(len(pairs), 1.0 / len(pairs)), size=boot)
    draws = {k: [] for k in KEYS}
    for b in range(boot):
        found = [_pair_values(*pair, lambda r, value: resampler.curve(r, value, b)) for pair in pairs]
        for k in KEYS:
            counts = np.array([c for c, e in zip(pair_counts[b], found) if k in e])
            if counts.sum():
                draws[k].append(np.dot(counts, [e[k] for e in found if k in e]) / counts.sum())
    return {k: (float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))) for k, v in draws.items()
            if len(v) == boot}


def effects(results: list[dict], boot: int = BOOTSTRAP, seed: int = 0) -> list[dict]:
    """Per dataset and choice: the mean effect of level B over level A over matched cell pairs, with
    the range over the pairs (``KEY_range``) and, where every pair's cells carry per-image results
    of the same images, the bootstrap's 95 % interval (``KEY_ci``; ``boot`` 0 skips it)."""
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
            values = [_pair_values(a, b) for a, b in pairs]
            overlapping = [(pair, e) for pair, e in zip(pairs, values) if e]
            row = {"dataset": dataset, "choice": name, "a": level_a, "b": level_b, "matched": len(pairs),
                   "overlap": len(overlapping)}
            for k in KEYS:
                got = [e[k] for _, e in overlapping if k in e]
                row[k] = float(np.mean(got)) if got else None
                row[f"{k}_range"] = (float(min(got)), float(max(got))) if got else None
                row[f"{k}_ci"] = None
            sizes = {_resamplable(r) for pair, _ in overlapping for r in pair}
            if boot and overlapping and len(sizes) == 1 and None not in sizes:
                for k, ci in _intervals([pair for pair, _ in overlapping], sizes.pop(), boot, seed).items():
                    row[f"{k}_ci"] = ci
            out.append(row)
    return out


def effects_rows(results: list[dict], boot: int = BOOTSTRAP) -> list[list[str]]:
    """The effects table's cells: each mean with its 95 % interval in square brackets ("no measurable
    effect" where it holds 0) and the range over its pairs in round brackets."""
    def text(e: dict, k: str, spec: str) -> str:
        if e[k] is None:
            return ""
        lo_hi, ci = e[f"{k}_range"], e[f"{k}_ci"]
        interval = "" if ci is None else f" [{ci[0]:{spec}}, {ci[1]:{spec}}]" + (
            ": no measurable effect" if ci[0] <= 0 <= ci[1] else "")
        return f"{e[k]:{spec}}{interval} ({lo_hi[0]:{spec}} .. {lo_hi[1]:{spec}})"

    return [[e["dataset"], e["choice"], f"{e['b']} vs {e['a']}", f"{e['overlap']} / {e['matched']}",
             text(e, "dpsnr", "+.2f"), text(e, "dbits", "+.1f"), text(e, "dbits_pct", "+.1f"),
             text(e, "daccuracy", "+.1f")] for e in effects(results, boot)]
