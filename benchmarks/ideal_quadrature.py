"""The ideal rate's quadrature: how few measured levels keep the mean ideal (issue 25, part 3).

    OMP_NUM_THREADS=1 python benchmarks/ideal_quadrature.py [DATA_ROOT] > benchmarks/results/ideal-quadrature.jsonl

For the shipped models (mnist-u at 40 and 64 bits on the first 300 test digits, cifar10-u at 307
and 1024 bits on the first 150 test images) it measures each image's squared denoising error
``||z0 - z0_hat(z_t)||^2`` on every coding level up to the stop level (one noise draw per level),
then integrates ``1/2 int ||.||^2 dSNR`` from every ``stride``-th level two ways: the plain
trapezoid in log-SNR, and ``DiffC.ideal_bits``' rule (the image's error shaped between the
measured levels by the coding tables' mean error). Prints one JSON line per model, rate and
stride: the mean integral's relative deviation from every level's, and its per-image RMS.
"""

import json
import math
import sys

import numpy as np
import torch

import ldcodec
from ldcodec.data import load_split, to_tensor
from ldcodec.diffusion.samplers import denoise


def trapezoid(f: np.ndarray, log_snr: np.ndarray, levels: list[int]) -> np.ndarray:
    """``1/2 int f dlog(SNR)`` by the trapezoid on ``levels`` of ``f`` ``(L, N)`` -> ``(N,)``."""
    return 0.5 * (np.diff(log_snr[levels])[:, None] * 0.5 * (f[levels][:-1] + f[levels][1:])).sum(0)


def main() -> None:
    data_root = sys.argv[1] if len(sys.argv) > 1 else None
    torch.set_num_threads(1)
    for name, dataset, bits, n in (("mnist-u", "mnist", 40, 300), ("mnist-u", "mnist", 64, 300),
                                   ("cifar10-u", "cifar10", 307, 150), ("cifar10-u", "cifar10", 1024, 150)):
        codec = ldcodec.load(name)
        process, prior = codec.model.prior.process, codec.model.prior
        x = to_tensor(load_split(dataset, "test", data_root, limit=n)[0])
        stop = codec._stop_level({"bits": bits})
        with torch.no_grad():
            z0 = codec.model.ae.encode(x).mean.view(-1, *codec.latent_shape)
            g = torch.Generator().manual_seed(1)
            err = []
            for level in range(stop + 1):
                t = torch.full((len(z0),), float(codec.tables.t[level]))
                z_t = process.marginal(z0, t, torch.randn(z0.shape, generator=g))
                err.append((z0 - denoise(prior, z_t, t)).double().square().flatten(1).sum(1).numpy())
        err = np.stack(err)  # (stop + 1, N)
        snr = codec.tables.snr[:stop + 1]
        mean_err = codec.tables.mse[:stop + 1].sum(1)
        every = list(range(stop + 1))
        full = trapezoid(err * snr[:, None], np.log(snr), every)
        for stride in (4, 8, 16, 32):
            levels = sorted(set(range(0, stop + 1, stride)) | {stop})
            plain = trapezoid(err * snr[:, None], np.log(snr), levels)
            ratio = err[levels] / mean_err[levels][:, None]
            shaped = np.stack([np.interp(every, levels, r) for r in ratio.T], 1) * (mean_err * snr)[:, None]
            shaped = trapezoid(shaped, np.log(snr), every)
            row = {"model": name, "bits": bits, "images": n, "stop_level": stop, "stride": stride,
                   "measured_levels": len(levels), "every_level_bits": round(float(full.mean()) / math.log(2), 2)}
            for rule, value in (("plain", plain), ("shaped", shaped)):
                row[f"{rule}_mean_dev_pct"] = round(100 * (value.mean() / full.mean() - 1), 2)
                row[f"{rule}_rms_per_image_pct"] = round(100 * float(np.sqrt((((value - full) / full) ** 2).mean())), 1)
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
