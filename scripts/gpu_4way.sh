#!/usr/bin/env bash
# The owed measurements on one 4-GPU machine (nvidia-h100-x4 / h200-x4, 64 cores) in three
# consecutive device calls, independent jobs side by side: each job gets its own GPU(s) and its
# own 16 cores (taskset), so no job shares a GPU or a core with another. Shared between them:
# host memory bandwidth, PCIe root complexes and disk. Every file lands in one archive,
# $OUT/<call>.tgz (the device tool returns at most 8 files), plus the printed summary lines.
#   A (carry .dev1): GPU0 `gpu_next.sh verify`; GPU1 bf16 N=12,000 probe; GPU2 fp32 N=9,000 probe
#                    (issue 5's 80 GB lengths, one pass, one block per stack, allocator capped at
#                    77 GiB + 1.5); GPU3 the kernel GPU tests, then a kernel-level profile of one N=1,024 pass.
#   B (carry .dev2): DAP N=2,048 bf16: 1 GPU (GPU0) beside 2 GPUs (GPU1-2), then 4 GPUs; then the
#                    per-rank peak probes of `gpu_next.sh dap_maxlen` if time is left.
#   C (carry .dev3): the Ray bundle installed; issue 10's batch of 20 (GPU0 + cores 0-15) beside
#                    the two sequential halves (GPU1 / GPU2, cores 16-31 / 32-47) and issue 3's
#                    pipeline benchmark (cores 48-63, --cpus 16, no GPU).
#   D, E:            session 3's re-runs of the 80 GB probes (after the int64 fix; with OOM details).
#   F, G, H:         what is still owed (docs/BENCHMARKS.md "Session 3"): F (carry .dev1) the 80 GB
#                    probes with expandable segments, N=1,200 at several budgets, all kernel GPU
#                    tests, a by-module profile and the fused tri-mul projections A/B at N=1,024; G (carry .dev2) DAP's longest N on 2 GPUs and shorter probes; H (carry
#                    .dev3) the pipeline with run-wide shard numbers on 16 and 64 cores.
#   J:               DAP on 1, 2 and 4 GPUs after the tri-mul change (4-GPU kind not lent again in session 4).
#   K, L (2 GPUs):   the CUDA fixtures with the fused projections, N=1,200 budgets, the bf16 probe; DAP 1 vs 2.
#   M:               next: the 80 GB probes, a whole call each.
#   V, W (session 6) ran at bcc1ed3 and 70744b4 (the SM-carveout and copy-engine options they timed are
#                    gone: neither helped); X-AB are session 6's other calls; AD the next multi-GPU one.
#   AE-AN:           session 7 (AH needs commit 7c020b2's NCCL priority switch, since removed; AJ ran
#                    commit c60cce6, reverted); AO onwards session 8 (AP's tma_bias variants need the
#                    TMA bias path of the session's working tree, measured no faster and not committed).
#   AW-BA:           session 9 on one H100 each (AX's `trans` and AY's tri-mul output `persistent` variants
#                    name options removed since: they lost); BB and BC the next session's one-GPU calls.
#   BY's `exp_fma` variants name an option removed in session 20 (it lost); CE, CF sessions 20-21.
#   CF, CJ, CG ran in session 21 (CH, N = 4,096, was run by hand with `paired`); CK, CM, CN, CP in
#                    session 22 (CL dropped: no four-row form won in CK; CN's and CP's `gate_first` and
#                    `early_p` name tri-mul output options removed since: gate first is the only order);
#                    CQ, CR next; CS and CT (session 23) after them. CR and CS run the GPU tests through
#                    scripts/gpu_tests.sh: carry [".devtest"] (filled by `gpu_tests.sh --fetch`).
set -uo pipefail
cd "$(dirname "$0")/.."
call=${1:?usage: gpu_4way.sh A|B|C}
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
RES=/tmp/res_$call
rm -rf "$RES"; mkdir -p "$RES" /tmp/ffdev
REAL_OUT=${OUT:-/tmp/out}; mkdir -p "$REAL_OUT"
for d in .dev1 .dev2 .dev3; do [ -d "$d" ] && cp -n "$d"/* /tmp/ffdev/ 2>/dev/null; done
{ nvidia-smi --query-gpu=name,memory.total --format=csv,noheader; nproc; free -g | head -2; date -u;
  git rev-parse --short HEAD 2>/dev/null; } > "$RES/machine.txt" 2>&1
cat "$RES/machine.txt"
START=$(date +%s)
job() {  # job NAME GPUS CORES LIMIT CMD...: run in the background, log to $RES/NAME.log
  local name=$1 gpus=$2 cores=$3 limit=$4; shift 4
  ( export CUDA_VISIBLE_DEVICES=$gpus OUT="$RES/$name"; mkdir -p "$OUT"
    timeout "$limit" taskset -c "$cores" "$@" > "$RES/$name.log" 2>&1
    echo "[$name] exit $? after $(( $(date +%s) - START )) s" >> "$RES/$name.log" ) &
}
probe() {  # probe GPU CORES LIMIT PRECISION N: the 80 GB memory probe (one block per stack, capped allocator)
  job probe_$4_$5 "$1" "$2" "$3" python3 -m fastfold_cli bench --lengths "$5" --precision "$4" --backend triton \
    --probe-blocks 1 --max-memory 77 --no-warmup --json "$RES/probe_$4_$5.json"
}
verify() {  # verify GPU CORES LIMIT [TESTS]: the kernel GPU tests (TESTS: pytest's selection, default
            # tests/kernels), then the reference fixtures on CUDA (fp32, both backends)
  job verify "$1" "$2" "$3" bash -c "python3 -m pytest -q -p no:cacheprovider ${4:-tests/kernels} 2>&1 | tail -2;
    python3 scripts/check_fixtures.py --device cuda --precision fp32 --backend torch triton \
      --json $RES/fixtures_cuda.json 2>&1 | tail -5"
}
# The whole network at N=1,024 and DAP's 1-GPU N=2,048 baseline (append --json FILE), for job command lines
N1024="python3 -m fastfold_cli bench --lengths 1024 --precision bf16 --backend triton --no-breakdown"
DAP1="python3 -m model.dap_bench --world 1 --n-res 2048 --precision bf16 --backend triton"
# Session 14-15's attention jobs (calls BM-BR): the traffic probe; the attention variants against the
# default at the network's call sites; one CUDA fixture (limit $1); N = 1,024 against the default with
# attention options $2 (`--compare attention`, one process); flush NAME FILES...: print a finished
# job's log and copy it and FILES to $OUT, so a call cut off by the device budget keeps what finished
ATT_VARIANTS='[{"paired": true}, {"rows": 4, "num_stages": 2}, {"rows": 4, "num_stages": 2, "paired": true}]'
traffic_job() { job traffic 0 0-7 150 python3 scripts/attention_traffic_probe.py --lengths 1024 2048 --json "$RES/traffic.json"; }
kbatt_job() {
  job kbatt 0 0-7 150 bash -c "python3 scripts/kernel_bench.py --cases tri1024,tri2048,extra_msa --no-flex --no-baselines \
    --json $RES/kbench_paired.json --variants '$ATT_VARIANTS' 2>&1 | grep -i 'network call' | tail -12"
}
fixture_job() {
  job fix 0 0-15 "$1" bash -c "python3 scripts/check_fixtures.py --device cuda --precision fp32 --backend triton \
      --inplace --keep-templates --only model_1_ptm_odd --json $RES/fixtures_cuda_inplace_keep.json 2>&1 | tail -3"
}
# The next calls' network options (gpu_4way.sh CC, CD), unless NET_OPTS names others
OPTS=${NET_OPTS:-'{"head_dims": [32], "sum_mma": true, "shared_bound": true}'}
# Nsight Compute on one triangle-attention launch at N = 2,048 (attention_traffic_probe.py --once,
# kernel config $2): stall reasons per issued instruction, issue-slot and pipe use, occupancy
NCU_M='regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio,regex:sm__inst_executed_pipe_.*\.avg\.pct_of_peak_sustained_active,smsp__issue_active.avg.pct_of_peak_sustained_active,sm__warps_active.avg.pct_of_peak_sustained_active'
ncu_job() {  # ncu_job NAME CONFIG [SKIP]: SKIP _attn_fwd launches first (bound launches two a call: 2)
  local ncu; ncu=$(command -v ncu || ls /usr/local/cuda*/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
  job "$1" 0 0-7 "${NCU_LIMIT:-120}" "${ncu:-ncu}" --clock-control none -k regex:_attn_fwd --launch-skip "${3:-1}" --launch-count 1 \
    --section SpeedOfLight --section ComputeWorkloadAnalysis --section SchedulerStats --section WarpStateStats \
    --section Occupancy --section MemoryWorkloadAnalysis --metrics "$NCU_M" \
    python3 scripts/attention_traffic_probe.py --once "$2" --lengths 2048
}
net_ab() { job "$1" 0 0-7 200 bash -c "$N1024 --compare attention --attention-options '$2' --json $RES/$1.json 2>&1 | tail -3"; }
net_cmp() {  # net_cmp NAME N LIMIT OPTIONS JSON: the whole network at N, the default against OPTIONS, one process
  job "$1" 0 0-7 "$3" bash -c "python3 -m fastfold_cli bench --lengths $2 --precision bf16 --backend triton --no-breakdown \
    --compare attention --attention-options '$4' --json $RES/$5.json 2>&1 | tail -2 | cut -c1-1500"
  wait; flush "$1" "$RES/$5.json"
}
smi_log() {  # the SM clock, power, temperature and throttle reasons every 200 ms, in the background
  # (a subshell's child, not a job of this shell: `wait` must not wait for it)
  ( timeout 1200 nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,power.draw,temperature.gpu,clocks_event_reasons.active \
    --format=csv -lms 200 > "$RES/smi.csv" 2>&1 & )
}
flush() { local name=$1; shift; cat "$RES/$name.log"; cp "$RES/$name.log" "$@" "$REAL_OUT"/ 2>/dev/null; }
smi_stop() { pkill -f "nvidia-smi --query-gpu=timestamp" 2>/dev/null; cp "$RES/smi.csv" "$REAL_OUT"/ 2>/dev/null; }
dap_run() {  # dap_run NAME GPUS CORES LIMIT JSON WORLD [ARGS...]: DAP at N=2,048 bf16 (Triton), $RES/JSON.json
  local name=$1 gpus=$2 cores=$3 limit=$4 js=$5 world=$6; shift 6
  job "$name" "$gpus" "$cores" "$limit" python3 -m model.dap_bench --world "$world" --n-res 2048 --precision bf16 \
    --backend triton "$@" --json "$RES/$js.json"
}
dap_1v2() {  # DAP at N=2,048 on GPU 0 alone, then on GPUs 0-1: the 1-GPU baseline of the same call first
  dap_run dap1 0 0-15 150 dap_1 1
  wait
  dap_run dap2 0,1 0-31 120 dap_2 2
  wait
}
G='"n_res": [0-9]*\|"path": "[a-z]*"\|"predicted_peak_gib": [0-9.]*\|"peak_allocated_gib": [0-9.]*\|"probe_seconds": [0-9.]*\|"seconds": [0-9.]*\|"error": "[^"]*"'
case "$call" in
A)
  job verify 0 0-15 520 bash scripts/gpu_next.sh verify
  job probe_bf16 1 16-31 520 python3 -m fastfold_cli bench --lengths 12000 --precision bf16 --backend triton \
    --probe-blocks 1 --max-memory 77 --no-breakdown --no-warmup --json "$RES/probe_bf16_12000.json"
  job probe_fp32 2 32-47 520 python3 -m fastfold_cli bench --lengths 9000 --precision fp32 --backend triton \
    --probe-blocks 1 --max-memory 77 --no-breakdown --no-warmup --json "$RES/probe_fp32_9000.json"
  job gputests 3 48-63 520 bash -c "python3 -m pytest -q -x -p no:cacheprovider tests/kernels 2>&1 | tail -5;
    python3 scripts/profile_pass.py --length 1024 --precision bf16 --backend triton --json $RES/profile_1024.json"
  wait
  ;;
