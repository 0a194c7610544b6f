"""The figures of ``ldcodec report`` and ``ldcodec sweep``, drawn with matplotlib on the Agg canvas.

No pyplot and no global backend state: every figure is a :class:`~matplotlib.figure.Figure` with
its own canvas. The report's figures (:mod:`ldcodec.report` decides which to draw) come back as an
inline base64 PNG ``<figure>`` whose ``data-figure`` names its kind; the sweep's grid figure
(:func:`write_grid_figure`) is written to a PNG file.

- :func:`psnr_figure`, :func:`estimate_figure`: PSNR against *actual* bpp, one line per (model,
  mode, decode) series, baselines dashed; estimated against actual bpp (docs/design.md §3);
- :func:`perception_figure`: one perception estimator against actual bpp, its noise floor (real vs
  real, docs/design.md §7) as a band and 95% CIs as error bars;
- :func:`plane_figure`: the distortion-perception plane (Blau & Michaeli, "The
  perception-distortion tradeoff", CVPR 2018), MSE against an estimator, coloured by bpp;
- :func:`knob_figure`: the decoder-side distortion-perception curve at fixed rate along the
  ``eta=X`` knob, with Blau & Michaeli's 2 x MSE(mse decode) reference for perfect realism;
- :func:`rd_figure`: Gaussian-source points against the Shannon bound ``R(D)``;
- :func:`write_grid_figure`: a sweep's cells of one dataset, PSNR and accuracy against bits.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from dataclasses import dataclass
from html import escape
from pathlib import Path

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from ldcodec.diffusion.decodes import knob_eta
from ldcodec.files import write_atomic
from ldcodec.results import BLAU_MICHAELI_BOUND, rate_text, series_name

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
#: ldcodec decodes: (line style, marker); baselines are dashed.
DECODE_STYLE = {"flow": ("-", "o"), "realism": (":", "^"), "mse": ("-.", "s")}
BASELINE_STYLE = ("--", "x")


@dataclass
class _Series:
    """Points of one (model, mode, decode), sorted by actual bpp, with their line style."""

    label: str
    colour: tuple
    linestyle: str
    marker: str
    points: list[dict]


def model_colours(points: list[dict]) -> dict[str, tuple]:
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
        out.append(_Series(series_name(pts[0]), colours[model], linestyle, marker,
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
    return (f'<figure class="plot" data-figure="{escape(kind)}" data-dataset="{escape(dataset)}">'
            f'<img src="{uri}" alt="{escape(caption)}"><figcaption>{escape(caption)}</figcaption></figure>\n')


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


def psnr_figure(points: list[dict], colours: dict, dataset: str) -> str:
    fig, ax = _axes()
    _plot_curves(ax, _series(points, colours), lambda p: p["psnr"])
    _log_rate_axis(ax, points)
    ax.set(xlabel="actual rate (bpp)", ylabel="PSNR (dB)", title=f"{dataset}: PSNR vs actual bpp")
    _legend(ax)
    return _figure_html(fig, "psnr", dataset, f"{dataset}: PSNR against actual bits per pixel; baselines dashed.")


def estimate_figure(points: list[dict], colours: dict, dataset: str) -> str:
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


def perception_figure(points: list[dict], results: list[dict], colours: dict, key: str, dataset: str) -> str:
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


def plane_figure(points: list[dict], key: str, dataset: str) -> str:
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


def knob_figure(points: list[dict], colours: dict, key: str, dataset: str) -> str:
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


def rd_figure(result: dict, rows: list[dict], dataset: str) -> str:
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


# ----------------------------------------------------------------------------- the sweep's grid


# One colour per (networks, diffusion family) and one line style per latent, so that a reader can
# find each of the four choices in the figure; mode U cells are lines, mode C cells squares.
_FIGURE_COLOURS = {("mlp", "sde"): "tab:blue", ("mlp", "ddpm"): "tab:cyan", ("cnn", "sde"): "tab:red",
                   ("cnn", "ddpm"): "tab:orange"}
_FIGURE_LINES = {"gauss": "-", "delta": "--"}


def write_grid_figure(path: Path, cells: list[dict]) -> Path:
    """PNG of one dataset's finished cells: PSNR of the mse decode (left) and the classifier's accuracy on it
    (right) against actual bits per image, log scale; mode U cells as lines over their bit budgets, mode C
    cells as one square each."""
    fig = Figure(figsize=(12, 4.8))
    FigureCanvasAgg(fig)
    psnr, acc = fig.subplots(1, 2)
    for r in cells:
        cfg, pts = r["config"], [p for p in r["results"]["points"] if p["decode"] == "mse"]
        pts.sort(key=lambda p: p["bits_actual"])
        style = {"color": _FIGURE_COLOURS[(cfg["model"]["net"], cfg["diffusion"]["family"])],
                 "linestyle": _FIGURE_LINES[cfg["model"]["latent"]], "label": r["cell"], "markersize": 5,
                 "marker": "s" if cfg["cond"]["enabled"] else "o"}
        bits = [p["bits_actual"] for p in pts]
        psnr.plot(bits, [p["psnr"] for p in pts], **style)
        if all(p.get("accuracy") is not None for p in pts):
            acc.plot(bits, [p["accuracy"] for p in pts], **style)
    dataset = cells[0]["results"]["dataset"]
    for ax, label in ((psnr, "PSNR of the mse decode (dB)"), (acc, "classifier accuracy on the mse decode")):
        log_rate_ticks(ax)
        ax.grid(alpha=0.3)
        ax.set(xlabel="actual bits per image (file share)", ylabel=label, title=f"{dataset}: {label}")
    _legend(acc)
    fig.suptitle(f"{dataset}: the grid's cells (lines: mode U budgets; squares: mode C; dashed: delta latent)",
                 fontsize=10)
    return write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
