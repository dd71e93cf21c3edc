#!/usr/bin/env bash
# The kernel GPU tests on a device machine, spread over its cores. Triton compiles every kernel
# variant a test asks for on the CPU: minutes on a fresh machine (session 22's GPU tests of paired
# rows ran out of 240 s twice, compiling), so pytest-xdist runs a worker per core (at most 4; each
# holds a CUDA context and its test's tensors). The device's Python has pytest but no xdist: its two
# pure-Python wheels travel in .devtest/ (git-ignored): fill it here with
#   bash scripts/gpu_tests.sh --fetch
# and pass carry [".devtest"] to the device call. Without them the tests run in one process.
#   bash scripts/gpu_tests.sh -k 'paired or gated'        (default file: tests/kernels/test_kernel_gpu.py)
#   bash scripts/gpu_tests.sh tests/kernels -k bound       (any pytest arguments)
set -uo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--fetch" ]; then
  python3 -m pip download -q --no-deps -d .devtest pytest-xdist execnet && ls .devtest
  exit $?
fi
# the cores this process may use (taskset's), not nproc's answer, which OMP_NUM_THREADS overrides
workers=$(python3 -c "import os; print(min(4, len(os.sched_getaffinity(0))))")
par=()
if ls .devtest/*.whl > /dev/null 2>&1 && [ "$workers" -gt 1 ]; then
  site=/tmp/ffdevtest; rm -rf "$site"; mkdir -p "$site"
  for w in .devtest/*.whl; do
    python3 -c "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])" "$w" "$site"
  done
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
  python3 -c "import xdist" 2> /dev/null && par=(-n "$workers")
fi
args=("$@")
case " $* " in *" tests/"*|*" tests "*) ;; *) args=(tests/kernels/test_kernel_gpu.py "$@") ;; esac
echo "gpu_tests.sh: ${#par[@]} xdist args (${par[*]:-one process}), pytest ${args[*]}"
exec python3 -m pytest -q -p no:cacheprovider "${par[@]}" "${args[@]}"
