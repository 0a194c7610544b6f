"""Throughput of CIFAR-10 CNN widths (issue 24's recipe choice): images/s of one forward + backward
+ Adam step of the whole LSGM model (autoencoder and U-Net prior) at batch 64 on random images, one
thread, after two warm-up steps, averaged over four.

    OMP_NUM_THREADS=1 python benchmarks/cnn_width_probe.py [VARIANT ...]

Variants (overrides of configs/grid/cifar10-cnn-ddpm-uncond-gauss.yaml): base64, c32m2, c32m2-l8,
c48m2, c32m2-u32. Prints one line per variant; recorded in benchmarks/RESULTS.md section 13 and
benchmarks/results/cifar10/cnn-width-probe.txt.
"""

import sys
import time
from pathlib import Path

import torch

from ldcodec.config import load_config
from ldcodec.model import LSGMModel

CELL = Path(__file__).resolve().parents[1] / "configs" / "grid" / "cifar10-cnn-ddpm-uncond-gauss.yaml"
VARIANTS = {
    "base64": [],
    "c32m2": ["model.channels=32", "model.channel_mult=2"],
    "c32m2-l8": ["model.channels=32", "model.channel_mult=2", "model.latent_channels=8"],
    "c48m2": ["model.channels=48", "model.channel_mult=2"],
    "c32m2-u32": ["model.channels=32", "model.channel_mult=2", "diffusion.unet_channels=32"],
}


def main() -> None:
    torch.set_num_threads(1)
    for name in sys.argv[1:] or list(VARIANTS):
        model = LSGMModel(load_config(CELL, VARIANTS[name]))
        opt = torch.optim.Adam(model.parameters(), 1e-4)
        ae = sum(p.numel() for p in model.ae.parameters()) / 1e6
        prior = sum(p.numel() for p in model.prior.parameters()) / 1e6
        x = torch.rand(64, 3, 32, 32)
        for i in range(6):
            if i == 2:
                start = time.perf_counter()
            loss = model(x)["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
        print(f"{name} ae {ae:.2f}M prior {prior:.2f}M  {64 * 4 / (time.perf_counter() - start):.1f} img/s", flush=True)


if __name__ == "__main__":
    main()
