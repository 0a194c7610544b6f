"""``ldcodec report``: one self-contained HTML page from ``ldcodec evaluate`` results.

Input: one or more results objects of schema ``ldcodec.results/2`` (docs/results-schema.md).
Output: a single HTML file that opens in a browser with no server and no network: inline
CSS, every figure a base64 PNG (:mod:`ldcodec.figures`), every reconstruction strip the PNG the
evaluation stored.

Per dataset and image count (several results files of one dataset and size are drawn together, a
point two files hold once; a 200-image probe is not drawn into a full-test-set curve) the page shows:

- rate-distortion: PSNR against *actual* bpp, one line per (model, mode, decode) series,
  baselines dashed; and estimated against actual bpp for ldcodec points (docs/design.md §3);
- rate-perception: one figure per perception estimator present (FID, KID, kNN KL of
  Wang, Kulkarni, Verdu 2009, the f-GAN lower bounds of Nowozin et al. 2016), with the
  estimator's noise floor (real vs real, docs/design.md §7) as a band and 95% CIs as
  error bars;
- the distortion-perception plane (Blau & Michaeli, "The perception-distortion
  tradeoff", CVPR 2018): MSE against FID and against kNN KL, coloured by bpp;
- reconstruction strips of every model, its points sorted by rate, under the originals;
- the decoder-side distortion-perception curve at fixed rate: for each stream decoded with the
  ``eta=X`` knob (DDIM's eta, flow at 0 to ancestral at 1), MSE against perception along the knob,
  with the mse decode and Blau & Michaeli's 2 x MSE(mse) reference for perfect realism;
- the Bjøntegaard table: BD-rate and BD-PSNR of every ldcodec curve against the hyperprior and
  WebP (:func:`ldcodec.metrics.bjontegaard.bd_table`, recomputed over the dataset's results);
- the realism/MSE ratio table (:func:`ldcodec.results.realism_ratios`, recomputed likewise):
  at perfect realism the MSE is at most twice the MSE-optimal one at the same rate (Blau &
  Michaeli, "Rethinking lossy compression: the rate-distortion-perception tradeoff", ICML
  2019), so ratios above 2 are flagged;
- on the Gaussian source, the Shannon bound ``R(D)`` by reverse water-filling (Cover &
  Thomas Thm 10.3.3, :mod:`ldcodec.metrics.gaussian_source`) with the measured points at
  ``bits_actual / d`` bits per dimension; a point below the bound is flagged in red;
- the table of all points.

Missing optional data (null ``ssim``, no ``perception``, no classifier, no PNGs, no
``rd_bound``) leaves the corresponding figure, column or section out.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable
from pathlib import Path

from ldcodec import figures
from ldcodec.errors import LdcodecError
from ldcodec.files import write_atomic
from ldcodec.metrics.bjontegaard import BD_METHOD, bd_table
from ldcodec.metrics.gaussian_source import rate_distortion
from ldcodec.results import (BLAU_MICHAELI_BOUND, rate_text, realism_ratios, section_name, series_name,
                             unique_points, validate_results)

#: Distortion-perception planes drawn when the estimator is present.
PLANES = ("fid", "knn_kl")
#: The order of an ldcodec model's reconstruction strips at one rate.
DECODE_ORDER = {"flow": 0, "realism": 1, "mse": 2}


# ----------------------------------------------------------------------------- formatting


def _esc(v) -> str:
    return html.escape(str(v), quote=True)


def _num(v, spec: str = ".4g") -> str:
    """A number for a table cell; ``—`` for null."""
    if v is None:
        return "—"
    return str(v) if isinstance(v, int) and not isinstance(v, bool) else format(v, spec)


def _estimate_text(est) -> str:
    if est is None:
        return "—"
    return f"{est['value']:.4g} [{est['ci_low']:.3g}, {est['ci_high']:.3g}]"


def _rate_text(p: dict) -> str:
    """``t=0.3, K=8``, ``λ=0.01``, ``q=75``: a point's rate setting with the names of its knobs."""
    return rate_text(p["rate_setting"])


def _table(headers: list[str], rows: list[list[str]], row_attrs: list[str] | None = None, cls: str = "") -> str:
    """An HTML table; ``rows`` cells are already escaped HTML, ``row_attrs`` extra ``<tr>`` attributes."""
    attrs = row_attrs or [""] * len(rows)
    head = "".join(f"<th>{_esc(h)}</th>" for h in headers)
    body = "".join(f"<tr{a}>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>\n" for row, a in zip(rows, attrs))
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>\n{body}</tbody></table>\n'


