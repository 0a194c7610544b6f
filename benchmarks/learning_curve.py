"""A training run's learning curve against wall time, from its ``metrics.jsonl`` and ``launches.jsonl``.

    python benchmarks/learning_curve.py RUN -o OUT_STEM

Per logged step: wall minutes since the start of training (summed over the run's launches: each
launch logs its cumulative images/s since it started, so its elapsed time at step ``s`` is
``(s - start_step) x batch / images_per_s``; steps a later launch redid are taken from that launch),
images seen, the training batch's reconstruction PSNR (``-10 log10 mse``, pixels in [0, 1]), the
latent's bits under the prior (``(CE - H) / ln 2`` per image: the KL part of the negative ELBO, the
rate at the VAE's ceiling) and the bound in bits/dim. Training-batch numbers, so they run slightly
above the test set's; ``benchmarks/vae_psnr.py`` measures checkpoints on test images.
Writes ``OUT_STEM.csv``, ``OUT_STEM.json`` and ``OUT_STEM.png`` (PSNR and latent bits against minutes).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path


def curve(run: Path) -> list[dict]:
    launches = [json.loads(line) for line in (run / "launches.jsonl").read_text().splitlines() if line.strip()]
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    starts = [launch["start_step"] for launch in launches]
    batch = launches[0]["effective_batch"]
    rows: dict[int, dict] = {}
    offset, k = 0.0, 0  # minutes before the current launch, its index
    for m in metrics:
        while k + 1 < len(starts) and m["step"] > starts[k + 1]:
            # the next launch began: the time of this one up to its successor's start step
            k += 1
            prev = max((r for r in rows.values() if r["step"] <= starts[k]), key=lambda r: r["step"])
            offset = prev["minutes"]
        minutes = offset + (m["step"] - starts[k]) * batch / m["images_per_s"] / 60
        rows[m["step"]] = {"step": m["step"], "minutes": round(minutes, 2), "images": m["step"] * batch,
                           "train_psnr": round(-10 * math.log10(m["mse"]), 3),
                           "latent_bits": round((m["ce"] - m["entropy"]) / math.log(2), 1),
                           "bpd": round(m["bpd"], 4), "images_per_s": round(m["images_per_s"], 1)}
    return [rows[s] for s in sorted(rows)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path)
    p.add_argument("-o", "--out", required=True, help="output path without suffix")
    a = p.parse_args()
    rows = curve(a.run)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"run": str(a.run), "rows": rows}, indent=1) + "\n")
    with out.with_suffix(".csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    minutes = [r["minutes"] for r in rows]
    ax.plot(minutes, [r["train_psnr"] for r in rows], color="C0")
    ax.set_xlabel("wall time (minutes, one CPU thread)")
    ax.set_ylabel("training-batch reconstruction PSNR (dB)", color="C0")
    ax2 = ax.twinx()
    ax2.plot(minutes, [r["latent_bits"] for r in rows], color="C1")
    ax2.set_ylabel("latent bits per image under the prior", color="C1")
    ax.set_title(f"learning curve: {a.run.name}")
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=120)
    print(json.dumps(rows[-1]))


if __name__ == "__main__":
    main()