B)
  dap_run dap1 0 0-15 260 dap_1 1
  dap_run dap2 1,2 16-47 260 dap_2 2
  wait
  dap_run dap4 0,1,2,3 0-63 200 dap_4 4
  wait
  left=$(( 540 - ($(date +%s) - START) ))
  if [ "$left" -gt 120 ]; then
    job dap_maxlen 0,1,2,3 0-63 "$left" bash scripts/gpu_next.sh dap_maxlen
    wait
  fi
  ;;
C)
  source scripts/device_pipeline_env.sh > "$RES/env.log" 2>&1; cat "$RES/env.log"
  W=/tmp/ffbatch
  python3 scripts/batch_throughput.py --work $W --device cuda --cpus 16 --skip-sequential --skip-batch \
    --json $W/prep.json > "$RES/prep.log" 2>&1 || { tail -5 "$RES/prep.log"; }
  job batch 0 0-15 500 python3 scripts/batch_throughput.py --work $W --device cuda --cpus 16 --skip-sequential \
    --json $W/b.json
  job seq1 1 16-31 500 python3 scripts/batch_throughput.py --work $W --device cuda --cpus 16 --skip-batch \
    --seq-range 1:10 --json $W/s1.json
  job seq2 2 32-47 500 python3 scripts/batch_throughput.py --work $W --device cuda --cpus 16 --skip-batch \
    --seq-range 11:20 --json $W/s2.json
  job pipeline "" 48-63 500 bash -c "python3 -m pipeline.bench --cpus 16 --copies 60 --work /tmp/ffbench \
    --json $RES/pipeline_monomer.json && python3 -m pipeline.bench --cpus 16 --copies 60 --model-preset multimer \
    --repeats 1 --work /tmp/ffbench --json $RES/pipeline_multimer.json"
  wait
  python3 scripts/batch_throughput.py --work $W --merge $W/b.json $W/s1.json $W/s2.json \
    --json "$RES/batch_throughput.json" 2>&1 | tail -25
  cp $W/*.json "$RES/" 2>/dev/null; cp -r $W/logs "$RES/batch_logs" 2>/dev/null
  ;;
D)  # after the int64-offset fix: the kernel GPU tests, then the 80 GB probes again, and DAP on 2 GPUs
  job probe_fp32 0 0-15 530 bash -c "python3 -m pytest -q -x -p no:cacheprovider tests/kernels/test_kernel_gpu.py \
    -k 'int32 or layer_norm' 2>&1 | tail -3; python3 -m fastfold_cli bench --lengths 9000 --precision fp32 \
    --backend triton --probe-blocks 1 --max-memory 77 --no-breakdown --no-warmup --json $RES/probe_fp32_9000.json"
  job probe_bf16 1 16-31 530 python3 -m fastfold_cli bench --lengths 12000 --precision bf16 --backend triton \
    --probe-blocks 1 --max-memory 77 --no-breakdown --no-warmup --json "$RES/probe_bf16_12000.json"
  job dap2_probe 2,3 32-63 530 python3 -m fastfold_cli bench --gpus 2 --probe-blocks 1 --precision bf16 \
    --backend triton --lengths 12500 --max-memory 77 --no-breakdown --json "$RES/dap2_probe_12500.json"
  wait
  ;;
E)  # where the 80 GB probes run out (per-module peaks, the allocator's message), and shorter lengths
  for a in "0 0-15 bf16 12000" "1 16-31 fp32 9000" "2 32-47 bf16 10000" "3 48-63 fp32 7500"; do set -- $a
    probe $1 $2 ${LIMIT:-340} $3 $4
  done
  wait
  ;;
F)  # session 4, call 1 (carry .dev1): CUDA fixtures first, the 80 GB probes with expandable segments,
    # N=1,200 at several budgets, all kernel GPU tests, a by-module profile, the fused tri-mul A/B
  for a in "0 0-15 bf16 12000" "1 16-31 fp32 9000"; do set -- $a
    probe $1 $2 540 $3 $4
  done
  job mem1200 2 32-47 540 bash -c "for a in 'fp32 3.5' 'fp32 3.3' 'bf16 2.3' 'bf16 2.1'; do set -- \$a;
    timeout 130 python3 -m fastfold_cli bench --lengths 1200 --precision \$1 --backend triton --recycles 0 \
      --max-memory \$2 --no-breakdown --json $RES/mem1200_\$1_\$2.json 2>&1 | tail -4; done"
  job gputests 3 48-63 540 bash -c "python3 scripts/check_fixtures.py --device cuda --precision fp32 bf16 \
      --backend torch triton --json $RES/fixtures_cuda.json 2>&1 | tail -9;
    python3 -m pytest -q -p no:cacheprovider tests/kernels 2>&1 | tail -5;
    python3 scripts/profile_pass.py --length 1024 --by-module --top 50 --json $RES/profile_1024_by_module.json;
    python3 -m fastfold_cli bench --lengths 1024 --precision bf16 --backend triton --compare fused \
      --json $RES/bench_1024_fused.json 2>&1 | tail -8"
  wait
  ;;
G)  # call 2 (carry .dev2): DAP's longest N on 2 GPUs (ranks capped); DAP per-module times at N=2,048
    # on 1 and 2 GPUs (which modules scale badly); G_PROBES=1: the shorter 80 GB probes instead
  job dap2_probe 0,1 0-31 540 python3 -m fastfold_cli bench --gpus 2 --probe-blocks 1 --precision bf16 \
    --backend triton --lengths ${G_DAP:-12500} --max-memory 77 --no-breakdown --json "$RES/dap2_probe.json"
  if [ -n "${G_PROBES:-}" ]; then
    for a in "2 32-47 bf16 ${G_BF16:-11000}" "3 48-63 fp32 ${G_FP32:-8000}"; do set -- $a
      probe $1 $2 540 $3 $4
    done
  else
    job dap_modules 2,3 32-63 540 bash -c "CUDA_VISIBLE_DEVICES=2 python3 -m model.dap_bench --world 1 --n-res 2048 \
        --precision bf16 --backend triton --recycles 1 --breakdown --json $RES/dap_modules_1.json | tail -3;
      python3 -m model.dap_bench --world 2 --n-res 2048 --precision bf16 --backend triton --recycles 1 \
        --breakdown --json $RES/dap_modules_2.json | tail -3"
  fi
  wait
  ;;
H)  # call 3 (carry .dev3): the pipeline with run-wide shard numbers, 16 cores and 64; beside the
    # 16-core run, DAP per-module times at N=2,048 on 4 GPUs (cores 16-63)
  source scripts/device_pipeline_env.sh > "$RES/env.log" 2>&1; cat "$RES/env.log"
  job pipeline16 "" 0-15 300 python3 -m pipeline.bench --cpus 16 --copies 60 --work /tmp/ffbench \
    --json "$RES/pipeline16_monomer.json"
  dap_run dap_modules4 0,1,2,3 16-63 280 dap_modules_4 4 --recycles 1 --breakdown
  wait
  job pipeline64 "" 0-63 240 python3 -m pipeline.bench --cpus 64 --copies 60 --work /tmp/ffbench \
    --json "$RES/pipeline64_monomer.json"
  wait
  ;;
J)  # next 4-GPU lease: DAP N=2,048 bf16 after the tri-mul change: 1 GPU beside 2 GPUs, then 4 GPUs
  dap_run dap1 0 0-15 200 dap_1 1
  dap_run dap2 1,2 16-47 200 dap_2 2
  wait
  dap_run dap4 0,1,2,3 0-63 ${LIMIT4:-150} dap_4 4
  wait
  ;;
K)  # the same on a 2-GPU machine (32 cores), call 1: the bf16 80 GB probe; CUDA fixtures with the fused
    # projections on, then N=1,200 fp32 / bf16 within a budget
  probe 0 0-15 ${LIMIT:-360} bf16 12000
  job verify 1 16-31 ${LIMIT:-360} bash -c "python3 scripts/check_fixtures.py --device cuda --precision fp32 bf16 \
      --backend torch triton --json $RES/fixtures_cuda.json 2>&1 | tail -9;
    for a in 'fp32 3.7' 'bf16 2.3' 'fp32 3.6'; do set -- \$a;
    timeout 100 python3 -m fastfold_cli bench --lengths 1200 --precision \$1 --backend triton --recycles 0 \
      --max-memory \$2 --no-breakdown --no-warmup --json $RES/mem1200_\$1_\$2.json 2>&1 | tail -2; done"
  wait
  ;;
L)  # 2-GPU machine, call 2: DAP N=2,048 bf16 after the tri-mul change, 1 GPU then 2 GPUs
  dap_run dap1 0 0-31 110 dap_1 1
  wait
  dap_run dap2 0,1 0-31 ${LIMIT2:-110} dap_2 2
  wait
  ;;
M)  # next session, call 1 (any kind with >= 2 GPUs): the 80 GB probes with a whole call each (bf16 12,000;
    # fp32 storage at 9,000 probed in tf32: the same tensors and bytes, faster GEMMs; say so)
  probe 0 0-15 ${LIMIT:-580} bf16 12000
  probe 1 16-31 ${LIMIT:-580} tf32 9000
  wait
  ;;
N)  # session 5, call 1 (4 GPUs): M's two probes on GPUs 0/1; beside them, per-module DAP times after
    # the tri-mul change (1 GPU, then 2) on GPUs 2-3 and the kernel micro-benchmark on GPU 3
  probe 0 0-15 ${LIMIT:-570} bf16 12000
  probe 1 16-31 ${LIMIT:-570} tf32 9000
  dap_run dap_modules1 2 32-47 200 dap_modules_1 1 --recycles 1 --breakdown; p1=$!
  job kbench 3 48-63 200 python3 scripts/kernel_bench.py --budget 180 --json "$RES/kernel_bench.json"; p2=$!
  wait $p1 $p2
  dap_run dap_modules2 2,3 32-63 250 dap_modules_2 2 --recycles 1 --breakdown
  wait
  ;;
P)  # session 5, call 3 (4 GPUs), after the row-block DAP tri-mul schedule: the NCCL self-checks on 2
    # and 4 ranks, then J's 1 | 2 and 4 GPUs, then per-module times and peaks on 4 GPUs
  job check2 0,1 0-31 150 python3 -m model.dap_check --world 2
  job check4 0,1,2,3 32-63 150 python3 -m model.dap_check --world 4 --n-res 61 --precision fp32
  wait
  dap_run dap1 0 0-15 200 dap_1 1
  dap_run dap2 1,2 16-47 200 dap_2 2
  wait
  dap_run dap4 0,1,2,3 0-63 150 dap_4 4
  wait
  dap_run dap_modules4 0,1,2,3 0-63 150 dap_modules_4 4 --recycles 1 --breakdown
  wait
  ;;
Q)  # session 5 on a 2-GPU host: kernel GPU tests and CUDA fixtures beside the 1-GPU DAP baseline;
    # the NCCL self-check and DAP on 2 GPUs (total, then per module); N=1,024 planned vs plain beside
    # a by-module profile
  dap_run dap1 0 0-15 200 dap_1 1
  job verify 1 16-31 260 bash -c "python3 -m pytest -q -p no:cacheprovider tests/kernels 2>&1 | tail -4;
    python3 scripts/check_fixtures.py --device cuda --precision fp32 bf16 --backend torch triton \
      --json $RES/fixtures_cuda.json 2>&1 | tail -9"
  wait
  job dap2 0,1 0-31 200 bash -c "python3 -m model.dap_check --world 2 2>&1 | tail -3;
    python3 -m model.dap_bench --world 2 --n-res 2048 --precision bf16 --backend triton --json $RES/dap_2.json;
    python3 -m model.dap_bench --world 2 --n-res 2048 --precision bf16 --backend triton --recycles 1 \
      --breakdown --json $RES/dap_modules_2.json"
  wait
  job bench1024 0 0-15 200 python3 -m fastfold_cli bench --lengths 1024 --precision bf16 --backend triton \
    --compare plain --json "$RES/bench_1024.json"
  job profile 1 16-31 200 python3 scripts/profile_pass.py --length 1024 --by-module --top 50 \
    --json "$RES/profile_1024_by_module.json"
  wait
  ;;
R)  # session 5, 2-GPU host, after the tri-mul block change: NCCL self-check, the tri-mul probe,
    # DAP 1 then 2 GPUs (R4=1 on a 4-GPU host: then 4 GPUs too)
  job check 0,1 0-31 120 bash -c "python3 -m model.dap_check --world 2 2>&1 | tail -3;
    python3 scripts/dap_trimul_probe.py --world 2 --n-res 2048 --rows 256 --json $RES/trimul_probe_2.json 2>&1 | grep -v Warn"
  wait
  dap_run dap1 0 0-15 150 dap_1 1
  wait
  dap_run dap2 0,1 0-31 150 dap_2 2
  wait
  if [ -n "${R4:-}" ]; then
    job dap4 0,1,2,3 0-63 150 bash -c "python3 scripts/dap_trimul_probe.py --world 4 --n-res 2048 --rows 128 \
      --json $RES/trimul_probe_4.json 2>&1 | grep -v Warn; python3 -m model.dap_bench --world 4 --n-res 2048 \
      --precision bf16 --backend triton --json $RES/dap_4.json"
    wait
  fi
  ;;
S)  # session 5, last call on a 2-GPU host: the NCCL self-check; the 1-GPU DAP baseline beside the
    # kernel GPU tests and CUDA fixtures; DAP on 2 GPUs; N=1,024 on one GPU
  job check 0,1 0-31 90 python3 -m model.dap_check --world 2
  wait
  dap_run dap1 0 0-15 150 dap_1 1
  verify 1 16-31 200
  wait
  dap_run dap2 0,1 0-31 120 dap_2 2
  wait
  job bench1024 0 0-15 120 python3 -m fastfold_cli bench --lengths 1024 --precision bf16 --backend triton \
    --json "$RES/bench_1024.json"
  wait
  ;;
T)  # session 5, last call on one GPU: kernel GPU tests, CUDA fixtures (fp32), N=1,024, N=1,200 budgets
  job verify 0 0-15 560 bash -c "python3 -m pytest -q -p no:cacheprovider tests/kernels 2>&1 | tail -2;
    python3 scripts/check_fixtures.py --device cuda --precision fp32 --backend torch triton \
      --json $RES/fixtures_cuda.json 2>&1 | tail -5;
    python3 -m fastfold_cli bench --lengths 1024 --precision bf16 --backend triton --json $RES/bench_1024.json 2>&1 | tail -3;
    for a in 'fp32 3.7' 'bf16 2.1'; do set -- \$a;
      timeout 100 python3 -m fastfold_cli bench --lengths 1200 --precision \$1 --backend triton --recycles 0 \
        --max-memory \$2 --no-breakdown --json $RES/mem1200_\$1_\$2.json 2>&1 | tail -2; done"
  wait
  ;;
U)  # session 5, the last minutes on one GPU: issue 5's N=1,200 budgets with the final code (peaks only)
  job mem1200 0 0-15 ${LIMIT:-110} bash -c "for a in 'fp32 3.7' 'bf16 2.1'; do set -- \$a;
      timeout 55 python3 -m fastfold_cli bench --lengths 1200 --precision \$1 --backend triton --recycles 0 \
        --max-memory \$2 --no-breakdown --no-warmup --json $RES/mem1200_\$1_\$2.json 2>&1 | tail -2; done"
  wait
  ;;
X)  # session 6, 2-GPU host: per-module DAP times on 1 and 2 GPUs (which modules still lose on 2), beside
    # issue 5's N=1,200 budgets with the current code (GPU1, during the 1-GPU run)
  dap_run dap1m 0 0-15 150 dap_modules_1 1 --recycles 1 --breakdown
  job mem1200 1 16-31 140 bash -c "for a in 'fp32 3.7' 'bf16 2.1'; do set -- \$a;
      timeout 65 python3 -m fastfold_cli bench --lengths 1200 --precision \$1 --backend triton --recycles 0 \
        --max-memory \$2 --no-breakdown --no-warmup --json $RES/mem1200_\$1_\$2.json 2>&1 | tail -2; done"
  wait
  dap_run dap2m 0,1 0-31 120 dap_modules_2 2 --recycles 1 --breakdown
  wait
  ;;
Y)  # session 6, 2-GPU host: outgoing tri-mul's output stage per gathered block, ending node's first
    # block sent before its bias: NCCL self-check + tri-mul probe; DAP 1 GPU beside the kernel GPU tests
    # and CUDA fixtures; DAP 2 GPUs
  job check 0,1 0-31 150 bash -c "python3 -m model.dap_check --world 2 2>&1 | grep -v Warn | tail -40 | grep -i 'max\|\"ops\"' ;
    python3 scripts/dap_trimul_probe.py --world 2 --n-res 2048 --rows 256 \
      --json $RES/trimul_probe_2.json 2>&1 | grep -v Warn"
  wait
  dap_run dap1 0 0-15 150 dap_1 1
  verify 1 16-31 200
  wait
  dap_run dap2 0,1 0-31 120 dap_2 2
  wait
  ;;
Z)  # session 6, last 2-GPU call, final code: DAP 1 GPU then N=1,024 on GPU0, beside N=4,096 (two passes,
    # no warm-up: the second pass is warm) on GPU1; then DAP 2 GPUs
  job gpu0 0 0-15 300 bash -c "python3 -m model.dap_bench --world 1 --n-res 2048 --precision bf16 --backend triton \
      --json $RES/dap_1.json | tail -3; python3 -m fastfold_cli bench --lengths 1024 --precision bf16 --backend triton \
      --no-breakdown --json $RES/bench_1024.json 2>&1 | tail -2"
  job n4096 1 16-31 330 python3 -m fastfold_cli bench --lengths 4096 --precision bf16 --backend triton --recycles 1 \
    --no-warmup --no-breakdown --json "$RES/bench_4096.json"
  wait
  dap_run dap2 0,1 0-31 120 dap_2 2
  wait
  ;;
AA)  # session 6, the last call: small heads read feature-major (extra-MSA row attention): kernel GPU
     # tests + CUDA fixtures (GPU1) beside DAP 1 GPU then N=1,024 (GPU0); then DAP 2 GPUs
  verify 1 16-31 260
  job gpu0 0 0-15 260 bash -c "python3 -m model.dap_bench --world 1 --n-res 2048 --precision bf16 --backend triton \
      --json $RES/dap_1.json | tail -3; python3 -m fastfold_cli bench --lengths 1024 --precision bf16 --backend triton \
      --no-breakdown --json $RES/bench_1024.json 2>&1 | tail -2"
  wait
  dap_run dap2 0,1 0-31 120 dap_2 2
  wait
  ;;
AB)  # session 6, the last minutes: the residual update of column-wise attention laid out as its target
     # (batch_inner): kernel GPU tests + CUDA fixtures (GPU1) beside N=1,024 (GPU0)
  verify 1 16-31 200
  job bench1024 0 0-15 200 python3 -m fastfold_cli bench --lengths 1024 --precision bf16 --backend triton \
      --no-breakdown --json "$RES/bench_1024.json"
  wait
  ;;
AD)  # next session, first multi-GPU call: which Evoformer ops lose time under DAP (scripts/dap_op_probe.py,
     # 2 GPUs; P4=1 on a 4-GPU host: also 4), then DAP 1 vs 2 GPUs (and 4 with P4=1) at N=2,048
  job ops2 0,1 0-31 200 python3 scripts/dap_op_probe.py --world 2 --n-res 2048 --json "$RES/op_probe_2.json"
  wait
  if [ -n "${P4:-}" ]; then
    job ops4 0,1,2,3 0-63 200 python3 scripts/dap_op_probe.py --world 4 --n-res 2048 --json "$RES/op_probe_4.json"
    wait
  fi
  dap_1v2
  if [ -n "${P4:-}" ]; then dap_run dap4 0,1,2,3 0-63 120 dap_4 4; wait; fi
  ;;
AE)  # session 7, first call: the op probe on 2 GPUs; then (GPU 0) the attention micro-benchmark
     # with its network-call case and the bias/mask diagnostics, and whether ncu/nsys exist
  job ops2 0,1 0-31 200 python3 scripts/dap_op_probe.py --world 2 --n-res 2048 --json "$RES/op_probe_2.json"
  wait
  { which ncu nsys; ls /usr/local/cuda*/bin 2>/dev/null | grep -i "ncu\|nsys"; } > "$RES/tools.log" 2>&1
  job kbench 0 0-15 200 python3 scripts/kernel_bench.py --cases tri2048,extra_msa --no-flex --sweep \
    --budget 120 --json "$RES/kbench.json"
  wait
  ;;