# ----------------------------------------------------------------------------- sections


def _bd_html(points: list[dict]) -> str:
    """The Bjøntegaard table of the dataset's ldcodec curves against the anchors present."""
    rows = bd_table(points)
    if not rows:
        return ""
    cells = [[_esc(r["model"]), _esc(r["decode"] or "—"), _esc(r["anchor"]), _esc(_num(r["bd_rate_pct"], "+.1f")),
              _esc(_num(r["bd_psnr_db"], "+.2f")), _esc(f"{r['points']} / {r['anchor_points']}"), _esc(r["note"] or "")]
             for r in rows]
    return ("<h3>Bjøntegaard deltas</h3>\n<p>BD-rate (%, negative: less rate at equal PSNR) and BD-PSNR (dB, "
            "positive: higher PSNR at equal rate) of each ldcodec curve against each anchor, on actual bits; "
            f"method: {_esc(BD_METHOD)}.</p>\n"
            + _table(["model", "decode", "anchor", "BD-rate %", "BD-PSNR dB", "points / anchor points", "note"],
                     cells, [' data-row="bd"'] * len(cells), "bd"))


def _rd_rows(result: dict) -> list[dict]:
    """Each point of a Gaussian-source result against Shannon's ``R(D)`` at its MSE, in bits per dimension."""
    variances = result["rd_bound"]["variances"]
    rows = []
    for p in result["points"]:
        rate = p["bits_actual"] / len(variances)
        bound = rate_distortion(variances, p["mse"]) if p["mse"] > 0 else math.inf
        rows.append({"point": p, "rate": rate, "bound": bound, "gap": rate - bound, "below": rate < bound})
    return rows


def _summary_html(results: list[dict]) -> str:
    rows = []
    for r in results:
        clf = r.get("classifier")
        acc = _num(clf.get("test_accuracy"), ".2%") if isinstance(clf, dict) else "no classifier"
        shape = "×".join(str(s) for s in r.get("image_shape") or []) or "—"
        rows.append([_esc(r["dataset"]), _esc(r.get("split") or "—"), _esc(_num(r.get("images"))), _esc(shape),
                     _esc(len(r["points"])), _esc(r.get("machine") or "—"), _esc(r.get("created") or "—"), _esc(acc)])
    return _table(["dataset", "split", "images", "C×H×W", "points", "machine", "created", "classifier accuracy"],
                  rows, cls="summary")


LEGEND_HTML = """<div class="legend">
<p><b>bpp</b>: bits per pixel, the bits of one image divided by its H×W pixels (on the Gaussian source,
bits per dimension). Curves use the <b>actual</b> rate: each image's share of one real file (format 2 container)
holding the whole evaluated set, bytes × 8 / N, header, parameters and side information included; bytes that every
JPEG/WebP/AVIF file of the set shares (a fixed header) are stored once. The <b>file</b> rate is a real file
holding one image alone, as a user stores it. The <b>estimated</b> rate is what the model's densities predict
(mode U: the coded steps' KL; mode C: −log<sub>2</sub> P(y)) and the <b>ideal</b> rate, where a codec defines
it, the information the model says the image needs; actual above estimated is coding overhead, actual below
estimated points to a rate-accounting bug.</p>
<p><b>Noise floor</b>: each perception estimator between two disjoint halves of the real images, drawn as a grey band
(its 95% CI); every estimate compares the same real half with the reconstructions of the other half, so estimate
and floor have the same sample sizes and the same finite-sample bias. A reconstruction whose divergence lies inside the band is statistically indistinguishable from real
data for that estimator; only values above it show a loss of realism.</p>
<p><b>Decodes</b> of ldcodec: <i>flow</i> (probability-flow ODE), <i>realism</i> (ancestral sampling) and
<i>mse</i> (denoised mean). Modes: <i>U</i> (noisy latent sent by reverse channel coding, rate knob t) and
<i>C</i> (quantised code with a conditional diffusion decoder, rate knob λ).</p>
</div>
"""


