"""Mode U format 2 on the exact Gaussian source: the three rates against I(X; Z_t), at equal distortion.

Source ``N(0, diag(ratio^i))``, ``i < dim``; the prior is the exact Gaussian law, so the ideal rate
is ``I(X; Z_t)`` and the decoded MSE should be the MMSE. For each stop time the script reports
ideal / estimated / actual (one stream of ``n`` vectors) / file (one vector per file) bits per
vector, the mse decode's MSE beside the closed-form MMSE, ``I_eq`` (the information an ideal DiffC
needs for the measured MSE), the targets ``actual <= 1.2 I_eq + 8`` and ``estimated <= 1.1 I_eq``,
the exactness, and the encode time. Every point also passes :func:`check_diffc_point`.

    OMP_NUM_THREADS=1 python benchmarks/gaussian_diffc.py --out benchmarks/results/gaussian-diffc.jsonl
    OMP_NUM_THREADS=1 python benchmarks/gaussian_diffc.py --simulator dq --steps 0,1,2,3 --t 0.1,0.05 \
        --out benchmarks/results/gaussian-diffc-dq.jsonl

``--simulator`` picks the step's channel simulator (``pfr``: codec diffc, ``dq``: diffc-dq);
``--steps`` the coding steps to measure (0: the codec's automatic number).
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch

from ldcodec.codecs import container, diffc, simulator_codec
from ldcodec.coding import pfr
from ldcodec.config import Config
from ldcodec.diffusion.coding_grid import gaussian_information_bits, snr_of_mmse
from ldcodec.metrics.gaussian_model import ExactGaussianModel
from ldcodec.metrics.gaussian_source import GaussianSource, check_diffc_point


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--ratio", type=float, default=0.95)
    p.add_argument("-n", type=int, default=200)
    p.add_argument("--t", default="0.35,0.2,0.1,0.05")
    p.add_argument("--budget", type=int, default=12, help="codec.max_chunk_bits: chunk budget, bits")
    p.add_argument("--pad", type=int, default=pfr.DEFAULT_PAD, help="codec.pad: log2 candidates beyond the budget")
    p.add_argument("--simulator", default="pfr", help="codec.simulator: pfr (diffc) or dq (diffc-dq)")
    p.add_argument("--steps", default="0", help="comma-separated coding_steps (0: automatic)")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    torch.set_num_threads(1)
    var = np.array(GaussianSource.geometric(a.dim, a.ratio).variances)
    cfg = Config()
    cfg.data.dataset = "gaussian"
    cfg.codec.max_chunk_bits, cfg.codec.pad = a.budget, a.pad
    model = ExactGaussianModel(var, cfg)
    codec = simulator_codec(a.simulator)(model, diffc.load_or_build_tables(model), ideal_stride=1)  # as evaluate's theory check
    x = GaussianSource(tuple(var)).sample(a.n, seed=0).view(a.n, *codec.image_shape)
    with open(a.out, "a") as f:
        for t, k in ((float(v), int(k)) for v in a.t.split(",") for k in a.steps.split(",")):
            start = time.perf_counter()
            c = codec.compress(x, {"t_stop": t, "decode": "mse", **({"coding_steps": k} if k else {})})
            seconds = time.perf_counter() - start
            stream = container.write(codec.codec_id, codec.model_id(), c.params, c.payload, c.count)
            y = codec.decompress(*container.read(stream)[2:])
            mse = ((y - x) ** 2).flatten(1).mean(1).numpy()
            check = check_diffc_point(var, codec.tables.snr[c.extra["level"]], c.ideal_bits,
                                      c.estimated_bits, 8 * len(stream) / a.n, mse)
            i_eq = gaussian_information_bits(var, snr_of_mmse(var, float(mse.mean())))
            row = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()} CPU, 1 thread",
                   "codec": codec.name, "dim": a.dim, "ratio": a.ratio, "n": a.n, "budget": a.budget, "pad": a.pad, **c.rate_setting,
                   **check.to_dict(), "file": float(c.file_bits.mean()),
                   **{k: v for k, v in c.extra.items() if k not in ("level", "chain_steps")},
                   "target_actual": 1.2 * i_eq + 8, "target_estimated": 1.1 * i_eq,
                   "meets_actual": check.actual <= 1.2 * i_eq + 8, "meets_estimated": check.estimated <= 1.1 * i_eq,
                   "encode_ms_per_vector": 1000 * seconds / a.n}
            print(json.dumps(row), flush=True)
            f.write(json.dumps(row) + "\n")
            f.flush()


if __name__ == "__main__":
    main()
