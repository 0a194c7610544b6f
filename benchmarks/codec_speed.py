"""Compression benchmark: time per image and actual/estimated rate of trained checkpoints.

    python benchmarks/codec_speed.py RUN [RUN ...] [--data-root DIR] [--n 32] [--bpp 0.5]
                                     [--t-values 0.5,0.3,0.2,0.1] [--device cpu] [--max-chunk-bits 6,8,10]

For each run: mode U at the stop time that targets ``--bpp`` (``Codec.compress(bits=...)``) and
at each ``--t-values``; mode C at its one rate. Per point: bits per image actual (bytes x 8,
header included) and estimated, their ratio, and compress / decompress milliseconds per image
for each decode method. One JSON line per point.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from ldcodec.checkpoint import load_model
from ldcodec.codecs import model_codec
from ldcodec.data import load_split, to_tensor


def bench(run: str, data_root, n: int, bpp: float, t_values: list[float], device: str, chunk_bits: int | None):
    model, cfg, _ = load_model(run, device=device)
    if chunk_bits is not None:
        cfg.codec.max_chunk_bits = chunk_bits
    x = to_tensor(load_split(cfg.data.dataset, "test", data_root, limit=n)[0])
    codec = model_codec(model, run, device=device, data_root=data_root)
    _, h, w = codec.image_shape
    settings = [{"bits": bpp * h * w}] + [{"t_stop": t} for t in t_values] if codec.mode == "U" else [{}]
    for kw in settings:
        start = time.perf_counter()
        c = codec.compress(x, kw)
        data = codec.frame(c)
        enc = time.perf_counter() - start
        actual = codec.actual_bits(c, data)
        rec = {"run": run, "cell": cfg.name, "mode": codec.mode, "setting": kw, "rate_setting": c.rate_setting,
               "images": n, "max_chunk_bits": cfg.codec.max_chunk_bits, "coding_steps": cfg.codec.coding_steps,
               "bits_actual": round(actual, 1), "bits_file": round(float(c.file_bits.mean()), 1),
               "bits_estimated": round(float(c.estimated_bits.mean()), 1),
               "bpp_actual": round(actual / (h * w), 4),
               "actual_over_estimated": round(float(actual / c.estimated_bits.mean()), 3),
               "compress_ms_per_image": round(1000 * enc / n, 1)}
        codec.reuse_chain = False  # time every decode from the bytes
        for decode in codec.decodes:
            start = time.perf_counter()
            y = codec.decompress_file(data, decode=decode)
            rec[f"decompress_ms_{decode}"] = round(1000 * (time.perf_counter() - start) / n, 1)
            rec[f"mse_{decode}"] = round(float(((y - x) ** 2).mean()), 5)
        print(json.dumps(rec), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+")
    p.add_argument("--data-root")
    p.add_argument("--n", type=int, default=32)
    p.add_argument("--bpp", type=float, default=0.5)
    p.add_argument("--t-values", default="0.5,0.3,0.2,0.1")
    p.add_argument("--device", default="cpu")
    p.add_argument("--max-chunk-bits", default="", help="comma-separated chunk budgets to compare (default: config's)")
    a = p.parse_args()
    budgets = [int(b) for b in a.max_chunk_bits.split(",") if b] or [None]
    with torch.no_grad():
        for run in a.runs:
            for b in budgets:
                bench(run, a.data_root, a.n, a.bpp, [float(t) for t in a.t_values.split(",") if t], a.device, b)


if __name__ == "__main__":
    main()