def _recon_html(results: list[dict]) -> str:
    """For each model with reconstructions: the originals on top, then one strip per point sorted by rate.

    Empty when no point stored a ``recon_png``.
    """
    blocks = []
    for r in results:
        models: dict[str, list[dict]] = {}
        for p in r["points"]:
            if p.get("recon_png"):
                models.setdefault(p["model"], []).append(p)
        for model, pts in models.items():
            rows = []
            if r.get("originals_png"):
                rows.append(f'<tr><th>originals</th><td><img class="strip" src="data:image/png;base64,'
                            f'{r["originals_png"]}" alt="originals"></td></tr>')
            for p in sorted(pts, key=lambda p: (p["bpp_actual"], DECODE_ORDER.get(p.get("decode"), 3))):
                caption = " · ".join([p.get("decode") or p["kind"], _rate_text(p), f"{p['bpp_actual']:.3f} bpp",
                                      f"{p['psnr']:.2f} dB"])
                rows.append(f'<tr><th>{_esc(caption)}</th><td><img class="strip" src="data:image/png;base64,'
                            f'{p["recon_png"]}" alt="{_esc(model + ": " + caption)}"></td></tr>')
            blocks.append(f'<div class="recon"><h4>{_esc(model)}</h4><table>{"".join(rows)}</table></div>\n')
    return "<h3>Reconstructions</h3>\n" + "".join(blocks) if blocks else ""


def _ratio_html(points: list[dict]) -> str:
    """The realism/MSE ratio rows of a section's points (computed here, so a point that two files
    hold is one row, whatever ratios the files stored)."""
    rows, attrs = [], []
    for row in realism_ratios(points):
        flagged = row["ratio"] > BLAU_MICHAELI_BOUND
        rows.append([_esc(row["model"]), _esc(rate_text(row["rate_setting"])), _esc(_num(row["bpp_actual"])),
                     _esc(_num(row["mse_realism"])), _esc(_num(row["mse_mse"])), _esc(_num(row["ratio"], ".3f")),
                     "ratio &gt; 2" if flagged else "ok"])
        attrs.append(' class="flag"' if flagged else "")
    if not rows:
        return ""
    return ("<h3>Realism/MSE ratio</h3>\n<p>MSE of the realism decode over the MSE decode at the same rate; "
            "Blau &amp; Michaeli (ICML 2019) bound it by 2 at perfect realism, so larger ratios are flagged.</p>\n"
            + _table(["model", "rate setting", "bpp", "MSE realism", "MSE mse", "ratio", "check"], rows, attrs, "ratio"))


def _rd_html(results: list[dict], dataset: str) -> str:
    parts = []
    for r in results:
        if r.get("rd_bound") is None:
            continue
        rd = _rd_rows(r)
        parts.append(figures.rd_figure(r, rd, dataset))
        rows = [[_esc(series_name(x["point"])), _esc(_rate_text(x["point"])), _esc(_num(x["point"]["mse"])),
                 _esc(_num(x["rate"])), _esc(_num(x["bound"])), _esc(_num(x["gap"], "+.4f")),
                 "below R(D)" if x["below"] else "ok"] for x in rd]
        attrs = [' class="below-bound"' if x["below"] else "" for x in rd]
        parts.append(_table(["series", "rate setting", "MSE", "bits/dim", "R(D) at MSE", "gap", "check"],
                            rows, attrs, "rd"))
    if not parts:
        return ""
    return "<h3>Shannon bound</h3>\n" + "".join(parts)


def _points_table(points: list[dict], estimators: list[str]) -> str:
    columns: list[tuple[str, Callable[[dict], str]]] = [
        ("model", lambda p: p["model"]), ("kind", lambda p: p["kind"]),
        ("mode", lambda p: p.get("mode") or "—"), ("decode", lambda p: p.get("decode") or "—"),
        ("rate setting", _rate_text), ("bits ideal", lambda p: _num(p.get("bits_ideal"), ".1f")),
        ("bits est.", lambda p: _num(p.get("bits_estimated"), ".1f")),
        ("bits actual", lambda p: _num(p["bits_actual"], ".1f")), ("bits file", lambda p: _num(p["bits_file"], ".1f")),
        ("bpp est.", lambda p: _num(p.get("bpp_estimated"), ".4f")),
        ("bpp actual", lambda p: _num(p["bpp_actual"], ".4f")), ("bpp file", lambda p: _num(p["bpp_file"], ".4f")),
        ("MSE", lambda p: _num(p["mse"])), ("PSNR", lambda p: _num(p["psnr"], ".2f")),
        ("SSIM", lambda p: _num(p.get("ssim"), ".4f")),
    ]
    columns += [(k, lambda p, k=k: _estimate_text((p.get("perception") or {}).get(k))) for k in estimators]
    columns += [("accuracy", lambda p: _num(p.get("accuracy"), ".2%")), ("images", lambda p: _num(p.get("images"))),
                ("seconds", lambda p: _num(p.get("seconds"), ".1f"))]
    ordered = sorted(points, key=lambda p: (p["model"], p.get("decode") or "", p["bpp_actual"]))
    rows = [[_esc(get(p)) for _, get in columns] for p in ordered]
    return _table([name for name, _ in columns], rows, [' data-row="point"'] * len(rows), "points")


