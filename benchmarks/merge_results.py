"""Merge evaluations of the same images, classifier, seed and estimators into one results file.

    python benchmarks/merge_results.py OUT.json HEADER.json INPUT...

Each INPUT is a results JSON or the point log (``OUTPUT.partial.jsonl``) of an evaluation stopped
early, which contributes the rate settings it finished; ``PATH:CODEC,CODEC`` keeps only the points
of those codecs (e.g. ``old.json:webp,factorized`` when a newer file replaces its hyperprior). The header and noise floors come from
HEADER.json, a finished evaluation of the same images and estimators (their halves are the same).
A point that several inputs hold (same model, codec, decode and rate
setting) is taken from the first. The realism/MSE ratios and the Bjøntegaard table are recomputed over the merged points.
"""

from __future__ import annotations

import json
import sys

from ldcodec.metrics.bjontegaard import bd_table
from ldcodec.results import realism_ratios, unique_points, write_results


def points_of(spec: str) -> list[dict]:
    path, _, codecs = spec.partition(":")
    points = points_in(path)
    keep = set(codecs.split(",")) if codecs else None
    missing = (keep or set()) - {p["codec"] for p in points}
    if missing:
        sys.exit(f"{path} has no points of {', '.join(sorted(missing))}")
    return [p for p in points if keep is None or p["codec"] in keep]


def points_in(path: str) -> list[dict]:
    if not path.endswith(".partial.jsonl"):
        return json.load(open(path))["points"]
    points = []
    for line in open(path).read().splitlines()[1:]:
        try:
            points += json.loads(line)["points"]
        except ValueError:
            break  # the last line of a killed run
    return points


def merged_points(inputs: list[str]) -> list[dict]:
    """The points of ``inputs`` (:func:`points_of` specs) in order, each (model, codec, decode, rate) once."""
    return unique_points(p for spec in inputs for p in points_of(spec))


def main() -> None:
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    out, header, inputs = sys.argv[1], sys.argv[2], sys.argv[3:]
    points = merged_points(inputs)
    results = {**json.load(open(header)), "points": points, "realism_mse_ratio": realism_ratios(points),
               "bd": bd_table(points)}
    write_results(results, out)
    print(f"{out}: {len(points)} points")


if __name__ == "__main__":
    main()
