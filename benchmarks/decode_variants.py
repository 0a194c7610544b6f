"""Decoder-side variants of one mode U stream: does a better z_t -> image map buy PSNR or realism?

Two questions behind the missed MNIST targets (22 dB at 64 bits, realism FID within 2x its floor):

1. *The pixel-space posterior mean.* The ``mse`` decode is ``D(E[z0 | z_t])``; the MMSE decode is
   ``E[D(z0) | z_t]``, which differs when the decoder ``D`` is nonlinear. It is estimated here as the
   mean of ``--draws`` decoded posterior samples.
2. *The spread of the realism decode.* The registered ``realism`` decode is ancestral sampling with
   ``ceil(50 t)`` steps (:mod:`ldcodec.diffusion.decodes`). With the DDPM posterior variance, few
   steps under-disperse: on the exact Gaussian source (part 1 below, closed form) the samples'
   spread around ``E[z0 | z_t]`` falls short of ``Var(z0 | z_t)``. Two better-dispersed samplers are
   compared: ancestral with ``ceil(400 t)`` steps, and the Analytic-DPM chain of the codec's own
   coding densities, ``z_s ~ N(a z_u + c z0_hat, s^2 + c^2 v(u))`` over every ``--stride``-th coding
   level (Bao et al. 2022, with the per-dim denoiser MSE ``v`` of the coding tables), then Tweedie.

Part 1 needs no checkpoint. Part 2 compresses the first ``--limit`` test images of a trained mode U
run at stop time ``--t`` with the run's codec, decodes the one ``z_t`` every way and reports PSNR of
the 8-bit output, the classifier's accuracy and FID on its features against the other half of the
real images (:func:`ldcodec.metrics.perception.unpaired`, as ``ldcodec evaluate``), with FID's
real-vs-real floor at the same sizes.

    python benchmarks/decode_variants.py [RUN] --data-root DIR --t 0.07 --limit 10000 -o out.jsonl
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch

from ldcodec.diffusion.decodes import DECODE_STEPS, image_generator
from ldcodec.diffusion.samplers import denoise, sample

ANCESTRAL_STEPS = (DECODE_STEPS, 100, 400)  # sampler steps per unit of t (the first: the realism decode's)
SAMPLERS = (f"ancestral-{DECODE_STEPS}", "ancestral-400", "analytic-dpm")  # part 2's posterior samplers


def _spread(z: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    return (z - mean).square().mean(0)


@torch.no_grad()
def gaussian_spread(n: int = 4096) -> list[dict]:
    """Part 1: ancestral samples' spread around ``E[z0 | z_t]`` over ``Var(z0 | z_t)`` (exact
    Gaussian data ``N(0, diag(var))`` under the VP process), per stop time and steps per unit t."""
    from ldcodec.diffusion.gaussian import GaussianDenoiser
    from ldcodec.diffusion.prior import DiffusionPrior
    from ldcodec.diffusion.processes import make_process

    process = make_process("vp")
    s = torch.tensor([0.3, 1.0, 1.6], dtype=torch.float64)
    prior = DiffusionPrior(process, GaussianDenoiser(process, torch.zeros(3, dtype=torch.float64), s), (3,),
                           mixed=False)
    rows = []
    for t_stop in (0.088, 0.3, 0.6):
        t = torch.full((n,), t_stop, dtype=torch.float64)
        alpha, sigma = process.alpha_sigma(t[:1])
        var = s**2 * sigma**2 / (alpha**2 * s**2 + sigma**2)
        z0 = torch.randn(n, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * s
        z_t = process.marginal(z0, t, torch.randn(n, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64))
        mean = denoise(prior, z_t, t)
        for per_t in ANCESTRAL_STEPS:
            steps = max(1, math.ceil(per_t * t_stop))
            z = sample(prior, z_t, t, method="ancestral", steps=steps, generator=torch.Generator().manual_seed(2))
            ratio = (_spread(z, mean) / var).tolist()
            rows.append({"part": "gaussian", "t": t_stop, "steps_per_unit_t": per_t, "steps": steps,
                         "spread_over_posterior_variance": ratio})
            print(f"gaussian t {t_stop}: {steps:3d} ancestral steps: spread / Var(z0|z_t) = "
                  + ", ".join(f"{r:.3f}" for r in ratio), flush=True)
    return rows


def _key(image_key: int, draw: int) -> int:
    """Draw 0 is the registered realism decode's generator (``DiffC.image_keys``); draw ``d`` another."""
    return image_key if draw == 0 else image_key * 64 + draw


