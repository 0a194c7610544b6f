"""The summary of ``ldcodec sweep``: tables of the finished cells, rewritten after each cell.

:func:`write_summary` writes into the sweep folder ``OUT``:

- ``summary.md``: every cell's status and training budget, three operating points per cell, all
  operating points, and the effects of the four choices (:mod:`ldcodec.grid_effects`);
- ``summary.csv``: one row per operating point (:func:`point_rows`);
- ``report.html``: :func:`ldcodec.report.render_report` over the finished cells' results;
- ``rd-<dataset>.png``: :func:`ldcodec.figures.write_grid_figure`, one figure per dataset.
"""

from __future__ import annotations

import csv
import datetime
import io
from pathlib import Path
from typing import TYPE_CHECKING

from .files import write_atomic
from .grid_effects import BOOTSTRAP, EFFECTS_DEFINITION, INTERVAL_DEFINITION, effects_rows
from .results import rate_text

if TYPE_CHECKING:
    from .sweep import Cell


def duration(seconds: float) -> str:
    """``42 s``, ``3.5 min`` or ``2.1 h``."""
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min" if seconds < 7200 else \
        f"{seconds / 3600:.1f} h"


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
        budget.append([c.name, c.hash, "ok", t["steps"], duration(t["seconds"]) +
                       (f" (resumed at {t['start_step']})" if t["start_step"] else ""),
                       duration(r["evaluation_seconds"]), r.get("note", ""), t["machine"]])
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
             INTERVAL_DEFINITION.format(boot=BOOTSTRAP), "",
             _md_table(["dataset", "choice", "B vs A", "pairs (with overlap / matched)", "ΔPSNR at equal bits (dB)",
                        "Δbits at equal PSNR (bits/image)", "Δbits at equal PSNR (%)",
                        "Δaccuracy at equal bits (points)"], effects_rows(ok)), ""]
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
        from .figures import write_grid_figure
        from .report import render_report  # looked up at each call (tests replace it)

        try:
            render_report([r["results"] for r in ok], out / "report.html")
            for dataset in dict.fromkeys(r["results"]["dataset"] for r in ok):
                write_grid_figure(out / f"rd-{dataset}.png", [r for r in ok if r["results"]["dataset"] == dataset])
        except Exception as e:  # noqa: BLE001 - the report is a view; the cells and tables are written
            return f"report.html or a figure not rewritten ({e.__class__.__name__}: {e})"
    return None
