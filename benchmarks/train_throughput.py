"""Training throughput (images/s) of grid cells on this machine.

    python benchmarks/train_throughput.py [--device cpu|cuda] [--steps 30] [--data-root DIR] [CELL ...]

Times ``steps`` optimiser steps (after 5 warm-up steps) of the full training step (forward,
backward, clipping, AdamW, EMA) at the cell's configured batch size, and prints one JSON line
per cell. Results are recorded in ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from ldcodec.config import load_config
from ldcodec.data import Batches, load_split
from ldcodec.model import LatentCodec
from ldcodec.train import ema_update

GRID = Path(__file__).resolve().parents[1] / "configs" / "grid"
DEFAULT = ["mnist-mlp-ddpm-uncond-gauss", "cifar10-cnn-ddpm-uncond-gauss"]


def throughput(cell: str, steps: int, device: str, data_root: str | None, prior: str) -> dict:
    cfg = load_config(GRID / f"{cell}.yaml", [f"model.prior={prior}"] + ([f"data.root={data_root}"] if data_root else []))
    images, _ = load_split(cfg.data.dataset, "train", cfg.data.root or None, limit=5000)
    batches = Batches(images, cfg.train.batch_size, 0, flip=False, device=device)
    model = LatentCodec(cfg).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ema = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def step(i: int) -> None:
        loss = model(batches(i), generator=torch.Generator().manual_seed(i))["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema_update(ema, model, 0.999, i)

    for i in range(5):
        step(i)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(steps):
        step(i)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    return {"cell": cell, "prior": prior, "device": device, "batch_size": cfg.train.batch_size,
            "images_per_s": round(steps * cfg.train.batch_size / dt, 1), "threads": torch.get_num_threads(),
            "params": sum(p.numel() for p in model.parameters())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("cells", nargs="*", default=DEFAULT)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--device", default="cpu")
    p.add_argument("--data-root", default=None)
    p.add_argument("--priors", default="normal,diffusion", help="comma-separated: normal, diffusion")
    a = p.parse_args()
    print(json.dumps({"machine": platform.processor() or platform.machine(), "torch": torch.__version__,
                      "date": time.strftime("%Y-%m-%d")}))
    for cell in a.cells:
        for prior in a.priors.split(","):
            print(json.dumps(throughput(cell, a.steps, a.device, a.data_root, prior)), flush=True)


if __name__ == "__main__":
    main()
