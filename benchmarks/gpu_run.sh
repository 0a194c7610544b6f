#!/usr/bin/env bash
# One prepared run on the lent GPU (see benchmarks/RESULTS.md): first the training-step benchmark
# (CIFAR-10 CNN images/s in fp32 eager with a host-to-device copy per batch against bf16, and
# bf16 + torch.compile, with the data resident on the GPU; peak memory; GPU busy share; the fast
# paths' loss and -ELBO against fp32 eager; a torchrun/NCCL smoke run), then train the CIFAR-10 CNN
# cells of mode U and mode C and the CIFAR-10 feature classifier side by side for a fixed wall
# time, then time GPU compression of CIFAR-10 test images and keep a GPU-encoded stream (decoded
# on the CPU afterwards). Expects .devdata/ with the constriction wheel and cifar10 shards.
# Usage: OUT=dir TRAIN_S=150 STEP_S=300 bash benchmarks/gpu_run.sh   (STEP_S=0 skips the step benchmark,
# ONLY_STEP=1 stops after it)
set -u
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=4
TRAIN_S=${TRAIN_S:-150}
STEP_S=${STEP_S:-300}
python3 -m pip install -q --no-index --no-deps --target /tmp/site .devdata/constriction-*.whl
export PYTHONPATH=/tmp/site:$PWD/src
mkdir -p runs/gpu-results
# the step benchmark's files go into one tar ($OUT takes at most 8 files back)
S=runs/step-bench
mkdir -p "$S"
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$S/gpu.txt"
if [ "$STEP_S" -gt 0 ]; then
  timeout "$STEP_S" python3 benchmarks/train_throughput.py cifar10-cnn-ddpm-uncond-gauss --device cuda \
    --processes 1 --variants fp32-eager-host,fp32-eager,bf16,bf16-compile --steps 200 --data-root .devdata \
    --out runs/throughput 2> "$S/train-throughput-gpu.log" | tee "$S/train-throughput-gpu.jsonl"
  timeout 120 python3 -m torch.distributed.run --standalone --nproc_per_node=1 -m ldcodec train \
    configs/grid/mnist-mlp-ddpm-uncond-gauss.yaml --out runs/torchrun-nccl --steps 200 --device cuda \
    --set train.log_every=100 > "$S/torchrun-nccl.log" 2>&1
  cp runs/torchrun-nccl/launches.jsonl "$S/torchrun-nccl-launches.jsonl" 2>/dev/null
  timeout "$STEP_S" python3 benchmarks/train_throughput.py cifar10-cnn-ddpm-uncond-gauss --device cuda --check \
    --data-root .devdata 2> "$S/train-check-gpu.log" | tee "$S/train-check-gpu.jsonl"
fi
tar -cf "$OUT/step-bench.tar" -C runs step-bench
[ "${ONLY_STEP:-0}" = 1 ] && exit 0  # the step benchmark alone: about 5 minutes with STEP_S=300
common=(--device cuda --data-root .devdata --set train.ckpt_every=250 --set train.log_every=100 --set train.warmup=200)
for cell in cifar10-cnn-ddpm-uncond-gauss cifar10-cnn-ddpm-cond-gauss; do
  timeout "$TRAIN_S" python3 -m ldcodec.cli train "configs/grid/$cell.yaml" --out "runs/$cell" --steps 6000 \
    "${common[@]}" > "$OUT/train-$cell.log" 2>&1 &
done
timeout "$TRAIN_S" python3 - > "$OUT/classifier.log" 2>&1 <<'PY' &
import torch
from ldcodec.data import load_split, to_tensor
from ldcodec.metrics.features import train_classifier, save_classifier, accuracy
x, y = load_split("cifar10", "train", ".devdata")
xt, yt = load_split("cifar10", "test", ".devdata")
m = train_classifier(to_tensor(x), torch.from_numpy(y), epochs=30, device="cuda", batch_size=256, progress=False)
acc = accuracy(m, to_tensor(xt).cuda(), torch.from_numpy(yt).cuda())
print("cifar10 classifier test accuracy", acc)
save_classifier(m, "runs/classifier-cifar10", {"test_accuracy": acc, "train_images": len(x)})
PY
wait
python3 - <<'PY' 2>&1 | tee "$OUT/codec-gpu.log"
import json, os, shutil, time, torch, numpy as np
from pathlib import Path
from ldcodec.checkpoint import load_model
from ldcodec.codecs import model_codec
from ldcodec.data import load_split, to_tensor, to_uint8
out = Path(os.environ["OUT"])
x = to_tensor(load_split("cifar10", "test", ".devdata")[0][:2000])
for cell in ["cifar10-cnn-ddpm-uncond-gauss", "cifar10-cnn-ddpm-cond-gauss"]:
    run = Path("runs") / cell
    if not (run / "latest").exists():
        print(cell, "no checkpoint"); continue
    ckpt = run / (run / "latest").read_text().strip()
    dst = Path("runs/gpu-results") / cell
    dst.mkdir(parents=True)
    for f in ("ema.safetensors", "config.yaml"):
        shutil.copy(ckpt / f, dst / f)
    shutil.copy(run / "metrics.jsonl", dst / "metrics.jsonl")
    model, cfg, _ = load_model(run, device="cuda")
    codec = model_codec(model, run, device="cuda", data_root=".devdata")
    n = 2000 if codec.mode == "C" else 200
    kw = {} if codec.mode == "C" else {"t_stop": 0.3}
    for dec in ("mse", "flow"):
        torch.cuda.synchronize(); t0 = time.perf_counter()
        c = codec.compress(x[:n], {"decode": dec, **kw})
        data = codec.frame(c)
        torch.cuda.synchronize(); t1 = time.perf_counter()
        y = codec.decompress_file(data)
        torch.cuda.synchronize(); t2 = time.perf_counter()
        rec = {"cell": cell, "decode": dec, "images": n, "encode_img_per_s": n / (t1 - t0),
               "decode_img_per_s": n / (t2 - t1), "actual_bits": codec.actual_bits(c, data),
               "file_bits": float(c.file_bits.mean()), "estimated_bits": float(c.estimated_bits.mean()),
               "mse": float(((y - x[:n]) ** 2).mean())}
        print(json.dumps(rec), flush=True)
    if codec.mode == "C":
        (dst / "stream.ldc").write_bytes(data)
        np.save(dst / "gpu_decoded.npy", to_uint8(y))
PY
# at most 8 files come back: one tar per model, one for the classifier and the logs
cp runs/classifier-cifar10* runs/gpu-results/ 2>/dev/null
for d in runs/gpu-results/*/; do tar -cf "$OUT/$(basename "$d").tar" -C runs/gpu-results "$(basename "$d")"; done
tar -cf "$OUT/classifier.tar" -C runs/gpu-results $(cd runs/gpu-results && ls -p | grep -v /) 2>/dev/null
ls -la "$OUT"