class Variants:
    """The decodes of part 2 on one ``z_t`` ``(N, *latent)`` at level ``stop`` of ``codec``."""

    def __init__(self, codec, z_t: torch.Tensor, stop: int, batch: int = 500):
        self.codec, self.prior, self.z_t, self.stop, self.batch = codec, codec.model.prior, z_t, stop, batch
        self.t = float(codec.tables.t[stop])

    def _batched(self, fn) -> torch.Tensor:
        out = []
        for i in range(0, len(self.z_t), self.batch):
            z = self.z_t[i:i + self.batch]
            out.append(fn(z, torch.full((len(z),), self.t), range(i, i + len(z))))
        return torch.cat(out)

    def tweedie(self) -> torch.Tensor:
        return self._batched(lambda z, t, _: denoise(self.prior, z, t))

    def ancestral(self, per_t: int, draw: int) -> torch.Tensor:
        steps = max(1, math.ceil(per_t * self.t))
        return self._batched(lambda z, t, rows: sample(
            self.prior, z, t, method="ancestral", steps=steps,
            generator=[image_generator(_key(k, draw)) for k in self.codec.image_keys(rows)]))

    def analytic_dpm(self, stride: int, draw: int) -> torch.Tensor:
        from ldcodec.diffusion.coding_grid import LEVELS, step_densities

        tables, shape = self.codec.tables, self.codec.latent_shape
        levels = sorted(set(range(self.stop, LEVELS + 1, stride)) | {LEVELS})

        def chain(z, t, rows):
            g = torch.Generator().manual_seed(1_000_003 * draw + rows.start)
            z = z.flatten(1).double()
            for a, b in zip(levels[:-1], levels[1:]):
                cu, c0, _, var_p = step_densities(self.prior.process, tables, a, b)
                ta = torch.full((len(z),), float(tables.t[a]))
                z0_hat = denoise(self.prior, z.view(-1, *shape).float(), ta).flatten(1).double()
                z = cu * z + c0 * z0_hat + var_p.sqrt() * torch.randn(z.shape, generator=g, dtype=torch.float64)
            return denoise(self.prior, z.view(-1, *shape).float(), torch.full((len(z),), float(tables.t[LEVELS])))

        return self._batched(chain)


