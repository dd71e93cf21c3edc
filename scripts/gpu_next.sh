#!/usr/bin/env bash
# The measurements still owed to the open issues, one device call per stage (each < 10 minutes).
# Results land in $OUT (JSON + the printed lines). Usage: bash scripts/gpu_next.sh STAGE
#   verify      #5/#6: CUDA fixtures; N=1,024 planned vs plain; N=1,200 fp32/bf16 within a budget;
#               planner vs measured peak at lengths it was not calibrated on (768, 1,536, 3,072)
#   max_length_bf16 / max_length_fp32
#               #5: longest N on an 80 GB budget (memory probe, one block per stack), one call each
#   pipeline    #3: Ray DAG vs serial on the machine's cores with longer searches (needs the Ray
#               bundle: carry .dev1, .dev2, .dev3 in three consecutive calls, see
#               scripts/device_pipeline_env.sh; this stage sources it)
#   dap_maxlen  #7 (on an x2/x4 kind): per-GPU peak at lengths near the planner's DAP limits
#               (memory probe on every rank); the speed-ups: scripts/gpu_dap.sh
#   batch_b / batch_s1 / batch_s2 / batch_merge
#               #10: 20 targets as one batch, then one after another (two halves), then the report
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee -a "$OUT/gpu.txt"
date -u | tee -a "$OUT/gpu.txt"
git rev-parse --short HEAD 2>/dev/null | tee -a "$OUT/gpu.txt"
G='"n_res": [0-9]*\|"path": "[a-z]*"\|"predicted_peak_gib": [0-9.]*\|"peak_allocated_gib": [0-9.]*\|"seconds": [0-9.]*\|"error": "[^"]*"'
case "${1:-}" in
verify)
  python3 scripts/check_fixtures.py --device cuda --precision fp32 bf16 --backend torch triton \
    --json "$OUT/fixtures_cuda.json" 2>&1 | tail -9
  python3 -m fastfold_cli bench --lengths 1024 --precision bf16 --backend triton --compare plain \
    --json "$OUT/bench_1024.json" 2>&1 | grep -o "$G" | tr '\n' ' '; echo
  # (mem_snapshot.py's allocation history made the fp32 run miss a 150 s limit in session 3)
  for a in "fp32 3.5" "bf16 2.3" "bf16 2.1"; do set -- $a
    timeout 240 python3 -m fastfold_cli bench --lengths 1200 --precision $1 --backend triton --recycles 0 \
      --max-memory $2 --no-breakdown --json "$OUT/mem_1200_$1_$2.json" 2>&1 | grep -o "$G" | tr '\n' ' '; echo
  done
  python3 -m fastfold_cli bench --lengths 768,1536,3072 --precision bf16 --backend triton --recycles 0 \
    --json "$OUT/planner_check.json" 2>&1 | grep -o "$G" | tr '\n' ' '; echo
  ;;
max_length_bf16|max_length_fp32)
  # One precision per call: with the pair offload (pageable host copies, ~5 passes of the pair per
  # triangle multiplication) one probe trial may take several minutes.
  prec=${1#max_length_}
  lens=$([ "$prec" = bf16 ] && echo 12000,16000 || echo 9000,13000)
  python3 -m fastfold_cli bench --find-max-length --probe-blocks 1 --precision "$prec" --lengths "$lens" --step 256 \
    --max-trials 1 --trial-timeout 560 --max-memory 77 --json "$OUT/maxlen_$prec.json" 2>&1 | tail -6
  ;;
pipeline)
  source scripts/device_pipeline_env.sh
  timeout 280 python3 -m pipeline.bench --cpus 16 --copies 60 --work /tmp/ffbench \
    --json "$OUT/pipeline_monomer.json" 2>&1 | grep -v "^\[\|^ \|^{\|^}" | tail -3
  timeout 280 python3 -m pipeline.bench --cpus 16 --copies 60 --model-preset multimer --repeats 1 --work /tmp/ffbench \
    --json "$OUT/pipeline_multimer.json" 2>&1 | grep -v "^\[\|^ \|^{\|^}" | tail -3
  ;;
dap_maxlen)
  ngpu=$(nvidia-smi --list-gpus | wc -l)
  for p in 2 4; do
    [ "$p" -le "$ngpu" ] || continue
    lens=$([ "$p" = 2 ] && echo 12000,12500 || echo 17500,18000)
    timeout 280 python3 -m fastfold_cli bench --gpus $p --probe-blocks 1 --precision bf16 --backend triton \
      --lengths $lens --max-memory 77 --no-breakdown --json "$OUT/dap${p}_probe.json" 2>&1 | tail -8
  done
  ;;
batch_b)
  source scripts/device_pipeline_env.sh
  python3 scripts/batch_throughput.py --work /tmp/ffbatch --device cuda --skip-sequential --json /tmp/ffbatch/b.json
  ;;
batch_s1|batch_s2)
  source scripts/device_pipeline_env.sh
  r=$([ "$1" = batch_s1 ] && echo 1:10 || echo 11:20)
  python3 scripts/batch_throughput.py --work /tmp/ffbatch --device cuda --skip-batch --seq-range "$r" \
    --json "/tmp/ffbatch/${1#batch_}.json"
  ;;
batch_merge)
  source scripts/device_pipeline_env.sh
  python3 scripts/batch_throughput.py --work /tmp/ffbatch --merge /tmp/ffbatch/b.json /tmp/ffbatch/s1.json \
    /tmp/ffbatch/s2.json --json "$OUT/batch_throughput.json"
  ;;
*)
  echo "usage: bash scripts/gpu_next.sh verify|max_length_bf16|max_length_fp32|dap_maxlen|pipeline|batch_b|batch_s1|batch_s2|batch_merge" >&2
  exit 2
  ;;
esac
