"""The PFR encoder's early stop (issue 25, part 2): time and rates of mode U with and without it.

    python benchmarks/pfr_search.py RUN [--n 500] [--t-values 0.3,0.1] [--data-root DIR] [--out FILE]

For each stop time: the first ``--n`` test images compressed in one file twice, once with the
early-stopped search of :func:`ldcodec.coding.pfr.select` (the default) and once scoring all
``2^(ceil(KL) + pad)`` candidates of every chunk (``early_stop=False``); both decoded by the mse
decode. Per row: compress seconds, candidates generated (shared by the images of the file), ideal / estimated
/ actual bits per image, the exactness and PSNR. Both streams are valid for the same decoder
(the early stop changes only the encoder's private draws). One JSON line per row (``--out`` appends).
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import time

import torch

from ldcodec.checkpoint import load_model
from ldcodec.codecs import model_codec
from ldcodec.coding import pfr
from ldcodec.data import load_split, to_tensor
from ldcodec.metrics import distortion


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run")
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--t-values", default="0.3,0.1")
    p.add_argument("--data-root")
    p.add_argument("--out")
    a = p.parse_args()
    model, cfg, _ = load_model(a.run)
    codec = model_codec(model, a.run, data_root=a.data_root)
    if codec.sim.name != "pfr":
        raise SystemExit(f"{a.run} codes with the {codec.sim.name} simulator, not the PFR")
    x = to_tensor(load_split(cfg.data.dataset, "test", a.data_root, limit=a.n)[0])
    real_select, drawn = pfr.select, [0]

    def counted(*args, early_stop=True, **kw):
        real = pfr.cand.candidates

        def candidates(*c, **k):
            drawn[0] += c[4]
            return real(*c, **k)

        pfr.cand.candidates = candidates
        try:
            return real_select(*args, early_stop=early_stop, **kw)
        finally:
            pfr.cand.candidates = real

    for t in (float(v) for v in a.t_values.split(",")):
        for early in (True, False):
            pfr.select = functools.partial(counted, early_stop=early)
            drawn[0] = 0
            start = time.perf_counter()
            c = codec.compress(x, {"t_stop": t, "decode": "mse"})
            seconds = time.perf_counter() - start
            pfr.select = real_select
            y = codec.decompress_file(codec.frame(c))
            row = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()} CPU, "
                   f"{torch.get_num_threads()} thread(s)", "run": a.run, "n": len(x), "t_stop": c.rate_setting["t_stop"],
                   "early_stop": early, "compress_seconds": round(seconds, 2),
                   "candidates_generated": drawn[0],
                   "ideal": float(c.ideal_bits.mean()), "estimated": float(c.estimated_bits.mean()),
                   "actual": codec.actual_bits(c, codec.frame(c)), "exactness": c.extra["exactness"],
                   "psnr_mse_decode": float(distortion.psnr(x, y).mean())}
            print(json.dumps(row), flush=True)
            if a.out:
                with open(a.out, "a") as f:
                    f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