@torch.no_grad()
def trained(run: str, data_root: str | None, t_stop: float, limit: int, draws: int, stride: int,
            classifier_path: str | None, samplers: list[str], emit) -> None:
    """Part 2 (module docstring): one row per decode variant, passed to ``emit`` as it is measured."""
    from ldcodec.checkpoint import load_model
    from ldcodec.codecs.diffc import DiffC, load_or_build_tables
    from ldcodec.data import load_split, to_tensor, to_uint8
    from ldcodec.metrics.distortion import psnr
    from ldcodec.metrics.features import accuracy, evaluation_classifier, features
    from ldcodec.metrics.perception import fid, noise_floor, unpaired

    unknown = set(samplers) - set(SAMPLERS)
    if unknown:  # before the minutes of compression
        raise SystemExit(f"unknown sampler(s) {', '.join(sorted(unknown))}; choose from {', '.join(SAMPLERS)}")
    model, cfg, ckpt = load_model(run)
    codec = DiffC(model, load_or_build_tables(model, run, data_root=data_root), ideal=False)
    images, labels = load_split(cfg.data.dataset, "test", data_root, limit=limit)
    x, labels = to_tensor(images), torch.from_numpy(labels)
    classifier, _ = evaluation_classifier(cfg.data.dataset, classifier_path)
    real = features(classifier, x).numpy()
    floor = noise_floor(fid, real)
    start = time.time()
    c = codec.compress(x, {"t_stop": t_stop})
    z_t, level = codec.decode_latents(c.params, c.payload, c.count)
    z_t = z_t.float()
    head = {"part": "trained", "run": run, "checkpoint": ckpt.name, "images": len(x), "t_stop": t_stop,
            "level": level, "coding_steps": c.rate_setting.get("coding_steps"),
            "bits_stream": 8 * (len(c.params) + len(c.payload)) / len(x),
            "fid_floor": floor.value}
    print(f"{run} ({ckpt.name}): {len(x)} images at t {t_stop}, {head['bits_stream']:.2f} stream bits per image, "
          f"compressed in {time.time() - start:.0f} s; FID floor {floor.value:.3f}", flush=True)
    v = Variants(codec, z_t, level)
    tweedie = v.tweedie()
    known = {f"ancestral-{per_t}": (lambda d, p=per_t: v.ancestral(p, d)) for per_t in (DECODE_STEPS, 400)}
    known["analytic-dpm"] = lambda d: v.analytic_dpm(stride, d)

    def report(name: str, image: torch.Tensor, extra: dict) -> None:
        y = to_tensor(to_uint8(image.clamp(0, 1)))
        est = fid(*unpaired(real, features(classifier, y).numpy()))
        row = {**head, "decode": name, "psnr": psnr(x, y).mean().item(), "accuracy": accuracy(classifier, y, labels),
               "fid": est.value, "fid_ci": [est.ci_low, est.ci_high], **extra}
        emit(row)
        print(f"  {name:40s} PSNR {row['psnr']:6.2f} dB  accuracy {row['accuracy']:.4f}  FID {est.value:.3f} "
              f"[{est.ci_low:.3f}, {est.ci_high:.3f}]  {extra}", flush=True)

    report("mse: D(E[z0|z_t])", model.ae.decode(tweedie), {})
    for name in samplers:
        draw_fn, start, total = known[name], time.time(), 0.0
        name = name if name != "analytic-dpm" else f"analytic-dpm stride {stride}"
        for d in range(draws):
            z0 = draw_fn(d)
            image = model.ae.decode(z0)
            if d == 0:
                report(f"one sample, {name}", image, {"latent_spread": _spread(z0.flatten(1), tweedie.flatten(1)).mean().item()})
            total = total + image
        if draws > 1:
            report(f"mean of {draws} decoded samples, {name}", total / draws, {"seconds": round(time.time() - start, 1)})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", nargs="?", help="a trained mode U run (omit for part 1 alone)")
    p.add_argument("--data-root", default=None)
    p.add_argument("--t", type=float, default=0.07, help="stop time of the stream")
    p.add_argument("--limit", type=int, default=10000, help="first N test images (default all)")
    p.add_argument("--draws", type=int, default=8, help="decoded samples averaged by the mean decodes")
    p.add_argument("--stride", type=int, default=4, help="coding levels per Analytic-DPM step")
    p.add_argument("--samplers", default=",".join(SAMPLERS),
                   help=f"posterior samplers to compare, of {', '.join(SAMPLERS)} (ancestral-N: N steps per unit t)")
    p.add_argument("--classifier", default=None, help="feature classifier (default: the packaged one)")
    p.add_argument("-o", "--output", default=None, help="append one JSON line per row to this file")
    a = p.parse_args()

    def emit(row: dict) -> None:  # each row is appended as soon as it is measured
        if a.output:
            with open(a.output, "a") as f:
                f.write(json.dumps(row) + "\n")

    for row in gaussian_spread():
        emit(row)
    if a.run:
        trained(a.run, a.data_root, a.t, a.limit, a.draws, a.stride, a.classifier, a.samplers.split(","), emit)


if __name__ == "__main__":
    main()