AF)  # the op probe's compute alone (--no-comm), then with collectives and rank 0's chrome traces
  job ops2_nocomm 0,1 0-31 200 python3 scripts/dap_op_probe.py --world 2 --n-res 2048 --no-comm \
    --json "$RES/op_probe_2_nocomm.json"
  wait
  job ops2_trace 0,1 0-31 240 python3 scripts/dap_op_probe.py --world 2 --n-res 2048 --trace "$RES/traces" \
    --json "$RES/op_probe_2.json"
  wait
  ;;
AG)  # traces of one whole Evoformer block under DAP on 2 GPUs, with collectives and without
  job blk_comm 0,1 0-31 200 python3 scripts/dap_op_probe.py --world 2 --n-res 2048 --reps 2 --trace "$RES/comm" \
    --trace-only whole
  wait
  job blk_nocomm 0,1 0-31 200 python3 scripts/dap_op_probe.py --world 2 --n-res 2048 --reps 2 --no-comm \
    --trace "$RES/nocomm" --trace-only whole
  wait
  ;;
AH)  # NCCL settings against the tri-muls and a whole block under DAP on 2 GPUs (time and bandwidth under load)
  i=0
  for setting in "" "FASTFOLD_NCCL_HIGH_PRIORITY=1" "NCCL_MIN_NCHANNELS=16" "NCCL_MIN_NCHANNELS=32" \
      "NCCL_PROTO=Simple" "NCCL_MAX_NCHANNELS=8" "FASTFOLD_NCCL_HIGH_PRIORITY=1 NCCL_MIN_NCHANNELS=32"; do
    i=$((i + 1))
    echo "setting $i: ${setting:-default}" > "$RES/nccl_$i.log"
    ( export $setting; timeout 120 python3 scripts/dap_op_probe.py --world 2 --n-res 2048 --reps 7 --no-ideal \
        --only tri_mul,whole,outer,msa_row,tri_att_end >> "$RES/nccl_$i.log" 2>&1 )
  done
  ;;
AJ)  # (session 7, commit c60cce6, reverted: own-rows GEMMs first in outgoing tri-mul, last collective block
     # halved) op probe, NCCL check, DAP 1 vs 2
  job ops2 0,1 0-31 150 python3 scripts/dap_op_probe.py --world 2 --n-res 2048 --reps 7 --only tri_mul,tri_att_end,whole
  wait
  job check2 0,1 0-31 150 python3 -m model.dap_check --world 2
  wait
  dap_1v2
  ;;
AK)  # the fused triangle-multiplication output stage: kernel GPU tests + CUDA fixtures (GPU1) beside its
     # micro-benchmark and N=1,024 fused vs plain (GPU0)
  verify 1 16-31 300
  job gpu0 0 0-15 330 bash -c "python3 scripts/kernel_bench.py --cases trimul_out --json $RES/kbench.json 2>&1 | tail -4;
    python3 -m fastfold_cli bench --lengths 1024 --precision bf16 --backend triton --compare fused --no-breakdown \
      --json $RES/bench_1024.json"
  wait
  ;;
AL)  # the fused transition (+ the tri-mul output stage): kernel GPU tests + CUDA fixtures (GPU1) beside the two
     # kernels' micro-benchmark with a config sweep and N=1,024 fused vs unfused (GPU0); then DAP 1 vs 2
  verify 1 16-31 300
  job gpu0 0 0-15 330 bash -c "python3 scripts/kernel_bench.py --cases trimul_out,transition --sweep --budget 110 \
      --reserve 5 --json $RES/kbench.json 2>&1 | grep -v '^ *$' | tail -40;
    python3 -m fastfold_cli bench --lengths 1024 --precision bf16 --backend triton --compare fused --no-breakdown \
      --json $RES/bench_1024.json"
  wait
  dap_1v2
  ;;
