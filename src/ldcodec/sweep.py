"""``ldcodec sweep``: train, evaluate and tabulate grid cells in turn, resumably, under one protocol.

For each selected cell config (``configs/grid/*.yaml``, selected by a glob on the cell name) the
sweep trains the cell into ``OUT/runs/<cell>-<hash>`` (resuming from its checkpoint if a previous
sweep was interrupted), evaluates it with :func:`ldcodec.evaluate.evaluate` under one
:class:`Protocol` shared by every cell, and writes the cell's result atomically to
``OUT/cells/<cell>-<hash>.json``. ``hash`` is over the cell's resolved config (without
``data.root``, which names a machine's folder, but marking a run on the built-in MNIST sample
rather than the dataset's shards) and the protocol, so a changed config or protocol
reruns the cell and an unchanged one is skipped. A cell also counts as finished when its file is
in a ``known`` folder (default ``benchmarks/results/sweep``: results committed to the repository,
so a sweep on a fresh machine skips them).

A cell that raises is recorded (``status: failed``, the message and the traceback's tail) and the
sweep goes on; a failed cell is retried by the next sweep. After each cell the summary is rewritten:
``OUT/summary.md`` (budget and operating points of every cell, and the effects table of
:func:`effects`), ``OUT/summary.csv`` (one row per operating point), ``OUT/report.html``
(:func:`ldcodec.report.render_report` over the finished cells) and ``OUT/rd-<dataset>.png``
(:func:`write_figure`: every cell's PSNR and accuracy against bits, one figure per dataset).

The protocol (:class:`Protocol`): the first ``limit`` images of the test split; mode U at the
fixed bit budgets per image of the dataset (``{"bits": B}`` through the ``diffc`` codec); mode C at
its one trained rate; every decode; the same perception estimators, critic steps and seed.

Cell result file (``ldcodec.sweep-cell/1``)::

    {"schema", "cell", "hash", "status": "ok"|"failed", "config", "protocol", "note", "created",
     "training": {"steps", "start_step", "seconds", "machine", "last_metrics"},
     "evaluation_seconds", "results": <ldcodec.results/2 object>, "error": {"message", "traceback"}}
"""

from __future__ import annotations

import csv
import datetime
import fnmatch
import hashlib
import io
import json
import math
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .config import Config, load_config
from .diffusion.decodes import DECODES
from .errors import LdcodecError
from .evaluate import PERCEPTION
from .files import write_atomic
from .results import rate_text, validate_results

CELL_SCHEMA = "ldcodec.sweep-cell/1"
KNOWN = Path("benchmarks/results/sweep")
TRACEBACK_LINES = 25
# The four choices of the grid: (name in the effects table, config getter, level A, level B).
FACTORS = (
    ("networks", lambda c: c["model"]["net"], "mlp", "cnn"),
    ("diffusion", lambda c: c["diffusion"]["family"], "sde", "ddpm"),
    ("mode", lambda c: "C" if c["cond"]["enabled"] else "U", "U", "C"),
    ("latent", lambda c: c["model"]["latent"], "gauss", "delta"),
)


@dataclass(frozen=True)
class Protocol:
    """One evaluation protocol for every cell of a sweep.

    ``bits``: mode U bit budgets per image, per dataset (CIFAR-10: 0.1, 0.25, 0.5, 0.75 and 1 bpp
    of its 32 x 32 images). Mode C cells are measured at their one trained rate.
    """

    limit: int = 1000
    split: str = "test"
    bits: dict[str, tuple[float, ...]] = field(default_factory=lambda: {
        "mnist": (32, 64, 128, 256, 512), "cifar10": tuple(b * 1024 for b in (0.1, 0.25, 0.5, 0.75, 1.0))})
    decodes: tuple[str, ...] = tuple(DECODES)
    perception: tuple[str, ...] = PERCEPTION
    critic_steps: int = 300
    seed: int = 0
    # The codecs' revision: their bits change when the coding does (2: mode U's grid by dynamic
    # programming, one range coder per file for mode C), and a cell measured before is measured again.
    codecs: int = 2

    def for_cell(self, cfg: Config) -> dict:
        """The part of the protocol that applies to ``cfg`` (what its hash covers)."""
        d = asdict(self)
        d["bits"] = [] if cfg.cond.enabled else list(self.bits[cfg.data.dataset])
        d["decodes"], d["perception"] = list(self.decodes), list(self.perception)
        return d

    def settings(self, cfg: Config, device: str, progress: bool):
        from .evaluate import Settings

        return Settings(rates={"diffc": [{"bits": float(b)} for b in self.bits[cfg.data.dataset]]},
                        decodes=self.decodes, perception=self.perception, critic_steps=self.critic_steps,
                        seed=self.seed, device=device, progress=progress)