def _estimators_present(points: list[dict]) -> list[str]:
    present = {k for p in points for k in (p.get("perception") or {})}
    return [k for k in figures.ESTIMATORS if k in present] + sorted(present - figures.ESTIMATORS.keys())


def _without_repeats(results: list[dict]) -> list[dict]:
    """``results`` of one section, each point that an earlier file also holds left out (figures,
    strips, bound rows and tables then show it once)."""
    kept = {id(p) for p in unique_points(p for r in results for p in r["points"])}
    return [{**r, "points": [p for p in r["points"] if id(p) in kept]} for r in results]


def _dataset_html(index: int, dataset: str, results: list[dict]) -> str:
    results = _without_repeats(results)
    points = [p for r in results for p in r["points"]]
    colours = figures.model_colours(points)
    estimators = _estimators_present(points)
    parts = [f'<section class="dataset" id="ds-{index}"><h2>{_esc(dataset)}</h2>\n']
    if points:
        parts += ["<h3>Rate-distortion</h3>\n", figures.psnr_figure(points, colours, dataset),
                  figures.estimate_figure(points, colours, dataset)]
    if estimators:
        parts.append("<h3>Rate-perception</h3>\n")
        parts += [figures.perception_figure(points, results, colours, k, dataset) for k in estimators]
    planes = [k for k in PLANES if k in estimators]
    if planes:
        parts.append("<h3>Distortion-perception plane</h3>\n")
        parts += [figures.plane_figure(points, k, dataset) for k in planes]
        parts += [figures.knob_figure(points, colours, k, dataset) for k in planes]
    parts += [_bd_html(points), _recon_html(results), _ratio_html(points), _rd_html(results, dataset),
              "<h3>All points</h3>\n", _points_table(points, estimators), "</section>\n"]
    return "".join(parts)


CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 80em; color: #222; padding: 0 1em; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 2px solid #ccc; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.85em; }
th, td { border: 1px solid #ddd; padding: 0.2em 0.5em; text-align: left; vertical-align: middle; }
thead th { background: #f2f2f2; }
tr.flag td, tr.below-bound td { background: #fde2e2; color: #a00; font-weight: 600; }
figure.plot { display: inline-block; margin: 0.5em 1em 0.5em 0; vertical-align: top; }
figure.plot img { max-width: 100%; }
figcaption { font-size: 0.8em; color: #555; max-width: 50em; }
img.strip { height: 64px; image-rendering: pixelated; }
.recon table th { font-weight: normal; font-size: 0.9em; white-space: nowrap; }
.legend { background: #f8f8f8; border-left: 4px solid #9ab; padding: 0.3em 1em; font-size: 0.9em; }
table.points { font-size: 0.75em; }
"""


def render_report(results: list[dict], output_path: str | Path) -> Path:
    """Write the HTML report of ``results`` (results objects, e.g. from
    :func:`ldcodec.results.load_results`) to ``output_path``.

    Results of the same dataset and image count (:func:`ldcodec.results.section_name`) are drawn
    in one section, in order of first appearance; a point that several files hold is drawn once
    (:func:`ldcodec.results.unique_points`, the first). Returns the path written. Raises
    :class:`LdcodecError` for no results or an object that is not schema ``ldcodec.results/2``.
    """
    if not results:
        raise LdcodecError("no results to report; pass one or more results.json files from `ldcodec evaluate`")
    for i, r in enumerate(results):
        validate_results(r, f"results[{i}]")
    groups: dict[str, list[dict]] = {}
    for r in results:
        groups.setdefault(section_name(r), []).append(r)
    names = ", ".join(groups)
    nav = " · ".join(f'<a href="#ds-{i}">{_esc(d)}</a>' for i, d in enumerate(groups))
    page = [f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"<title>ldcodec report: {_esc(names)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
            f"<h1>ldcodec evaluation report</h1>\n<p>Datasets: {nav}</p>\n",
            _summary_html(results), LEGEND_HTML]
    page += [_dataset_html(i, d, rs) for i, (d, rs) in enumerate(groups.items())]
    page.append("</body>\n</html>\n")
    return write_atomic(Path(output_path), lambda tmp: tmp.write_text("".join(page), encoding="utf-8"), parents=True)
