"""The VAE's own reconstruction quality: the ceiling of every mode U rate.

For each run folder, encode test images, decode the posterior mean, round to 8-bit pixels (what a
codec outputs) and report the mean per-image PSNR, the PSNR of the mean MSE, and the latent's
share of the negative ELBO, ``CE(q || p) - H(q)`` in bits per image (the information the latent
carries about the image under the model's prior: a rough size of the rate at the ceiling).

    python benchmarks/vae_psnr.py RUN [RUN ...] --data-root DIR [--limit N] [-o results.jsonl]
"""

from __future__ import annotations

import argparse
import json
import math

import torch

from ldcodec.checkpoint import load_model
from ldcodec.data import load_split, to_tensor, to_uint8
from ldcodec.metrics.distortion import mse, psnr


@torch.no_grad()
def measure(run: str, data_root: str | None, limit: int, batch: int = 500) -> dict:
    model, cfg, ckpt = load_model(run)
    images, _ = load_split(cfg.data.dataset, "test", data_root)
    x_all = to_tensor(images[:limit])
    g = torch.Generator().manual_seed(0)
    psnrs, mses, latent_bits = [], [], []
    for i in range(0, len(x_all), batch):
        x = x_all[i:i + batch]
        x_hat = to_tensor(to_uint8(model.ae.decode(model.ae.encode(x).mean)))
        psnrs.append(psnr(x, x_hat))
        mses.append(mse(x, x_hat))
        terms = model(x, generator=g)
        latent_bits.append((terms["ce"] - terms["entropy"]) / math.log(2.0))
    m = torch.cat(mses).double().mean().item()
    return {"run": run, "checkpoint": ckpt.name, "cell": cfg.name, "latent_shape": list(model.latent_shape),
            "x_sigma": cfg.model.x_sigma, "images": len(x_all), "psnr_mean_db": torch.cat(psnrs).mean().item(),
            "psnr_of_mean_mse_db": 10 * math.log10(1 / m), "mse": m,
            "latent_bits": torch.cat(latent_bits).mean().item()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", help="run or checkpoint folders")
    p.add_argument("--data-root", default=None)
    p.add_argument("--limit", type=int, default=10000, help="first N test images (default all)")
    p.add_argument("-o", "--output", default=None, help="append one JSON line per run to this file")
    a = p.parse_args()
    for run in a.runs:
        row = measure(run, a.data_root, a.limit)
        print(json.dumps(row))
        if a.output:
            with open(a.output, "a") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
