"""The README's demo and the reconstruction grid it writes."""

from __future__ import annotations

from pathlib import Path

import torch

from .checkpoint import load_model
from .config import load_config
from .data import load_split, to_tensor, to_uint8
from .files import write_atomic
from .metrics import distortion
from .results import rate_text
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


def compression_grid(checkpoint: str | Path, output: str | Path, rates=({"t_stop": 0.4}, {"t_stop": 0.2}, {"t_stop": 0.1}),
                     n: int = 8, decodes: tuple[str, ...] | None = None, data_root: str | None = None,
                     device: str = "cpu") -> Path:
    """Compress ``n`` test images at each rate setting (``{"t_stop": t}`` or ``{"bits": b}``; mode
    C: ``{}``, its one rate) into a real stream file beside ``output``, decode each file; write a PNG
    of the originals above the decodes (``decodes``, default all the codec's), each row labelled with
    its decode, rate and actual bits per image; print the ideal, estimated and actual rates."""
    from .codecs import model_codec

    model, cfg, _ = load_model(checkpoint, device=device)
    images, _ = load_split(cfg.data.dataset, "test", data_root, limit=n)
    x = to_tensor(images)
    codec = model_codec(model, checkpoint, device=device)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    rows, labels = [images], ["originals"]
    for k, rate in enumerate(rates):
        c = codec.compress(x, dict(rate))
        stream = output.with_name(f"{output.stem}-{k}.ldc")
        write_atomic(stream, lambda tmp: tmp.write_bytes(codec.frame(c)))
        data = stream.read_bytes()
        r = codec.rates(c, data)
        where = f"t={c.rate_setting['t_stop']:.2f}" if "t_stop" in c.rate_setting else rate_text(c.rate_setting)
        for decode in decodes or codec.decodes:
            y = codec.decompress_file(data, **({} if decode == "default" else {"decode": decode}))
            rows.append(to_uint8(y))
            labels.append(f"{decode}, {where}, {r['bits_actual']:.0f} bits")
            psnr = float(distortion.psnr(x, y).mean())
            ideal = "" if r["bits_ideal"] is None else f", {r['bits_ideal']:7.1f} ideal"
            print(f"{stream.name}: {where:<8} {decode:<8} {r['bits_actual']:7.1f} bits/image actual "
                  f"({r['bpp_actual']:.3f} bpp), {r['bits_estimated']:7.1f} estimated{ideal}, PSNR {psnr:.2f} dB")
    return save_grid(rows, output, labels=labels)


def quickstart(name: str, out: Path, n: int = 16, data_root: str | None = None, device: str = "cpu") -> Path:
    """The README's first command: ``n`` test images of the shipped model ``name`` compressed at the
    rates its card suggests (``quickstart_rates``) into real stream files, decoded by the mse decode
    (mode C: its decoder), and a labelled picture of originals and decodes in ``out``."""
    from . import zoo

    card = zoo.card(name)
    decodes = ("mse",) if card["mode"] == "U" else None
    return compression_grid(zoo.model_path(name), Path(out) / f"{name}.png", card["quickstart_rates"], n=n,
                            decodes=decodes, data_root=data_root, device=device)


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