AM)  # session 7's last call, the swept tile configs as defaults: kernel GPU tests + CUDA fixtures (GPU1)
     # beside the two kernels' micro-benchmark, N=1,024 and DAP's 1-GPU N=2,048 (GPU0); then DAP on 2
  verify 1 16-31 240
  job gpu0 0 0-15 240 bash -c "python3 scripts/kernel_bench.py --cases trimul_out,transition --json $RES/kbench.json \
      2>&1 | grep -v '^ *$' | tail -8;
    $N1024 --json $RES/bench_1024.json 2>&1 | tail -3; $DAP1 --json $RES/dap_1.json | tail -3"
  wait
  dap_run dap2 0,1 0-31 100 dap_2 2
  wait
  ;;
AN)  # AM on a 4-GPU host: kernel GPU tests + CUDA fixtures (GPU3) beside the kernels' micro-benchmark, N=1,024
     # and DAP's 1-GPU N=2,048 (GPU0) and DAP on 2 GPUs (GPU1-2); then DAP on 4 GPUs
  verify 3 48-63 240
  job gpu0 0 0-15 240 bash -c "python3 scripts/kernel_bench.py --cases trimul_out,transition --json $RES/kbench.json \
      2>&1 | grep -v '^ *$' | tail -8;
    $N1024 --json $RES/bench_1024.json 2>&1 | tail -3; $DAP1 --json $RES/dap_1.json | tail -3"
  dap_run dap2 1,2 16-47 100 dap_2 2
  wait
  dap_run dap4 0,1,2,3 0-63 120 dap_4 4
  wait
  ;;
AO)  # session 8, first call, 4-GPU host: the kernel GPU tests + CUDA fixtures at the new attention code
     # (GPU1); a by-module profile of N=1,024 and a warm N=4,096 pass (GPU0); the attention kernel's
     # spare-column and warp-specialisation variants (GPU2) beside session 7's kernel (old_s7/, an
     # untracked copy of 91ee141's kernels/, GPU3); then the op probe on 4 GPUs
  verify 1 16-31 320
  job gpu0 0 0-15 330 bash -c "python3 scripts/profile_pass.py --length 1024 --by-module --top 50 \
      --json $RES/profile_1024_by_module.json 2>&1 | tail -25;
    python3 -m fastfold_cli bench --lengths 4096 --precision bf16 --backend triton --recycles 1 --no-warmup \
      --no-breakdown --json $RES/bench_4096.json 2>&1 | tail -3"
  job knew 2 32-47 320 python3 scripts/kernel_bench.py --cases extra_msa,tri2048,msa_row --no-flex \
    --variants '[{"spare": false}, {"ws": true}]' --json "$RES/kbench_new.json"
  job kold 3 48-63 320 python3 old_s7/scripts/kernel_bench.py --cases extra_msa,tri2048,msa_row --no-flex \
    --no-baselines --json "$RES/kbench_old.json"
  wait
  job ops4 0,1,2,3 0-63 150 python3 scripts/dap_op_probe.py --world 4 --n-res 2048 --json "$RES/op_probe_4.json"
  wait
  ;;
AP)  # the kernel GPU tests + CUDA fixtures after AO's fix (GPU1); the attention kernel with the bias by
     # TMA descriptor A/B'd on every attention shape (GPU2); the head-dim-8 tile sweep with the spare
     # columns (GPU3)
  verify 1 16-31 320
  job knew 2 32-47 320 python3 scripts/kernel_bench.py --cases tri2048,extra_msa,msa_row,tri1024 --no-flex \
    --no-baselines --variants '[{"tma_bias": true}, {"tma_bias": true, "rows": 2}, {"tma_bias": true, "rows": 2, "BLOCK_M": 128, "num_warps": 8, "num_stages": 2}]' \
    --json "$RES/kbench_tma.json"
  job ksweep 3 48-63 320 python3 scripts/kernel_bench.py --cases extra_msa --no-flex --no-baselines --sweep \
    --json "$RES/kbench_sweep_d8.json"
  wait
  ;;
AQ)  # 4-GPU host: DAP N=2,048 on 1, 2 and 4 GPUs one after another (the MSA row attention's switch to
     # columns now posts every peer's transfer in one batch: P >= 3 only), then the op probe on 4 GPUs
     # for the MSA row attention, the outer product mean and the outgoing multiplication, with a
     # chrome trace of the row attention
  dap_1v2
  dap_run dap4 0,1,2,3 0-63 80 dap_4 4
  wait
  job ops4 0,1,2,3 0-63 70 python3 scripts/dap_op_probe.py --world 4 --n-res 2048 \
    --only msa_row,outer,tri_mul_out --trace "$RES/trace4" --trace-only msa_row --json "$RES/op_probe_4.json"
  wait
  ;;
AR)  # (ran with a side-group switch option since removed: --no-side-switch changed nothing on 2 GPUs)
     # on a 2-GPU host (the 4-GPU kind withdrawn): the attention GPU tests + CUDA fixtures (GPU1) beside
     # the attention micro-benchmark with the spare columns A/B'd, the whole network at N=1,024 and DAP's
     # 1-GPU N=2,048 baseline (GPU0, in that order); then DAP on 2 GPUs with the side switch and without
  verify 1 16-31 280 "tests/kernels/test_kernel_gpu.py -k attention"
  job gpu0 0 0-15 300 bash -c "python3 scripts/kernel_bench.py --cases extra_msa,tri2048 --no-flex \
      --variants '[{\"spare\": false}]' --json $RES/kbench.json 2>&1 | grep -v '^ *$' | tail -14;
    $N1024 --json $RES/bench_1024.json 2>&1 | tail -3; $DAP1 --json $RES/dap_1.json | tail -3"
  wait
  dap_run dap2 0,1 0-31 90 dap_2 2
  wait
  dap_run dap2m 0,1 0-31 90 dap_2_main 2 --no-side-switch
  wait
  ;;
AS)  # 2-GPU host: the attention kernel with a register cap (config maxnreg: more programs per SM)
     # A/B'd at the four attention shapes (GPU0) beside the attention GPU tests (GPU1)
  job verify 1 16-31 200 bash -c "python3 -m pytest -q -p no:cacheprovider tests/kernels/test_kernel_gpu.py -k attention 2>&1 | tail -3"
  job kb 0 0-15 200 python3 scripts/kernel_bench.py --cases tri2048,extra_msa,msa_row,tri1024 --no-flex --no-baselines \
    --variants '[{"maxnreg": 128}, {"maxnreg": 96}, {"maxnreg": 168}, {"BLOCK_M": 64, "maxnreg": 128}]' \
    --json "$RES/kbench_maxnreg.json"
  wait
  ;;
AT)  # 2-GPU host, the register cap as default (two-row attention programs, 168 registers): every kernel GPU
     # test (GPU1); the micro-benchmark with the cap off in the same run, then the whole network at N=1,024
     # with the cap (this tree) and without (old_s8/: an untracked copy of d54d3c2's packages) (GPU0)
  job verify 1 16-31 240 bash -c "python3 -m pytest -q -p no:cacheprovider tests/kernels 2>&1 | tail -3"
  job gpu0 0 0-15 330 bash -c "python3 scripts/kernel_bench.py --cases tri1024,msa_row --no-flex --no-baselines \
      --variants '[{\"maxnreg\": 0}]' --json $RES/kbench.json 2>&1 | grep -v '^ *$' | tail -12;
    $N1024 --json $RES/bench_1024.json 2>&1 | tail -2;
    cd old_s8 && $N1024 --json $RES/bench_1024_nocap.json 2>&1 | tail -2"
  wait
  ;;
AU)  # 2-GPU host (one GPU used): triangle attention at N=2,048 with two rows per program under the register
     # cap, against the default (one row, no cap), same run
  job kb 0 0-15 150 python3 scripts/kernel_bench.py --cases tri2048 --no-flex --no-baselines \
    --variants '[{"rows": 2, "maxnreg": 168}, {"rows": 2, "maxnreg": 168, "num_stages": 2}, {"rows": 2, "maxnreg": 160}]' \
    --json "$RES/kbench_tri2048_rows2.json"
  wait
  ;;
AV)  # next session's first call on a 2-GPU host (AQ where 4 GPUs are lent): every kernel GPU test and the
     # CUDA fixtures at the final session-8 code (GPU1) beside the whole network at N=1,024 and the
     # N=2,048 DAP baseline with two capped rows per attention program, then the extra-MSA kernel's
     # 64-row tiles under the register cap, three programs per SM (GPU0); then DAP on 2 GPUs
  verify 1 16-31 330
  job gpu0 0 0-15 330 bash -c "$N1024 --json $RES/bench_1024.json 2>&1 | tail -2; $DAP1 --json $RES/dap_1.json | tail -3;
    python3 scripts/kernel_bench.py --cases extra_msa --no-flex --no-baselines --json $RES/kbench_extra.json \
      --variants '[{\"BLOCK_M\": 64, \"maxnreg\": 168}, {\"BLOCK_M\": 64, \"rows\": 4, \"maxnreg\": 168}]' 2>&1 | tail -6"
  wait
  dap_run dap2 0,1 0-31 120 dap_2 2
  wait
  ;;
AW)  # session 9, one GPU (only 1-GPU kinds lent): every kernel GPU test and the CUDA fixtures (session 8's
     # refactors and the dense-mask skip not yet run on a GPU); the whole network at N=1,024 with dense key
     # masks skipped and with every mask applied (same process); the extra-MSA kernel's 64-row tiles under
     # the register cap; a kernel-level profile of one N=1,024 pass
  job verify 0 0-15 330 bash -c "python3 -m pytest -q -p no:cacheprovider tests/kernels 2>&1 | tail -2;
    python3 scripts/check_fixtures.py --device cuda --precision fp32 --backend torch triton \
      --json $RES/fixtures_cuda.json 2>&1 | tail -5"
  wait
  job gpu0 0 0-15 250 bash -c "$N1024 --compare masks --json $RES/bench_1024.json 2>&1 | tail -3;
    python3 scripts/kernel_bench.py --cases extra_msa --no-flex --no-baselines --json $RES/kbench.json \
      --variants '[{\"BLOCK_M\": 64, \"maxnreg\": 168}, {\"BLOCK_M\": 64, \"rows\": 4, \"maxnreg\": 168}]' 2>&1 | tail -8;
    python3 scripts/profile_pass.py --length 1024 --precision bf16 --backend triton --by-module --json $RES/profile_1024.json 2>&1 | tail -25"
  wait
  ;;
AX)  # session 9, one GPU: the new kernels' GPU tests (the fused residual projection, the OPM adding into the
     # pair, the gated projection's tile variants); the CUDA fixtures in fp32 (torch and triton, then triton
     # in place: the fused residual path); the residual-projection and gated-projection micro-benchmarks with
     # tile variants; the whole network at N=1,024 with the fused residual and without (same process)
  job verify 0 0-3 330 bash -c "python3 -m pytest -q -p no:cacheprovider tests/kernels/test_kernel_gpu.py \
      -k 'linear_residual or gated or opm' 2>&1 | tail -2;
    python3 scripts/check_fixtures.py --device cuda --precision fp32 --backend triton --inplace \
      --json $RES/fixtures_cuda_inplace.json 2>&1 | tail -3;
    python3 scripts/check_fixtures.py --device cuda --precision fp32 --backend torch triton \
      --json $RES/fixtures_cuda.json 2>&1 | tail -5"
  wait
  job gpu0 0 0-3 250 bash -c "python3 scripts/kernel_bench.py --cases linres --no-flex --json $RES/kbench_linres.json \
      --variants '[{\"BLOCK_R\": 64, \"num_warps\": 4}, {\"BLOCK_C\": 256}, {\"num_stages\": 3}, {\"BLOCK_R\": 64, \"BLOCK_C\": 256}]' 2>&1 | tail -25;
    python3 scripts/kernel_bench.py --cases gated --no-flex --json $RES/kbench_gated.json \
      --variants '[{\"c_fast\": true}, {\"trans\": true}, {\"trans\": true, \"c_fast\": true}, {\"BLOCK_C\": 128, \"BLOCK_P\": 64, \"num_warps\": 4, \"c_fast\": true}, {\"trans\": true, \"c_fast\": true, \"BLOCK_P\": 256}]' 2>&1 | tail -9;
    $N1024 --compare residual --json $RES/bench_1024.json 2>&1 | tail -3"
  wait
  ;;
