"""Issue 28's budget pilot: how much one grid cell gains from each doubling of its training.

    python benchmarks/budget_pilot.py CELL.json... [--bits 128] [--boot 2000]

The cell files are one cell trained at several budgets (``ldcodec sweep --steps N`` per budget, all
evaluated on the same test images with per-image results). For each consecutive pair of budgets:
the mse decode's actual bits at the protocol's ``--bits`` budget and the mean per-image PSNR gain,
with a 95 % paired-bootstrap interval over the test images (percentile, ``--boot`` resamples).
A doubling that gains less than 0.3 dB marks the plateau budget (issue 28, part 1).
"""

from __future__ import annotations

import argparse
import json

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("cells", nargs="+")
    p.add_argument("--bits", type=float, default=128)
    p.add_argument("--boot", type=int, default=2000)
    a = p.parse_args()
    rows = []
    for path in a.cells:
        cell = json.load(open(path))
        point = next(q for q in cell["results"]["points"] if q["decode"] == "mse" and q.get("target_bits") == a.bits)
        rows.append((cell["training"]["steps"], cell["training"]["seconds"], point))
    rows.sort(key=lambda r: r[0])
    rng = np.random.default_rng(0)
    for (s0, _, p0), (s1, sec1, p1) in zip(rows, rows[1:]):
        gain = np.asarray(p1["per_image"]["psnr"]) - np.asarray(p0["per_image"]["psnr"])
        boots = [gain[rng.integers(0, len(gain), len(gain))].mean() for _ in range(a.boot)]
        print(json.dumps({"steps": [s0, s1], "train_minutes": round(sec1 / 60, 1),
                          "bits_actual": [round(p0["bits_actual"], 1), round(p1["bits_actual"], 1)],
                          "psnr": [round(p0["psnr"], 2), round(p1["psnr"], 2)], "gain_db": round(float(gain.mean()), 3),
                          "ci95": [round(float(np.percentile(boots, 2.5)), 3), round(float(np.percentile(boots, 97.5)), 3)],
                          "plateau": bool(np.percentile(boots, 97.5) < 0.3)}))


if __name__ == "__main__":
    main()
