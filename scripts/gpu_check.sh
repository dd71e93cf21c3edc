#!/usr/bin/env bash
# One device call: reference fixtures on CUDA (fp32 / tf32 / bf16, torch and Triton backends) and
# `fastfold bench` (bf16 planned vs plain; fp32 memory at N=1200). Results land in $OUT.
set -uo pipefail
export PYTHONUNBUFFERED=1 OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$OUT/gpu.txt"
python3 scripts/check_fixtures.py --device cuda --precision fp32 tf32 bf16 --backend ${BACKENDS:-torch triton} \
  --json "$OUT/fixtures_cuda.json" 2>&1 | tee "$OUT/fixtures_cuda.txt"
python3 -m fastfold_cli bench --lengths ${BF16_LENGTHS:-256,1024} --precision bf16 --compare plain \
  --json "$OUT/bench_bf16.json" 2>&1 | tail -25
python3 -m fastfold_cli bench --lengths 1200 --precision fp32 --recycles 0 --no-breakdown \
  --json "$OUT/bench_fp32_1200.json" 2>&1 | tail -12
