"""Mode U's coding grid: the dynamic programme's chain against the equal-information chain.

    OMP_NUM_THREADS=1 python benchmarks/coding_grid.py RUN --data-root ../shared/data -n 500 \
        --t 0.5,0.3,0.2,0.1 --out benchmarks/results/coding-grid-mnist.jsonl

For each stop time, two chains with the same number of steps K (the codec's automatic number):
``dp``, the chain the codec uses (:meth:`CodingTables.grid`, the least predicted cost), and
``equal``, the placement of the first format 2 version (steps of equal expected *fine-level*
information, i.e. equal shares of the continuous ideal). Both are run on the same ``n`` test
images: predicted cost, ideal / estimated / actual bits per image (one file for the ``n`` images)
and the mse decode's PSNR. The ideal is the same for both (it does not depend on the chain).
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch

from ldcodec.checkpoint import load_model
from ldcodec.codecs import model_codec
from ldcodec.data import load_split, to_tensor
from ldcodec.metrics import distortion


def equal_information_chain(tables, stop: int, steps: int) -> list[int]:
    """Levels of ``steps`` steps with equal shares of the fine-level expected bits (the old grid)."""
    total = tables.bits.sum(1)
    inner = {int(np.searchsorted(total[:stop + 1], int(total[stop]) * j // steps)) for j in range(1, steps)}
    return [0, *sorted(inner - {0, stop}), stop]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run")
    p.add_argument("--data-root")
    p.add_argument("-n", type=int, default=500)
    p.add_argument("--t", default="0.5,0.3,0.2,0.1", help="comma-separated stop times")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    model, cfg, _ = load_model(a.run)
    codec = model_codec(model, a.run, data_root=a.data_root)
    x = to_tensor(load_split(cfg.data.dataset, "test", a.data_root, limit=a.n)[0])
    dp_plan = codec.plan
    with open(a.out, "a") as f, torch.no_grad():
        for t in (float(v) for v in a.t.split(",")):
            stop = codec.tables.level_of_time(t)
            steps = codec._steps(stop, None)
            chains = {"dp": codec.tables.grid(stop, steps, codec.sim.cost()),
                      "equal": equal_information_chain(codec.tables, stop, steps)}
            for name, levels in chains.items():
                codec.plan = (lambda lv: lambda s, k: [(p, q, codec.sim.plan(codec.tables, p, q))
                                                       for p, q in zip(lv[:-1], lv[1:])])(levels)
                start = time.perf_counter()
                c = codec.compress(x, {"t_stop": t, "decode": "mse"})
                seconds = time.perf_counter() - start
                y = codec.decompress(c.params, c.payload, c.count)
                row = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()} CPU, "
                       f"{torch.get_num_threads()} thread(s)", "run": a.run, "n": len(x), "t_stop": c.rate_setting["t_stop"],
                       "chain": name, "steps": len(levels) - 1, "levels": levels,
                       "predicted": codec.tables.predicted_cost(levels, codec.sim.cost()) / 2**10,
                       "ideal": float(c.ideal_bits.mean()), "estimated": float(c.estimated_bits.mean()),
                       "actual": codec.actual_bits(c, codec.frame(c)),
                       "psnr_mse_decode": float(distortion.psnr(x, y).mean()), "seconds": seconds}
                print(json.dumps(row), flush=True)
                f.write(json.dumps(row) + "\n")
            codec.plan = dp_plan


if __name__ == "__main__":
    main()