AY)  # session 9, one GPU: GPU tests of the changed kernels (persistent forms, residual projection at 3 stages,
     # the gated projection's channel-fast default); the gated projection and tri-mul output stage with their
     # persistent forms A/B'd; the whole network at N=1,024 (fused residual A/B), N=2,048, and N=4,096 (one
     # cold and one warm pass)
  job verify 0 0-3 120 bash -c "python3 -m pytest -q -p no:cacheprovider tests/kernels/test_kernel_gpu.py \
      -k 'linear_residual or gated or opm or tri_mul_output' 2>&1 | tail -2"
  wait
  job kb 0 0-3 120 bash -c "python3 scripts/kernel_bench.py --cases gated --no-flex --no-baselines --json $RES/kbench_gated.json \
      --variants '[{\"persistent\": 132}, {\"persistent\": 132, \"num_stages\": 3}, {\"persistent\": 396, \"BLOCK_P\": 64, \"num_warps\": 4, \"num_stages\": 3}, {\"persistent\": 264, \"BLOCK_P\": 64, \"num_warps\": 4, \"num_stages\": 2}]' 2>&1 | grep '^gated' | tail -6;
    python3 scripts/kernel_bench.py --cases trimul_out --no-flex --no-baselines --json $RES/kbench_trimul.json \
      --variants '[{\"persistent\": 132, \"num_warps\": 8, \"num_stages\": 2}, {\"persistent\": 264, \"num_warps\": 4, \"num_stages\": 2}, {\"persistent\": 264, \"num_warps\": 4, \"num_stages\": 3}, {\"persistent\": 528, \"BLOCK_P\": 32, \"num_warps\": 4, \"num_stages\": 2}]' 2>&1 | grep '^trimul_out' | tail -6"
  wait
  job net 0 0-3 330 bash -c "$N1024 --compare residual --json $RES/bench_1024.json 2>&1 | tail -2;
    python3 -m fastfold_cli bench --lengths 2048 --precision bf16 --backend triton --no-breakdown --json $RES/bench_2048.json 2>&1 | tail -2;
    python3 -m fastfold_cli bench --lengths 4096 --precision bf16 --backend triton --recycles 1 --no-warmup --no-breakdown \
      --json $RES/bench_4096.json 2>&1 | tail -2"
  wait
  ;;
AZ)  # session 9's last call, one GPU: the gated projection's persistent default (bf16) and fp32 path under the
     # GPU tests, and the whole network at N=1,024 with it
  job verify 0 0-3 90 bash -c "python3 -m pytest -q -p no:cacheprovider tests/kernels/test_kernel_gpu.py -k gated 2>&1 | tail -2"
  wait
  job net 0 0-3 150 bash -c "$N1024 --json $RES/bench_1024.json 2>&1 | tail -2"
  wait
  ;;
BA)  # session 9, one GPU, if device time allows: the pair-bias kernel (norm_project) under its GPU tests, and the
     # whole network at N=1,024 with it and without (same process)
  job verify 0 0-3 60 bash -c "python3 -m pytest -q -p no:cacheprovider tests/kernels/test_kernel_gpu.py -k norm_project 2>&1 | tail -2"
  wait
  job net 0 0-3 170 bash -c "$N1024 --compare bias --json $RES/bench_1024.json 2>&1 | tail -2"
  wait
  ;;
BB)  # next session's first call on one GPU (AQ where 4 GPUs are lent): every kernel GPU test, then the CUDA
     # fixtures in fp32 (torch, triton, triton in place) at session 9's final code (the pair-bias kernel has not
     # run through the fixtures on a GPU yet)
  job verify 0 0-3 540 bash -c "python3 -m pytest -q -p no:cacheprovider tests/kernels 2>&1 | tail -2;
    python3 scripts/check_fixtures.py --device cuda --precision fp32 --backend triton --inplace \
      --json $RES/fixtures_cuda_inplace.json 2>&1 | tail -3;
    python3 scripts/check_fixtures.py --device cuda --precision fp32 --backend torch triton \
      --json $RES/fixtures_cuda.json 2>&1 | tail -5"
  wait
  ;;
BC)  # then: the attention micro-benchmark with the no-mask network call and the SDPA baselines (the triangle
     # attention target's shape first), the whole network at N=1,024 with the pair-bias kernel A/B'd (fixed
     # baseline arm), then N=2,048
  job gpu0 0 0-3 560 bash -c "python3 scripts/kernel_bench.py --cases tri2048,extra_msa,msa_row --no-flex \
      --json $RES/kbench.json 2>&1 | grep -v '^ *$' | tail -24;
    $N1024 --compare bias --json $RES/bench_1024.json 2>&1 | tail -2;
    python3 -m fastfold_cli bench --lengths 2048 --precision bf16 --backend triton --no-breakdown --json $RES/bench_2048.json 2>&1 | tail -2"
  wait
  ;;
BD)  # session 10, one GPU: the Gluon attention kernel's GPU checks and its timings against the Triton kernel
     # (scripts/gluon_probe.py), then every kernel GPU test and the CUDA fixtures (call BB's job)
  job probe 0 0-3 240 python3 scripts/gluon_probe.py --json $RES/gluon_probe.json
  wait
  job verify 0 0-3 320 bash -c "python3 -m pytest -q -p no:cacheprovider tests/kernels 2>&1 | tail -2;
    python3 scripts/check_fixtures.py --device cuda --precision fp32 --backend triton --inplace \
      --json $RES/fixtures_cuda_inplace.json 2>&1 | tail -3;
    python3 scripts/check_fixtures.py --device cuda --precision fp32 --backend torch triton \
      --json $RES/fixtures_cuda.json 2>&1 | tail -5"
  wait
  ;;
BE)  # BD cut to what ~7 device minutes hold (device starts kept failing): the Gluon probe (checks, timings
     # against the Triton kernel), the network at N = 1,024 with Triton and Gluon attention in one
     # process, then the Gluon and attention GPU tests
  job probe 0 0-3 130 python3 scripts/gluon_probe.py --quick --json $RES/gluon_probe.json
  wait
  job net 0 0-3 200 bash -c "$N1024 --compare gluon --json $RES/bench_1024.json 2>&1 | tail -2"
  wait
  job verify 0 0-3 100 bash -c "python3 -m pytest -q -p no:cacheprovider tests/kernels/test_kernel_gluon_gpu.py \
      tests/kernels/test_kernel_gpu.py -k 'gluon or attention or norm_project' 2>&1 | tail -2"
  wait
  ;;
BF)  # session 12, one GPU: the fused attention-input kernel (norm_project row-major) under its GPU tests and the
     # CUDA fixtures in fp32 (in place, with the template memo), its micro-benchmark, the network at N = 1,024
     # with each of the session's two changes A/B'd (Runtime.keep_templates, Runtime.fused_qkv), a by-module
     # profile, then N = 2,048
  job verify 0 0-7 150 bash -c "python3 -m pytest -q -p no:cacheprovider tests/kernels/test_kernel_gpu.py -k norm_project 2>&1 | tail -2;
    python3 scripts/check_fixtures.py --device cuda --precision fp32 --backend triton \
      --inplace --keep-templates --json $RES/fixtures_cuda_inplace_keep.json 2>&1 | tail -3"
  wait
  job kbench 0 0-7 70 python3 scripts/kernel_bench.py --cases qkv --json $RES/kbench_qkv.json \
    --variants '[{"BLOCK_H": 128}, {"BLOCK_H": 32}, {"BLOCK_P": 256, "num_warps": 16}, {"BLOCK_P": 64, "num_warps": 4}]'
  wait
  job net 0 0-7 200 bash -c "$N1024 --compare templates --json $RES/bench_1024_templates.json 2>&1 | tail -2;
    $N1024 --compare qkv --json $RES/bench_1024_qkv.json 2>&1 | tail -2"
  wait
  job net2048 0 0-7 100 bash -c "python3 -m fastfold_cli bench --lengths 2048 --precision bf16 --backend triton \
    --no-breakdown --json $RES/bench_2048.json 2>&1 | tail -2"
  wait
  job prof 0 0-7 60 python3 scripts/profile_pass.py --length 1024 --precision bf16 --backend triton --by-module \
    --json $RES/profile_1024.json
  wait
  ;;
BG)  # session 12, second call (not run: no device time left): the fused attention inputs (opt-in, C <= 128,
     # 64-row tiles) A/B'd in the network at N = 1,024 (default off, then on), their GPU tests, then tiles for
     # the MSA's C = 256 (where BF's tiles lost to LayerNorm + addmm)
  job net 0 0-3 150 bash -c "$N1024 --compare qkv --json $RES/bench_1024_qkv.json 2>&1 | tail -2"
  wait
  job verify 0 0-3 150 bash -c "python3 -m pytest -q -p no:cacheprovider tests/kernels/test_kernel_gpu.py -k norm_project 2>&1 | tail -2;
    python3 scripts/check_fixtures.py --device cuda --precision fp32 --backend triton --inplace --keep-templates \
      --json $RES/fixtures_cuda_inplace_keep.json 2>&1 | tail -3"
  wait
  job kbench 0 0-3 70 python3 scripts/kernel_bench.py --cases qkv --json $RES/kbench_qkv.json \
    --variants '[{"BLOCK_P": 128, "num_warps": 16}, {"BLOCK_P": 128, "num_warps": 16, "BLOCK_H": 128}, {"BLOCK_P": 64, "num_warps": 8}, {"BLOCK_H": 128}]'
  wait
  # #6's N = 2,048 target with the current defaults (template stacks kept, inputs unfused)
  job net2048 0 0-3 200 python3 -m fastfold_cli bench --lengths 2048 --precision bf16 --backend triton \
    --no-breakdown --json $RES/bench_2048.json
  wait
  # where N = 2,048's pass goes (4.5 s of its 6.7 are accounted for by FLOPs and bytes)
  job prof2048 0 0-7 200 python3 scripts/profile_pass.py --length 2048 --precision bf16 --backend triton --by-module \
    --json $RES/profile_2048.json
  wait
  ;;
BH)  # session 13, second call: the CUDA fixtures at the session's model code (BG's check ran out of its
     # limit), triangle attention's 128-row query tiles beside the default, N = 4,096 (one cold and one
     # warm pass, as AY); BG timed N = 1,024 and 2,048 at the same model code
  job verify 0 0-7 240 bash -c "python3 scripts/check_fixtures.py --device cuda --precision fp32 --backend triton \
      --inplace --keep-templates --json $RES/fixtures_cuda_inplace_keep.json 2>&1 | tail -3"
  wait
  # 128-row query tiles: two warpgroups share each K/V tile, half the K/V bytes per score (compiled
  # offline: 10.2 SASS per score and no spills at two rows under the 168 cap: one 8-warp program per SM)
  job kbtri 0 0-7 130 bash -c "python3 scripts/kernel_bench.py --cases tri1024,tri2048 --no-flex --no-baselines \
    --json $RES/kbench_tri.json --variants '[{\"BLOCK_M\": 128, \"num_warps\": 8}, {\"BLOCK_M\": 128, \"num_warps\": 8, \"rows\": 1, \"maxnreg\": 128}, {\"BLOCK_M\": 128, \"num_warps\": 8, \"rows\": 1, \"maxnreg\": 128, \"num_stages\": 2}, {\"BLOCK_M\": 128, \"num_warps\": 8, \"maxnreg\": 128}]' 2>&1 | grep -i 'tri' | tail -24"
  wait
  job net4096 0 0-7 200 python3 -m fastfold_cli bench --lengths 4096 --precision bf16 --backend triton --recycles 1 \
    --no-warmup --no-breakdown --json $RES/bench_4096.json
  wait
  ;;
BJ)  # session 13, third call: the session's two glue changes against the code they replaced, one process
  job glue 0 0-7 150 python3 scripts/glue_ab.py --lengths 1024 2048 --json $RES/glue_ab.json
  wait
  ;;
