"""``ldcodec report``: one self-contained HTML page from ``ldcodec evaluate`` results.

Input: one or more results objects of schema ``ldcodec.results/2`` (docs/results-schema.md).
Output: a single HTML file that opens in a browser with no server and no network: inline
CSS, every figure a base64 PNG drawn with matplotlib on the Agg canvas (no pyplot, no
global backend state), every reconstruction strip the PNG the evaluation stored.

Per dataset and image count (several results files of one dataset and size are drawn together, a
point two files hold once; a 200-image probe is not drawn into a full-test-set curve) the page shows:

- rate-distortion: PSNR against *actual* bpp, one line per (model, mode, decode) series,
  baselines dashed; and estimated against actual bpp for ldcodec points (DESIGN.md sec. 3);
- rate-perception: one figure per perception estimator present (FID, KID, kNN KL of
  Wang, Kulkarni, Verdu 2009, the f-GAN lower bounds of Nowozin et al. 2016), with the
  estimator's noise floor (real vs real, DESIGN.md sec. 4) as a band and 95% CIs as
  error bars;
- the distortion-perception plane (Blau & Michaeli, "The perception-distortion
  tradeoff", CVPR 2018): MSE against FID and against kNN KL, coloured by bpp;
- reconstruction strips of every model, its points sorted by rate, under the originals;
- the decoder-side distortion-perception curve at fixed rate: for each stream decoded with the
  ``eta=X`` knob (DDIM's eta, flow at 0 to ancestral at 1), MSE against perception along the knob,
  with the mse decode and Blau & Michaeli's 2 x MSE(mse) reference for perfect realism;
- the Bjøntegaard table: BD-rate and BD-PSNR of every ldcodec curve against the hyperprior and
  WebP (:func:`ldcodec.metrics.bjontegaard.bd_table`, recomputed over the dataset's results);
- the realism/MSE ratio table: at perfect realism the MSE is at most twice the
  MSE-optimal one at the same rate (Blau & Michaeli, "Rethinking lossy compression: the
  rate-distortion-perception tradeoff", ICML 2019), so ratios above 2 are flagged;
- on the Gaussian source, the Shannon bound ``R(D)`` by reverse water-filling (Cover &
  Thomas Thm 10.3.3, :mod:`ldcodec.metrics.gaussian_source`) with the measured points at
  ``bits_actual / d`` bits per dimension; a point below the bound is flagged in red;
- the table of all points.

Missing optional data (null ``ssim``, no ``perception``, no classifier, no PNGs, no
``rd_bound``) leaves the corresponding figure, column or section out.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from ldcodec.errors import LdcodecError
from ldcodec.files import write_atomic
from ldcodec.diffusion.decodes import knob_eta
from ldcodec.metrics.bjontegaard import BD_METHOD, bd_table
from ldcodec.metrics.gaussian_source import rate_distortion
from ldcodec.results import (load_results, rate_text, realism_ratios, section_name,  # noqa: F401 (load_results:
                             unique_points, validate_results)                       # the report's input)

DPI = 100

#: Perception estimators in display order, with their axis labels.
ESTIMATORS = {
    "fid": "FID (project classifier features)",
    "kid": "KID (project classifier features)",
    "knn_kl": "kNN KL estimate (nats)",
    "f_kl": "KL lower bound, f-GAN critic (nats)",
    "f_js": "Jensen-Shannon lower bound (nats)",
    "f_tv": "total variation lower bound",
    "f_chi2": "Pearson chi-squared lower bound",
    "f_hellinger": "squared Hellinger lower bound",
}
#: Distortion-perception planes drawn when the estimator is present.
PLANES = ("fid", "knn_kl")
#: ldcodec decodes: (line style, marker); baselines are dashed.
DECODE_STYLE = {"flow": ("-", "o"), "realism": (":", "^"), "mse": ("-.", "s")}
BASELINE_STYLE = ("--", "x")
DECODE_ORDER = {"flow": 0, "realism": 1, "mse": 2}
BLAU_MICHAELI_BOUND = 2.0



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


def _series_name(p: dict) -> str:
    parts = [x for x in (p.get("mode"), p.get("decode")) if x]
    return f"{p['model']} ({', '.join(parts)})" if parts else p["model"]


def _table(headers: list[str], rows: list[list[str]], row_attrs: list[str] | None = None, cls: str = "") -> str:
    """An HTML table; ``rows`` cells are already escaped HTML, ``row_attrs`` extra ``<tr>`` attributes."""
    attrs = row_attrs or [""] * len(rows)
    head = "".join(f"<th>{_esc(h)}</th>" for h in headers)
    body = "".join(f"<tr{a}>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>\n" for row, a in zip(rows, attrs))
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>\n{body}</tbody></table>\n'


# ----------------------------------------------------------------------------- figures


@dataclass
class _Series:
    """Points of one (model, mode, decode), sorted by actual bpp, with their line style."""

    label: str
    colour: tuple
    linestyle: str
    marker: str
    points: list[dict]


def _colours(points: list[dict]) -> dict[str, tuple]:
    """One colour per model name, in order of first appearance."""
    models = list(dict.fromkeys(p["model"] for p in points))
    cmap = matplotlib.colormaps["tab10" if len(models) <= 10 else "tab20"]
    return {m: cmap(i % cmap.N) for i, m in enumerate(models)}


def _series(points: list[dict], colours: dict[str, tuple]) -> list[_Series]:
    groups: dict[tuple, list[dict]] = {}
    for p in points:
        groups.setdefault((p["model"], p.get("mode"), p.get("decode")), []).append(p)
    out = []
    for (model, _, decode), pts in groups.items():
        ldcodec = pts[0]["kind"] == "ldcodec"
        linestyle, marker = DECODE_STYLE.get(decode, ("-", "o")) if ldcodec else BASELINE_STYLE
        out.append(_Series(_series_name(pts[0]), colours[model], linestyle, marker,
                           sorted(pts, key=lambda p: p["bpp_actual"])))
    return out


def _axes(width: float = 8.0, height: float = 4.5) -> tuple[Figure, object]:
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.grid(alpha=0.3)
    return fig, ax


def _legend(ax) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)


def _figure_html(fig: Figure, kind: str, dataset: str, caption: str) -> str:
    """``fig`` as an inline PNG ``<figure>``; ``data-figure`` names its kind (one per figure)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    uri = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
    return (f'<figure class="plot" data-figure="{_esc(kind)}" data-dataset="{_esc(dataset)}">'
            f'<img src="{uri}" alt="{_esc(caption)}"><figcaption>{_esc(caption)}</figcaption></figure>\n')


