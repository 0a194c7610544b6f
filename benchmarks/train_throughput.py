"""Training throughput (images/s) of grid cells through ``ldcodec train``, with 1 or more processes.

    python benchmarks/train_throughput.py [CELL ...] [--device cpu|cuda] [--processes 1,2]
        [--variants fp32-eager,...] [--steps 10] [--data-root DIR] [--out DIR] [--check]

Each measurement is a real ``ldcodec train`` run (under ``torchrun --standalone`` for N > 1
processes, one thread each on the CPU) of ``2 x steps`` steps at the cell's batch size (the
effective batch, split over the processes), logging at steps ``steps`` and ``2 steps``. The rate
is taken over the second half, after warm-up and compilation, from the two logged cumulative
rates. On CUDA it also reports the peak memory and the share of the timed window in which the
GPU ran a kernel (``nvidia-smi`` samples every 50 ms). Variants (``VARIANTS``): ``fp32-eager-host`` (fp32, eager, a host-to-device copy per
batch: the classic data-loader path), ``fp32-eager`` (data kept on the device), ``bf16`` and
``bf16-compile`` (bf16 autocast, and ``torch.compile``; CUDA only).

``--check`` compares, instead, the loss and -ELBO of one forward pass in each of fp32 + compile,
bf16 and bf16 + compile against fp32 eager on the same weights, batch and noise (bf16 on CUDA only).
Prints one JSON line per measurement; recorded in ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
GRID = REPO / "configs" / "grid"
DEFAULT = ["mnist-mlp-ddpm-uncond-gauss", "mnist-cnn-ddpm-uncond-gauss", "cifar10-cnn-ddpm-uncond-gauss"]
VARIANTS = {
    "fp32-eager-host": ["--precision", "fp32", "--data-on", "host"],
    "fp32-eager": ["--precision", "fp32", "--data-on", "device"],
    "bf16": ["--precision", "bf16", "--data-on", "device"],
    "bf16-compile": ["--precision", "bf16", "--data-on", "device", "--compile"],
}


def throughput(cell: str, variant: str, processes: int, steps: int, device: str, data_root: str | None,
               work: Path) -> dict:
    """Images/s of the second ``steps`` steps of a fresh ``ldcodec train`` run."""
    out = work / f"{cell}-{variant}-{processes}"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"] \
        if processes > 1 else [sys.executable]
    cmd = [*launcher, "-m", "ldcodec", "train", str(GRID / f"{cell}.yaml"), "--out", str(out), "--device", device,
           "--steps", str(2 * steps), "--set", f"train.log_every={steps}", "--set", "train.ckpt_every=1000000",
           *VARIANTS[variant]] + (["--data-root", data_root] if data_root else [])
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    sampler = _gpu_sampler() if device.startswith("cuda") else None
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode:
        return {"cell": cell, "variant": variant, "processes": processes, "error": done.stderr.strip()[-500:]}
    first, second = (json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines())
    launch = json.loads((out / "launches.jsonl").read_text())
    batch = launch["effective_batch"]
    elapsed = [r["step"] * batch / r["images_per_s"] for r in (first, second)]
    rec = {"cell": cell, "variant": variant, "device": device, "processes": processes, "effective_batch": batch,
           "threads_per_process": int(env["OMP_NUM_THREADS"]), "steps_timed": steps,
           "images_per_s": round(steps * batch / (elapsed[1] - elapsed[0]), 1),
           "first_steps_s": round(elapsed[0], 2), "wall_s": round(time.perf_counter() - start, 1),
           "loss_at_end": round(second["loss"], 5)}
    if "peak_gib" in second:
        rec["peak_gib"] = round(second["peak_gib"], 3)
    if sampler is not None:  # the timed window ends when the second line was logged
        end = (out / "metrics.jsonl").stat().st_mtime
        rec["gpu_busy_fraction"] = _busy_fraction(sampler, end - (elapsed[1] - elapsed[0]), end)
    return rec


def _gpu_sampler() -> subprocess.Popen | None:
    """``nvidia-smi`` sampling GPU utilisation (the share of time a kernel runs) every 50 ms."""
    if shutil.which("nvidia-smi") is None:
        return None
    return subprocess.Popen(["nvidia-smi", "--query-gpu=timestamp,utilization.gpu", "--format=csv,noheader,nounits",
                             "-lms", "50", "-i", "0"], stdout=subprocess.PIPE, text=True)


def _busy_fraction(sampler: subprocess.Popen, t0: float, t1: float) -> float | None:
    """Mean GPU utilisation of the samples taken between wall-clock times ``t0`` and ``t1``."""
    sampler.terminate()
    busy = []
    for line in sampler.communicate()[0].splitlines():
        stamp, _, util = line.rpartition(",")
        try:
            t = datetime.strptime(stamp.strip(), "%Y/%m/%d %H:%M:%S.%f").timestamp()
            if t0 <= t <= t1:
                busy.append(float(util) / 100)
        except ValueError:
            continue
    return round(sum(busy) / len(busy), 3) if busy else None


def check(cell: str, device: str, data_root: str | None) -> dict:
    """Relative differences of loss and -ELBO of the fast paths from fp32 eager (same weights, batch, noise)."""
    from ldcodec.config import load_config
    from ldcodec.data import Batches, load_split
    from ldcodec.model import LSGMModel

    cfg = load_config(GRID / f"{cell}.yaml", [f"data.root={data_root}"] if data_root else [])
    torch.manual_seed(0)
    model = LSGMModel(cfg).to(device).train()
    images, _ = load_split(cfg.data.dataset, "train", cfg.data.root or None, limit=1024)
    x = Batches(images, cfg.train.batch_size, 0, flip=False, device=device)(0)

    def terms(forward, bf16: bool) -> torch.Tensor:
        ctx = torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bf16)
        with ctx:
            out = forward(x, generator=torch.Generator(device).manual_seed(1))
        return torch.stack([out["loss"].float(), out["neg_elbo"].float().mean()])

    ref = terms(model, False)
    compiled = torch.compile(model)
    ways = {"fp32-compile": (compiled, False)}
    if torch.device(device).type == "cuda":
        ways.update({"bf16": (model, True), "bf16-compile": (compiled, True)})
    rec = {"cell": cell, "device": device, "check": "relative difference from fp32 eager",
           "fp32_eager": {"loss": ref[0].item(), "neg_elbo": ref[1].item()}}
    for name, (forward, bf16) in ways.items():
        t0 = time.perf_counter()
        diff = ((terms(forward, bf16) - ref) / ref.abs()).tolist()
        rec[name] = {"loss": diff[0], "neg_elbo": diff[1], "first_call_s": round(time.perf_counter() - t0, 1)}
    return rec


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("cells", nargs="*", default=DEFAULT)
    p.add_argument("--steps", type=int, default=10, help="timed steps (as many run before, untimed)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--processes", default="1,2", help="comma-separated process counts")
    p.add_argument("--variants", default="fp32-eager", help=f"comma-separated: {', '.join(VARIANTS)}")
    p.add_argument("--data-root", default=None)
    p.add_argument("--out", default=None, help="folder for the runs (default: a temporary folder)")
    p.add_argument("--check", action="store_true", help="compare the fast paths' loss and -ELBO instead")
    a = p.parse_args()
    print(json.dumps({"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                      "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
                      "load_avg_1min": round(os.getloadavg()[0], 2),
                      "gpu": torch.cuda.get_device_name() if a.device.startswith("cuda") else None}), flush=True)
    if a.check:
        for cell in a.cells:
            print(json.dumps(check(cell, a.device, a.data_root)), flush=True)
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(a.out or tmp)
        for cell in a.cells:
            for variant in a.variants.split(","):
                for n in (int(v) for v in a.processes.split(",")):
                    print(json.dumps(throughput(cell, variant, n, a.steps, a.device, a.data_root, work)), flush=True)


if __name__ == "__main__":
    main()
