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
sweep goes on; a failed cell is retried by the next sweep. After each cell the summary is rewritten
(:func:`ldcodec.sweep_summary.write_summary`): ``OUT/summary.md`` (budget and operating points of
every cell, and the effects of the four choices, :mod:`ldcodec.grid_effects`), ``OUT/summary.csv``,
``OUT/report.html`` and ``OUT/rd-<dataset>.png``.

The protocol (:class:`Protocol`): the first ``limit`` images of the test split; mode U at the
fixed bit budgets per image of the dataset (``{"bits": B}`` through the ``diffc`` codec); mode C at
its one trained rate; every decode; the same perception estimators, critic steps and seed.

Cell result file (``ldcodec.sweep-cell/1``)::

    {"schema", "cell", "hash", "status": "ok"|"failed", "config", "protocol", "note", "created",
     "training": {"steps", "start_step", "seconds", "machine", "last_metrics"},
     "evaluation_seconds", "results": <ldcodec.results/2 object>, "error": {"message", "traceback"}}
"""

from __future__ import annotations

import datetime
import fnmatch
import hashlib
import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .config import Config, load_config, portable_config
from .diffusion.decodes import DECODES
from .errors import LdcodecError
from .evaluate import PERCEPTION
from .files import write_atomic
from .results import validate_results
from .sweep_summary import duration, write_summary

CELL_SCHEMA = "ldcodec.sweep-cell/1"
KNOWN = Path("benchmarks/results/sweep")
TRACEBACK_LINES = 25


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

        return Settings(mode_u=[{"bits": float(b)} for b in self.bits[cfg.data.dataset]],
                        decodes=self.decodes, perception=self.perception, critic_steps=self.critic_steps,
                        per_image=True, seed=self.seed, device=device, progress=progress)


@dataclass
class Cell:
    """A selected grid cell: its name, resolved config, protocol part and hash."""

    name: str
    cfg: Config
    protocol: dict
    hash: str = ""

    def __post_init__(self):
        config = portable_config(self.cfg)
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
    chose, not the budget asked for), keep reconstruction PNGs of the realism decode only and per-image
    results of the mse decode only (what the effects' intervals resample): the cell files stay small."""
    u = [p for p in results["points"] if p.get("mode") == "U"]
    rates = settings.mode_u
    per_rate = len(u) // max(len(rates), 1)
    if u and per_rate * len(rates) != len(u):
        raise LdcodecError(f"{len(u)} mode U points do not split into {len(rates)} rate settings")
    for i, p in enumerate(u):
        p["target_bits"] = rates[i // per_rate]["bits"]
    for p in results["points"]:
        if p["decode"] != "realism":
            p["recon_png"] = None
        if p["decode"] != "mse":
            p.pop("per_image", None)


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
        eta = f"ETA {duration(left * sum(spent) / len(spent))}" if left else "done"
        what = "ok" if r["status"] == "ok" else f"FAILED ({r['error']['message'].splitlines()[0][:120]})"
        log(f"sweep [{i + 1}/{len(todo)}] {cell.name}: {what} in {duration(spent[-1])}; {left} left, {eta}")
        summarise()
    if not todo:
        summarise()
    return [done.get(c.key) for c in cells]


def finished(out: Path, cells: list[Cell]) -> dict[str, dict]:
    """The finished results in ``out/cells`` of ``cells`` (re-read before each summary, so that sweeps
    running side by side into one ``out``, e.g. one thread each, summarise each other's cells too)."""
    return {c.key: r for c in cells if (r := read_cell(out / "cells" / f"{c.key}.json", c)) is not None}