def _plot_curves(ax, series: list[_Series], value: Callable[[dict], float | None],
                 interval: Callable[[dict], tuple[float, float]] | None = None) -> None:
    """One line per series of ``value(point)`` against actual bpp; error bars from ``interval``."""
    for s in series:
        pts = [p for p in s.points if value(p) is not None]
        if not pts:
            continue
        y = [value(p) for p in pts]
        yerr = None
        if interval is not None:
            lows, highs = zip(*(interval(p) for p in pts))
            yerr = [[max(v - lo, 0.0) for v, lo in zip(y, lows)], [max(hi - v, 0.0) for v, hi in zip(y, highs)]]
        ax.errorbar([p["bpp_actual"] for p in pts], y, yerr=yerr, color=s.colour, linestyle=s.linestyle,
                    marker=s.marker, markersize=4, linewidth=1.2, capsize=2, label=s.label)


def log_rate_ticks(ax) -> None:
    """A log x axis with plain ticks at 1, 2 and 5 per decade (no crowded minor labels)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _log_rate_axis(ax, points: list[dict]) -> None:
    """Rates span decades (a learned code at 0.1 bpp, a JPEG file at 4): log scale when possible."""
    if points and all(p["bpp_actual"] > 0 for p in points):
        log_rate_ticks(ax)


def _psnr_figure(points: list[dict], colours: dict, dataset: str) -> str:
    fig, ax = _axes()
    _plot_curves(ax, _series(points, colours), lambda p: p["psnr"])
    _log_rate_axis(ax, points)
    ax.set(xlabel="actual rate (bpp)", ylabel="PSNR (dB)", title=f"{dataset}: PSNR vs actual bpp")
    _legend(ax)
    return _figure_html(fig, "psnr", dataset, f"{dataset}: PSNR against actual bits per pixel; baselines dashed.")


def _estimate_figure(points: list[dict], colours: dict, dataset: str) -> str:
    """Estimated against actual bpp of ldcodec points; empty when no point has an estimate."""
    pts = [p for p in points if p["kind"] == "ldcodec" and p.get("bpp_estimated") is not None]
    if not pts:
        return ""
    fig, ax = _axes(6.5, 4.5)
    groups: dict[tuple, list[dict]] = {}
    for p in pts:
        groups.setdefault((p["model"], p.get("mode")), []).append(p)
    for (model, mode), g in groups.items():
        ax.scatter([p["bpp_estimated"] for p in g], [p["bpp_actual"] for p in g], color=colours[model],
                   marker="s" if mode == "C" else "o", s=18, label=f"{model} ({mode})" if mode else model)
    top = max(max(p["bpp_estimated"], p["bpp_actual"]) for p in pts)
    ax.plot([0, top], [0, top], color="0.3", linewidth=0.8, linestyle="--", label="actual = estimated")
    ax.set(xlabel="estimated bpp (model densities)", ylabel="actual bpp (stream bytes × 8)",
           title=f"{dataset}: estimated vs actual rate")
    _legend(ax)
    return _figure_html(fig, "estimate", dataset,
                        f"{dataset}: estimated against actual bpp for ldcodec points; above the diagonal is coding overhead.")


def _noise_floors(results: list[dict], key: str) -> list[dict]:
    """The distinct noise-floor estimates for ``key`` across ``results``."""
    floors = [(r.get("noise_floor") or {}).get(key) for r in results]
    unique = {(f["value"], f["ci_low"], f["ci_high"]): f for f in floors if f is not None}
    return list(unique.values())


def _perception_figure(points: list[dict], results: list[dict], colours: dict, key: str, dataset: str) -> str:
    fig, ax = _axes()
    for i, floor in enumerate(_noise_floors(results, key)):
        ax.axhspan(floor["ci_low"], floor["ci_high"], color="0.5", alpha=0.25, linewidth=0,
                   label="noise floor, real vs real (95% CI)" if i == 0 else None)
        ax.axhline(floor["value"], color="0.4", linewidth=0.8, linestyle=":")

    def value(p: dict) -> float | None:
        est = (p.get("perception") or {}).get(key)
        return None if est is None else est["value"]

    def interval(p: dict) -> tuple[float, float]:
        est = p["perception"][key]
        return est["ci_low"], est["ci_high"]

    _plot_curves(ax, _series(points, colours), value, interval)
    label = ESTIMATORS.get(key, key)
    _log_rate_axis(ax, [p for p in points if value(p) is not None])
    ax.set(xlabel="actual rate (bpp)", ylabel=label, title=f"{dataset}: {label} vs actual bpp")
    _legend(ax)
    return _figure_html(fig, f"perception-{key}", dataset,
                        f"{dataset}: {label} against actual bpp; error bars are 95% CIs, the grey band the noise floor.")


def _plane_figure(points: list[dict], key: str, dataset: str) -> str:
    """MSE against one perception estimator, each point coloured by its actual bpp."""
    pts = [p for p in points if key in (p.get("perception") or {})]
    fig, ax = _axes(7.0, 4.5)
    bpp = [p["bpp_actual"] for p in pts]
    norm, cmap = Normalize(min(bpp), max(bpp)), matplotlib.colormaps["viridis"]
    for ldcodec, marker, name in ((True, "o", "ldcodec"), (False, "X", "baselines")):
        g = [p for p in pts if (p["kind"] == "ldcodec") == ldcodec]
        if g:
            ax.scatter([p["mse"] for p in g], [p["perception"][key]["value"] for p in g], c=[p["bpp_actual"] for p in g],
                       cmap=cmap, norm=norm, marker=marker, s=28, edgecolors="0.2", linewidths=0.4, label=name)
    if all(p["mse"] > 0 for p in pts):
        ax.set_xscale("log")
    fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="actual bpp")
    label = ESTIMATORS.get(key, key)
    ax.set(xlabel="MSE (pixels in [0, 1])", ylabel=label, title=f"{dataset}: distortion-perception plane")
    ax.legend(fontsize=7)
    return _figure_html(fig, f"plane-{key}", dataset, f"{dataset}: MSE against {label}, coloured by actual bpp.")


def _knob_eta(decode: str | None) -> float | None:
    """Where a decode sits on the flow -> realism knob: flow 0, ``eta=X`` X, realism 1, else None."""
    if decode in ("flow", "realism"):
        return 0.0 if decode == "flow" else 1.0
    return knob_eta(decode) if decode else None


def _knob_figure(points: list[dict], colours: dict, key: str, dataset: str) -> str:
    """The decoder-side distortion-perception curve at fixed rate: one line per (model, rate setting)
    whose stream was decoded at several points of the knob, MSE against ``key``; empty when none."""
    groups: dict[tuple, list[dict]] = {}
    for p in points:
        if p["kind"] == "ldcodec" and key in (p.get("perception") or {}):
            groups.setdefault((p["model"], rate_text(p["rate_setting"])), []).append(p)
    curves = {k: g for k, g in groups.items() if any(knob_eta(p.get("decode") or "") is not None for p in g)}
    if not curves:
        return ""
    fig, ax = _axes(7.5, 4.5)
    markers = "osD^v<>ph*"
    for i, ((model, setting), g) in enumerate(curves.items()):
        line = sorted((p for p in g if _knob_eta(p.get("decode")) is not None), key=lambda p: _knob_eta(p["decode"]))
        style = dict(color=colours[model], marker=markers[i % len(markers)])
        ax.plot([p["mse"] for p in line], [p["perception"][key]["value"] for p in line], linewidth=1.2, markersize=4,
                label=f"{model}, {setting}: eta 0 (flow) -> 1 (ancestral), {line[0]['bits_actual']:.0f} bits", **style)
        for p in line:
            ax.annotate(f"{_knob_eta(p['decode']):g}", (p["mse"], p["perception"][key]["value"]), fontsize=6,
                        textcoords="offset points", xytext=(3, 3))
        mse = [p for p in g if p.get("decode") == "mse"]
        if mse:
            ax.scatter([mse[0]["mse"]], [mse[0]["perception"][key]["value"]], s=40, facecolors="none",
                       edgecolors=style["color"], marker="s", label=f"{model}, {setting}: mse decode")
            ax.axvline(BLAU_MICHAELI_BOUND * mse[0]["mse"], color=style["color"], linestyle=":", linewidth=0.9,
                       label=f"2 x MSE(mse decode): perfect realism is reachable left of it (Blau & Michaeli 2019)")
    label = ESTIMATORS.get(key, key)
    ax.set(xlabel="MSE (pixels in [0, 1])", ylabel=label, title=f"{dataset}: decoder-side distortion-perception at fixed rate")
    _legend(ax)
    return _figure_html(fig, f"knob-{key}", dataset,
                        f"{dataset}: one stream per line decoded along DDIM's eta (labels), MSE against {label}.")


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


def _rd_figure(result: dict, rows: list[dict], dataset: str) -> str:
    bound = result["rd_bound"]
    fig, ax = _axes(7.0, 4.5)
    curve = sorted(zip(bound["distortion"], bound["rate_bits_per_dim"]))
    ax.plot(*zip(*curve), color="k", linewidth=1.5, label="Shannon R(D), reverse water-filling")
    for below, style in ((False, dict(color="tab:blue", marker="o", label="measured (real bits)")),
                         (True, dict(color="red", marker="X", label="below R(D): bits missing from the count"))):
        g = [r for r in rows if r["below"] == below]
        if g:
            ax.scatter([r["point"]["mse"] for r in g], [r["rate"] for r in g], s=30, zorder=3, **style)
    ax.set(xlabel="distortion D (MSE per dimension)", ylabel="rate (bits per dimension)",
           title=f"{dataset}: measured points and the Shannon bound (d = {len(bound['variances'])})")
    _legend(ax)
    return _figure_html(fig, "rd-bound", dataset,
                        f"{dataset}: rate bits_actual / d against MSE; no code can lie below the black curve.")


# ----------------------------------------------------------------------------- sections


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
        parts.append(_rd_figure(r, rd, dataset))
        rows = [[_esc(_series_name(x["point"])), _esc(_rate_text(x["point"])), _esc(_num(x["point"]["mse"])),
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
    return [k for k in ESTIMATORS if k in present] + sorted(present - ESTIMATORS.keys())


def _without_repeats(results: list[dict]) -> list[dict]:
    """``results`` of one section, each point that an earlier file also holds left out (figures,
    strips, bound rows and tables then show it once)."""
    kept = {id(p) for p in unique_points(p for r in results for p in r["points"])}
    return [{**r, "points": [p for p in r["points"] if id(p) in kept]} for r in results]


def _dataset_html(index: int, dataset: str, results: list[dict]) -> str:
    results = _without_repeats(results)
    points = [p for r in results for p in r["points"]]
    colours = _colours(points)
    estimators = _estimators_present(points)
    parts = [f'<section class="dataset" id="ds-{index}"><h2>{_esc(dataset)}</h2>\n']
    if points:
        parts += ["<h3>Rate-distortion</h3>\n", _psnr_figure(points, colours, dataset),
                  _estimate_figure(points, colours, dataset)]
    if estimators:
        parts.append("<h3>Rate-perception</h3>\n")
        parts += [_perception_figure(points, results, colours, k, dataset) for k in estimators]
    planes = [k for k in PLANES if k in estimators]
    if planes:
        parts.append("<h3>Distortion-perception plane</h3>\n")
        parts += [_plane_figure(points, k, dataset) for k in planes]
        parts += [_knob_figure(points, colours, k, dataset) for k in planes]
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
    """Write the HTML report of ``results`` (results objects, e.g. from :func:`load_results`) to ``output_path``.

    Results of the same dataset and image count (:func:`ldcodec.results.section_name`) are drawn
    in one section, in order of first appearance; a point that several files hold is drawn once
    (:func:`ldcodec.results.unique_points`, the first). Returns the path written. Raises :class:`LdcodecError` for no results
    or an object that is not schema ``ldcodec.results/2``.
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
