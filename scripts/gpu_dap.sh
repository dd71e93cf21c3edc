#!/usr/bin/env bash
# One call on a 4-GPU machine: DAP correctness on NCCL, then N=2048 bf16 model_1 shapes on 1, 2 and
# 4 GPUs (the 1-GPU baseline first, same call). Results in $OUT.
set -uo pipefail
export PYTHONUNBUFFERED=1 OUT=${OUT:-/tmp/out} N=${N:-2048}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"; date -u | tee -a "$OUT/gpu.txt"
timeout 90 python3 -m model.dap_check --world 4 2>&1 | tail -15 | tee "$OUT/dap_check4.txt"
for P in 1 2 4; do
  timeout ${T:-200} python3 -m model.dap_bench --world $P --n-res $N --precision bf16 --backend triton \
    --json "$OUT/dap_${P}.json" 2>&1 | tail -3
done