@dataclass
class Cell:
    """A selected grid cell: its name, resolved config, protocol part and hash."""

    name: str
    cfg: Config
    protocol: dict
    hash: str = ""

    def __post_init__(self):
        config = self.cfg.to_dict()
        config["data"].pop("root")
        key = {"config": config, "protocol": self.protocol}
        if not (self.cfg.data.root or os.environ.get("LDCODEC_DATA")):  # not the dataset's shards (data.py)
            key["data"] = "built-in MNIST sample"
        self.hash = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]

    @property
    def key(self) -> str:
        return f"{self.name}-{self.hash}"


def machine() -> str:
    """``x86_64, 2 CPU cores (1 torch thread), torch 2.13.0`` (and the GPU's name on CUDA)."""
    import torch

    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return (f"{platform.machine()}, {os.cpu_count()} CPU cores ({torch.get_num_threads()} torch thread(s)){gpu}, "
            f"torch {torch.__version__}")


def select_cells(grid: str | Path, pattern: str, overrides: list[str], protocol: Protocol) -> list[Cell]:
    """The grid configs whose cell name matches the glob ``pattern``, with ``overrides`` applied."""
    paths = sorted(Path(grid).glob("*.yaml"))
    if not paths:
        raise LdcodecError(f"no grid configs in {grid}; run from the repository root or pass --grid configs/grid")
    chosen = [p for p in paths if fnmatch.fnmatchcase(p.stem, pattern)]
    if not chosen:
        raise LdcodecError(f"--cells {pattern!r} matches no cell in {grid}; cells: {', '.join(p.stem for p in paths)}")
    cells = []
    for p in chosen:
        cfg = load_config(p, overrides)
        cells.append(Cell(cfg.name, cfg, protocol.for_cell(cfg)))
    return cells


def read_cell(path: Path, cell: Cell) -> dict | None:
    """The finished result of ``cell`` at ``path``, or None (absent, failed, or of another config)."""
    try:
        r = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as e:
        raise LdcodecError(f"{path}: unreadable cell result ({e}); delete it to rerun the cell") from None
    if r.get("schema") != CELL_SCHEMA or r.get("hash") != cell.hash or r.get("status") != "ok":
        return None
    validate_results(r["results"], str(path))
    return r


def write_json(path: Path, obj: dict) -> Path:
    return write_atomic(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=1)), parents=True)


def run_cell(cell: Cell, out: Path, protocol: Protocol, device: str, data_root, progress: bool) -> dict:
    """Train (or resume) and evaluate one cell; the result object (not yet written)."""
    from .evaluate import evaluate
    from .train import Trainer

    run = out / "runs" / cell.key
    start = time.perf_counter()
    trainer = Trainer(cell.cfg, run, resume=True, device=device, progress=progress)
    start_step = trainer.start
    last = trainer.run()
    train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    settings = protocol.settings(cell.cfg, device, progress)
    results = evaluate(str(run), None, protocol.split, protocol.limit, data_root, None, settings)
    annotate(results, settings)
    return {"training": {"steps": cell.cfg.train.steps, "start_step": start_step, "seconds": train_seconds,
                         "machine": machine(), "device": device, "last_metrics": last},
            "evaluation_seconds": time.perf_counter() - start, "results": results}