BK)  # next session's first call (one GPU): the gated projection's GPU tests at session 13's defaults
     # (two persistent programs per SM) and with the input LayerNorm inside the kernel (fuse_norm, off), its
     # micro-benchmark (three tilings of fuse_norm against the LayerNorm kernel then the kernel), the outer
     # product mean's single LayerNorm against one per projection (scripts/glue_ab.py --opm), then
     # N = 1,024 and 2,048 (BG's figures are the baseline from another call on the same card type)
  job verify 0 0-7 150 bash -c "python3 -m pytest -q -p no:cacheprovider tests/kernels/test_kernel_gpu.py -k gated 2>&1 | tail -2"
  wait
  job kb 0 0-7 150 bash -c "python3 scripts/kernel_bench.py --cases gated --no-flex --json $RES/kbench_gated.json \
    --variants '[{\"persistent\": 396}]' 2>&1 | grep '^gated' | tail -8;
    python3 scripts/glue_ab.py --lengths 1024 2048 --opm --json $RES/glue_ab.json 2>&1 | tail -8"
  wait
  job net 0 0-7 200 bash -c "$N1024 --json $RES/bench_1024.json 2>&1 | tail -2;
    python3 -m fastfold_cli bench --lengths 2048 --precision bf16 --backend triton --no-breakdown --json $RES/bench_2048.json 2>&1 | tail -2"
  wait
  ;;
BL)  # session 14, second call: the CUDA fixtures at session 13's model code (the recycled pair's
     # LayerNorm now on the Triton kernel), then whether triangle attention's key loop is bound by its
     # operand stream or its latency (scripts/attention_traffic_probe.py: same instructions, less data)
  job verify 0 0-7 260 bash -c "python3 scripts/check_fixtures.py --device cuda --precision fp32 --backend triton \
      --inplace --keep-templates --json $RES/fixtures_cuda_inplace_keep.json 2>&1 | tail -3"
  wait
  traffic_job
  wait
  ;;
BM)  # session 14: BK and BL in one call, what matters most first (starts kept failing): the gated
     # projection's GPU tests and the CUDA fixtures side by side (correctness only: both share the GPU),
     # then, alone on the GPU, the traffic probe (the gated benchmark and N = 1,024 left for later: device
     # time was short)
  job verify 0 0-7 120 bash -c "python3 -m pytest -q -p no:cacheprovider tests/kernels/test_kernel_gpu.py -k gated 2>&1 | tail -2"
  fixture_job 130
  wait
  traffic_job
  wait
  ;;
BN)  # after BM: triangle and extra-MSA attention with the two rows' softmax steps paired (config
     # paired, compiled offline: the same instructions, interleaved) against the default, its GPU tests,
     # the gated projection's benchmark (fuse_norm tilings), then N = 1,024. Also four rows a program at
     # two stages (session 15, offline: 255 registers, 88 KB shared, two programs an SM, 8.91 instructions
     # a score, 2.5 bytes of operand stream a score against 3), paired or not
  job verify 0 0-7 150 bash -c "python3 -m pytest -q -p no:cacheprovider tests/kernels/test_kernel_gpu.py -k paired 2>&1 | tail -2"
  wait
  kbatt_job
  wait
  job kb 0 0-7 80 bash -c "python3 scripts/kernel_bench.py --cases gated --no-flex --json $RES/kbench_gated.json \
    --variants '[{\"persistent\": 396}]' 2>&1 | grep '^gated' | tail -8"
  wait
  job net 0 0-7 100 bash -c "$N1024 --json $RES/bench_1024.json 2>&1 | tail -2"
  wait
  ;;
BP)  # session 15 (starts failing again): BM and BN's attention parts in one call, most telling first:
     # the traffic probe (stream- or latency-bound?), then paired and four-row programs against the
     # default at the network's call sites, then their GPU tests and the gated ones, then one fixture
  traffic_job
  wait
  kbatt_job
  wait
  job verify 0 0-7 150 bash -c "python3 -m pytest -q -p no:cacheprovider tests/kernels/test_kernel_gpu.py -k 'paired or gated' 2>&1 | tail -2;
    python3 -m pytest -q -p no:cacheprovider tests/kernels/test_kernel_gluon_gpu.py 2>&1 | tail -2"
  fixture_job 150
  wait
  ;;
BQ)  # BP's first two jobs for a short budget: each job's log and JSON go to $OUT as soon as it ends, so
     # a call cut off by the device budget still returns what finished; between them (session 16)
     # Nsight Compute's stall reasons for the default and the four-row triangle attention, and the
     # Gluon kernel's two rows taking turns (gluon_probe.py --quick: checks, then N = 1,024 timings)
  traffic_job
  wait; flush traffic $RES/traffic.json
  ncu_job ncu_default '{}'
  wait; flush ncu_default
  job glu 0 0-7 150 python3 scripts/gluon_probe.py --quick --json "$RES/gluon.json"
  wait; flush glu
  kbatt_job
  wait; flush kbatt $RES/kbench_paired.json
  ncu_job ncu_rows4 '{"rows": 4, "num_stages": 2}'
  wait; flush ncu_rows4
  ;;
BR)  # after BP/BQ: the winners in the whole network, each against the default in the same process
     # (fastfold bench --compare attention): paired everywhere, then four rows at head dim 32
  net_ab net_paired '{"paired": true}'
  wait; flush net_paired $RES/net_paired.json
  net_ab net_rows4 '{"head_dims": [32], "rows": 4, "num_stages": 2}'
  wait; flush net_rows4 $RES/net_rows4.json
  ;;
BS)  # session 17 (one H100): the grid grouping swept at the network's four attention sites (group_ctas
     # 64-1,024; the default now 256 at head dim 32, 1,024 at 8), N = 2,048 end to end against the old
     # grouping (same process), then the Gluon GPU tests with two rows now opt-in (each variant of the
     # sweep is checked against the reference first)
  GC='[{"group_ctas": 64}, {"group_ctas": 128}, {"group_ctas": 256}, {"group_ctas": 512}, {"group_ctas": 1024}]'
  job ksweep 0 0-7 160 bash -c "python3 scripts/kernel_bench.py --cases tri1024,tri2048,msa_row,extra_msa --no-flex \
    --no-baselines --json $RES/kbench_group.json --variants '$GC' 2>&1 | grep -i 'network call' | tail -48"
  wait; flush ksweep $RES/kbench_group.json
  job net2048 0 0-7 200 bash -c "python3 -m fastfold_cli bench --lengths 2048 --precision bf16 --backend triton \
    --no-breakdown --compare attention --attention-options '{\"head_dims\": [32], \"group_ctas\": 1024}' \
    --json $RES/net2048_group.json 2>&1 | tail -4"
  wait; flush net2048 $RES/net2048_group.json
  job verify 0 0-7 120 bash -c "python3 -m pytest -q -p no:cacheprovider tests/kernels/test_kernel_gluon_gpu.py 2>&1 | tail -2"
  wait; flush verify
  ;;
BT)  # after BS: are the grouping's differences above the run-to-run spread (the same configurations
     # again, alternating), N = 1,024 against the old grouping again, then N = 4,096 at the new default
  job krep 0 0-7 100 bash -c "python3 scripts/kernel_bench.py --cases tri1024,msa_row --no-flex --no-baselines \
    --json $RES/kbench_repeat.json --variants '[{\"group_ctas\": 128}, {\"group_ctas\": 256}, {\"group_ctas\": 128}, {\"group_ctas\": 256}]' 2>&1 | grep -i 'network call' | tail -24"
  wait; flush krep $RES/kbench_repeat.json
  net_ab net1024 '{"head_dims": [32], "group_ctas": 1024}'
  wait; flush net1024 $RES/net1024.json
  job net4096 0 0-7 260 python3 -m fastfold_cli bench --lengths 4096 --precision bf16 --backend triton \
    --no-breakdown --json $RES/bench_4096.json
  wait; flush net4096 $RES/bench_4096.json
  ;;
BU)  # session 17's last call (not run: no device time left): is the run-to-run spread of identical
     # attention launches placement or the card (scripts/attention_spread_probe.py: same buffers,
     # fresh buffers, offsets in one buffer); then the grouping again with one shared buffer and four
     # interleaved rounds (kernel_bench.py --rounds)
  job spread 0 0-7 150 bash -c "python3 scripts/attention_spread_probe.py --length 1024 --repeats 6 --json $RES/spread_1024.json;
    python3 scripts/attention_spread_probe.py --length 2048 --repeats 5 --json $RES/spread_2048.json"
  wait; flush spread $RES/spread_1024.json $RES/spread_2048.json
  job krounds 0 0-7 150 bash -c "python3 scripts/kernel_bench.py --cases tri1024,tri2048 --no-flex --no-baselines --rounds 4 \
    --json $RES/kbench_rounds.json --variants '[{\"group_ctas\": 128}, {\"group_ctas\": 1024}]' 2>&1 | grep -i 'network call' | tail -12"
  wait; flush krounds $RES/kbench_rounds.json
  ;;
BV)  # session 18 (one H100): BU's spread probe and interleaved rounds, with the SM clock, power and
     # throttle reasons logged every 200 ms; then 32-key blocks (fewer registers: two rows fit 128, so
     # four programs an SM; or four rows sharing each bias tile at 168) and one row capped at 128, in
     # three interleaved rounds; the whole network at N = 1,024 with the best of them if it beats the
     # default's mask-skipped triangle call at N = 2,048 by more than 3%
  smi_log
  job spread 0 0-7 110 bash -c "python3 scripts/attention_spread_probe.py --length 1024 --repeats 6 --json $RES/spread_1024.json;
    python3 scripts/attention_spread_probe.py --length 2048 --repeats 4 --json $RES/spread_2048.json"
  wait; flush spread $RES/spread_1024.json $RES/spread_2048.json
  V32='[{"BLOCK_N": 32, "rows": 2, "maxnreg": 128}, {"BLOCK_N": 32, "rows": 2, "maxnreg": 128, "num_stages": 4},
    {"BLOCK_N": 32, "rows": 4}, {"rows": 1, "maxnreg": 128}, {"BLOCK_N": 32, "rows": 2, "maxnreg": 128, "paired": true},
    {"group_ctas": 128}]'
  job krounds 0 0-7 260 bash -c "python3 scripts/kernel_bench.py --cases tri1024,tri2048,msa_row --no-flex --no-baselines \
    --rounds 3 --json $RES/kbench_rounds.json --variants '$V32' 2>&1 | grep -i 'skipped\|network call' | tail -40"
  wait; flush krounds $RES/kbench_rounds.json
  best=$(python3 scripts/pick_variant.py "$RES/kbench_rounds.json" tri2048 1.03)
  echo "best variant: ${best:-none}" | tee -a "$RES/krounds.log"
  if [ -n "$best" ]; then
    net_ab net_best "{\"head_dims\": [32], ${best:1}"
    wait; flush net_best $RES/net_best.json
  fi
  smi_stop
  ;;
BW)  # session 18: softmax against precomputed logit bounds (config bound), GPU tests then timings at
     # the network's four attention sites in three interleaved rounds, beside 32-key blocks
  smi_log
  job verify 0 0-7 170 bash -c "python3 -m pytest -q -p no:cacheprovider tests/kernels/test_kernel_gpu.py -k 'bound or call_sites' 2>&1 | tail -3"
  wait; flush verify
  VB='[{"bound": true}, {"bound": true, "paired": true}, {"BLOCK_N": 32, "rows": 2, "maxnreg": 128},
    {"bound": true, "BLOCK_N": 32, "rows": 2, "maxnreg": 128}]'
  job kbound 0 0-7 280 bash -c "python3 scripts/kernel_bench.py --cases tri1024,tri2048,msa_row,extra_msa --no-flex --no-baselines \
    --rounds 3 --json $RES/kbench_bound.json --variants '$VB' 2>&1 | grep -i 'skipped\|network call' | tail -60"
  wait; flush kbound $RES/kbench_bound.json
  smi_stop
  ;;
