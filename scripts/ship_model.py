"""Ship a trained run as a named model inside the package (issue 27): ``ldcodec.zoo.ship`` with a card
whose points come from an ``ldcodec evaluate`` results file of that run and whose training record
comes from the run's own logs.

    python scripts/ship_model.py RUN NAME --summary TEXT --results RESULTS.json --command "ldcodec train ..." \
        --quickstart '[{"bits": 64}, {"bits": 96}]' [--data-root DIR]
    python scripts/ship_model.py src/ldcodec/models/NAME NAME --summary TEXT --results RESULTS.json --evaluate "..."

The second form re-cards a shipped model (new measured points, e.g. on the full test set): RUN is
its own folder, and its training record and quick-start rates are kept from its card unless
``--command`` / ``--quickstart`` are given.

Card points: per point of the results file, the rate setting, decode, images, bits (ideal,
estimated, actual), bpp, PSNR, accuracy and FID with its noise floor, plus the evaluate command
(``--evaluate``, as run) that reproduces them. Training: steps, wall minutes and images/s from
``benchmarks/learning_curve.py``'s reading of the run's ``metrics.jsonl``/``launches.jsonl``, and the machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from learning_curve import curve  # noqa: E402

from ldcodec import zoo  # noqa: E402


def card_points(results: dict, evaluate: str) -> list[dict]:
    floor = results.get("noise_floor", {}).get("fid", {}).get("value")
    out = []
    for p in results["points"]:
        if p["kind"] != "ldcodec":
            continue
        fid = p["perception"].get("fid", {}).get("value") if p.get("perception") else None
        out.append({"rate_setting": p["rate_setting"], "decode": p["decode"], "images": p["images"],
                    "bits_ideal": p["bits_ideal"], "bits_estimated": p["bits_estimated"],
                    "bits_actual": p["bits_actual"], "bpp_actual": p["bpp_actual"], "psnr": p["psnr"],
                    "accuracy": p["accuracy"], "fid": fid, "fid_floor": floor, "evaluate": evaluate})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path)
    p.add_argument("name")
    p.add_argument("--summary", required=True)
    p.add_argument("--results", type=Path, required=True, help="ldcodec evaluate results of the run")
    p.add_argument("--evaluate", required=True, help="the evaluate command that made --results")
    p.add_argument("--command", help="the command that trained the run (required unless RUN is a shipped model)")
    p.add_argument("--quickstart", help="JSON list of rate settings for ldcodec quickstart (default: the card's)")
    p.add_argument("--data-root")
    a = p.parse_args()
    old = json.loads((a.run / zoo.CARD).read_text()) if (a.run / zoo.CARD).is_file() else None
    if a.command is None and old is None:
        p.error("--command is required for a run folder")
    if a.command is None:
        trained = old["trained"]
    else:
        rows = curve(a.run)
        trained = {"command": a.command, "steps": rows[-1]["step"], "minutes": rows[-1]["minutes"],
                   "images_per_s_last": rows[-1]["images_per_s"],
                   "machine": f"{platform.machine()} CPU, 1 thread (2-core machine shared with other jobs)"}
    if a.quickstart is None and old is None:
        p.error("--quickstart is required for a run folder")
    quickstart = old["quickstart_rates"] if a.quickstart is None else json.loads(a.quickstart)
    points = card_points(json.loads(a.results.read_text()), a.evaluate)
    out = zoo.ship(a.run, a.name, a.summary, trained, points, quickstart, data_root=a.data_root)
    print(json.dumps(zoo.card(a.name)["check"]), "->", out)


if __name__ == "__main__":
    main()
