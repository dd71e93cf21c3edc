#!/usr/bin/env bash
# One device call: `fastfold bench` and AlphaFold 2.3 JAX (shared/tools/peer_bench, carried in .peer/)
# at the same length on the same card, for an honest ratio. Needs .whl/ (alphafold-colabfold,
# dm-haiku, dm-tree, ml-collections, jmp, immutabledict, biopython for Python 3.12) carried.
set -uo pipefail
export PYTHONUNBUFFERED=1 OUT=${OUT:-/tmp/out} LENGTH=${LENGTH:-1024}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
date -u | tee -a "$OUT/gpu.txt"
python3 -m fastfold_cli bench --lengths "$LENGTH" --precision bf16 --backend triton \
  --json "$OUT/fastfold_bf16_${LENGTH}.json" 2>&1 | tail -12
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl >/dev/null 2>&1
export PYTHONPATH=/tmp/site XLA_PYTHON_CLIENT_PREALLOCATE=false
cd .peer/tools/peer_bench && timeout "${AF_TIMEOUT:-400}" python3 af_jax_bench.py --lengths "$LENGTH" \
  --json "$OUT/af_jax_fp32_${LENGTH}.json" 2>&1 | tail -8