BX)  # after BW: the whole network at N = 1,024 and 2,048 with bound (every head dim) against the default
     # in one process, how many tiles fell back (scripts/bound_probe.py), then the reference fixtures on
     # CUDA in fp32 and bf16 with bound on
  smi_log
  job net1024 0 0-7 170 bash -c "$N1024 --compare attention --attention-options '{\"bound\": true}' --json $RES/net1024_bound.json 2>&1 | tail -3"
  wait; flush net1024 $RES/net1024_bound.json
  job bprobe 0 0-7 90 python3 scripts/bound_probe.py --length 1024 --json $RES/bound_probe_1024.json
  wait; flush bprobe $RES/bound_probe_1024.json
  job net2048 0 0-7 260 bash -c "python3 -m fastfold_cli bench --lengths 2048 --precision bf16 --backend triton --no-breakdown \
    --compare attention --attention-options '{\"bound\": true}' --json $RES/net2048_bound.json 2>&1 | tail -3"
  wait; flush net2048 $RES/net2048_bound.json
  job fixtures 0 0-7 150 bash -c "python3 scripts/check_fixtures.py --device cuda --precision fp32 bf16 --backend triton \
    --attention-options '{\"bound\": true}' --json $RES/fixtures_bound.json 2>&1 | tail -8"
  wait; flush fixtures $RES/fixtures_bound.json
  smi_stop
  ;;
BY)  # session 19: the GPU tests of bound and exp_fma; the CUDA fixtures in fp32 (the kernel commits after
     # 785662c); the attention sites with bound at 32-key blocks (4 stages) and half the exponentials on
     # the FMA pipe (exp_fma), two interleaved rounds; clocks logged
  smi_log
  job verify 0 0-7 200 bash -c "python3 -m pytest -q -p no:cacheprovider tests/kernels/test_kernel_gpu.py -k 'bound or exp_fma' 2>&1 | tail -3"
  wait; flush verify
  job fixtures 0 0-7 150 bash -c "python3 scripts/check_fixtures.py --device cuda --precision fp32 --backend triton \
    --json $RES/fixtures_cuda.json 2>&1 | tail -4"
  wait; flush fixtures $RES/fixtures_cuda.json
  VF='[{"exp_fma": true}, {"bound": true, "exp_fma": true}, {"bound": true, "BLOCK_N": 32, "rows": 2, "maxnreg": 128, "num_stages": 4},
    {"bound": true, "BLOCK_N": 32, "rows": 2, "maxnreg": 128, "num_stages": 4, "exp_fma": true},
    {"bound": true, "BLOCK_M": 128, "BLOCK_N": 32, "rows": 2, "num_warps": 8, "maxnreg": 128, "num_stages": 4}]'
  job kfma 0 0-7 250 bash -c "python3 scripts/kernel_bench.py --cases tri2048,extra_msa --no-flex --no-baselines \
    --rounds 2 --json $RES/kbench_fma.json --variants '$VF' 2>&1 | grep -i 'skipped' | grep -v round | tail -20"
  wait; flush kfma $RES/kbench_fma.json
  smi_stop
  ;;
BZ)  # after BY: the whole network at N = 2,048 with the 4-stage bound form (options B32, or $NET_OPTS),
     # then Nsight Compute on one N = 2,048 triangle launch (the default, bound at 64-key tiles, slower
     # with fewer instructions, and bound at 32-key blocks)
  smi_log
  B32=${NET_OPTS:-'{"head_dims": [32], "bound": true, "BLOCK_N": 32, "rows": 2, "maxnreg": 128, "num_stages": 4}'}
  net_cmp net2048 2048 180 "$B32" net2048_b32
  smi_stop
  NCU_LIMIT=60 ncu_job ncu_default '{}'
  wait; flush ncu_default
  NCU_LIMIT=60 ncu_job ncu_bound '{"bound": true}' 2
  wait; flush ncu_bound
  NCU_LIMIT=60 ncu_job ncu_bound32 '{"bound": true, "BLOCK_N": 32, "rows": 2, "maxnreg": 128}' 2
  wait; flush ncu_bound32
  ;;
CA)  # after BZ: N = 4,096 with the 4-stage bound form against the default, one process
  smi_log
  B32=${NET_OPTS:-'{"head_dims": [32], "bound": true, "BLOCK_N": 32, "rows": 2, "maxnreg": 128, "num_stages": 4}'}
  net_cmp net4096 4096 540 "$B32" net4096_b32
  smi_stop
  ;;
CB)  # next (written in session 19): the GPU tests of the new bf16 default (`bound` in 32-key blocks at
     # head dim 32), the call sites and bound, then the CUDA reference fixtures in fp32 and bf16
  smi_log
  job verify 0 0-7 300 bash -c "python3 -m pytest -q -p no:cacheprovider tests/kernels/test_kernel_gpu.py \
    -k 'default_takes or call_sites or bound or exp_fma' 2>&1 | tail -3"
  wait; flush verify
  job fixtures 0 0-7 240 bash -c "python3 scripts/check_fixtures.py --device cuda --precision fp32 bf16 --backend triton \
    --json $RES/fixtures_cuda.json 2>&1 | tail -6"
  wait; flush fixtures $RES/fixtures_cuda.json
  smi_stop
  ;;
CC)  # after CB: the bf16 default's key loop with its softmax denominator on the tensor cores (sum_mma:
     # 8.06 against 9.38 instructions a score offline, no shuffles), one bound for both rows (shared_bound:
     # 8.88; both 7.56), both with the two rows' logits first (paired), sum_mma with more resident warps
     # (one row at 80 registers: six programs an SM; Nsight Compute, session 19: 3-4 warps a scheduler,
     # 60% of issue slots), both in 64-key blocks at 168 registers (6.30 a score, three programs an SM),
     # against the new default and the old online default, two interleaved rounds;
     # then the network at N = 2,048 with sum_mma and shared_bound against the default
  smi_log
  OLD='{"bound": false, "BLOCK_N": 64, "num_stages": 3, "maxnreg": 168}'
  VC="[$OLD, {\"sum_mma\": true}, {\"shared_bound\": true}, {\"sum_mma\": true, \"shared_bound\": true},
    {\"sum_mma\": true, \"shared_bound\": true, \"paired\": true}, {\"sum_mma\": true, \"rows\": 1, \"maxnreg\": 80},
    {\"sum_mma\": true, \"shared_bound\": true, \"BLOCK_N\": 64, \"maxnreg\": 168, \"num_stages\": 3}]"
  job kocc 0 0-7 300 bash -c "python3 scripts/kernel_bench.py --cases tri2048,msa_row --no-flex --no-baselines \
    --rounds 2 --json $RES/kbench_occ.json --variants '$VC' 2>&1 | grep -i 'skipped' | grep -v round | tail -24"
  wait; flush kocc $RES/kbench_occ.json
  net_cmp net2048 2048 180 "$OPTS" net2048_opts
  smi_stop
  ;;
CD)  # after CC: the extra-MSA site (head dim 8) with bound and one bound for both rows (offline 6.30
     # instructions a score at 167 registers, three programs an SM, against 7.83 at 252); then, if CC
     # gains, the network at N = $N (default 4,096) with $NET_OPTS against the default, one process
  smi_log
  VE='[{"bound": true, "BLOCK_N": 32, "shared_bound": true, "maxnreg": 168}, {"bound": true, "shared_bound": true},
    {"bound": true, "BLOCK_N": 32}]'
  job kextra 0 0-7 120 bash -c "python3 scripts/kernel_bench.py --cases extra_msa --no-flex --no-baselines \
    --rounds 2 --json $RES/kbench_extra.json --variants '$VE' 2>&1 | grep -i 'skipped' | grep -v round | tail -8"
  wait; flush kextra $RES/kbench_extra.json
  net_cmp net "${N:-4096}" 420 "$OPTS" net_opts
  smi_stop
  ;;
CE)  # session 20 (device starts failing, little budget): CB's GPU tests of the bf16 default and of
     # sum_mma / shared_bound, then CC's triangle-site timings (fewer variants, one site), then the
     # CUDA reference fixtures in bf16 (the default's path; fp32 does not take it) in what is left
  smi_log
  job verify 0 0-7 200 bash -c "python3 -m pytest -q -p no:cacheprovider tests/kernels/test_kernel_gpu.py \
    -k 'default_takes or sum_mma or shared_bound' 2>&1 | tail -3"
  wait; flush verify
  OLD='{"bound": false, "BLOCK_N": 64, "num_stages": 3, "maxnreg": 168}'
  VC="[$OLD, {\"sum_mma\": true}, {\"sum_mma\": true, \"shared_bound\": true}, {\"sum_mma\": true, \"rows\": 1, \"maxnreg\": 80},
    {\"sum_mma\": true, \"shared_bound\": true, \"BLOCK_N\": 64, \"maxnreg\": 168, \"num_stages\": 3}]"
  job kocc 0 0-7 220 bash -c "python3 scripts/kernel_bench.py --cases tri2048 --no-flex --no-baselines \
    --rounds 2 --json $RES/kbench_occ.json --variants '$VC' 2>&1 | grep -i 'skipped' | grep -v round | tail -12"
  wait; flush kocc $RES/kbench_occ.json
  left=$(( ${CE_END:-570} - ($(date +%s) - START) ))
  [ "$left" -gt 60 ] && { job fixtures 0 0-7 "$left" bash -c "python3 scripts/check_fixtures.py --device cuda --precision bf16 \
    --backend triton --json $RES/fixtures_bf16.json 2>&1 | tail -4"; wait; flush fixtures $RES/fixtures_bf16.json; }
  smi_stop
  ;;
CF)  # next (written in session 20): the new bf16 default (bound + sum_mma + shared_bound, 4 programs an SM)
     # against session 19's (S19), with the two rows' logits first (paired: 7.56 a score offline, no
     # spills), 3 stages, and 104 registers at 3 stages (five programs an SM, 20 warps; offline 7.94 a
     # score with a few spills), three interleaved rounds; then the network at N = 4,096 against S19
     # (session 21: the GPU tests of the default first; N = 4,096 moved to CH, both would pass 600 s)
  smi_log
  job verify 0 0-7 150 bash -c "python3 -m pytest -q -p no:cacheprovider tests/kernels/test_kernel_gpu.py \
    -k 'default_takes or sum_mma or shared_bound' 2>&1 | tail -3"
  wait; flush verify
  S19='{"sum_mma": false, "shared_bound": false}'
  VF="[$S19, {\"paired\": true}, {\"num_stages\": 3}, {\"maxnreg\": 104, \"num_stages\": 3}]"
  job kfive 0 0-7 200 bash -c "python3 scripts/kernel_bench.py --cases tri2048,msa_row --no-flex --no-baselines \
    --rounds 3 --json $RES/kbench_five.json --variants '$VF' 2>&1 | grep -i 'skipped' | grep -v round | tail -12"
  wait; flush kfive $RES/kbench_five.json
  smi_stop
  ;;
CH)  # the network at N = 4,096: the new default against session 19's (S19 measured 134.4 s alone)
  smi_log
  net_cmp net4096 4096 540 '{"sum_mma": false, "shared_bound": false}' net4096_s19
  smi_stop
  ;;
CG)  # after CF: Nsight Compute on one N = 2,048 triangle launch of the new default (is the loop now
     # MUFU-bound? offline 242 issue cycles a warp a block against 256 MUFU cycles) and of five
     # programs an SM (104 registers, 3 stages)
  NCU_LIMIT=90 ncu_job ncu_default '{}' 2
  wait; flush ncu_default
  NCU_LIMIT=90 ncu_job ncu_five '{"maxnreg": 104, "num_stages": 3}' 2
  wait; flush ncu_five
  ;;
CJ)  # session 21 after CF (its GPU tests timed out at 150 s compiling): the tests again, then the
     # network at N = 2,048 against paired rows (CF: 221.7 against 198.8 TFLOP/s for the default)
  smi_log
  job verify 0 0-7 300 bash -c "python3 -m pytest -q -p no:cacheprovider tests/kernels/test_kernel_gpu.py \
    -k 'default_takes or sum_mma or shared_bound or paired' 2>&1 | tail -3"
  wait; flush verify
  net_cmp net2048 2048 260 '{"paired": true}' net2048_paired
  smi_stop
  ;;