def annotate(results: dict, settings) -> None:
    """Mark each mode U point with the protocol's ``target_bits`` (the codec records the stop time it
    chose, not the budget asked for) and keep reconstruction PNGs of the realism decode only (the
    cell files stay small)."""
    u = [p for p in results["points"] if p["codec"] == "diffc"]
    rates = settings.rates["diffc"]
    per_rate = len(u) // max(len(rates), 1)
    if u and per_rate * len(rates) != len(u):
        raise LdcodecError(f"{len(u)} mode U points do not split into {len(rates)} rate settings")
    for i, p in enumerate(u):
        p["target_bits"] = rates[i // per_rate]["bits"]
    for p in results["points"]:
        if p["decode"] != "realism":
            p["recon_png"] = None


def sweep(cells: list[Cell], out: str | Path, protocol: Protocol, device: str = "cpu", data_root=None,
          known: str | Path | None = KNOWN, note: str = "", progress: bool = True, report: bool = True,
          others: list[Cell] = (), log: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True)
          ) -> list[dict]:
    """Run every cell not yet finished (in ``out/cells`` or ``known``); returns the cells' results in order.

    ``others``: cells not run now whose finished results in ``out/cells`` also go into the summary
    (e.g. the rest of the grid, swept before into the same ``out``).
    """
    out = Path(out)
    selected = {c.key for c in cells}
    others = [c for c in others if c.key not in selected]
    done = finished(out, others)
    todo = []
    for cell in cells:
        r = read_cell(out / "cells" / f"{cell.key}.json", cell)
        if r is None and known is not None and (Path(known) / f"{cell.key}.json").is_file():
            r = read_cell(Path(known) / f"{cell.key}.json", cell)
            if r is not None:
                write_json(out / "cells" / f"{cell.key}.json", r)
        if r is not None:
            done[cell.key] = r
        else:
            todo.append(cell)
    log(f"sweep: {len(cells)} cell(s), {len(cells) - len(todo)} already finished, {len(todo)} to run into {out}")

    def summarise():
        done.update(finished(out, [c for c in others if c.key not in done]))  # a sweep beside this one
        if problem := write_summary(out, [c for c in others if c.key in done] + list(cells), done, report):
            log(f"sweep: warning: {problem}")

    spent = []
    for i, cell in enumerate(todo):
        start = time.perf_counter()
        head = {"schema": CELL_SCHEMA, "cell": cell.name, "hash": cell.hash, "config": cell.cfg.to_dict(),
                "protocol": cell.protocol, "note": note,
                "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        try:
            r = {**head, "status": "ok", **run_cell(cell, out, protocol, device, data_root, progress)}
        except Exception as e:  # noqa: BLE001 - one cell's failure is recorded, the sweep goes on
            tail = traceback.format_exc().splitlines()[-TRACEBACK_LINES:]
            r = {**head, "status": "failed", "error": {"message": f"{e.__class__.__name__}: {e}",
                                                       "traceback": "\n".join(tail)}}
        write_json(out / "cells" / f"{cell.key}.json", r)
        done[cell.key] = r
        spent.append(time.perf_counter() - start)
        left = len(todo) - i - 1
        eta = f"ETA {_duration(left * sum(spent) / len(spent))}" if left else "done"
        what = "ok" if r["status"] == "ok" else f"FAILED ({r['error']['message'].splitlines()[0][:120]})"
        log(f"sweep [{i + 1}/{len(todo)}] {cell.name}: {what} in {_duration(spent[-1])}; {left} left, {eta}")
        summarise()
    if not todo:
        summarise()
    return [done.get(c.key) for c in cells]


def finished(out: Path, cells: list[Cell]) -> dict[str, dict]:
    """The finished results in ``out/cells`` of ``cells`` (re-read before each summary, so that sweeps
    running side by side into one ``out``, e.g. one thread each, summarise each other's cells too)."""
    return {c.key: r for c in cells if (r := read_cell(out / "cells" / f"{c.key}.json", c)) is not None}


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min" if seconds < 7200 else \
        f"{seconds / 3600:.1f} h"


# -- summary ----------------------------------------------------------------------------------


def _est(p: dict, name: str):
    e = (p.get("perception") or {}).get(name)
    return None if e is None else e["value"]


def point_rows(r: dict) -> list[dict]:
    """One flat row per operating point of a finished cell result (CSV columns)."""
    res, t = r["results"], r["training"]
    floor = res.get("noise_floor") or {}
    rows = []
    for p in res["points"]:
        rows.append({"cell": r["cell"], "hash": r["hash"], "dataset": res["dataset"], "codec": p["codec"],
                     "target_bits": p.get("target_bits"), "rate_setting": rate_text(p["rate_setting"]),
                     "decode": p["decode"],
                     "bits_actual": p["bits_actual"], "bpp_actual": p["bpp_actual"],
                     "bits_estimated": p.get("bits_estimated"), "psnr": p["psnr"], "mse": p["mse"],
                     "ssim": p.get("ssim"), "fid": _est(p, "fid"),
                     "fid_floor": (floor.get("fid") or {}).get("value"), "f_js": _est(p, "f_js"),
                     "f_js_floor": (floor.get("f_js") or {}).get("value"), "accuracy": p.get("accuracy"),
                     "images": p.get("images"), "train_steps": t["steps"], "train_seconds": t["seconds"],
                     "machine": t["machine"], "note": r.get("note", "")})
    return rows


def headline_rows(r: dict) -> list[list[str]]:
    """Three operating points of a finished cell (mode U: its lowest, middle and highest bit budget;
    mode C: its one rate): actual bits, the mse decode's PSNR and accuracy, the realism decode's PSNR
    and perception (FID and the critic's JS bound, each with its noise floor)."""
    by: dict[tuple, dict] = {}
    for row in point_rows(r):
        by.setdefault((row["target_bits"], row["rate_setting"]), {})[row["decode"]] = row
    keys = list(by)
    out = []
    for key in keys if len(keys) <= 3 else [keys[0], keys[len(keys) // 2], keys[-1]]:
        m = by[key].get("mse") or next(iter(by[key].values()))
        z = by[key].get("realism") or m
        out.append([r["cell"], _f(m["target_bits"], ".0f"), m["rate_setting"], _f(m["bits_actual"], ".1f"),
                    _f(m["psnr"]), _f(z["psnr"]), _with_floor(z, "fid", ".2f"), _with_floor(z, "f_js", ".3f"),
                    _f(m["accuracy"], ".3f")])
    return out


def _f(v, spec: str = ".2f") -> str:
    return "" if v is None else format(v, spec)


def _with_floor(row: dict, name: str, spec: str) -> str:
    """``value (floor)`` of the perception estimate ``name`` of a :func:`point_rows` row; '' if absent."""
    return "" if row[name] is None else f"{_f(row[name], spec)} ({_f(row[name + '_floor'], spec)})"


def _md_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def summary_markdown(cells: list[Cell], done: dict[str, dict]) -> str:
    """The summary page: every cell's status and budget, three operating points per cell, all of its
    operating points, the effects table."""
    budget, points = [], []
    for c in cells:
        r = done.get(c.key)
        if r is None:
            budget.append([c.name, c.hash, "pending", "", "", "", "", ""])
            continue
        if r["status"] != "ok":
            budget.append([c.name, c.hash, "failed", "", "", "", r.get("note", ""),
                           r["error"]["message"].splitlines()[0][:200]])
            continue
        t = r["training"]
        budget.append([c.name, c.hash, "ok", t["steps"], _duration(t["seconds"]) +
                       (f" (resumed at {t['start_step']})" if t["start_step"] else ""),
                       _duration(r["evaluation_seconds"]), r.get("note", ""), t["machine"]])
        points += [[row["cell"], _f(row["target_bits"], ".0f"), row["rate_setting"], row["decode"] or "", _f(row["bits_actual"], ".1f"),
                    _f(row["bpp_actual"], ".4f"), _f(row["psnr"]), _f(row["ssim"], ".3f"),
                    _with_floor(row, "fid", ".2f"), _with_floor(row, "f_js", ".3f"),
                    _f(row["accuracy"], ".3f")] for row in point_rows(r)]
    ok = [done[c.key] for c in cells if c.key in done and done[c.key]["status"] == "ok"]
    parts = ["# Sweep summary", "",
             f"Rewritten after each cell ({datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC). "
             "Rates are actual bits per image (the image's share of one file of the whole set); PSNR in dB; "
             "perception estimates with the noise floor (real vs real at the same sample size) in brackets.", "",
             "## Cells and training budgets", "",
             _md_table(["cell", "hash", "status", "steps", "train time", "eval time", "note", "machine / error"],
                       budget), "", "## Three operating points per cell", "",
             _md_table(["cell", "target bits", "rate", "bits", "PSNR (mse)", "PSNR (realism)", "FID realism (floor)",
                        "f-JS realism (floor)", "accuracy (mse)"], [row for r in ok for row in headline_rows(r)]),
             "", "## Operating points", "",
             _md_table(["cell", "target bits", "rate", "decode", "bits", "bpp", "PSNR", "SSIM", "FID (floor)", "f-JS (floor)",
                        "accuracy"], points), "", "## Effects of the four choices", "", EFFECTS_DEFINITION, "",
             _md_table(["dataset", "choice", "B vs A", "pairs (with overlap / matched)", "ΔPSNR at equal bits (dB)",
                        "Δbits at equal PSNR (bits/image)", "Δbits at equal PSNR (%)"], effects_rows(ok)), ""]
    return "\n".join(parts)


def write_summary(out: Path, cells: list[Cell], done: dict[str, dict], report: bool = True) -> str | None:
    """Rewrite ``summary.md``, ``summary.csv`` and (``report``) ``report.html`` from the finished cells;
    returns why the report could not be drawn, if it could not (the sweep goes on)."""
    ok = [done[c.key] for c in cells if c.key in done and done[c.key]["status"] == "ok"]
    rows = [row for r in ok for row in point_rows(r)]
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    write_atomic(out / "summary.csv", lambda tmp: tmp.write_text(buf.getvalue()), parents=True)
    write_atomic(out / "summary.md", lambda tmp: tmp.write_text(summary_markdown(cells, done)))
    if report and ok:
        from .report import render_report

        try:
            render_report([r["results"] for r in ok], out / "report.html")
            for dataset in dict.fromkeys(r["results"]["dataset"] for r in ok):
                write_figure(out / f"rd-{dataset}.png", [r for r in ok if r["results"]["dataset"] == dataset])
        except Exception as e:  # noqa: BLE001 - the report is a view; the cells and tables are written
            return f"report.html or a figure not rewritten ({e.__class__.__name__}: {e})"
    return None


# One colour per (networks, diffusion family) and one line style per latent, so that a reader can
# find each of the four choices in the figure; mode U cells are lines, mode C cells squares.
_FIGURE_COLOURS = {("mlp", "sde"): "tab:blue", ("mlp", "ddpm"): "tab:cyan", ("cnn", "sde"): "tab:red",
                   ("cnn", "ddpm"): "tab:orange"}
_FIGURE_LINES = {"gauss": "-", "delta": "--"}


def write_figure(path: Path, cells: list[dict]) -> Path:
    """PNG of one dataset's finished cells: PSNR of the mse decode (left) and the classifier's accuracy on it
    (right) against actual bits per image, log scale; mode U cells as lines over their bit budgets, mode C
    cells as one square each."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from .report import log_rate_ticks

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
    acc.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.suptitle(f"{dataset}: the grid's cells (lines: mode U budgets; squares: mode C; dashed: delta latent)",
                 fontsize=10)
    return write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))


# -- effects ----------------------------------------------------------------------------------

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
