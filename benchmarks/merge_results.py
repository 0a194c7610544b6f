"""Merge evaluations of the same images, classifier, seed and estimators into one results file.

    python benchmarks/merge_results.py OUT.json HEADER.json INPUT...

Each INPUT is a results JSON or the point log (``OUTPUT.partial.jsonl``) of an evaluation stopped
early, which contributes the rate settings it finished. The header and noise floors come from
HEADER.json, a finished evaluation of the same images and estimators (their halves are the same).
The realism/MSE ratios and the Bjøntegaard table are recomputed over the merged points.
"""

from __future__ import annotations

import json
import sys

from ldcodec.evaluate import realism_ratios
from ldcodec.metrics.bjontegaard import bd_table
from ldcodec.results import write_results


def points_of(path: str) -> list[dict]:
    if not path.endswith(".partial.jsonl"):
        return json.load(open(path))["points"]
    points = []
    for line in open(path).read().splitlines()[1:]:
        try:
            points += json.loads(line)["points"]
        except ValueError:
            break  # the last line of a killed run
    return points


def main() -> None:
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    out, header, inputs = sys.argv[1], sys.argv[2], sys.argv[3:]
    points = [p for path in inputs for p in points_of(path)]
    results = {**json.load(open(header)), "points": points, "realism_mse_ratio": realism_ratios(points),
               "bd": bd_table(points)}
    write_results(results, out)
    print(f"{out}: {len(points)} points")


if __name__ == "__main__":
    main()