CK)  # next (written in session 21): the GPU tests of paired rows (bound form, rows 2 and 4), then
     # four rows a program in the bound default (offline 5.81 instructions a score at 234 registers,
     # no spills, two programs an SM; 6.05 at 168 with spills, three) and 128-row tiles (won in the
     # kernel bench, lost in the network; the bench now times the ending node's call too, its output
     # in the pair's layout); CM profiles one
     # N = 2,048 pass by module with the default and with 128-row tiles at the triangle attentions
     # alone: where does the network lose what the kernel bench gains?
  smi_log
  job verify 0 0-7 240 bash -c "python3 -m pytest -q -p no:cacheprovider tests/kernels/test_kernel_gpu.py -k paired 2>&1 | tail -3"
  wait; flush verify
  VK='[{"rows": 4, "maxnreg": 0, "num_stages": 2}, {"rows": 4, "maxnreg": 168, "num_stages": 2},
    {"rows": 4, "maxnreg": 0, "num_stages": 3}, {"BLOCK_M": 128, "num_warps": 8, "num_stages": 3}]'
  job krows4 0 0-7 200 bash -c "python3 scripts/kernel_bench.py --cases tri2048,msa_row --no-flex --no-baselines \
    --rounds 3 --json $RES/kbench_rows4.json --variants '$VK' 2>&1 | grep -i 'skipped' | grep -v round | tail -12"
  wait; flush krows4 $RES/kbench_rows4.json
  smi_stop
  ;;
CM)  # CK's profiles (both would pass 600 s in one call with CK's tests and timings)
  smi_log
  job prof_default 0 0-7 150 python3 scripts/profile_pass.py --length 2048 --by-module --top 25 --json $RES/prof_default.json
  wait; flush prof_default $RES/prof_default.json
  job prof_bm128 0 0-7 150 python3 scripts/profile_pass.py --length 2048 --by-module --top 25 --json $RES/prof_bm128.json \
    --attention-options '{"sites": ["tri_att"], "BLOCK_M": 128, "num_warps": 8, "num_stages": 3}'
  wait; flush prof_bm128 $RES/prof_bm128.json
  smi_stop
  ;;
CL)  # after CK: the network at N = 2,048 with the best four-row form of CK at the head-dim-32 sites
     # (ROWS4, default: the first of CK's), then at the triangle attentions alone
  R4=${ROWS4:-'"rows": 4, "maxnreg": 0, "num_stages": 2'}
  smi_log
  net_cmp net_rows4 2048 260 "{\"head_dims\": [32], $R4}" net2048_rows4
  net_cmp net_rows4_tri 2048 260 "{\"sites\": [\"tri_att\"], $R4}" net2048_rows4_tri
  smi_stop
  ;;
CN)  # session 22: the tri-mul output stage's gate-first order (the gate rounded to the storage dtype
     # before the product's projection; offline it takes the same registers, 251 against 255) and
     # its tiles, the gated projection's in-kernel LayerNorm (fuse_norm, never timed: session 13's BK),
     # after their GPU tests
  job verify 0 0-7 200 bash -c "python3 -m pytest -q -p no:cacheprovider tests/kernels/test_kernel_gpu.py -k 'tri_mul_output or gated' 2>&1 | tail -3"
  wait; flush verify
  VT='[{"gate_first": true}, {"num_warps": 8}, {"gate_first": true, "num_warps": 8}, {"BLOCK_P": 32},
    {"gate_first": true, "BLOCK_P": 32}, {"num_stages": 2}]'
  job ktmo 0 0-7 120 bash -c "python3 scripts/kernel_bench.py --cases trimul_out,gated --no-flex --json $RES/kbench_tmo.json \
    --variants '$VT' 2>&1 | grep -E 'trimul|gated' | tail -24"
  wait; flush ktmo $RES/kbench_tmo.json
  ;;
CP)  # session 22's last call: gate_first as the tri-mul output stage's default (CN: 0.304 against 0.319
     # ms) against the old order and early_p, twice; the gated projection at 8 warps (CN: 0.069 against
     # 0.072), also with its LayerNorm inside; the transition's tile sweep on an H100 (session 7 swept an
     # H200); the CUDA fixtures in fp32; then the pair attentions' fused input LayerNorm at N = 2,048
  job verify 0 0-7 150 bash -c "python3 -m pytest -q -p no:cacheprovider tests/kernels/test_kernel_gpu.py -k 'tri_mul_output or gated' 2>&1 | tail -3"
  wait; flush verify
  VT='[{"gate_first": false}, {"early_p": true}, {"num_warps": 8}]'
  job ktmo 0 0-7 100 bash -c "for r in 1 2; do python3 scripts/kernel_bench.py --cases trimul_out,gated --no-flex \
    --json $RES/kbench_tmo_\$r.json --variants '$VT' 2>&1 | grep -E 'trimul|gated' | grep -v '^trimul\|^gated'; done"
  wait; flush ktmo $RES/kbench_tmo_1.json $RES/kbench_tmo_2.json
  job fixtures 0 0-7 150 bash -c "python3 scripts/check_fixtures.py --device cuda --precision fp32 --backend triton \
      --json $RES/fixtures_cuda.json 2>&1 | tail -4"
  wait; flush fixtures $RES/fixtures_cuda.json
  job ktrans 0 0-7 60 bash -c "python3 scripts/kernel_bench.py --cases transition --sweep --no-flex --json $RES/kbench_trans.json 2>&1 | grep transition | grep -v '^transition'"
  wait; flush ktrans $RES/kbench_trans.json
  job qkv 0 0-7 200 bash -c "python3 -m fastfold_cli bench --lengths 2048 --precision bf16 --backend triton --no-breakdown \
    --compare qkv --json $RES/net2048_qkv.json 2>&1 | tail -2 | cut -c1-1500"
  wait; flush qkv $RES/net2048_qkv.json
  ;;
CQ)  # next (written in session 22): the head-dim-32 default's form (bound, sum_mma, shared_bound, paired,
     # 32-key blocks, 128 registers) at head dim 16, the template pair stack's triangle attentions
     # (offline 7.25 instructions a score against 9.59 for the online default): the kernel bench's
     # tmpl2048 case (tri2048 beside it, where the variant is the default: a check of the spread),
     # then the network at N = 2,048 with it scoped to head dim 16. Session 23 added two kernel-bench
     # variants of it at head dim 16 (offline, no spills): four rows at 168 registers (5.81 a score,
     # three programs an SM) and 64-key blocks at 168 (5.86)
  B16='"bound": true, "sum_mma": true, "shared_bound": true, "paired": true, "BLOCK_N": 32, "num_stages": 4, "maxnreg": 128'
  smi_log
  job ktmpl 0 0-7 200 bash -c "python3 scripts/kernel_bench.py --cases tmpl2048,tri2048 --no-flex --no-baselines \
    --rounds 3 --json $RES/kbench_tmpl.json --variants '[{$B16}, {$B16, \"rows\": 4, \"maxnreg\": 168},
    {$B16, \"BLOCK_N\": 64, \"maxnreg\": 168}]' 2>&1 | grep -i 'skipped' | grep -v round | tail -16"
  wait; flush ktmpl $RES/kbench_tmpl.json
  net_cmp net_d16 2048 300 "{\"head_dims\": [16], $B16}" net2048_d16
  smi_stop
  ;;
CR)  # the GPU tests still owed: paired rows in the bound form (rows 2 and 4, unmasked; CK's ran out of
     # 240 s compiling), the gated projection at its 8-warp default, the tri-mul output (default, split)
     # (session 23: through scripts/gpu_tests.sh, a pytest-xdist worker a core when the call carries
     # .devtest: `bash scripts/gpu_tests.sh --fetch` first, then carry [".devtest"])
  job verify 0 0-7 560 bash -c "bash scripts/gpu_tests.sh -k 'paired or gated or tri_mul_output' 2>&1 | tail -3"
  wait; flush verify
  ;;
CS)  # next (written in session 23): the tri-mul output stage in channel slices (`split`: both LNs
     # first, then C_z / split output channels at a time; offline 251 registers -> 236 at split 2,
     # 159 at 4, 128 at 8, so 2 -> 3 -> 4 programs an SM; 127 at split 8 with 128 positions and 8
     # warps, half the weight reads a position), three runs beside the default, after its GPU tests
  job verify 0 0-7 200 bash -c "bash scripts/gpu_tests.sh -k 'tri_mul_output' 2>&1 | tail -3"
  wait; flush verify
  VT='[{"split": 2}, {"split": 4}, {"split": 8}, {"split": 8, "BLOCK_P": 128, "num_warps": 8},
    {"split": 4, "BLOCK_P": 128, "num_warps": 8}]'
  job ktmo 0 0-7 150 bash -c "for r in 1 2 3; do python3 scripts/kernel_bench.py --cases trimul_out --no-flex \
    --json $RES/kbench_tmo_\$r.json --variants '$VT' 2>&1 | grep -E 'trimul' | grep -v '^trimul'; done"
  wait; flush ktmo $RES/kbench_tmo_1.json $RES/kbench_tmo_2.json $RES/kbench_tmo_3.json
  ;;
CT)  # next (written in session 23): MSA column attention (no pair bias, 512 sequences, 2,048 columns),
     # never tuned: its default is the triangle site's (32-key blocks). Offline at this site (bf16, no
     # mask, `attention_sass.py msa_col --no-mask`): the default 6.81 instructions a score (88
     # registers); 64-key blocks 5.16 (112 at a 128 cap) or 5.31 (99 uncapped); 128-key blocks at 168
     # 4.27 (162); two rows a program (bias-free calls take `rows` from a config since session 23)
     # 5.53 (128), with 64-key blocks at 168 4.42; 128-row tiles, 8 warps, 64-key blocks 5.06. The
     # kernel bench's msa_col case (SDPA's flash, cuDNN and mem-efficient kernels beside it), three
     # rounds; then, if a variant beats the default by 3%, the network at N = 1,024 with it scoped to
     # the column attention (48 calls a pass)
  VC='[{"BLOCK_N": 64, "maxnreg": 128}, {"BLOCK_N": 64, "maxnreg": 0}, {"BLOCK_N": 128, "maxnreg": 168},
    {"rows": 2, "maxnreg": 128}, {"rows": 2, "BLOCK_N": 64, "maxnreg": 168},
    {"BLOCK_M": 128, "num_warps": 8, "BLOCK_N": 64, "maxnreg": 128}]'
  job kcol 0 0-7 250 bash -c "python3 scripts/kernel_bench.py --cases msa_col --no-flex --rounds 3 \
    --json $RES/kbench_col.json --variants '$VC' 2>&1 | grep msa_col | grep -v round | tail -24"
  wait; flush kcol $RES/kbench_col.json
  best=$(python3 scripts/pick_variant.py "$RES/kbench_col.json" msa_col 1.03)
  echo "best column-attention variant: ${best:-none}"
  [ -n "$best" ] && net_cmp net_col 1024 250 "{\"sites\": [\"msa_col_att\"], ${best:1}" net1024_col
  ;;
*) echo "usage: gpu_4way.sh A|B|C|D|E|F|G|H|J|K|L|M|N|P|Q|R|S|T|U|X|Y|Z|AA|AB|AD|AE|AF|AG|AH|AJ|AK|AL|AM|AN|AO|AP|AQ|AR|AS|AT|AU|AV|AW|AX|AY|AZ|BA|BB|BC|BD|BE|BF|BG|BH|BJ|BK|BL|BM|BN|BP|BQ|BR|BS|BT|BU|BV|BW|BX|BY|BZ|CA|CB|CC|CD|CE|CF|CG|CH|CJ|CK|CL|CM|CN|CP|CQ|CR|CS|CT" >&2; exit 2 ;;
esac
for f in "$RES"/*.log; do echo "== $f"; grep -v "^\s*$" "$f" | grep -v "^  entry" | tail -14 | cut -c1-400; done
for f in "$RES"/*.json "$RES"/*/*.json; do [ -f "$f" ] && { echo "== $f"; grep -o "$G" "$f" | tr '\n' ' ' | cut -c1-900; echo; }; done
tar -czf "$REAL_OUT/$call.tgz" -C /tmp "res_$call"
ls -la "$REAL_OUT"
