#!/usr/bin/env bash
# Issue 10: train the frontier checkpoints one after another, in the background, one thread each.
#
#   nohup bash benchmarks/frontier_queue.sh > /work/runs/frontier-queue.log 2>&1 &
#
# Waits while the mode U run ($RUNS/frontier-u) is still training, then trains each config of
# the mode C ladder (and a second mode U cell) into $RUNS/frontier-NAME with its log in
# $RUNS/frontier-NAME.log. After each run, its VAE's test PSNR goes to RUN-vae-psnr.jsonl
# (benchmarks/vae_psnr.py, all test images). Resumable:
# run it again after an interruption and it skips finished runs and continues a started one
# with --resume. Settings (environment): RUNS (default /work/runs), DATA (default
# /work/shared/data), LADDER (config names in configs/frontier/, space separated).
set -uo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-/work/runs}
DATA=${DATA:-/work/shared/data}
LADDER=${LADDER:-mnist-c-lam0.1 mnist-c-lam0.2 mnist-u-lean mnist-c-ar-lam0.2 mnist-c-lam0.05 mnist-c-lam0.4 mnist-c-ar-lam0.4}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
PY=.venv/bin/python

# the final checkpoint name a config trains to, e.g. ckpt-00008000
final_ckpt() {
  "$PY" -c "import sys; from ldcodec.config import load_config; print(f'ckpt-{load_config(sys.argv[1]).train.steps:08d}')" "$1"
}

# the VAE's test PSNR (its reconstruction ceiling) of a finished run, once
measure() {
  if [ -f "$1/latest" ] && [ ! -f "$1-vae-psnr.jsonl" ]; then
    "$PY" benchmarks/vae_psnr.py "$1" --data-root "$DATA" -o "$1-vae-psnr.jsonl"
  fi
}

while pgrep -f -- "--out $RUNS/frontier-u( |$)" > /dev/null; do sleep 60; done
measure "$RUNS/frontier-u"

for name in $LADDER; do
  cfg=configs/frontier/$name.yaml
  out=$RUNS/frontier-$name
  final=$(final_ckpt "$cfg") || { echo "$(date -u +%FT%TZ) $name: bad config, skipped"; continue; }
  if [ -f "$out/latest" ] && [ "$(cat "$out/latest")" = "$final" ]; then
    echo "$(date -u +%FT%TZ) $name: already at $final, skipped"
    continue
  fi
  resume=(); [ -f "$out/latest" ] && resume=(--resume)
  echo "$(date -u +%FT%TZ) $name: training to $final ${resume[*]}"
  start=$(date +%s)
  .venv/bin/ldcodec train "$cfg" --out "$out" --data-root "$DATA" "${resume[@]}" >> "$out.log" 2>&1
  rc=$?
  echo "$(date -u +%FT%TZ) $name: exit $rc after $(( $(date +%s) - start )) s"
  [ $rc -eq 0 ] && measure "$out"
done
