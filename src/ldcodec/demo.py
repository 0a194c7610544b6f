"""The README's demo and the reconstruction grid it writes."""

from __future__ import annotations

from pathlib import Path

import torch

from .checkpoint import load_model
from .config import load_config
from .data import load_split, to_tensor, to_uint8
from .viz import save_grid

DEMO_CONFIG = Path(__file__).parent / "assets" / "demo.yaml"


@torch.no_grad()
def reconstruct(model, images: torch.Tensor) -> torch.Tensor:
    """Decoder mean at the encoder mean: ``(B, C, H, W)`` -> ``(B, C, H, W)`` in [0, 1]."""
    return model.ae.decode(model.ae.encode(images).mean)


def reconstruction_grid(checkpoint: str | Path, output: str | Path, n: int = 16, data_root: str | None = None,
                        device: str = "cpu") -> Path:
    """Write a PNG: ``n`` test images (top row) above their reconstructions (bottom row)."""
    model, cfg, _ = load_model(checkpoint, device=device)
    images, _ = load_split(cfg.data.dataset, "test", data_root, limit=n)
    x = to_tensor(images).to(device)
    return save_grid([images, to_uint8(reconstruct(model, x))], output)


def compression_grid(checkpoint: str | Path, output: str | Path, t_values=(0.4, 0.2, 0.1), n: int = 8,
                     device: str = "cpu") -> Path:
    """Compress ``n`` test images at each stop time ``t`` (mode U) with real bits; write a PNG of
    the originals above, per ``t``, the flow, realism and mse decodes, each row labelled with its
    decode, stop time and actual bits per image; print the ideal, estimated and actual rates."""
    from .codecs import model_codec

    model, cfg, _ = load_model(checkpoint, device=device)
    images, _ = load_split(cfg.data.dataset, "test", None, limit=n)
    x = to_tensor(images)
    codec = model_codec(model, checkpoint, device=device)
    rows, labels = [images], ["originals"]
    for t in t_values:
        c = codec.compress(x, {"t_stop": t})
        data = codec.frame(c)
        r = codec.rates(c, data)
        for decode in codec.decodes:
            y = codec.decompress_file(data, decode=decode)
            rows.append(to_uint8(y))
            labels.append(f"{decode}, t={c.rate_setting['t_stop']:.2f}, {r['bits_actual']:.0f} bits")
            mse = ((y - x) ** 2).mean().item()
            print(f"t={t:<5} {decode:<8} {r['bits_actual']:7.1f} bits/image actual ({r['bpp_actual']:.3f} bpp), "
                  f"{r['bits_estimated']:7.1f} estimated, {r['bits_ideal']:7.1f} ideal, MSE {mse:.4f}")
    return save_grid(rows, output, labels=labels)


def run_demo(out: Path, steps: int | None = None, device: str = "cpu") -> None:
    """Train the demo model on the built-in sample, then write its PNG grids into ``out``."""
    from .train import train

    cfg = load_config(DEMO_CONFIG, [f"train.steps={steps}"] if steps else [])
    run = out / "run"
    last = train(cfg, run, resume=(run / "latest").exists(), device=device)
    print("final training metrics: " + ", ".join(f"{k}={v:.4g}" for k, v in last.items()))
    path = reconstruction_grid(run, out / "reconstructions.png", n=16, device=device)
    print(f"wrote {path}: test images (top) and their reconstructions (bottom)")
    model, _, _ = load_model(run, device=device)
    path = save_grid([to_uint8(model.generate(32, steps=100, generator=torch.Generator(device).manual_seed(0)))],
                     out / "samples.png", per_row=8)
    print(f"wrote {path}: 32 samples from the LSGM prior")
    path = compression_grid(run, out / "compression.png", device=device)
    print(f"wrote {path}: originals, then for each t the flow, realism and mse decodes of real bitstreams")
