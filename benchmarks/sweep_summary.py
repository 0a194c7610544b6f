"""Rewrite a sweep folder's summary over cells trained to different step budgets.

`ldcodec sweep --steps N` summarises the cells that share its settings, N included (the steps are part
of each cell's hash), so two sweeps into one folder with other `--steps` (e.g. MLP cells at 1000 steps,
CNN cells at 200) each leave a summary of their own half. This writes one summary, CSV, report and
figure over both (RESULTS.md's tables):

    python benchmarks/sweep_summary.py --out runs/sweep-mnist --limit 200 --data-root ../shared/data \
        --budget 'mnist-mlp-*=1000' --budget 'mnist-cnn-*=200' --set model.x_sigma=0.02 ...

Finished cells are read from OUT/cells and from --known (the committed results).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from ldcodec import sweep as sw
from ldcodec.sweep_summary import write_summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path, help="the sweep folder")
    ap.add_argument("--budget", action="append", required=True, metavar="GLOB=STEPS",
                    help="cells matching GLOB trained STEPS steps (repeatable)")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="the sweeps' --set")
    ap.add_argument("--limit", type=int, default=1000, help="the sweeps' --limit")
    ap.add_argument("--data-root", default=None, help="the sweeps' --data-root")
    ap.add_argument("--grid", default="configs/grid")
    ap.add_argument("--known", default=str(sw.KNOWN), help="folder of committed cell results")
    a = ap.parse_args()
    cells = []
    for budget in a.budget:
        pattern, steps = budget.rsplit("=", 1)
        overrides = a.set + [f"train.steps={int(steps)}"] + ([f"data.root={a.data_root}"] if a.data_root else [])
        cells += sw.select_cells(a.grid, pattern, overrides, sw.Protocol(limit=a.limit))
    (a.out / "cells").mkdir(parents=True, exist_ok=True)
    for cell in cells:
        known = Path(a.known) / f"{cell.key}.json"
        if known.is_file() and not (a.out / "cells" / known.name).is_file():
            shutil.copy(known, a.out / "cells" / known.name)
    done = sw.finished(a.out, cells)
    problem = write_summary(a.out, cells, done)
    print(f"{len(done)} of {len(cells)} cells finished; summary in {a.out}" + (f" ({problem})" if problem else ""))


if __name__ == "__main__":
    main()
